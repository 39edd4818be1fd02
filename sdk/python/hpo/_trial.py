"""The in-trial API: what a training program started by an hpo worker uses to
read its parameters, report metrics and save checkpoints.

A study whose trainer is ``kind = "command"`` has the worker start the
program once per trial segment, with the trial described in ``HPO_*``
environment variables and a local endpoint to report to. The program reads
them with :meth:`Trial.from_env` (or :func:`trial`), trains, and reports each
step; every answer is a :class:`Decision`::

    import hpo

    trial = hpo.Trial.from_env()
    lr = trial.get_float("lr")
    for epoch in range(trial.start_step + 1, trial.max_resource + 1):
        loss, acc = train_one_epoch(lr)
        decision = trial.report(epoch, {"val_loss": loss, "val_accuracy": acc})
        if decision is not hpo.Decision.CONTINUE:
            if decision is hpo.Decision.PAUSE:
                trial.save_bytes(serialise(model), "checkpoint.pt")
            break

The local protocol is JSON lines over one TCP connection to ``HPO_ENDPOINT``:
one request line, one response line.
"""

from __future__ import annotations

import enum
import json
import math
import operator
import os
import socket
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, Any, Union

from ._version import __version__
from .errors import HpoError, IncompatibleVersionError, NotInTrialError

__all__ = ["TRIAL_PROTOCOL_VERSION", "Decision", "ParamValue", "Trial", "trial"]

#: The version of the local trial protocol this SDK speaks.
TRIAL_PROTOCOL_VERSION: int = 1

#: A hyperparameter's value: a number, or a string for a categorical one.
ParamValue = Union[int, float, str]

# The environment variables the worker sets for a trial's program.
ENV_ENDPOINT = "HPO_ENDPOINT"
ENV_TOKEN = "HPO_TOKEN"
ENV_PROTOCOL = "HPO_TRIAL_PROTOCOL"
ENV_STUDY = "HPO_STUDY"
ENV_STUDY_NAME = "HPO_STUDY_NAME"
ENV_TRIAL = "HPO_TRIAL"
ENV_ATTEMPT = "HPO_ATTEMPT"
ENV_SEED = "HPO_SEED"
ENV_PARAMS = "HPO_PARAMS"
ENV_BUDGET = "HPO_BUDGET"
ENV_MAX_RESOURCE = "HPO_MAX_RESOURCE"
ENV_RESOURCE = "HPO_RESOURCE"
ENV_START_STEP = "HPO_START_STEP"
ENV_METRIC = "HPO_METRIC"
ENV_CHECKPOINT_DIR = "HPO_CHECKPOINT_DIR"

_MISSING: Any = object()


class Decision(enum.Enum):
    """What hpo answers a report: go on, stop, or pause.

    * ``CONTINUE``: train the next step.
    * ``STOP``: the trial is over (a scheduler stopped it early, the study
      ended or was cancelled). Exit with code 0; nothing needs saving.
    * ``PAUSE``: the trial reached a scheduler's rung (or its budget for this
      segment). Save a checkpoint into :attr:`Trial.checkpoint_dir` and exit
      with code 0: the worker keeps the folder, and if the trial is promoted
      it is started again (maybe on another machine) with that folder
      restored and :attr:`Trial.start_step` set to the step it paused at.
    """

    CONTINUE = "continue"
    STOP = "stop"
    PAUSE = "pause"

    @property
    def should_continue(self) -> bool:
        """True for ``CONTINUE``: train the next step."""
        return self is Decision.CONTINUE

    @property
    def should_stop(self) -> bool:
        """True for ``STOP`` and ``PAUSE``: leave the training loop."""
        return self is not Decision.CONTINUE

    @property
    def should_pause(self) -> bool:
        """True for ``PAUSE``: save a checkpoint, then exit with code 0."""
        return self is Decision.PAUSE

    @classmethod
    def parse(cls, text: object) -> Decision:
        """The decision named ``text`` (``"continue"``, ``"stop"`` or
        ``"pause"``); :class:`HpoError` for anything else."""
        if isinstance(text, str):
            try:
                return cls(text.lower())
            except ValueError:
                pass
        raise HpoError(
            f'the hpo worker answered an unknown decision {text!r} (expected "continue", "stop" or "pause")'
        )


