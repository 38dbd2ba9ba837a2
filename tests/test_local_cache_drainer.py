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

from drf_redis_toolkit import local_cache as local_module
from drf_redis_toolkit.local_cache import REOPEN_WAIT_MAX, LocalCache, local_cache, stats
from tests.test_local_cache import (
    VALUE,
    body,
    bump_elsewhere,
    get,
    kill_tracking,
    lc_backend,  # noqa: F401 - the fixture
    own_server,  # noqa: F401 - the fixture
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


def _listener_fails_once(monkeypatch: Any, error: BaseException) -> tuple[list[bool], list[bool]]:
    """``(armed, fired)``: once ``armed`` (``append(True)``), the next message the
    listener is handed raises ``error`` instead of being applied (once), and ``fired``
    says so. The listener is bound when tracking opens: set this before the first request."""
    armed: list[bool] = []
    fired: list[bool] = []
    real = LocalCache._on_invalidate

    def once(self: LocalCache, keys: list[bytes] | None) -> None:
        if armed and not fired:
            fired.append(True)
            raise error
        real(self, keys)

    monkeypatch.setattr(LocalCache, "_on_invalidate", once)
    return armed, fired


def _fresh_after_each_bump(lc_backend: Any, rounds: tuple[int, ...]) -> None:  # noqa: F811
    """Tracking is subscribed again: another client's bumps reach this process."""
    served_locally()
    for round_ in rounds:
        VALUE["lc"] = round_
        bump_elsewhere(lc_backend, "lc")
        deadline = time.monotonic() + 10
        while body(get())["value"] != round_:
            assert time.monotonic() < deadline, f"never saw {round_}: {stats()}"
            time.sleep(0.01)


@pytest.mark.django_db
def test_a_message_the_listener_fails_to_apply_drops_every_copy(
    lc_backend,  # noqa: F811
    monkeypatch,
    caplog,
):
    """redis-py calls the invalidation handler inside ``read_response()`` and, should it
    raise, logs the error and carries on (``redis._parsers.base``): the message was
    simply lost, the copy it named stayed, and the drainer (or a request) never knew.
    The old copy was then served until its key happened to change again. Now the
    failure is kept on the tracker and the drain that read it drops every copy (rule 3:
    a message not applied is a message lost). Failed on every run before the fix."""
    armed, fired = _listener_fails_once(monkeypatch, RuntimeError("a listener surprise"))
    local_cache._idle_paused = False  # the drainer reads the message
    caplog.set_level(logging.CRITICAL, logger="redis")
    with override_settings(DRF_REDIS_TOOLKIT=tracked(lc_backend, LOCAL_CACHE_HEARTBEAT=0.2)):
        drops = _held_then_bumped(lc_backend, armed)
        deadline = time.monotonic() + 10
        while not fired:  # the drainer read the message, and the listener raised
            assert time.monotonic() < deadline, stats()
            time.sleep(0.01)
        response = get()
        assert (response["X-Cache"], body(response)["value"]) == ("MISS", 2)
        assert stats()["drops"] == drops + 1
        _fresh_after_each_bump(lc_backend, (3, 4))


def _held_then_bumped(lc_backend: Any, armed: list[bool]) -> int:  # noqa: F811
    """Value 1 held locally; the listener armed; value 2 bumped by another client.
    Returns the drops counted before the bump."""
    VALUE["lc"] = 1
    get()
    served_locally()
    armed.append(True)
    drops = stats()["drops"]
    VALUE["lc"] = 2
    bump_elsewhere(lc_backend, "lc")
    return drops


class _Interrupted(BaseException):
    """What a request can be interrupted by anywhere: a green thread's timeout
    (``gevent.Timeout``), ``SystemExit``, ``KeyboardInterrupt``."""


@pytest.mark.django_db
def test_a_drain_interrupted_mid_read_never_leaves_an_untracked_connection(
    lc_backend,  # noqa: F811
    monkeypatch,
):
    """A ``BaseException`` raised while redis-py reads (here from inside the listener,
    as a green thread's timeout can be) makes it close the connection before the
    exception goes up; tracking stayed marked healthy. The next drain then called
    ``can_read()``, which *reconnects* a closed connection: plain RESP3, without
    ``CLIENT TRACKING``. It answered every ``PING`` (the heartbeat stayed proven) and
    never sent a message again: the copies were served locally forever, whatever was
    written. Failed on every run before the fix (the old value served)."""
    armed, fired = _listener_fails_once(monkeypatch, _Interrupted())
    with override_settings(DRF_REDIS_TOOLKIT=tracked(lc_backend, LOCAL_CACHE_HEARTBEAT=0.2)):
        _held_then_bumped(lc_backend, armed)
        with pytest.raises(_Interrupted):  # the request path's drain (the drainer is paused)
            for _ in range(500):  # bounded: the message reaches the socket within moments
                get()
                time.sleep(0.01)
        assert fired
        response = get()
        assert (response["X-Cache"], body(response)["value"]) == ("MISS", 2)
        _fresh_after_each_bump(lc_backend, (3, 4))


@pytest.mark.slow
@pytest.mark.django_db
def test_a_frozen_redis_costs_an_idle_process_one_timeout_not_two(own_server, monkeypatch):  # noqa: F811
    """docs/reliability.md: a request waits at most ``SOCKET_TIMEOUT`` for Redis. Before
    the drainer, an idle process whose Redis froze (SIGSTOP) kept its tracking marked
    up until a request came: that request's lookup timed out once and the breaker
    opened. The drainer itself dropped tracking once its ``PING`` went unanswered, so the
    next request first re-opened tracking (a connect to the frozen server, waiting
    ``SOCKET_TIMEOUT`` for ``HELLO``) and then timed out on its lookup: two timeouts.
    Failed on every run before the fix (one tracking connect, timed out, in the request)."""
    from drf_redis_toolkit import connection
    from drf_redis_toolkit import local_cache as local_module

    settings = {
        "REDIS_URL": own_server.url,
        "LOCAL_CACHE": True,
        "LOCAL_CACHE_HEARTBEAT": 0.1,
        "SOCKET_TIMEOUT": 0.3,
        "CIRCUIT_BREAKER_COOLDOWN": 30.0,
    }
    attempts: list[BaseException | None] = []
    real_connect = local_module.tracking.connect

    def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            trackers = real_connect(*args, **kwargs)
        except BaseException as exc:
            attempts.append(exc)
            raise
        attempts.append(None)
        return trackers

    monkeypatch.setattr(local_module.tracking, "connect", counted)
    local_cache._idle_paused = False
    VALUE["lc"] = 1
    with override_settings(DRF_REDIS_TOOLKIT=settings):
        local_module.reset_stats()
        connection.reset_stats()
        get()
        served_locally()
        assert attempts == [None]
        own_server.pause()
        try:
            # Idle now. Wait (bounded) for the drainer's PING to be SOCKET_TIMEOUT old,
            # then for two more rounds of the drainer (the second began after that), or,
            # before the fix, for its drop and the moment a request may re-open tracking.
            deadline = time.monotonic() + 10
            while True:
                sent = [t.ping_sent for t in local_cache._trackers]
                if sent and sent[0] is not None and time.monotonic() > sent[0] + 0.3:
                    break
                assert stats()["drops"] == 0 and time.monotonic() < deadline, stats()
                time.sleep(0.01)
            rounds = stats()["idle_drains"]
            while stats()["idle_drains"] < rounds + 2:
                if stats()["drops"] and local_cache.needs_connect():
                    break
                assert time.monotonic() < deadline, stats()
                time.sleep(0.01)
            response = get()  # during the freeze: one lookup, which times out
            assert response["X-Cache"] == "MISS"
            assert connection.stats()["timeouts"] == 1
            assert [a for a in attempts[1:] if a is not None] == [], attempts
            assert stats()["drops"] == 1  # by the request's own drain (rule 3)
        finally:
            own_server.resume()


@pytest.mark.django_db
def test_a_drainer_ended_by_a_base_exception_is_replaced_when_tracking_reopens(
    lc_backend,  # noqa: F811
    monkeypatch,
):
    """A ``BaseException`` is not caught by the drainer (nor should it be): it ends the
    thread. ``_start_idle_drainer`` only started one while none was named, so the dead
    thread stayed named and none was started again. Now the drain that finds the
    connection redis-py closed drops tracking, and re-opening it starts a new drainer."""
    armed, fired = _listener_fails_once(monkeypatch, _Interrupted())
    monkeypatch.setattr("threading.excepthook", lambda args: None)  # the thread's end is expected
    local_cache._idle_paused = False  # the drainer reads the message, and ends
    with override_settings(DRF_REDIS_TOOLKIT=tracked(lc_backend, LOCAL_CACHE_HEARTBEAT=0.2)):
        VALUE["lc"] = 1
        get()
        served_locally()
        first = local_cache._idle_drainer
        assert first is not None and first.is_alive()
        armed.append(True)
        bump_elsewhere(lc_backend, "lc")
        first.join(10)
        assert fired and not first.is_alive()
        served_locally()  # the next request dropped tracking; a later one re-opened it
        second = local_cache._idle_drainer
        assert second is not None and second is not first and second.is_alive()
        _idle_drain_applies(lc_backend, 2)


@pytest.mark.django_db
def test_an_infinite_heartbeat_still_reopens_tracking_after_a_drop(lc_backend, monkeypatch):  # noqa: F811
    """``LOCAL_CACHE_HEARTBEAT = inf`` turns the PING off. It also set the wait before
    tracking is re-opened (``now + heartbeat``): after one killed connection the process
    never served locally again, silently. The wait is now capped (``REOPEN_WAIT_MAX``);
    the clock is moved past it here rather than waited for. Failed before the fix."""
    with override_settings(
        DRF_REDIS_TOOLKIT=tracked(lc_backend, LOCAL_CACHE_HEARTBEAT=float("inf"))
    ):
        VALUE["lc"] = 1
        get()
        served_locally()
        kill_tracking(lc_backend)
        VALUE["lc"] = 2
        bump_elsewhere(lc_backend, "lc")
        drops, connects = stats()["drops"], stats()["connects"]
        response = get()
        assert (response["X-Cache"], body(response)["value"]) == ("MISS", 2)
        assert stats()["drops"] == drops + 1
        get()  # within the wait: Redis answers, tracking is not re-opened yet
        assert stats()["connects"] == connects
        real = time.monotonic
        later = REOPEN_WAIT_MAX + 1.0
        monkeypatch.setattr(local_module.time, "monotonic", lambda: real() + later)
        served_locally()  # re-opened, and copies held again
        assert stats()["connects"] == connects + 1
        VALUE["lc"] = 3
        bump_elsewhere(lc_backend, "lc")
        assert body(get())["value"] == 3
