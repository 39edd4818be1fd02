"""Tests of the client API (hpo.Client, ask-and-tell) against an in-process
fake coordinator (a grpc server with fake StudyService and WorkerService
servicers), and, when ``HPO_BIN`` names an ``hpo`` binary, against a real
``hpo server``.

Skipped where grpcio or the generated stubs are missing (an uninstalled
checkout): install the SDK with ``pip install ./sdk/python``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from concurrent import futures
from pathlib import Path
from typing import Any
from unittest import mock

try:
    import hpo
except ImportError:  # not installed: the checkout's copy
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import hpo

try:
    import grpc

    from hpo import client as client_mod
    from hpo._pb import hpo_pb2 as pb
    from hpo._pb import hpo_pb2_grpc as pb_grpc
except ImportError as e:  # pragma: no cover
    grpc = None  # type: ignore[assignment]
    SKIP = f"the client API is not available here ({e}): pip install ./sdk/python"
else:
    SKIP = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeCoordinator:
    """Just enough of a coordinator for one external study with two trials:
    trial 0 is handed out, then trial 1; the study completes once both
    ended."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.registered: list[Any] = []
        self.heartbeats: list[list[int]] = []
        self.reports: list[Any] = []
        self.finished: dict[int, Any] = {}
        self.handed = 0
        self.stop_in_heartbeat: set[int] = set()
        fake = self

        class Studies(pb_grpc.StudyServiceServicer):
            def GetStudy(self, request: Any, context: Any) -> Any:
                if request.study_id != 1:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"study {request.study_id} not found")
                with fake.lock:
                    done = len(fake.finished) >= 2
                return pb.StudySummary(
                    study_id=1,
                    name="fake",
                    state=pb.STUDY_STATE_COMPLETED if done else pb.STUDY_STATE_RUNNING,
                    end_reason="max_trials" if done else "",
                    metric="loss",
                    direction="minimize",
                    max_trials=2,
                    completed=len(fake.finished),
                )

            def SubmitStudy(self, request: Any, context: Any) -> Any:
                if "name" not in request.study_toml:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{request.source_name}: name: missing")
                return pb.SubmitStudyResponse(study_id=1)

            def ListTrials(self, request: Any, context: Any) -> Any:
                t = pb.Trial(study_id=1, number=0, state=pb.TRIAL_STATE_COMPLETED, value=0.5, last_step=2)
                t.params["lr"].float = 0.1
                t.params["layers"].int = 3
                t.params["opt"].categorical = "adam"
                if request.with_metrics:
                    m = t.metrics.add(attempt=1, step=1)
                    m.values["loss"] = 0.5
                return pb.ListTrialsResponse(trials=[t])

            def GetTrialLog(self, request: Any, context: Any) -> Any:
                text = "epoch 1\nepoch 2\n"
                return pb.TrialLog(text=text[request.offset :], start=request.offset, total=len(text))

        class Workers(pb_grpc.WorkerServiceServicer):
            def Register(self, request: Any, context: Any) -> Any:
                if request.protocol_version != 3:
                    context.abort(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"worker speaks protocol version {request.protocol_version}, "
                        "this coordinator speaks 3",
                    )
                with fake.lock:
                    fake.registered.append(request)
                return pb.RegisterResponse(lease_ttl_ms=300, heartbeat_interval_ms=100)

            def AcquireTrial(self, request: Any, context: Any) -> Any:
                assert request.HasField("study_id") and request.study_id == 1, request
                with fake.lock:
                    if fake.handed >= 2:
                        return pb.AcquireTrialResponse()
                    number = fake.handed
                    fake.handed += 1
                a = pb.TrialAssignment(
                    study_id=1,
                    number=number,
                    attempt=1,
                    study_name="fake",
                    seed=11,
                    metric="loss",
                    resource="epochs",
                    budget=3,
                    max_resource=3,
                )
                a.params["x"].float = 0.25 * (number + 1)
                a.params["opt"].categorical = "sgd"
                a.trainer.kind = "external"
                return pb.AcquireTrialResponse(trial=a)

            def Heartbeat(self, request: Any, context: Any) -> Any:
                numbers = [t.number for t in request.trials]
                with fake.lock:
                    fake.heartbeats.append(numbers)
                    stop = [t for t in request.trials if t.number in fake.stop_in_heartbeat]
                return pb.HeartbeatResponse(known=True, stop=stop)

            def ReportMetrics(self, request: Any, context: Any) -> Any:
                with fake.lock:
                    fake.reports.append(request)
                decision = pb.DECISION_STOP if request.values.get("loss", 0) > 100 else pb.DECISION_CONTINUE
                return pb.ReportMetricsResponse(decision=decision)

            def FinishTrial(self, request: Any, context: Any) -> Any:
                with fake.lock:
                    fake.finished[request.trial.number] = request
                state = {
                    pb.OUTCOME_COMPLETED: pb.TRIAL_STATE_COMPLETED,
                    pb.OUTCOME_FAILED: pb.TRIAL_STATE_FAILED,
                    pb.OUTCOME_INTERRUPTED: pb.TRIAL_STATE_WAITING,
                }[request.outcome]
                return pb.FinishTrialResponse(state=state)

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_StudyServiceServicer_to_server(Studies(), self.server)  # type: ignore[no-untyped-call]
        pb_grpc.add_WorkerServiceServicer_to_server(Workers(), self.server)  # type: ignore[no-untyped-call]
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.stop(None)


