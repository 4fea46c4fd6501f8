"""dstream's errors: the CLI turns each into one line of text and an exit code.

They share one base with the host's and the providers' failures (providers.protocol.Failure).
"""

from __future__ import annotations

from providers.protocol import Failure


class DstreamError(Failure):
    """A failure the user can act on: what happened, and a hint of what to do."""

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