def _env_str(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    value = env.get(name)
    if value is None:
        if default is None:
            raise HpoError(
                f"{name} is not set: the hpo worker sets it for a trial's program "
                "(is this worker older than the SDK?)"
            )
        return default
    return value


def _env_int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or (raw.strip() == "" and default is not None):
        if default is None:
            raise HpoError(
                f"{name} is not set: the hpo worker sets it for a trial's program "
                "(is this worker older than the SDK?)"
            )
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise HpoError(f"{name} is {raw!r}, expected an integer") from None


def _split_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise HpoError(f"{ENV_ENDPOINT} is {endpoint!r}, expected HOST:PORT such as 127.0.0.1:4000")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _check_step(step: object) -> int:
    if isinstance(step, bool):
        raise TypeError(f"step must be an integer, got {step!r}")
    try:
        value = operator.index(step)  # type: ignore[arg-type]
    except TypeError:
        if isinstance(step, float) and step.is_integer():
            value = int(step)
        else:
            raise TypeError(f"step must be an integer, got {step!r}") from None
    if value < 1:
        raise ValueError(f"step must be at least 1 (steps count from 1), got {value}")
    return value


def check_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Validates one step's metrics and returns them as plain floats.

    Values may be anything ``float()`` accepts that is a finite number:
    Python numbers, numpy scalars, one-element torch tensors. Raises
    :class:`ValueError` (or :class:`TypeError` for a non-mapping or a
    non-string name) naming the offending metric.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping of name to number, got {type(metrics).__name__}")
    if not metrics:
        raise ValueError("metrics is empty: report at least one metric (the study's objective)")
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"metric names must be non-empty strings, got {name!r}")
        if isinstance(value, (bool, str, bytes)):
            raise ValueError(f"metric {name!r} must be a number, got {value!r}")  # noqa: TRY004
        try:
            number = float(value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"metric {name!r} must be a number, got {value!r} ({e})") from None
        if not math.isfinite(number):
            raise ValueError(f"metric {name!r} must be a finite number, got {number}")
        out[name] = number
    return out


def _checkpoint_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"checkpoint file name must be a non-empty string, got {name!r}")
    for flavour in (PurePosixPath(name), PureWindowsPath(name)):
        if flavour.is_absolute() or flavour.drive or ".." in flavour.parts:
            raise ValueError(
                f"checkpoint file name {name!r} must be relative to the checkpoint folder "
                "(no absolute path, no `..`)"
            )
    return name


