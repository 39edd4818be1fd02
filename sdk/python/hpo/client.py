"""The client API: submit, watch and cancel studies on an hpo coordinator
over gRPC, and run an ``external`` study's trials yourself (ask-and-tell).

::

    import hpo

    with hpo.Client("127.0.0.1:50051") as client:
        study = client.submit_file("examples/quickstart.toml")
        final = client.wait(study, callback=lambda s: print(s.completed, "done"))
        print(final.best)

Ask-and-tell, for a study file with ``[trainer] kind = "external"`` and
``epochs = N``::

    with client.ask_tell(study) as tuner:
        while (t := tuner.ask()) is not None:
            t.tell(objective(**t.params))
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import grpc

from ._trial import Decision, ParamValue, check_metrics
from .errors import HpoError, IncompatibleVersionError

try:
    from ._pb import hpo_pb2 as pb
    from ._pb import hpo_pb2_grpc as pb_grpc
except ImportError as _e:  # pragma: no cover - only in an unbuilt checkout
    raise ImportError(
        "hpo's gRPC stubs are not generated: install the SDK with `pip install ./sdk/python` "
        f"(they are built from proto/proto/hpo/v1/hpo.proto) ({_e})"
    ) from _e

__all__ = [
    "PROTOCOL_VERSION",
    "AskedTrial",
    "CheckpointInfo",
    "Client",
    "MetricPoint",
    "StudyInfo",
    "TrialInfo",
    "TrialLog",
    "Tuner",
]

#: The coordinator protocol version (``PROTOCOL_VERSION`` in the hpo-proto
#: crate) this SDK registers ask-and-tell clients with.
PROTOCOL_VERSION: int = 3

_log = logging.getLogger("hpo")

_CHUNK = 1 << 20
_MAX_MESSAGE = 64 << 20


# ---------- values ----------


def _enum_name(enum: Any, prefix: str, value: int) -> str:
    try:
        return str(enum.Name(value))[len(prefix) :].lower()
    except ValueError:
        return f"unknown({value})"


def _param_value(v: Any) -> ParamValue:
    kind = v.WhichOneof("kind")
    if kind == "float":
        return float(v.float)
    if kind == "int":
        return int(v.int)
    if kind == "categorical":
        return str(v.categorical)
    raise HpoError("the coordinator sent a parameter with no value")


def _params(m: Any) -> dict[str, ParamValue]:
    return {k: _param_value(v) for k, v in sorted(m.items())}


@dataclass(frozen=True)
class MetricPoint:
    """One reported step of a trial: its metrics by name."""

    attempt: int
    step: int
    values: dict[str, float]


@dataclass(frozen=True)
class TrialInfo:
    """A trial as the coordinator keeps it.

    ``state`` is one of ``"waiting"``, ``"running"``, ``"completed"``,
    ``"failed"``, ``"stopped"``, ``"cancelled"``, ``"paused"``. ``value`` is
    its objective value (None before any report); ``metrics`` is filled
    only when asked for (``Client.trials(..., with_metrics=True)``).
    """

    study_id: int
    number: int
    state: str
    params: dict[str, ParamValue]
    value: float | None
    last_step: int | None
    attempt: int
    worker: str
    reason: str
    started_at_ms: int
    ended_at_ms: int
    bracket: int
    rung: int
    budget: int
    metrics: list[MetricPoint] = field(default_factory=list)

    @classmethod
    def from_pb(cls, t: Any) -> TrialInfo:
        """Converts a ``hpo.v1.Trial`` message."""
        return cls(
            study_id=int(t.study_id),
            number=int(t.number),
            state=_enum_name(pb.TrialState, "TRIAL_STATE_", t.state),
            params=_params(t.params),
            value=float(t.value) if t.HasField("value") else None,
            last_step=int(t.last_step) if t.HasField("last_step") else None,
            attempt=int(t.attempt),
            worker=str(t.worker),
            reason=str(t.reason),
            started_at_ms=int(t.started_at_ms),
            ended_at_ms=int(t.ended_at_ms),
            bracket=int(t.bracket),
            rung=int(t.rung),
            budget=int(t.budget),
            metrics=[
                MetricPoint(int(p.attempt), int(p.step), dict(sorted(p.values.items()))) for p in t.metrics
            ],
        )


@dataclass(frozen=True)
class StudyInfo:
    """A study's summary.

    ``state`` is ``"running"``, ``"completed"`` or ``"cancelled"``;
    ``end_reason`` says why it ended (``"max_trials"``, ``"target"``, ...);
    ``best`` is its best trial so far. Times are milliseconds since the Unix
    epoch (``ended_at_ms`` is 0 while it runs).
    """

    study_id: int
    name: str
    state: str
    end_reason: str
    metric: str
    direction: str
    max_trials: int
    waiting: int
    running: int
    completed: int
    failed: int
    stopped: int
    cancelled: int
    paused: int
    best: TrialInfo | None
    created_at_ms: int
    ended_at_ms: int
    study_toml: str
    scheduler: str
    resource_used: int

    @property
    def is_running(self) -> bool:
        """True while the study runs (it may still start trials)."""
        return self.state == "running"

    @property
    def finished_trials(self) -> int:
        """Trials that have ended, whatever their outcome."""
        return self.completed + self.failed + self.stopped + self.cancelled

    @classmethod
    def from_pb(cls, s: Any) -> StudyInfo:
        """Converts a ``hpo.v1.StudySummary`` message."""
        return cls(
            study_id=int(s.study_id),
            name=str(s.name),
            state=_enum_name(pb.StudyState, "STUDY_STATE_", s.state),
            end_reason=str(s.end_reason),
            metric=str(s.metric),
            direction=str(s.direction),
            max_trials=int(s.max_trials),
            waiting=int(s.waiting),
            running=int(s.running),
            completed=int(s.completed),
            failed=int(s.failed),
            stopped=int(s.stopped),
            cancelled=int(s.cancelled),
            paused=int(s.paused),
            best=TrialInfo.from_pb(s.best) if s.HasField("best") else None,
            created_at_ms=int(s.created_at_ms),
            ended_at_ms=int(s.ended_at_ms),
            study_toml=str(s.study_toml),
            scheduler=str(s.scheduler),
            resource_used=int(s.resource_used),
        )


@dataclass(frozen=True)
class TrialLog:
    """Part of a trial's log: ``text`` runs from byte ``start`` to ``total``
    of the trial's whole log (``start`` is past the asked offset when older
    output was dropped; ``dropped`` bytes were, so far). Ask again from
    ``total`` for what follows."""

    text: str
    start: int
    total: int
    dropped: int


@dataclass(frozen=True)
class CheckpointInfo:
    """A stored checkpoint: a trial's state after ``step``, saved by
    ``attempt``, of ``size`` bytes with the given CRC-32."""

    study_id: int
    number: int
    attempt: int
    step: int
    size: int
    crc32: int

    @classmethod
    def from_pb(cls, c: Any) -> CheckpointInfo:
        """Converts a ``hpo.v1.CheckpointInfo`` message."""
        return cls(
            study_id=int(c.trial.study_id),
            number=int(c.trial.number),
            attempt=int(c.attempt),
            step=int(c.step),
            size=int(c.size),
            crc32=int(c.crc32),
        )

    def to_pb(self) -> Any:
        """The ``hpo.v1.CheckpointInfo`` message."""
        return pb.CheckpointInfo(
            trial=pb.TrialRef(study_id=self.study_id, number=self.number),
            attempt=self.attempt,
            step=self.step,
            size=self.size,
            crc32=self.crc32,
        )


# ---------- errors ----------


def _parse_url(url: str) -> tuple[str, bool]:
    u = url.strip()
    secure = False
    if u.startswith("https://"):
        u, secure = u[len("https://") :], True
    elif u.startswith("http://"):
        u = u[len("http://") :]
    elif u.startswith("grpc://"):
        u = u[len("grpc://") :]
    u = u.rstrip("/")
    if not u or "/" in u:
        raise ValueError(f"bad coordinator URL {url!r}: expected HOST:PORT or http://HOST:PORT")
    if ":" not in u.rsplit("]", 1)[-1]:
        u += ":443" if secure else ":50051"
    return u, secure


def _rpc_error(e: grpc.RpcError, url: str) -> HpoError:
    code_obj = e.code() if hasattr(e, "code") else None
    details = (e.details() if hasattr(e, "details") else None) or str(e)
    code = code_obj.name if code_obj is not None else None
    if code_obj == grpc.StatusCode.UNAVAILABLE:
        return HpoError(f"cannot reach the hpo coordinator at {url}: {details}", code)
    if code_obj == grpc.StatusCode.DEADLINE_EXCEEDED:
        return HpoError(f"the hpo coordinator at {url} did not answer in time: {details}", code)
    if code_obj == grpc.StatusCode.UNIMPLEMENTED:
        # A call the coordinator has no handler for: it is an older release.
        return IncompatibleVersionError(
            f"incompatible hpo coordinator at {url}: it does not know this call, so it is "
            f"older than this SDK (protocol {PROTOCOL_VERSION}): {details}",
            code,
        )
    return HpoError(details, code)


def _decision(value: int) -> Decision:
    if value == pb.DECISION_CONTINUE:
        return Decision.CONTINUE
    if value == pb.DECISION_STOP:
        return Decision.STOP
    if value == pb.DECISION_PAUSE:
        return Decision.PAUSE
    raise HpoError(f"the coordinator answered an unknown decision ({value})")


def _receive(stream: Iterator[Any]) -> tuple[CheckpointInfo, bytes]:
    header: CheckpointInfo | None = None
    parts: list[bytes] = []
    for chunk in stream:
        kind = chunk.WhichOneof("kind")
        if kind == "header":
            if header is not None:
                raise HpoError("checkpoint stream has two headers")
            header = CheckpointInfo.from_pb(chunk.header)
        elif kind == "data":
            if header is None:
                raise HpoError("checkpoint stream starts with data, not its header")
            parts.append(bytes(chunk.data))
    if header is None:
        raise HpoError("checkpoint stream is empty")
    data = b"".join(parts)
    if len(data) != header.size:
        raise HpoError(f"checkpoint is {len(data)} bytes, its header says {header.size}")
    crc = zlib.crc32(data) & 0xFFFFFFFF
    if crc != header.crc32:
        raise HpoError(f"checkpoint CRC-32 is {crc:08x}, its header says {header.crc32:08x}")
    return header, data


# ---------- the client ----------


class Client:
    """A connection to an hpo coordinator's gRPC endpoint.

    ``url`` is ``HOST:PORT`` or ``http://HOST:PORT`` (``https://`` uses TLS
    with the system's roots); ``timeout`` bounds each call, in seconds (None:
    no bound). Every failed call raises :class:`hpo.HpoError` with the
    coordinator's message and its gRPC status name in ``code``. Use it as a
    context manager, or call :meth:`close`.
    """

    def __init__(self, url: str = "127.0.0.1:50051", *, timeout: float | None = 30.0) -> None:
        """Makes the channel; nothing is sent until the first call."""
        target, secure = _parse_url(url)
        options = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.max_send_message_length", _MAX_MESSAGE),
        ]
        if secure:
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self.url: str = url
        self.timeout: float | None = timeout
        self._studies: Any = pb_grpc.StudyServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._workers: Any = pb_grpc.WorkerServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise _rpc_error(e, self.url) from None

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------- studies ----------

    def submit(self, toml_text: str, source_name: str = "study.toml") -> int:
        """Submits a study file's text and returns the new study's id; it
        starts at once. ``source_name`` prefixes the coordinator's error
        messages (``"study.toml: params.lr.low: ..."``)."""
        r = self._call(
            self._studies.SubmitStudy,
            pb.SubmitStudyRequest(study_toml=toml_text, source_name=source_name),
        )
        return int(r.study_id)

    def submit_file(self, path: str | os.PathLike[str]) -> int:
        """Submits the study file at ``path``; returns the new study's id."""
        p = Path(path)
        return self.submit(p.read_text(encoding="utf-8"), source_name=str(path))

    def study(self, study_id: int) -> StudyInfo:
        """The summary of one study."""
        return StudyInfo.from_pb(self._call(self._studies.GetStudy, pb.GetStudyRequest(study_id=study_id)))

    def studies(self) -> list[StudyInfo]:
        """The summaries of all studies."""
        r = self._call(self._studies.ListStudies, pb.ListStudiesRequest())
        return [StudyInfo.from_pb(s) for s in r.studies]

    def trials(self, study_id: int, with_metrics: bool = False) -> list[TrialInfo]:
        """A study's trials, by number; ``with_metrics`` adds each trial's
        full metric history."""
        r = self._call(
            self._studies.ListTrials,
            pb.ListTrialsRequest(study_id=study_id, with_metrics=with_metrics),
        )
        return [TrialInfo.from_pb(t) for t in r.trials]

    def cancel(self, study_id: int) -> StudyInfo:
        """Cancels a study: no new trials; running ones are told to stop.
        Returns its summary."""
        return StudyInfo.from_pb(
            self._call(self._studies.CancelStudy, pb.CancelStudyRequest(study_id=study_id))
        )

    def trial_log(self, study_id: int, number: int, offset: int = 0) -> TrialLog:
        """A trial's log (its program's stdout and stderr) from byte
        ``offset`` on; pass the answer's ``total`` next time to follow it."""
        r = self._call(
            self._studies.GetTrialLog,
            pb.GetTrialLogRequest(study_id=study_id, number=number, offset=offset),
        )
        return TrialLog(text=str(r.text), start=int(r.start), total=int(r.total), dropped=int(r.dropped))

    def best_model(self, study_id: int) -> tuple[CheckpointInfo, bytes]:
        """The final model of the study's best trial (a study with
        ``[schedule] keep_best = true``), in its trainer's checkpoint
        format, checked against its size and CRC-32."""
        try:
            stream = self._studies.DownloadBestModel(
                pb.DownloadBestModelRequest(study_id=study_id), timeout=self.timeout
            )
            return _receive(stream)
        except grpc.RpcError as e:
            raise _rpc_error(e, self.url) from None

    def wait(
        self,
        study_id: int,
        poll: float = 1.0,
        callback: Callable[[StudyInfo], None] | None = None,
        timeout: float | None = None,
    ) -> StudyInfo:
        """Polls the study every ``poll`` seconds until it no longer runs and
        returns its final summary. ``callback`` gets each summary polled
        (the last one included). Raises :class:`TimeoutError` after
        ``timeout`` seconds (None: wait for ever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = self.study(study_id)
            if callback is not None:
                callback(info)
            if not info.is_running:
                return info
            if deadline is not None and time.monotonic() + poll > deadline:
                raise TimeoutError(f"study {study_id} still runs after {timeout} s")
            time.sleep(poll)

    # ---------- ask-and-tell ----------

    def ask_tell(self, study_id: int, *, worker_id: str | None = None) -> Tuner:
        """Registers as an ask-and-tell client of study ``study_id`` (a study
        file with ``[trainer] kind = "external"``) and returns the
        :class:`Tuner` that asks for its trials. Raises
        :class:`hpo.IncompatibleVersionError` when the coordinator speaks
        another protocol version."""
        return Tuner(self, study_id, worker_id=worker_id)


class Tuner:
    """Runs one study's trials in this process: :meth:`ask` for a trial, train
    it, then :meth:`AskedTrial.tell` its result.

    The coordinator sees the tuner as a worker (``ask-HOST-PID``, one slot
    ``client:0``); a daemon thread heartbeats the trials it holds so their
    leases do not expire. Close it (or use it as a context manager) to stop
    the thread; trials still held are then reported as interrupted and go
    back in the queue. Made by :meth:`Client.ask_tell`.
    """

    SLOT = "client:0"

    def __init__(self, client: Client, study_id: int, *, worker_id: str | None = None) -> None:
        """Registers with the coordinator and starts the heartbeat thread."""
        self.client: Client = client
        self.study_id: int = study_id
        self.worker_id: str = worker_id or f"ask-{socket.gethostname()}-{os.getpid()}"
        self._lock = threading.Lock()
        self._held: dict[int, AskedTrial] = {}
        self._closed = threading.Event()
        interval_ms = self._register()
        self.heartbeat_interval: float = max(interval_ms, 50) / 1000.0
        self._thread = threading.Thread(
            target=self._heartbeat_loop, name=f"hpo-heartbeat-{study_id}", daemon=True
        )
        self._thread.start()

    def _register(self) -> int:
        request = pb.RegisterRequest(
            protocol_version=PROTOCOL_VERSION,
            worker_id=self.worker_id,
            hostname=socket.gethostname(),
            slots=[self.SLOT],
        )
        try:
            r = self.client._workers.Register(request, timeout=self.client.timeout)
        except grpc.RpcError as e:
            err = _rpc_error(e, self.client.url)
            if err.code == "FAILED_PRECONDITION":
                raise IncompatibleVersionError(
                    f"{err.message} (this SDK speaks protocol version {PROTOCOL_VERSION})",
                    err.code,
                ) from None
            raise err from None
        return int(r.heartbeat_interval_ms) or 1000

    def _heartbeat_loop(self) -> None:
        while not self._closed.wait(self.heartbeat_interval):
            with self._lock:
                held = list(self._held.values())
            request = pb.HeartbeatRequest(
                worker_id=self.worker_id,
                trials=[pb.TrialRef(study_id=t.study_id, number=t.number) for t in held],
            )
            try:
                r = self.client._workers.Heartbeat(request, timeout=self.client.timeout)
                if not r.known:
                    self._register()
                for ref in r.stop:
                    with self._lock:
                        t = self._held.get(int(ref.number))
                    if t is not None and int(ref.study_id) == self.study_id:
                        t._stop_requested = True
            except (grpc.RpcError, HpoError) as e:
                _log.warning("hpo heartbeat failed (will retry): %s", e)

    def ask(self, timeout: float | None = None) -> AskedTrial | None:
        """The next trial to run, waiting for one (polling, with a backoff
        up to 1 s) while the study runs; None once the study no longer runs.
        Raises :class:`TimeoutError` after ``timeout`` seconds without one
        (None: wait for ever)."""
        if self._closed.is_set():
            raise HpoError("this tuner is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.05
        while True:
            request = pb.AcquireTrialRequest(worker_id=self.worker_id, slot=self.SLOT, study_id=self.study_id)
            r = self.client._call(self.client._workers.AcquireTrial, request)
            if r.HasField("trial"):
                t = AskedTrial(self, r.trial)
                with self._lock:
                    self._held[t.number] = t
                return t
            if not self.client.study(self.study_id).is_running:
                return None
            if deadline is not None and time.monotonic() + delay > deadline:
                raise TimeoutError(f"no trial of study {self.study_id} within {timeout} s")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def study(self) -> StudyInfo:
        """The study's summary."""
        return self.client.study(self.study_id)

    @property
    def held(self) -> list[AskedTrial]:
        """The trials asked for and not yet told, failed or paused."""
        with self._lock:
            return list(self._held.values())

    def _release(self, number: int) -> None:
        with self._lock:
            self._held.pop(number, None)

    def close(self) -> None:
        """Stops the heartbeat thread; trials still held are finished as
        interrupted (they go back in the queue)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._thread.join(timeout=5)
        for t in self.held:
            try:
                t._finish(pb.OUTCOME_INTERRUPTED, "the ask-and-tell client closed")
            except HpoError as e:
                _log.warning("cannot give back trial %s: %s", t.number, e)

    def __enter__(self) -> Tuner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AskedTrial:
    """One trial handed to an ask-and-tell client: its :attr:`params`, and
    the calls that report on it. End it with :meth:`tell`, :meth:`fail` or
    :meth:`pause`."""

    def __init__(self, tuner: Tuner, assignment: Any) -> None:
        """Wraps a ``hpo.v1.TrialAssignment`` (made by :meth:`Tuner.ask`)."""
        self._tuner = tuner
        self.study_id: int = int(assignment.study_id)
        self.number: int = int(assignment.number)
        self.attempt: int = int(assignment.attempt)
        self.study_name: str = str(assignment.study_name)
        self.params: dict[str, ParamValue] = _params(assignment.params)
        self.seed: int = int(assignment.seed)
        self.metric: str = str(assignment.metric)
        self.budget: int = int(assignment.budget)
        self.max_resource: int = int(assignment.max_resource)
        self.resume: CheckpointInfo | None = (
            CheckpointInfo.from_pb(assignment.resume) if assignment.HasField("resume") else None
        )
        self.start_step: int = self.resume.step if self.resume is not None else 0
        self.last_step: int = self.start_step
        self.done: bool = False
        self._stop_requested = False

    def __repr__(self) -> str:
        return f"AskedTrial(study={self.study_id}, number={self.number}, attempt={self.attempt}, params={self.params!r})"

    def _ref(self) -> Any:
        return pb.TrialRef(study_id=self.study_id, number=self.number)

    @property
    def stop_requested(self) -> bool:
        """True once the coordinator asked (through a heartbeat) to stop this
        trial: it was cancelled, or the study ended."""
        return self._stop_requested

    def report(self, step: int, metrics: Mapping[str, Any]) -> Decision:
        """Reports the metrics of ``step`` (steps count from 1 and increase)
        and returns the coordinator's :class:`hpo.Decision`: ``CONTINUE``;
        ``STOP`` (the trial has ended: no :meth:`tell` needed); ``PAUSE``
        (a scheduler's rung: call :meth:`pause` with a checkpoint)."""
        if self.done:
            raise HpoError(f"trial {self.number} has already ended")
        values = check_metrics(metrics)
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ValueError(f"step must be an integer >= 1, got {step!r}")
        if step <= self.last_step:
            raise ValueError(f"step {step} does not come after step {self.last_step} (steps must increase)")
        r = self._tuner.client._call(
            self._tuner.client._workers.ReportMetrics,
            pb.ReportMetricsRequest(
                worker_id=self._tuner.worker_id,
                trial=self._ref(),
                attempt=self.attempt,
                step=step,
                values=values,
            ),
        )
        self.last_step = step
        decision = _decision(int(r.decision))
        if decision is Decision.STOP:
            # The coordinator has ended the trial; nothing left to finish.
            self.done = True
            self._tuner._release(self.number)
        return decision

    def _finish(self, outcome: Any, reason: str = "", paused_step: int = 0) -> str:
        r = self._tuner.client._call(
            self._tuner.client._workers.FinishTrial,
            pb.FinishTrialRequest(
                worker_id=self._tuner.worker_id,
                trial=self._ref(),
                attempt=self.attempt,
                outcome=outcome,
                reason=reason,
                paused_step=paused_step,
            ),
        )
        self.done = True
        self._tuner._release(self.number)
        return _enum_name(pb.TrialState, "TRIAL_STATE_", r.state)

    def tell(self, value: float | Mapping[str, Any], step: int | None = None) -> str:
        """Ends the trial with its result and returns its final state
        (``"completed"``, or ``"stopped"`` when a scheduler ended it first).

        ``value`` is the objective (reported as the study's :attr:`metric`)
        or a mapping of metrics holding it; it is reported at ``step``, by
        default the step after the last one reported (1 for a trial that
        reported nothing), then the trial is finished as completed."""
        if self.done:
            raise HpoError(f"trial {self.number} has already ended")
        metrics = dict(value) if isinstance(value, Mapping) else {self.metric: value}
        decision = self.report(self.last_step + 1 if step is None else step, metrics)
        if decision is Decision.STOP:
            return "stopped"
        return self._finish(pb.OUTCOME_COMPLETED)

    def fail(self, reason: str) -> str:
        """Ends the trial as failed, with ``reason``; returns its final state."""
        if self.done:
            raise HpoError(f"trial {self.number} has already ended")
        return self._finish(pb.OUTCOME_FAILED, reason=reason)

    def pause(self, checkpoint: bytes, step: int | None = None) -> str:
        """Answers a ``PAUSE``: uploads ``checkpoint`` (the trial's state
        after ``step``, by default the last step reported) and gives the
        trial back until a promotion; returns its state (``"paused"``). A
        promoted trial comes back from :meth:`Tuner.ask` with :attr:`resume`
        set: get the bytes with :meth:`load_checkpoint`."""
        if self.done:
            raise HpoError(f"trial {self.number} has already ended")
        at = self.last_step if step is None else step
        data = bytes(checkpoint)
        header = pb.CheckpointInfo(
            trial=self._ref(),
            attempt=self.attempt,
            step=at,
            size=len(data),
            crc32=zlib.crc32(data) & 0xFFFFFFFF,
        )
        chunks = [pb.CheckpointChunk(header=header, worker_id=self._tuner.worker_id)]
        chunks += [pb.CheckpointChunk(data=data[i : i + _CHUNK]) for i in range(0, len(data), _CHUNK)]
        self._tuner.client._call(self._tuner.client._workers.UploadCheckpoint, iter(chunks))
        return self._finish(pb.OUTCOME_PAUSED, paused_step=at)

    def load_checkpoint(self) -> bytes | None:
        """The checkpoint a resumed trial starts from (what :meth:`pause`
        uploaded), or None for a fresh trial."""
        if self.resume is None:
            return None
        client = self._tuner.client
        try:
            stream = client._workers.DownloadCheckpoint(
                pb.DownloadCheckpointRequest(
                    worker_id=self._tuner.worker_id,
                    checkpoint=self.resume.to_pb(),
                    attempt=self.attempt,
                ),
                timeout=client.timeout,
            )
            return _receive(stream)[1]
        except grpc.RpcError as e:
            raise _rpc_error(e, client.url) from None
