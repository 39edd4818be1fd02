"""The exceptions the SDK raises."""

from __future__ import annotations


class HpoError(Exception):
    """An error from hpo: the worker or the coordinator refused a call, or
    could not be reached.

    ``code`` is the gRPC status name (``"NOT_FOUND"``, ``"UNAVAILABLE"``, ...)
    when the error came from the coordinator, else None.
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message: str = message
        self.code: str | None = code

    def __str__(self) -> str:
        return self.message


class NotInTrialError(HpoError):
    """Raised by :meth:`hpo.Trial.from_env` in a program that an hpo worker did
    not start (``HPO_ENDPOINT`` is not set): run it standalone instead."""


class IncompatibleVersionError(HpoError):
    """The SDK and the worker or coordinator speak different protocol
    versions: install the SDK of the same hpo release."""
