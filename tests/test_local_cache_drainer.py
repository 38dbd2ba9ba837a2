"""A review of ``LOCAL_CACHE``'s background drainer (``LocalCache._drain_while_idle``).

Each test is one way the thread could die, spin, or leave a stale copy served, on the
real server and the real cluster. Each failed before the fix that follows it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from django.test import override_settings

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


def _idle_drain_applies(lc_backend: Any, round_: int, seconds: float = 10.0) -> None:  # noqa: F811
    """With no request, the drainer reads another client's invalidation and drops the copy
    (the next request then misses with the new value). Bounded in time."""
    VALUE["lc"] = round_
    served_locally()
    VALUE["lc"] = round_ * 10
    idle = stats()["idle_drains"]
    bump_elsewhere(lc_backend, "lc")
    deadline = time.monotonic() + seconds
    while stats()["idle_drains"] == idle:
        drainer = local_cache._idle_drainer
        assert drainer is not None and drainer.is_alive(), "the idle drainer is gone"
        assert time.monotonic() < deadline, stats()
        time.sleep(0.01)
    response = get()
    assert (response["X-Cache"], body(response)["value"]) == ("MISS", round_ * 10)


@pytest.mark.django_db
def test_the_idle_drainer_outlives_settings_it_cannot_read(lc_backend, caplog):  # noqa: F811
    """Settings that fail validation for a moment (a bad ``override_settings`` in a test
    run, a reload) made the drainer's own read of ``LOCAL_CACHE_HEARTBEAT`` raise outside
    its ``try``: the thread ended, and, being still named in ``_idle_drainer``, was never
    started again. The process then never drained while idle again (Redis buffered every
    key name for it, without bound). Failed on every run before the fix."""
    local_cache._idle_paused = False
    get()
    _idle_drain_applies(lc_backend, 1)
    drainer = local_cache._idle_drainer
    assert drainer is not None and drainer.is_alive()
    caplog.set_level(logging.ERROR, logger="drf_redis_toolkit")
    with override_settings(DRF_REDIS_TOOLKIT=tracked(lc_backend, LOCAL_CACHE_HEARTBEAT=-1)):
        # reset() closed the tracking sockets: the drainer wakes and reads the settings.
        deadline = time.monotonic() + 10
        while drainer.is_alive() and "idle drain failed" not in caplog.text:
            assert time.monotonic() < deadline, "the drainer never looked at the settings"
            time.sleep(0.01)
        assert drainer.is_alive(), "an unreadable setting ended the idle drainer"
    served_locally()  # valid again: tracking re-opens
    _idle_drain_applies(lc_backend, 2)


@pytest.mark.django_db
def test_the_idle_drainer_runs_with_a_heartbeat_longer_than_poll_accepts(lc_backend):  # noqa: F811
    """``LOCAL_CACHE_HEARTBEAT`` accepts any positive number, ``float("inf")`` too (never
    PING). The drainer waited half of it in ``poll()``, whose timeout is a C int of
    milliseconds: ``OverflowError``, uncaught, and the thread ended at its first wait
    (an idle process again made Redis buffer without bound). Failed on every run before
    the fix."""
    with override_settings(
        DRF_REDIS_TOOLKIT=tracked(lc_backend, LOCAL_CACHE_HEARTBEAT=float("inf"))
    ):
        local_cache._idle_paused = False
        get()
        for round_ in (1, 2):
            _idle_drain_applies(lc_backend, round_)
