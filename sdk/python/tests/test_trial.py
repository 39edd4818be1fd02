"""Tests of the in-trial API (hpo.Trial) against a fake worker endpoint that
speaks the local trial protocol: JSON lines over TCP, one request line, one
response line.

Run with ``python -m unittest discover -s sdk/python/tests`` where the SDK is
installed (``pip install ./sdk/python``); without it, the package is taken
from the checkout (the in-trial API needs only the standard library).
"""

from __future__ import annotations

import json
import math
import os
import socketserver
import sys
import tempfile
import threading
import unittest
from pathlib import Path
from typing import Any
from unittest import mock

try:
    import hpo
except ImportError:  # not installed: the checkout's copy
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import hpo

from hpo import Decision, HpoError, IncompatibleVersionError, NotInTrialError, Trial

TOKEN = "s3cret-token"


class FakeWorker:
    """A local trial endpoint like the worker's: checks the hello's token,
    answers reports with scripted decisions (or PAUSE when a step reaches a
    budget below max_resource, as the worker does) and records every request.
    """

    def __init__(
        self,
        *,
        budget: int = 9,
        max_resource: int = 9,
        decisions: dict[int, str] | None = None,
        hello_reply: dict[str, Any] | None = None,
        report_error: str | None = None,
        close_after_hello: bool = False,
    ) -> None:
        self.budget = budget
        self.max_resource = max_resource
        self.decisions = dict(decisions or {})
        self.hello_reply = hello_reply
        self.report_error = report_error
        self.close_after_hello = close_after_hello
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self.current = "continue"
        self.lock = threading.Lock()
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                with fake.lock:
                    fake.connections += 1
                greeted = False
                for raw in self.rfile:
                    assert raw.endswith(b"\n"), raw
                    request = json.loads(raw.decode("utf-8"))
                    with fake.lock:
                        fake.requests.append(request)
                        response = fake.answer(request, greeted)
                    if request.get("op") == "hello" and response.get("ok"):
                        greeted = True
                    self.wfile.write((json.dumps(response) + "\n").encode("utf-8"))
                    self.wfile.flush()
                    if greeted and fake.close_after_hello:
                        return

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def endpoint(self) -> str:
        port = self.server.server_address[1]
        return f"127.0.0.1:{port}"

    def answer(self, request: dict[str, Any], greeted: bool) -> dict[str, Any]:
        op = request.get("op")
        if not greeted:
            if op != "hello":
                return {"ok": False, "error": "say hello first"}
            if self.hello_reply is not None:
                return self.hello_reply
            if request.get("token") != TOKEN:
                return {"ok": False, "error": "bad token"}
            if request.get("protocol") != 1:
                return {"ok": False, "error": "unsupported protocol", "protocol": 1}
            return {"ok": True, "protocol": 1}
        if op == "report":
            if self.report_error:
                return {"ok": False, "error": self.report_error}
            step = request["step"]
            metrics = request["metrics"]
            assert isinstance(step, int) and step >= 1, request
            assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values()), request
            decision = self.decisions.get(step)
            if decision is None:
                decision = "pause" if step >= self.budget and self.budget < self.max_resource else "continue"
            self.current = decision
            return {"ok": True, "decision": decision}
        if op == "should_stop":
            return {"ok": True, "stop": self.current != "continue", "decision": self.current}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def ops(self) -> list[str]:
        with self.lock:
            return [str(r.get("op")) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def trial_env(endpoint: str, checkpoint_dir: str, **overrides: str) -> dict[str, str]:
    """The variables a worker sets for a trial's program."""
    env = {
        "HPO_ENDPOINT": endpoint,
        "HPO_TOKEN": TOKEN,
        "HPO_TRIAL_PROTOCOL": "1",
        "HPO_STUDY": "7",
        "HPO_STUDY_NAME": "fashion",
        "HPO_TRIAL": "3",
        "HPO_ATTEMPT": "1",
        "HPO_SEED": "12345",
        "HPO_PARAMS": json.dumps({"lr": 0.01, "hidden": 128, "optimizer": "adam", "width": 2.0}),
        "HPO_BUDGET": "9",
        "HPO_MAX_RESOURCE": "9",
        "HPO_RESOURCE": "epochs",
        "HPO_START_STEP": "0",
        "HPO_METRIC": "val_loss",
        "HPO_CHECKPOINT_DIR": checkpoint_dir,
        "CUDA_VISIBLE_DEVICES": "",
    }
    env.update(overrides)
    return env


class FloatLike:
    """Stands in for a numpy or torch scalar: converts with float()."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __float__(self) -> float:
        return self.value


class TrialTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.ckpt = os.path.join(self.tmp.name, "ckpt")
        self.fakes: list[FakeWorker] = []
        self.trials: list[Trial] = []

    def tearDown(self) -> None:
        for t in self.trials:
            t.close()
        for f in self.fakes:
            f.close()
        self.tmp.cleanup()

    def fake(self, **kwargs: Any) -> FakeWorker:
        f = FakeWorker(**kwargs)
        self.fakes.append(f)
        return f

    def trial(self, fake: FakeWorker | None = None, **overrides: str) -> Trial:
        endpoint = fake.endpoint if fake is not None else "127.0.0.1:9"
        t = Trial.from_env(trial_env(endpoint, self.ckpt, **overrides))
        self.trials.append(t)
        return t


class EnvironmentTest(TrialTestCase):
    def test_reads_the_trial_from_the_environment(self) -> None:
        t = self.trial()
        self.assertEqual(t.study, 7)
        self.assertEqual(t.study_name, "fashion")
        self.assertEqual(t.number, 3)
        self.assertEqual(t.attempt, 1)
        self.assertEqual(t.seed, 12345)
        self.assertEqual(t.params, {"lr": 0.01, "hidden": 128, "optimizer": "adam", "width": 2.0})
        self.assertEqual(t.budget, 9)
        self.assertEqual(t.max_resource, 9)
        self.assertEqual(t.resource, "epochs")
        self.assertEqual(t.start_step, 0)
        self.assertFalse(t.is_resumed)
        self.assertEqual(t.metric, "val_loss")
        self.assertIsInstance(t.checkpoint_dir, Path)
        self.assertEqual(t.checkpoint_dir, Path(self.ckpt))
        resumed = self.trial(HPO_START_STEP="3", HPO_ATTEMPT="2", HPO_BUDGET="9")
        self.assertTrue(resumed.is_resumed)
        self.assertEqual(resumed.start_step, 3)
        self.assertEqual(resumed.attempt, 2)

    def test_typed_getters(self) -> None:
        t = self.trial()
        self.assertEqual(t.get_float("lr"), 0.01)
        self.assertEqual(t.get_float("hidden"), 128.0)
        self.assertIsInstance(t.get_float("hidden"), float)
        self.assertEqual(t.get_int("hidden"), 128)
        self.assertEqual(t.get_int("width"), 2)
        self.assertEqual(t.get_str("optimizer"), "adam")
        self.assertEqual(t.get_float("momentum", 0.9), 0.9)
        with self.assertRaises(KeyError) as e:
            t.get_float("momentum")
        self.assertIn("momentum", str(e.exception))
        self.assertIn("hidden, lr, optimizer, width", str(e.exception))
        with self.assertRaises(TypeError) as te:
            t.get_float("optimizer")
        self.assertIn("optimizer", str(te.exception))
        with self.assertRaises(TypeError):
            t.get_int("lr")
        with self.assertRaises(TypeError):
            t.get_str("lr")
        # params is a copy
        t.params["lr"] = 5
        self.assertEqual(t.get_float("lr"), 0.01)

    def test_outside_a_trial(self) -> None:
        with self.assertRaises(NotInTrialError) as e:
            Trial.from_env({})
        self.assertIsInstance(e.exception, HpoError)
        self.assertIn("not inside an hpo trial", str(e.exception))
        self.assertIn("HPO_ENDPOINT", str(e.exception))
        self.assertIn('kind = "command"', str(e.exception))
        with mock.patch.dict(os.environ, {}, clear=True), self.assertRaises(NotInTrialError):
            hpo.Trial.from_env()

    def test_incompatible_protocol_version(self) -> None:
        with self.assertRaises(IncompatibleVersionError) as e:
            self.trial(HPO_TRIAL_PROTOCOL="99")
        self.assertIsInstance(e.exception, HpoError)
        message = str(e.exception)
        self.assertIn("99", message)
        self.assertIn(f"version {hpo.TRIAL_PROTOCOL_VERSION}", message)

    def test_malformed_variables(self) -> None:
        with self.assertRaises(HpoError) as e:
            self.trial(HPO_PARAMS="{not json")
        self.assertIn("HPO_PARAMS", str(e.exception))
        with self.assertRaises(HpoError):
            self.trial(HPO_PARAMS="[1, 2]")
        with self.assertRaises(HpoError) as e:
            self.trial(HPO_BUDGET="three")
        self.assertIn("HPO_BUDGET", str(e.exception))

    def test_trial_shortcut_reads_os_environ_once(self) -> None:
        fake = self.fake()
        env = trial_env(fake.endpoint, self.ckpt)
        with (
            mock.patch.dict(os.environ, env, clear=True),
            mock.patch.object(sys.modules["hpo._trial"], "_current", None),
        ):
            first = hpo.trial()
            self.trials.append(first)
            self.assertIs(hpo.trial(), first)
            self.assertEqual(first.number, 3)


class ProtocolTest(TrialTestCase):
    def test_report_round_trip_and_pause_at_budget(self) -> None:
        fake = self.fake(budget=3, max_resource=9)
        t = self.trial(fake, HPO_BUDGET="3")
        decisions = []
        for step in range(1, 10):
            d = t.report(step, {"val_loss": 1.0 / step, "acc": FloatLike(0.5 + step / 100)})
            decisions.append(d)
            if d is not Decision.CONTINUE:
                break
        self.assertEqual(decisions, [Decision.CONTINUE, Decision.CONTINUE, Decision.PAUSE])
        self.assertTrue(decisions[-1].should_pause)
        self.assertEqual(t.last_decision, Decision.PAUSE)
        self.assertEqual(fake.connections, 1, "one connection, kept")
        self.assertEqual(fake.ops(), ["hello", "report", "report", "report"])
        hello = fake.requests[0]
        self.assertEqual(hello["token"], TOKEN)
        self.assertEqual(hello["protocol"], 1)
        self.assertEqual(hello["sdk"], f"python {hpo.__version__}")
        self.assertEqual(
            fake.requests[2], {"op": "report", "step": 2, "metrics": {"val_loss": 0.5, "acc": 0.52}}
        )

    def test_lazy_connection(self) -> None:
        fake = self.fake()
        t = self.trial(fake)
        self.assertEqual(t.get_int("hidden"), 128)
        self.assertEqual(fake.connections, 0)
        t.connect()
        self.assertEqual(fake.ops(), ["hello"])

    def test_stop_decision(self) -> None:
        fake = self.fake(decisions={2: "stop"})
        t = self.trial(fake)
        self.assertIs(t.report(1, {"val_loss": 0.9}), Decision.CONTINUE)
        d = t.report(2, {"val_loss": 0.8})
        self.assertIs(d, Decision.STOP)
        self.assertFalse(d.should_continue)
        self.assertTrue(d.should_stop)
        self.assertFalse(d.should_pause)

    def test_should_stop(self) -> None:
        fake = self.fake(decisions={2: "pause"})
        t = self.trial(fake)
        self.assertFalse(t.should_stop())
        t.report(1, {"val_loss": 0.9})
        self.assertFalse(t.should_stop())
        t.report(2, {"val_loss": 0.8})
        self.assertTrue(t.should_stop())
        self.assertIs(t.last_decision, Decision.PAUSE)
        self.assertEqual(
            fake.ops(), ["hello", "should_stop", "report", "should_stop", "report", "should_stop"]
        )

    def test_bad_metric_values_are_rejected_before_sending(self) -> None:
        fake = self.fake()
        t = self.trial(fake)
        bad: list[Any] = [float("nan"), float("inf"), -math.inf, "0.5", None, True, [1.0], object()]
        for value in bad:
            with self.assertRaises(ValueError, msg=repr(value)) as e:
                t.report(1, {"val_loss": 0.1, "acc": value})
            self.assertIn("'acc'", str(e.exception))
        with self.assertRaises(ValueError):
            t.report(1, {})
        with self.assertRaises(TypeError):
            t.report(1, [("val_loss", 0.1)])  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            t.report(1, {3: 0.1})  # type: ignore[dict-item]
        self.assertEqual(fake.ops(), [], "nothing was sent")

    def test_numpy_and_torch_scalars(self) -> None:
        fake = self.fake()
        t = self.trial(fake)
        step = 0
        try:
            import numpy as np  # type: ignore[import-not-found]
        except ImportError:
            np = None
        if np is not None:
            step += 1
            t.report(step, {"val_loss": np.float32(0.25), "n": np.int64(3)})
            self.assertEqual(fake.requests[-1]["metrics"], {"val_loss": 0.25, "n": 3.0})
            with self.assertRaises(ValueError):
                t.report(step + 1, {"val_loss": np.float64("nan")})
        try:
            import torch  # type: ignore[import-not-found]
        except ImportError:
            torch = None
        if torch is not None:
            step += 1
            t.report(step, {"val_loss": torch.tensor(0.5)})
            self.assertEqual(fake.requests[-1]["metrics"], {"val_loss": 0.5})
        step += 1
        t.report(step, {"val_loss": FloatLike(0.125)})
        self.assertEqual(fake.requests[-1]["metrics"], {"val_loss": 0.125})

    def test_steps_count_from_one_and_increase(self) -> None:
        fake = self.fake()
        t = self.trial(fake)
        with self.assertRaises(ValueError):
            t.report(0, {"val_loss": 1.0})
        with self.assertRaises(TypeError):
            t.report(1.5, {"val_loss": 1.0})  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            t.report(True, {"val_loss": 1.0})
        t.report(2, {"val_loss": 1.0})
        with self.assertRaises(ValueError) as e:
            t.report(2, {"val_loss": 1.0})
        self.assertIn("step 2", str(e.exception))
        t.report(3, {"val_loss": 1.0})

    def test_resumed_segment_starts_after_start_step(self) -> None:
        fake = self.fake(budget=9, max_resource=9)
        t = self.trial(fake, HPO_START_STEP="3", HPO_ATTEMPT="2")
        with self.assertRaises(ValueError):
            t.report(3, {"val_loss": 1.0})
        self.assertIs(t.report(4, {"val_loss": 1.0}), Decision.CONTINUE)

    def test_worker_errors_raise_hpo_error(self) -> None:
        fake = self.fake(report_error="step 1 is past the budget")
        t = self.trial(fake)
        with self.assertRaises(HpoError) as e:
            t.report(1, {"val_loss": 1.0})
        self.assertEqual(str(e.exception), "step 1 is past the budget")
        # the connection stays usable
        self.assertFalse(t.should_stop())

    def test_bad_token(self) -> None:
        fake = self.fake()
        t = self.trial(fake, HPO_TOKEN="wrong")
        with self.assertRaises(HpoError) as e:
            t.report(1, {"val_loss": 1.0})
        self.assertNotIsInstance(e.exception, IncompatibleVersionError)
        self.assertIn("bad token", str(e.exception))

    def test_hello_with_another_protocol(self) -> None:
        fake = self.fake(
            hello_reply={"ok": False, "error": "trial protocol 1 is not supported", "protocol": 2}
        )
        t = self.trial(fake)
        with self.assertRaises(IncompatibleVersionError) as e:
            t.report(1, {"val_loss": 1.0})
        self.assertIn("version 1", str(e.exception))
        self.assertIn("version 2", str(e.exception))

    def test_worker_gone(self) -> None:
        fake = self.fake(close_after_hello=True)
        t = self.trial(fake)
        t.connect()
        with self.assertRaises(HpoError) as e:
            t.report(1, {"val_loss": 1.0})
        self.assertIn("closed the connection", str(e.exception))
        nobody = self.trial(None)
        with self.assertRaises(HpoError) as e:
            nobody.report(1, {"val_loss": 1.0})
        self.assertIn("cannot reach the hpo worker", str(e.exception))

    def test_thread_safe(self) -> None:
        fake = self.fake()
        t = self.trial(fake)
        errors: list[BaseException] = []

        def poll() -> None:
            try:
                for _ in range(25):
                    self.assertFalse(t.should_stop())
            except BaseException as e:  # noqa: BLE001 - collected for the main thread
                errors.append(e)

        threads = [threading.Thread(target=poll) for _ in range(8)]
        for th in threads:
            th.start()
        for step in range(1, 26):
            t.report(step, {"val_loss": 1.0 / step})
        for th in threads:
            th.join()
        self.assertEqual(errors, [])
        self.assertEqual(fake.connections, 1)
        self.assertEqual(fake.ops().count("should_stop"), 200)
        self.assertEqual(fake.ops().count("report"), 25)


class CheckpointTest(TrialTestCase):
    def test_bytes_and_json(self) -> None:
        t = self.trial()
        self.assertIsNone(t.load_bytes("state.bin"))
        self.assertIsNone(t.load_json("meta.json"))
        self.assertFalse(t.has_checkpoint("state.bin"))
        path = t.save_bytes(b"\x00weights\xff", "state.bin")
        self.assertEqual(path, Path(self.ckpt) / "state.bin")
        self.assertEqual(t.load_bytes("state.bin"), b"\x00weights\xff")
        self.assertTrue(t.has_checkpoint("state.bin"))
        t.save_bytes(b"v2", "state.bin")
        self.assertEqual(t.load_bytes("state.bin"), b"v2")
        t.save_json({"epoch": 3, "best": 0.91, "tags": ["a"]}, "meta.json")
        self.assertEqual(t.load_json("meta.json"), {"epoch": 3, "best": 0.91, "tags": ["a"]})
        self.assertEqual(sorted(os.listdir(self.ckpt)), ["meta.json", "state.bin"], "no temporary files left")

    def test_resume_sees_the_previous_segment(self) -> None:
        first = self.trial()
        first.save_json({"epoch": 3}, "meta.json")
        second = self.trial(HPO_START_STEP="3", HPO_ATTEMPT="2")
        self.assertTrue(second.is_resumed)
        self.assertEqual(second.load_json("meta.json"), {"epoch": 3})

    def test_checkpoint_path(self) -> None:
        t = self.trial()
        p = t.checkpoint_path()
        self.assertEqual(p, Path(self.ckpt) / "checkpoint.pt")
        self.assertTrue(Path(self.ckpt).is_dir(), "the folder is created")
        self.assertEqual(t.checkpoint_path("sub/model.pt"), Path(self.ckpt) / "sub" / "model.pt")
        for bad in ("../escape.pt", "/etc/passwd", "a/../../b", ""):
            with self.assertRaises(ValueError, msg=bad):
                t.checkpoint_path(bad)
            with self.assertRaises(ValueError, msg=bad):
                t.save_bytes(b"x", bad)

    def test_failed_write_leaves_the_old_file(self) -> None:
        t = self.trial()
        t.save_bytes(b"old", "state.bin")
        with mock.patch("os.replace", side_effect=OSError("disk full")), self.assertRaises(OSError):
            t.save_bytes(b"new", "state.bin")
        self.assertEqual(t.load_bytes("state.bin"), b"old")
        self.assertEqual(os.listdir(self.ckpt), ["state.bin"])


class DecisionTest(unittest.TestCase):
    def test_values_and_helpers(self) -> None:
        self.assertEqual([d.value for d in Decision], ["continue", "stop", "pause"])
        self.assertTrue(Decision.CONTINUE.should_continue)
        self.assertFalse(Decision.CONTINUE.should_stop)
        self.assertTrue(Decision.PAUSE.should_stop)
        self.assertIs(Decision.parse("stop"), Decision.STOP)
        with self.assertRaises(HpoError):
            Decision.parse("explode")

    def test_version(self) -> None:
        self.assertEqual(hpo.__version__, "0.1.0")


if __name__ == "__main__":
    unittest.main()