@unittest.skipIf(SKIP, SKIP)
class ClientUnitTest(unittest.TestCase):
    def test_urls(self) -> None:
        parse = client_mod._parse_url
        self.assertEqual(parse("127.0.0.1:50051"), ("127.0.0.1:50051", False))
        self.assertEqual(parse("http://coord:7000/"), ("coord:7000", False))
        self.assertEqual(parse("https://coord"), ("coord:443", True))
        self.assertEqual(parse("localhost"), ("localhost:50051", False))
        self.assertEqual(parse("[::1]:9000"), ("[::1]:9000", False))
        with self.assertRaises(ValueError):
            parse("http://coord:7000/api")

    def test_a_call_an_older_coordinator_lacks_is_an_incompatible_version(self) -> None:
        class Unimplemented(grpc.RpcError):
            def code(self) -> Any:
                return grpc.StatusCode.UNIMPLEMENTED

            def details(self) -> str:
                return "unknown method GetTrialLog"

        err = client_mod._rpc_error(Unimplemented(), "http://old:50051")
        self.assertIsInstance(err, hpo.IncompatibleVersionError)
        self.assertIn("older than this SDK", str(err))
        self.assertIn("GetTrialLog", str(err))

    def test_unreachable_coordinator(self) -> None:
        url = f"http://127.0.0.1:{free_port()}"
        with hpo.Client(url, timeout=5) as c, self.assertRaises(hpo.HpoError) as e:
            c.studies()
        self.assertEqual(e.exception.code, "UNAVAILABLE")
        self.assertIn(url, str(e.exception))


@unittest.skipIf(SKIP, SKIP)
class FakeCoordinatorTest(unittest.TestCase):
    def setUp(self) -> None:
        self.fake = FakeCoordinator()
        self.client = hpo.Client(self.fake.url, timeout=5)

    def tearDown(self) -> None:
        self.client.close()
        self.fake.close()

    def test_studies_and_errors(self) -> None:
        c = self.client
        self.assertEqual(c.submit('name = "x"'), 1)
        with self.assertRaises(hpo.HpoError) as e:
            c.submit("seed = 1", source_name="bad.toml")
        self.assertEqual(str(e.exception), "bad.toml: name: missing")
        self.assertEqual(e.exception.code, "INVALID_ARGUMENT")
        with self.assertRaises(hpo.HpoError) as e:
            c.study(5)
        self.assertEqual(e.exception.code, "NOT_FOUND")
        s = c.study(1)
        self.assertIsInstance(s, hpo.StudyInfo)
        self.assertEqual((s.state, s.is_running, s.metric, s.best), ("running", True, "loss", None))
        [t] = c.trials(1)
        self.assertEqual(t.state, "completed")
        self.assertEqual(t.params, {"layers": 3, "lr": 0.1, "opt": "adam"})
        self.assertEqual((t.value, t.last_step, t.metrics), (0.5, 2, []))
        [t] = c.trials(1, with_metrics=True)
        self.assertEqual(t.metrics, [hpo.MetricPoint(attempt=1, step=1, values={"loss": 0.5})])
        log = c.trial_log(1, 0)
        self.assertEqual((log.text, log.start, log.total), ("epoch 1\nepoch 2\n", 0, 16))
        self.assertEqual(c.trial_log(1, 0, offset=log.total).text, "")

    def test_ask_and_tell(self) -> None:
        polled: list[str] = []
        with self.client.ask_tell(1) as tuner:
            [reg] = self.fake.registered
            self.assertEqual(reg.protocol_version, hpo.PROTOCOL_VERSION)
            self.assertEqual(reg.worker_id, f"ask-{socket.gethostname()}-{os.getpid()}")
            self.assertEqual(list(reg.slots), ["client:0"])
            self.assertEqual(tuner.heartbeat_interval, 0.1)

            first = tuner.ask(timeout=5)
            assert first is not None
            self.assertEqual((first.number, first.attempt, first.seed), (0, 1, 11))
            self.assertEqual(first.params, {"opt": "sgd", "x": 0.25})
            self.assertEqual(first.report(1, {"loss": 3.0, "acc": 0.5}), hpo.Decision.CONTINUE)
            time.sleep(0.35)  # a few heartbeats while the trial is held
            with self.fake.lock:
                self.assertIn([0], self.fake.heartbeats)
            self.assertEqual(first.tell(0.0625), "completed")
            r = self.fake.reports[-1]
            self.assertEqual((r.step, dict(r.values), r.attempt), (2, {"loss": 0.0625}, 1))
            self.assertEqual(self.fake.finished[0].outcome, pb.OUTCOME_COMPLETED)
            with self.assertRaises(hpo.HpoError):
                first.tell(1.0)

            second = tuner.ask(timeout=5)
            assert second is not None
            with self.assertRaises(ValueError):
                second.report(1, {"loss": float("nan")})
            self.assertEqual(second.fail("diverged"), "failed")
            self.assertEqual(self.fake.finished[1].reason, "diverged")
            self.assertEqual(tuner.held, [])

            # Both ended: the study completes, and ask says so.
            self.assertIsNone(tuner.ask(timeout=5))
        final = self.client.wait(1, poll=0.01, callback=lambda s: polled.append(s.state))
        self.assertEqual((final.state, final.end_reason), ("completed", "max_trials"))
        self.assertEqual(polled, ["completed"])

    def test_heartbeat_stop_and_close_gives_back(self) -> None:
        with self.fake.lock:
            self.fake.stop_in_heartbeat.add(0)
        tuner = self.client.ask_tell(1)
        t = tuner.ask(timeout=5)
        assert t is not None
        deadline = time.monotonic() + 5
        while not t.stop_requested and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(t.stop_requested)
        tuner.close()
        self.assertEqual(self.fake.finished[0].outcome, pb.OUTCOME_INTERRUPTED)
        with self.assertRaises(hpo.HpoError):
            tuner.ask()

    def test_incompatible_protocol(self) -> None:
        with (
            mock.patch.object(client_mod, "PROTOCOL_VERSION", 99),
            self.assertRaises(hpo.IncompatibleVersionError) as e,
        ):
            self.client.ask_tell(1)
        self.assertIn("protocol version 99", str(e.exception))
        self.assertIn("this coordinator speaks 3", str(e.exception))

    def test_wait_timeout(self) -> None:
        with self.assertRaises(TimeoutError):
            self.client.wait(1, poll=0.05, timeout=0.2)


