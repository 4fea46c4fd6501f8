"""The one error hierarchy. The CLI turns these into a line of text and an exit code."""

from __future__ import annotations


class DstreamError(Exception):
    """A failure the user can act on: what happened, and a hint of what to do."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message + (f" ({self.hint})" if self.hint else "")


class UsageError(DstreamError):
    """The command line or the task file is wrong."""


class TaskFileError(UsageError):
    """A task file cannot be read, parsed or validated."""


class StateError(DstreamError):
    """State is unreadable, stale or would be overwritten unsafely."""


class StalePlanError(StateError):
    """A saved plan no longer matches the state it was made against."""


class LockedError(DstreamError):
    """A lock is held by someone else (state lock or run lock)."""


class ProviderError(DstreamError):
    """A provider failed, crashed or broke the protocol."""