def _atomic_write(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same folder
    and ``os.replace``: a reader sees the old file or the new one, never a
    half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class Trial:
    """The trial this program runs, as the hpo worker described it, and the
    connection to report to it.

    Make one with :meth:`from_env` (or :func:`hpo.trial`). The connection to
    the worker is opened on the first call that needs it and kept; all
    methods are thread-safe.
    """

    def __init__(
        self,
        *,
        endpoint: str,
        token: str,
        study: int,
        study_name: str,
        number: int,
        attempt: int,
        seed: int,
        params: Mapping[str, ParamValue],
        budget: int,
        max_resource: int,
        resource: str,
        start_step: int,
        metric: str,
        checkpoint_dir: str | os.PathLike[str],
        connect_timeout: float = 30.0,
    ) -> None:
        """Describes a trial explicitly (tests, tools); programs started by a
        worker use :meth:`from_env`."""
        self._endpoint = endpoint
        self._token = token
        self._study = study
        self._study_name = study_name
        self._number = number
        self._attempt = attempt
        self._seed = seed
        self._params: dict[str, ParamValue] = dict(params)
        self._budget = budget
        self._max_resource = max_resource
        self._resource = resource
        self._start_step = start_step
        self._metric = metric
        self._checkpoint_dir = Path(checkpoint_dir)
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._reader: IO[bytes] | None = None
        self._last_step = start_step
        self._last_decision: Decision | None = None

    # ---------- construction ----------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Trial:
        """The trial described by the ``HPO_*`` environment variables (or by
        ``environ`` when given).

        Raises :class:`NotInTrialError` when ``HPO_ENDPOINT`` is not set (the
        program was not started by an hpo worker),
        :class:`IncompatibleVersionError` when the worker speaks another trial
        protocol version, and :class:`HpoError` for a malformed variable.
        Nothing is connected yet.
        """
        env: Mapping[str, str] = os.environ if environ is None else environ
        endpoint = env.get(ENV_ENDPOINT, "").strip()
        if not endpoint:
            raise NotInTrialError(
                f"not inside an hpo trial: {ENV_ENDPOINT} is not set "
                '(run this program as a study\'s trainer, kind = "command")'
            )
        protocol = env.get(ENV_PROTOCOL)
        if protocol is not None and protocol.strip() != str(TRIAL_PROTOCOL_VERSION):
            raise IncompatibleVersionError(
                f"the hpo worker speaks trial protocol version {protocol.strip()!s}, "
                f"this SDK (python {__version__}) speaks version {TRIAL_PROTOCOL_VERSION}: "
                "install the SDK of the worker's hpo release"
            )
        raw_params = env.get(ENV_PARAMS, "{}")
        try:
            params = json.loads(raw_params) if raw_params.strip() else {}
        except ValueError as e:
            raise HpoError(f"{ENV_PARAMS} is not valid JSON ({e}): {raw_params!r}") from None
        if not isinstance(params, dict):
            raise HpoError(f"{ENV_PARAMS} must be a JSON object, got {raw_params!r}")
        max_resource = _env_int(env, ENV_MAX_RESOURCE)
        return cls(
            endpoint=endpoint,
            token=_env_str(env, ENV_TOKEN),
            study=_env_int(env, ENV_STUDY, 0),
            study_name=env.get(ENV_STUDY_NAME, ""),
            number=_env_int(env, ENV_TRIAL),
            attempt=_env_int(env, ENV_ATTEMPT, 1),
            seed=_env_int(env, ENV_SEED, 0),
            params=params,
            budget=_env_int(env, ENV_BUDGET, max_resource),
            max_resource=max_resource,
            resource=env.get(ENV_RESOURCE, "epochs") or "epochs",
            start_step=_env_int(env, ENV_START_STEP, 0),
            metric=env.get(ENV_METRIC, ""),
            checkpoint_dir=_env_str(env, ENV_CHECKPOINT_DIR),
        )

    # ---------- what the worker said ----------

    @property
    def study(self) -> int:
        """The study's id."""
        return self._study

    @property
    def study_name(self) -> str:
        """The study's name."""
        return self._study_name

    @property
    def number(self) -> int:
        """The trial's number in its study."""
        return self._number

    @property
    def attempt(self) -> int:
        """The attempt (segment) number: 1 for the first run, one more for each
        resume or retry."""
        return self._attempt

    @property
    def seed(self) -> int:
        """The trial's seed (the same study seed and trial number give the
        same); seed your random number generators with it."""
        return self._seed

    @property
    def params(self) -> dict[str, ParamValue]:
        """The hyperparameters (a copy): numbers, and strings for categorical
        values. See also :meth:`get_float`, :meth:`get_int`, :meth:`get_str`."""
        return dict(self._params)

    @property
    def budget(self) -> int:
        """Train up to this step in this segment; the worker answers
        ``PAUSE`` when it is reached and is less than :attr:`max_resource`."""
        return self._budget

    @property
    def max_resource(self) -> int:
        """The full budget (the trainer's epochs, or the number of data
        fraction levels)."""
        return self._max_resource

    @property
    def resource(self) -> str:
        """What a step means: ``"epochs"``, or ``"data_fraction"`` (a budget b
        trains on b / max_resource of the data)."""
        return self._resource

    @property
    def start_step(self) -> int:
        """A resumed segment starts after this step (0 for a fresh trial):
        load the checkpoint from :attr:`checkpoint_dir` and go on at
        ``start_step + 1``."""
        return self._start_step

    @property
    def is_resumed(self) -> bool:
        """True when this segment resumes a paused trial (``start_step > 0``)."""
        return self._start_step > 0

    @property
    def metric(self) -> str:
        """The name of the study's objective metric: report it every step."""
        return self._metric

    @property
    def checkpoint_dir(self) -> Path:
        """The trial's checkpoint folder: save the checkpoint here on
        ``PAUSE``; on a resume it holds what the previous segment saved."""
        return self._checkpoint_dir

    @property
    def endpoint(self) -> str:
        """The worker's local endpoint (``HOST:PORT``)."""
        return self._endpoint

    @property
    def last_decision(self) -> Decision | None:
        """The decision of the latest :meth:`report` or :meth:`should_stop`
        (None before any)."""
        return self._last_decision

    # ---------- parameters ----------

    def _param(self, name: str, default: Any) -> Any:
        if name in self._params:
            return self._params[name]
        if default is not _MISSING:
            return default
        names = ", ".join(sorted(self._params)) or "none"
        raise KeyError(f"parameter {name!r} is not in this trial's parameters (it has: {names})")

    def get_float(self, name: str, default: Any = _MISSING) -> float:
        """The numeric parameter ``name`` as a float.

        Raises :class:`KeyError` when the trial has no such parameter (and no
        ``default`` is given) and :class:`TypeError` when it is categorical.
        """
        value = self._param(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"parameter {name!r} is {value!r}, not a number")
        return float(value)

    def get_int(self, name: str, default: Any = _MISSING) -> int:
        """The integer parameter ``name``.

        Raises :class:`KeyError` when the trial has no such parameter (and no
        ``default`` is given) and :class:`TypeError` when it is categorical or
        a float with a fractional part.
        """
        value = self._param(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"parameter {name!r} is {value!r}, not an integer")
        if isinstance(value, float):
            if not value.is_integer():
                raise TypeError(f"parameter {name!r} is {value!r}, not an integer")
            return int(value)
        return value

    def get_str(self, name: str, default: Any = _MISSING) -> str:
        """The categorical parameter ``name``.

        Raises :class:`KeyError` when the trial has no such parameter (and no
        ``default`` is given) and :class:`TypeError` when it is a number.
        """
        value = self._param(name, default)
        if not isinstance(value, str):
            raise TypeError(f"parameter {name!r} is {value!r}, not a string (categorical value)")
        return value

    # ---------- the protocol ----------

    def _close_locked(self) -> None:
        reader, sock = self._reader, self._sock
        self._reader = None
        self._sock = None
        for thing in (reader, sock):
            if thing is not None:
                try:
                    thing.close()
                except OSError:
                    pass

    def _exchange(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Sends one line and reads one; the lock is held."""
        assert self._sock is not None and self._reader is not None
        line = json.dumps(request, separators=(",", ":"), allow_nan=False) + "\n"
        try:
            self._sock.sendall(line.encode("utf-8"))
            answer = self._reader.readline()
        except OSError as e:
            self._close_locked()
            raise HpoError(f"lost the connection to the hpo worker at {self._endpoint}: {e}") from e
        if not answer.endswith(b"\n"):
            self._close_locked()
            raise HpoError(
                f"the hpo worker at {self._endpoint} closed the connection (during {request.get('op')!r})"
            )
        try:
            response = json.loads(answer.decode("utf-8"))
        except ValueError:
            self._close_locked()
            raise HpoError(f"the hpo worker answered a line that is not JSON: {answer[:200]!r}") from None
        if not isinstance(response, dict):
            self._close_locked()
            raise HpoError(f"the hpo worker answered {response!r}, expected a JSON object")
        return response

    def _connect_locked(self) -> None:
        host, port = _split_endpoint(self._endpoint)
        try:
            sock = socket.create_connection((host, port), timeout=self._connect_timeout)
        except OSError as e:
            raise HpoError(f"cannot reach the hpo worker at {self._endpoint}: {e}") from e
        sock.settimeout(None)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self._sock = sock
        self._reader = sock.makefile("rb")
        response = self._exchange(
            {
                "op": "hello",
                "token": self._token,
                "protocol": TRIAL_PROTOCOL_VERSION,
                "sdk": f"python {__version__}",
            }
        )
        protocol = response.get("protocol")
        error = response.get("error")
        if response.get("ok") is not True or protocol not in (None, TRIAL_PROTOCOL_VERSION):
            self._close_locked()
            message = str(error) if error else f"the hpo worker refused the connection: {response!r}"
            mismatch = protocol is not None and protocol != TRIAL_PROTOCOL_VERSION
            if mismatch or "protocol" in message.lower() or "version" in message.lower():
                raise IncompatibleVersionError(
                    f"this SDK (python {__version__}) speaks trial protocol version "
                    f"{TRIAL_PROTOCOL_VERSION}, the hpo worker "
                    + (f"speaks version {protocol}" if protocol is not None else "refused it")
                    + (f": {error}" if error else "")
                )
            raise HpoError(message)

    def _call(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """One request and its response; the lock is held. Connects first
        if needed; raises :class:`HpoError` for ``ok: false``."""
        if self._sock is None:
            self._connect_locked()
        response = self._exchange(request)
        if response.get("ok") is not True:
            raise HpoError(
                str(response.get("error") or f"the hpo worker refused {request.get('op')!r}: {response!r}")
            )
        return response

    def connect(self) -> None:
        """Connects to the worker now (and says hello) instead of on the first
        report; does nothing when already connected."""
        with self._lock:
            if self._sock is None:
                self._connect_locked()

    def report(self, step: int, metrics: Mapping[str, Any]) -> Decision:
        """Reports the metrics of ``step`` and returns what to do next.

        Steps count from 1 and must increase (a resumed segment starts at
        :attr:`start_step` + 1); report the study's :attr:`metric` every
        step. Values may be Python numbers, numpy scalars or one-element torch
        tensors, and must be finite: a :class:`ValueError` names the
        offending metric.

        The answer is a :class:`Decision`: ``CONTINUE`` (train on), ``STOP``
        (exit with code 0: the trial is over) or ``PAUSE`` (save a checkpoint
        into :attr:`checkpoint_dir`, then exit with code 0: the worker
        resumes the trial later, maybe elsewhere, with that folder restored
        and :attr:`start_step` set). The worker answers ``PAUSE`` itself when
        ``step`` reaches :attr:`budget` and the budget is less than
        :attr:`max_resource`, so a loop up to :attr:`max_resource` that
        leaves on anything but ``CONTINUE`` does the right thing.

        Raises :class:`HpoError` when the worker refuses the report or
        cannot be reached.
        """
        value = _check_step(step)
        values = check_metrics(metrics)
        with self._lock:
            if value <= self._last_step:
                raise ValueError(
                    f"step {value} does not come after step {self._last_step} "
                    "(steps must increase; a resumed segment starts after start_step)"
                )
            response = self._call({"op": "report", "step": value, "metrics": values})
            self._last_step = value
            decision = Decision.parse(response.get("decision"))
            self._last_decision = decision
        return decision

    def should_stop(self) -> bool:
        """Asks the worker whether the trial should end now (it was stopped,
        paused or cancelled), without reporting: useful inside a long epoch.
        True means: leave the loop (saving a checkpoint when
        :attr:`last_decision` is ``PAUSE``) and exit with code 0."""
        with self._lock:
            response = self._call({"op": "should_stop"})
            stop = response.get("stop")
            if not isinstance(stop, bool):
                raise HpoError(f"the hpo worker answered should_stop with {response!r}")
            if "decision" in response:
                self._last_decision = Decision.parse(response.get("decision"))
        return stop

    def close(self) -> None:
        """Closes the connection to the worker (a later call reconnects)."""
        with self._lock:
            self._close_locked()

    def __enter__(self) -> Trial:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Trial(study={self._study}, number={self._number}, attempt={self._attempt}, "
            f"params={self._params!r}, budget={self._budget}, max_resource={self._max_resource}, "
            f"start_step={self._start_step})"
        )

    # ---------- checkpoints ----------

    def checkpoint_path(self, name: str = "checkpoint.pt") -> Path:
        """The path of the checkpoint file ``name`` in :attr:`checkpoint_dir`
        (the folder is created). For an atomic write, prefer
        :meth:`save_bytes` (``torch.save`` into an ``io.BytesIO`` first)."""
        path = self._checkpoint_dir / _checkpoint_name(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def has_checkpoint(self, name: str = "checkpoint.pt") -> bool:
        """True when the checkpoint folder holds the file ``name``."""
        return (self._checkpoint_dir / _checkpoint_name(name)).is_file()

    def save_bytes(self, data: bytes | bytearray | memoryview, name: str) -> Path:
        """Writes ``data`` to ``name`` in the checkpoint folder, atomically (a
        temporary file, then ``os.replace``); returns the path."""
        path = self._checkpoint_dir / _checkpoint_name(name)
        _atomic_write(path, bytes(data))
        return path

    def load_bytes(self, name: str) -> bytes | None:
        """The contents of ``name`` in the checkpoint folder, or None when it
        does not exist (a fresh trial)."""
        path = self._checkpoint_dir / _checkpoint_name(name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def save_json(self, obj: Any, name: str) -> Path:
        """Writes ``obj`` as JSON to ``name`` in the checkpoint folder,
        atomically; returns the path."""
        return self.save_bytes(json.dumps(obj).encode("utf-8"), name)

    def load_json(self, name: str) -> Any:
        """The JSON value saved in ``name`` in the checkpoint folder, or None
        when the file does not exist."""
        data = self.load_bytes(name)
        if data is None:
            return None
        return json.loads(data.decode("utf-8"))


_current: Trial | None = None
_current_lock = threading.Lock()


def trial() -> Trial:
    """The trial this program runs: :meth:`Trial.from_env`, made once and
    shared by every later call in the process."""
    global _current
    with _current_lock:
        if _current is None:
            _current = Trial.from_env()
        return _current