EXTERNAL_STUDY = """
name = "sdk-ask-tell"
seed = 3

[objective]
metric = "loss"
direction = "minimize"

[search]
algorithm = "random"
max_trials = 3
max_parallel = 2

[trainer]
kind = "external"
epochs = 3

[params]
x = { type = "float", low = -2.0, high = 2.0 }
"""

WAITING_STUDY = """
name = "sdk-cancel"

[objective]
metric = "loss"
direction = "minimize"

[search]
algorithm = "random"
max_trials = 4

[trainer]
kind = "simulated"
epochs = 2

[params]
x = { type = "float", low = 0.0, high = 1.0 }
"""


@unittest.skipIf(SKIP, SKIP)
@unittest.skipUnless(
    os.environ.get("HPO_BIN"), "set HPO_BIN to an hpo binary to test against a real coordinator"
)
class RealCoordinatorTest(unittest.TestCase):
    server: subprocess.Popen[bytes]
    tmp: tempfile.TemporaryDirectory[str]
    url: str

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.TemporaryDirectory()
        port = free_port()
        cls.url = f"http://127.0.0.1:{port}"
        cmd = [os.environ["HPO_BIN"], "server", "--listen", f"127.0.0.1:{port}", "--http", "off"]
        cmd += ["--data-dir", cls.tmp.name]
        cls.server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        with hpo.Client(cls.url, timeout=2) as c:
            while True:
                try:
                    c.studies()
                    return
                except hpo.HpoError:
                    if time.monotonic() > deadline or cls.server.poll() is not None:
                        cls.tearDownClass()
                        raise
                    time.sleep(0.2)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.terminate()
        cls.server.wait(10)
        cls.tmp.cleanup()

    def test_ask_and_tell(self) -> None:
        with hpo.Client(self.url) as c:
            study = c.submit(EXTERNAL_STUDY, "ask.toml")
            with c.ask_tell(study) as tuner:
                while (t := tuner.ask(timeout=30)) is not None:
                    x = float(t.params["x"])
                    self.assertEqual(t.report(1, {"loss": 10 + x}), hpo.Decision.CONTINUE)
                    self.assertEqual(t.tell(x * x), "completed")
            final = c.wait(study, poll=0.1, timeout=30)
            self.assertEqual((final.state, final.completed), ("completed", 3))
            assert final.best is not None
            self.assertEqual(final.best.last_step, 2)
            for tr in c.trials(study, with_metrics=True):
                self.assertEqual([p.step for p in tr.metrics], [1, 2])

    def test_submit_and_cancel(self) -> None:
        with hpo.Client(self.url) as c:
            with self.assertRaises(hpo.HpoError) as e:
                c.submit("name = 1", "bad.toml")
            self.assertEqual(e.exception.code, "INVALID_ARGUMENT")
            self.assertIn("bad.toml", str(e.exception))
            study = c.submit(WAITING_STUDY, "wait.toml")
            self.assertIn(study, [s.study_id for s in c.studies()])
            self.assertTrue(c.study(study).is_running)
            self.assertEqual(c.cancel(study).state, "cancelled")
            self.assertEqual(c.wait(study, timeout=10).state, "cancelled")


if __name__ == "__main__":
    unittest.main()
