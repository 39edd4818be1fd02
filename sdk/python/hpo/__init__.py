"""hpo's Python SDK.

Two halves:

* the in-trial API, for a training program an hpo worker starts (a study
  whose trainer is ``kind = "command"``): :class:`Trial` (or :func:`trial`)
  reads the trial's parameters and budget, :meth:`Trial.report` reports each
  step and returns a :class:`Decision`, and the checkpoint helpers save
  what a paused trial resumes from. It needs only the standard library.
* the client API, over the coordinator's gRPC service: :class:`Client`
  submits, watches and cancels studies, and :meth:`Client.ask_tell` runs an
  ``external`` study's trials in this process (:class:`Tuner`,
  :class:`AskedTrial`). It is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._trial import TRIAL_PROTOCOL_VERSION, Decision, ParamValue, Trial, trial
from ._version import __version__
from .errors import HpoError, IncompatibleVersionError, NotInTrialError

if TYPE_CHECKING:  # pragma: no cover
    from .client import (
        PROTOCOL_VERSION,
        AskedTrial,
        CheckpointInfo,
        Client,
        MetricPoint,
        StudyInfo,
        TrialInfo,
        TrialLog,
        Tuner,
    )

__all__ = [
    "PROTOCOL_VERSION",
    "TRIAL_PROTOCOL_VERSION",
    "AskedTrial",
    "CheckpointInfo",
    "Client",
    "Decision",
    "HpoError",
    "IncompatibleVersionError",
    "MetricPoint",
    "NotInTrialError",
    "ParamValue",
    "StudyInfo",
    "Trial",
    "TrialInfo",
    "TrialLog",
    "Tuner",
    "__version__",
    "trial",
]

_CLIENT_NAMES = {
    "Client",
    "StudyInfo",
    "TrialInfo",
    "MetricPoint",
    "TrialLog",
    "CheckpointInfo",
    "Tuner",
    "AskedTrial",
    "PROTOCOL_VERSION",
}


def __getattr__(name: str) -> Any:
    """Imports the client API (and grpc) on first use, so that a training
    program using only :class:`Trial` does not pay for it."""
    if name in _CLIENT_NAMES:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'hpo' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names, the lazily imported ones included."""
    return sorted(set(__all__) | {"errors"})
