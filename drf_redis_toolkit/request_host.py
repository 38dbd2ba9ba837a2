"""The request's host for a cache key, validated once per host rather than once per request.

Django's ``HttpRequest.get_host()`` checks the host against ``ALLOWED_HOSTS`` on
every call; the cache key holds the host (DRF writes absolute URLs into bodies), so
every hit paid for that check, a tenth of a local hit's own work. A valid host
comes back unchanged (``get_host()`` returns the raw host it validated), and a
host that passed once passes again until a setting it depends on changes, so the
hosts that passed are remembered (a bounded set) and forgotten when one of those
settings changes (``override_settings`` sends ``setting_changed``; an assignment
to ``django.conf.settings`` at run time sends nothing, so a host it removes from
``ALLOWED_HOSTS`` stays accepted until ``forget_hosts()``).

A host that does not pass is never remembered: ``get_host()`` runs again and
raises ``DisallowedHost``, as it would without the cache. A request class that
overrides ``get_host`` (or an instance given its own) is always asked.
"""

from __future__ import annotations

from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest

#: The settings ``get_host()``'s answer depends on.
HOST_SETTINGS = frozenset(
    {"ALLOWED_HOSTS", "DEBUG", "USE_X_FORWARDED_HOST", "USE_X_FORWARDED_PORT"}
)
#: At most this many hosts are remembered; the set starts afresh when full (a client
#: sending many different valid hosts, under a wildcard ``ALLOWED_HOSTS``, costs the
#: check again, never memory).
MAX_HOSTS = 256

_passed: set[str] = set()


def validated_host(request: HttpRequest) -> str:
    """``request.get_host()``: the same answer, the same ``DisallowedHost``, cheaper."""
    if type(request).get_host is not HttpRequest.get_host or "get_host" in vars(request):
        return request.get_host()
    raw = request._get_raw_host()
    if raw in _passed:
        return raw
    host = request.get_host()  # raises DisallowedHost for a host that does not pass
    if host == raw:
        if len(_passed) >= MAX_HOSTS:
            _passed.clear()
        _passed.add(raw)
    return host


def forget_hosts() -> None:
    """Check every host again from the next request on."""
    _passed.clear()


@receiver(setting_changed, dispatch_uid="drf_redis_toolkit.request_host.forget")
def _forget_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting in HOST_SETTINGS:
        forget_hosts()
