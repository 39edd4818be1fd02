"""Build hook: generates the gRPC stubs (hpo/_pb/) from hpo's proto file.

The proto file is the one of the repository this SDK lives in
(``proto/proto/hpo/v1/hpo.proto``, found by walking up from this folder), or
the one under ``$HPO_PROTO_DIR`` (a folder holding ``hpo/v1/hpo.proto``).
An sdist carries the generated stubs, so a build from it needs neither.

The runtime dependencies are the grpcio and protobuf versions the stubs were
generated for (read from the generated files): the stubs refuse older ones.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
PB_DIR = HERE / "hpo" / "_pb"
PROTO = Path("hpo") / "v1" / "hpo.proto"

PB_INIT = '''"""gRPC stubs generated from proto/proto/hpo/v1/hpo.proto at build time (do
not edit: setup.py writes them)."""
'''


def find_proto_root() -> Path | None:
    """The include root holding hpo/v1/hpo.proto, or None."""
    env = os.environ.get("HPO_PROTO_DIR")
    if env:
        root = Path(env).expanduser().resolve()
        for candidate in (root, root / "proto", root / "proto" / "proto"):
            if (candidate / PROTO).is_file():
                return candidate
        sys.exit(f"HPO_PROTO_DIR={env} holds no {PROTO.as_posix()}")
    for d in (HERE, *HERE.parents):
        for candidate in (d / "proto" / "proto", d / "proto"):
            if (candidate / PROTO).is_file():
                return candidate
    return None


def generate(root: Path) -> None:
    """Runs protoc (grpcio-tools) on the proto file into hpo/_pb/, with the
    generated imports made relative to the package."""
    try:
        from grpc_tools import protoc
    except ImportError:
        sys.exit("building the hpo SDK needs grpcio-tools (pip install grpcio-tools)")
    try:
        from importlib.resources import files

        well_known = str(files("grpc_tools") / "_proto")
    except (ImportError, TypeError, AttributeError):  # the bundled protos are optional here
        well_known = ""
    with tempfile.TemporaryDirectory() as out:
        args = ["grpc_tools.protoc", f"-I{root}"]
        if well_known:
            args.append(f"-I{well_known}")
        args += [
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(root / PROTO),
        ]
        if protoc.main(args) != 0:
            sys.exit(f"protoc failed on {root / PROTO}")
        gen = Path(out) / "hpo" / "v1"
        PB_DIR.mkdir(parents=True, exist_ok=True)
        for name in ("hpo_pb2.py", "hpo_pb2.pyi", "hpo_pb2_grpc.py"):
            text = (gen / name).read_text(encoding="utf-8")
            text = re.sub(
                r"^from hpo\.v1 import hpo_pb2 as", "from . import hpo_pb2 as", text, flags=re.MULTILINE
            )
            (PB_DIR / name).write_text(text, encoding="utf-8")
    (PB_DIR / "__init__.py").write_text(PB_INIT, encoding="utf-8")


def dependencies() -> list[str]:
    """grpcio and protobuf, at least the versions the stubs need."""
    grpc_min = None
    pb_min = None
    pb_major = None
    try:
        text = (PB_DIR / "hpo_pb2_grpc.py").read_text(encoding="utf-8")
        m = re.search(r"^GRPC_GENERATED_VERSION = '([0-9.]+)'", text, re.MULTILINE)
        grpc_min = m.group(1) if m else None
        text = (PB_DIR / "hpo_pb2.py").read_text(encoding="utf-8")
        m = re.search(r"ValidateProtobufRuntimeVersion\(\s*\S+,\s*(\d+),\s*(\d+),\s*(\d+),", text)
        if m:
            pb_major = int(m.group(1))
            pb_min = ".".join(m.groups())
    except OSError:
        pass
    if grpc_min is None:
        try:
            from grpc_tools import grpc_version

            grpc_min = grpc_version.VERSION
        except ImportError:
            grpc_min = "1.60"
    grpc_dep = f"grpcio>={grpc_min}"
    if pb_min is None:
        protobuf_dep = "protobuf>=4.21"
    else:
        # The runtime may not be older than the generated code; protobuf
        # keeps one major version of cross-version compatibility.
        protobuf_dep = f"protobuf>={pb_min},<{(pb_major or 0) + 2}"
    return [grpc_dep, protobuf_dep]


def prepare() -> None:
    """Generates the stubs when the proto file is at hand; otherwise the
    ones already generated (an sdist's) must be there."""
    # setuptools never empties build/lib: a module renamed or removed since
    # an earlier in-tree build would otherwise still land in the wheel.
    shutil.rmtree(HERE / "build" / "lib", ignore_errors=True)
    root = find_proto_root()
    if root is not None:
        generate(root)
    elif not (PB_DIR / "hpo_pb2.py").is_file():
        sys.exit(
            f"cannot find {PROTO.as_posix()}: build the SDK from inside the hpo repository "
            "(pip install ./sdk/python), or set HPO_PROTO_DIR to the folder holding hpo/v1/hpo.proto"
        )


# Only for commands that build: `setup.py --version` and friends need nothing.
if not any(a in ("clean", "--help", "-h", "--version", "--name") for a in sys.argv[1:]):
    prepare()

setup(install_requires=dependencies())
