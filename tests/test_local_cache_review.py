"""An outside review of ``LOCAL_CACHE``: each test is one way a stale answer, a failed
request or unbounded memory was looked for, on the real server and the real cluster.

Tests that found a defect fail without the fix that follows them (or are marked
``xfail(strict=True)`` with the mechanism, where the fix is not small).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import override_settings

from drf_redis_toolkit import tracking
from drf_redis_toolkit.conf import toolkit_settings
from drf_redis_toolkit.local_cache import local_cache, stats
from tests.test_local_cache import (
    VALUE,
    body,
    bump_elsewhere,
    get,
    lc_backend,  # noqa: F401 - the fixture
    pytestmark,  # noqa: F401 - the same skip on redis-py 5.0
    served_locally,
    tracked,
)


def fresh_within(path: str, value: int, seconds: float = 5.0) -> None:
    """Request until the answer shows ``value`` (bounded): a message that reached the
    process makes the very next request fresh, so only a lost subscription fails this."""
    deadline = time.monotonic() + seconds
    while True:
        seen = body(get(path))["value"]
        if seen == value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"still {seen} (not {value}) after {seconds}s: {stats()}")
        time.sleep(0.01)


@pytest.mark.django_db
def test_settings_changed_while_tracking_opens_never_keep_the_old_subscription(
    lc_backend, monkeypatch  # noqa: F811
):
    """``KEY_PREFIX`` changes (``reset()``) while a thread is inside ``tracking.connect()``.

    Before the fix, ``_connect()`` installed the connections it had just opened,
    subscribed to the *old* prefix, and marked tracking healthy: every entry stored
    under the new prefix was then served locally with no message ever able to drop it.
    """
    prefix = toolkit_settings.KEY_PREFIX
    changed = override_settings(DRF_REDIS_TOOLKIT=tracked(lc_backend, KEY_PREFIX=prefix + "x"))
    real_connect = tracking.connect

    def connect_then_settings_change(*args: Any, **kwargs: Any) -> Any:
        trackers = real_connect(*args, **kwargs)  # subscribed to the old prefix
        monkeypatch.setattr(tracking, "connect", real_connect)
        changed.enable()  # another thread's override_settings: local_cache.reset()
        return trackers

    monkeypatch.setattr(tracking, "connect", connect_then_settings_change)
    try:
        VALUE["lc"] = 1
        get()  # opens tracking; the settings change meanwhile
        assert toolkit_settings.KEY_PREFIX == prefix + "x"
        served_locally()
        VALUE["lc"] = 2
        bump_elsewhere(lc_backend, "lc")  # under the new prefix
        fresh_within("/v", 2)
    finally:
        changed.disable()
