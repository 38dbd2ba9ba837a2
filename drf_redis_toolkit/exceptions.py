"""The toolkit's exceptions: callers catch these, never redis-py's."""

from __future__ import annotations


class ToolkitError(Exception):
    """Base class of every exception the toolkit raises on purpose."""


class RedisUnavailable(ToolkitError):
    """Redis could not be reached, timed out, or the circuit breaker is open.

    Raised ``from`` the underlying redis-py error (when there is one), so the
    cause stays visible in tracebacks.
    """
