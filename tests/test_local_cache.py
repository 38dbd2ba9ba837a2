"""``LOCAL_CACHE``: hits from process memory, coherent through Redis's invalidation messages.

Every test runs on the real server and the real cluster (fakeredis has no
``CLIENT TRACKING``: those ids skip, saying so). Whether an answer came from
process memory or from Redis is told by ``local_cache.stats()`` and by the
servers' ``INFO commandstats``, never by timing. Each coherence rule has a test
that fails when the rule is taken out of ``local_cache.py`` (see docs/local-cache.md).
"""

from __future__ import annotations

import select
import threading
import time
from typing import Any

import pytest
import redis
from django.test import override_settings
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit import local_cache as local_module
from drf_redis_toolkit import tracking
from drf_redis_toolkit.cache_stats import counters
from drf_redis_toolkit.caching import CacheResponseMixin, invalidate_key, invalidate_namespace
from drf_redis_toolkit.local_cache import local_cache, stats
from drf_redis_toolkit.scripts import get_script
from tests import servers
from tests.conftest import _unavailable, toolkit_settings_for

pytestmark = pytest.mark.skipif(
    not tracking.push_handlers_available(),
    reason=f"redis-py {redis.__version__} has no RESP3 invalidation push handlers (5.1+):"
    " LOCAL_CACHE is refused at start-up there (test_conf.py checks the error)",
)

factory = APIRequestFactory()
#: What the views answer: tests change it, then invalidate.
VALUE: dict[str, int] = {}
RUNS: dict[str, int] = {}


class Value(CacheResponseMixin, APIView):
    """Shared, in namespace ``?ns=`` (default ``lc``): answers ``VALUE[ns]``."""

    authentication_classes = ()
    permission_classes = ()
    cache_per_user = False

    def get_cache_namespace(self, request: Any) -> str:
        return request.query_params.get("ns", "lc")

    def get(self, request: Any) -> Response:
        ns = self.get_cache_namespace(request)
        RUNS[ns] = RUNS.get(ns, 0) + 1
        pad = "x" * int(request.query_params.get("pad", "0"))
        return Response({"ns": ns, "value": VALUE.get(ns, 0), "pad": pad})


class Short(Value):
    cache_timeout = 2


value_view = Value.as_view()
short_view = Short.as_view()


def get(path: str = "/v", view: Any = value_view) -> Any:
    response = view(factory.get(path))
    response.render() if hasattr(response, "render") else None
    return response


def body(response: Any) -> dict[str, Any]:
    import json

    return json.loads(response.content)


def tracked(backend, **extra: Any) -> dict[str, Any]:
    return {
        **backend.settings,
        "LOCAL_CACHE": True,
        "LOCAL_CACHE_HEARTBEAT": 30.0,  # no PING during a test unless it asks for one
        **extra,
    }


@pytest.fixture(params=["fake", "real", "cluster"])
def lc_backend(request: pytest.FixtureRequest):
    """The toolkit on each backend with ``LOCAL_CACHE`` on; fakeredis skips, saying why."""
    if request.param == "fake":
        pytest.skip("fakeredis has no CLIENT TRACKING: LOCAL_CACHE needs a real server")
    chosen = toolkit_settings_for(request.param, request)
    VALUE.clear()
    RUNS.clear()
    # The rules of the request path are tested with messages left unread in the socket
    # (``wait_for_push``): the background drainer would read them first. Its own tests
    # (an idle process, coherence while it runs) switch it back on.
    local_cache._idle_paused = True
    try:
        with override_settings(DRF_REDIS_TOOLKIT=tracked(chosen)):
            local_module.reset_stats()
            yield chosen
    finally:
        local_cache._idle_paused = False
    chosen.raw.close()


def node_clients(backend) -> list[redis.Redis]:
    if backend.name == "cluster":
        return [redis.Redis.from_url(node.url) for node in backend.server.nodes]
    return [redis.Redis.from_url(backend.server.url)]


def commands(clients: list[redis.Redis], only: str | None = None) -> int:
    """Commands the servers executed (those scripts ran included), ``INFO`` itself left out."""
    total = 0
    for client in clients:
        for name, entry in client.info("commandstats").items():
            command = name.removeprefix("cmdstat_")
            if command != "info" and only in (None, command):
                total += int(entry["calls"])
    return total


def served_locally(path: str = "/v", view: Any = value_view, seconds: float = 10.0) -> Any:
    """Request ``path`` until an answer comes from process memory (bounded in time).

    Tracking (re)connects at most once per heartbeat: a few requests may come first.
    """
    deadline = time.monotonic() + seconds
    while True:
        before = stats()["hits"]
        response = get(path, view)
        if stats()["hits"] > before:
            return response
        if time.monotonic() > deadline:
            raise AssertionError(f"no local hit in {seconds}s: {stats()}")
        time.sleep(0.005)


def bump_elsewhere(backend, namespace: str) -> None:
    """Invalidate ``namespace`` through another client than the toolkit's (another process's)."""
    get_script("generation_bump")(
        keys=[keyspace.generation_key(namespace)], args=[], client=backend.raw
    )


def wait_for_push(seconds: float = 5.0) -> None:
    """Until a tracking socket holds an unread message (the push is in the process).

    It looks at the sockets without reading them: a read here would move the message
    into redis-py's parser, where only ``drain()`` itself may find it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        socks = [t.connection._sock for t in local_cache._trackers]
        if select.select(socks, [], [], 0.01)[0]:
            return
    raise AssertionError("no invalidation message arrived")


# -- a hit costs no round trip --------------------------------------------------------


@pytest.mark.django_db
def test_a_local_hit_sends_no_command_to_redis(lc_backend):
    VALUE["lc"] = 1
    assert get()["X-Cache"] == "MISS"
    served_locally()
    counters.flush()
    clients = node_clients(lc_backend)
    before = commands(clients)
    for _ in range(20):
        response = get()
        assert response["X-Cache"] == "HIT" and body(response)["value"] == 1
    assert commands(clients) == before  # not one command, on any node
    assert RUNS["lc"] == 1


@pytest.mark.django_db
def test_with_local_cache_off_every_hit_is_one_script_call(lc_backend):
    with override_settings(DRF_REDIS_TOOLKIT=lc_backend.settings):
        get()
        get()
        clients = node_clients(lc_backend)
        counters.flush()
        before = commands(clients, "evalsha")
        for _ in range(5):
            assert get()["X-Cache"] == "HIT"
        assert commands(clients, "evalsha") - before == 5  # one EVALSHA each, as before LOCAL_CACHE
    assert stats()["hits"] == 0


# -- rule 1: drain before any local hit -----------------------------------------------


def invalidated_each_round(invalidate: Any, rounds: int = 5) -> None:
    """Hold a local copy, change the data and ``invalidate()``; the very next read
    (no sleep, no other request between) must be a miss with the new value."""
    get()
    for round_ in range(1, rounds + 1):
        VALUE["lc"] = round_
        served_locally()
        VALUE["lc"] = round_ * 10
        invalidate()  # acknowledged when it returns
        hits = stats()["hits"]
        response = get()
        if response["X-Cache"] != "MISS":  # say where the old answer came from
            late = any(t.connection.can_read(timeout=0.5) for t in local_cache._trackers)
            raise AssertionError(
                f"round {round_}: {response['X-Cache']}, local: {stats()['hits'] > hits}, "
                f"message arrived after the read: {late}, {stats()}"
            )
        assert body(response)["value"] == round_ * 10


@pytest.mark.django_db
def test_an_invalidation_pending_in_the_socket_is_applied_by_the_very_next_read(lc_backend):
    """Rule 1: another client's write; its message is in this process's socket, unread."""

    def bump() -> None:
        bump_elsewhere(lc_backend, "lc")
        wait_for_push()  # delivered to the process; nothing has read it

    invalidated_each_round(bump)


@pytest.mark.django_db
def test_an_entry_deleted_by_another_client_is_not_served_locally(lc_backend):
    def delete_elsewhere() -> None:
        (entry,) = lc_backend.raw.scan_iter(match="drt:c:{lc}:*")
        assert lc_backend.raw.delete(entry) == 1
        wait_for_push()

    invalidated_each_round(delete_elsewhere)


@pytest.mark.django_db
def test_this_process_reads_its_own_invalidation_at_once(lc_backend):
    """Rule 5: acknowledged means forgotten here, whenever the message arrives."""
    invalidated_each_round(lambda: invalidate_namespace("lc"))


@pytest.mark.django_db
def test_the_message_of_this_process_own_write_also_invalidates(lc_backend, monkeypatch):
    """BCAST without NOLOOP: a process is told of its own writes too (rule 5 switched off)."""
    monkeypatch.setattr(local_cache, "forget", lambda *keys: None)

    def bump() -> None:
        invalidate_namespace("lc")
        wait_for_push()

    invalidated_each_round(bump)


@pytest.mark.django_db(transaction=True)
def test_a_write_acknowledged_in_another_thread_is_seen_by_the_next_read(lc_backend):
    rounds = 20
    barrier = threading.Barrier(2, timeout=30)
    seen: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for round_ in range(1, rounds + 1):
                barrier.wait()  # the reader holds a local copy
                VALUE["lc"] = round_ * 10
                invalidate_namespace("lc")  # through this process's toolkit
                barrier.wait()  # acknowledged
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            barrier.abort()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for round_ in range(1, rounds + 1):
            VALUE["lc"] = round_
            get()
            served_locally()
            barrier.wait()
            barrier.wait()
            seen.append((round_ * 10, body(get())["value"]))
    finally:
        thread.join(30)
    assert not errors
    assert all(expected == got for expected, got in seen), seen


# -- rule 2: an invalidation overtaking a lookup is never stored -----------------------


@pytest.mark.django_db
def test_an_invalidation_between_lookup_and_store_is_not_stored(lc_backend, monkeypatch):
    VALUE["lc"] = 1
    get()
    served_locally()
    VALUE["lc"] = 2
    bump_elsewhere(lc_backend, "lc")
    assert body(get())["value"] == 2  # a miss: stored in Redis under the new generation
    real_put = local_module.Put.run

    def overtaken(step: Any) -> None:
        # The Redis lookup has answered (the entry with value 2); before it is kept
        # here, another client invalidates, and its message reaches this process.
        VALUE["lc"] = 3
        bump_elsewhere(lc_backend, "lc")
        wait_for_push()
        real_put(step)

    monkeypatch.setattr(local_module.Put, "run", overtaken)
    refused = stats()["refused"]
    assert body(get())["value"] == 2  # read before the invalidation: fine once
    monkeypatch.setattr(local_module.Put, "run", real_put)
    assert stats()["refused"] == refused + 1
    response = get()
    assert response["X-Cache"] == "MISS" and body(response)["value"] == 3


# -- rule 3: a dropped or lagging tracking connection drops everything -----------------


def _tracking_client_ids(client: redis.Redis) -> list[int]:
    return [int(c["id"]) for c in client.client_list() if "t" in c["flags"]]


def kill_tracking(backend) -> None:
    """Kill this process's tracking connection on every node, as a server-side kill would."""
    killed = 0
    for client in node_clients(backend):
        for ident in _tracking_client_ids(client):
            killed += client.client_kill_filter(_id=ident)
    assert killed == (3 if backend.name == "cluster" else 1)


@pytest.mark.django_db
def test_a_killed_tracking_connection_drops_every_copy_until_it_is_back(lc_backend):
    with override_settings(DRF_REDIS_TOOLKIT=tracked(lc_backend, LOCAL_CACHE_HEARTBEAT=0.05)):
        VALUE["lc"] = 1
        get()
        served_locally()
        kill_tracking(lc_backend)
        # While the subscription is gone, another client invalidates.
        VALUE["lc"] = 2
        bump_elsewhere(lc_backend, "lc")
        drops = stats()["drops"]
        response = get()
        assert body(response)["value"] == 2 and response["X-Cache"] == "MISS"
        assert stats()["drops"] == drops + 1
        assert local_cache.held_bytes() == 0
        served_locally()  # tracking came back (reconnected lazily)
        assert stats()["connects"] >= 2
        VALUE["lc"] = 3
        bump_elsewhere(lc_backend, "lc")
        assert body(get())["value"] == 3


@pytest.fixture
def own_server():
    if servers.redis_server_binary() is None:
        _unavailable("redis-server is not installed")
    server = servers.start_redis()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.django_db
def test_a_lagging_tracking_connection_is_dropped(own_server):
    settings = {
        "REDIS_URL": own_server.url,
        "LOCAL_CACHE": True,
        "LOCAL_CACHE_HEARTBEAT": 0.05,
        "SOCKET_TIMEOUT": 0.2,
        "CIRCUIT_BREAKER_COOLDOWN": 0.1,
    }
    VALUE["lc"] = 1
    with override_settings(DRF_REDIS_TOOLKIT=settings):
        local_module.reset_stats()
        get()
        served_locally()
        gen_key, entry_key, _ = keyspace.cache_keys("lc", "unused")
        own_server.pause()  # the link stays up; nothing comes back
        try:
            deadline = time.monotonic() + 10
            while stats()["drops"] == 0 and time.monotonic() < deadline:
                local_cache.get(gen_key, entry_key, 0)  # what a request does first
                time.sleep(0.02)
            assert stats()["drops"] == 1  # a PING unanswered past SOCKET_TIMEOUT
            assert local_cache.held_bytes() == 0
        finally:
            own_server.resume()
        VALUE["lc"] = 2
        get_script("generation_bump")(
            keys=[keyspace.generation_key("lc")], args=[], client=own_server.client()
        )
        deadline = time.monotonic() + 20
        response = get()
        while body(response)["value"] != 2 and time.monotonic() < deadline:
            response = get()  # the breaker may still skip Redis: the view answers
        assert body(response)["value"] == 2
        assert served_locally()["X-Cache"] == "HIT"


def test_without_a_fresh_heartbeat_nothing_is_served_locally(lc_backend, monkeypatch, db):
    """A link that answered no PING sent within the last heartbeat serves nothing locally."""
    VALUE["lc"] = 1
    get()
    served_locally()
    for tracker in local_cache._trackers:
        tracker.last_proof -= 30.5  # more than LOCAL_CACHE_HEARTBEAT (30 s) ago
    hits = stats()["hits"]
    assert get()["X-Cache"] == "HIT"  # from Redis, which sent a PING
    assert stats()["hits"] == hits
    served_locally()  # the PONG proves the link again


# -- memory and expiry ------------------------------------------------------------------


@pytest.mark.django_db
def test_the_copies_never_hold_more_than_the_cap(lc_backend):
    cap = 20_000
    with override_settings(DRF_REDIS_TOOLKIT=tracked(lc_backend, LOCAL_CACHE_MAX_BYTES=cap)):
        for index in range(60):
            path = f"/v?i={index}&pad=700"
            get(path)
            get(path)
            assert local_cache.held_bytes() <= cap
        assert local_cache.held_bytes() > cap // 2
        served_locally("/v?i=59&pad=700")  # the most recent is held
        hits = stats()["hits"]
        get("/v?i=0&pad=700")  # the oldest was evicted: Redis answers
        assert stats()["hits"] == hits


@pytest.mark.django_db
def test_a_copy_is_never_served_past_the_redis_expiry(lc_backend, monkeypatch):
    VALUE["lc"] = 1
    get("/v", short_view)
    served_locally("/v", short_view)
    entry_ttl = max(lc_backend.raw.pttl(k) for k in lc_backend.raw.scan_iter(match="drt:c:*"))
    assert 0 < entry_ttl <= 2000
    real = time.monotonic
    # Two seconds later (the copy's clock only: the entry still lives in Redis).
    monkeypatch.setattr(local_module.time, "monotonic", lambda: real() + 2.0)
    hits = stats()["hits"]
    response = get("/v", short_view)
    assert response["X-Cache"] in ("HIT", "MISS") and stats()["hits"] == hits


# -- cluster: one tracking connection per master -----------------------------------------


def _namespace_per_master(raw) -> dict[int, str]:
    owners: dict[int, str] = {}
    for index in range(200):
        name = f"ns{index}"
        port = raw.get_node_from_key(keyspace.generation_key(name)).port
        owners.setdefault(port, name)
    return owners


@pytest.mark.django_db
def test_cluster_tracks_every_master(lc_backend):
    if lc_backend.name != "cluster":
        pytest.skip("cluster only")
    owners = _namespace_per_master(lc_backend.raw)
    assert len(owners) == 3
    get()
    served_locally()
    assert len(local_cache._trackers) == 3
    for name in owners.values():
        VALUE[name] = 1
        get(f"/v?ns={name}")
        served_locally(f"/v?ns={name}")
    for name in owners.values():
        VALUE[name] = 2
        bump_elsewhere(lc_backend, name)
        response = get(f"/v?ns={name}")
        assert response["X-Cache"] == "MISS" and body(response)["value"] == 2, name


@pytest.mark.slow
@pytest.mark.django_db
def test_a_cluster_failover_drops_everything_and_tracking_follows(cluster_with_replicas):
    from redis.cluster import RedisCluster

    cluster = cluster_with_replicas
    settings = {
        "REDIS_URL": cluster.url,
        "CLUSTER": True,
        "LOCAL_CACHE": True,
        "LOCAL_CACHE_HEARTBEAT": 0.1,
        "SOCKET_TIMEOUT": 0.5,
        "CIRCUIT_BREAKER_COOLDOWN": 0.2,
    }
    raw = RedisCluster.from_url(cluster.url)
    try:
        with override_settings(DRF_REDIS_TOOLKIT=settings):
            local_module.reset_stats()
            VALUE["lc"] = 1
            get()
            served_locally()
            owner = raw.get_node_from_key(keyspace.generation_key("lc"))
            victim = next(n for n in cluster.nodes if n.port == owner.port)
            victim.client().execute_command("WAIT", 1, 5000)
            victim.stop()
            deadline = time.monotonic() + 60
            while stats()["drops"] == 0 and time.monotonic() < deadline:
                get()
            assert stats()["drops"] >= 1
            # The replica takes over; the toolkit follows, and tracking with it.
            connects = stats()["connects"]
            while time.monotonic() < deadline:
                if stats()["connects"] > connects and stats()["hits"] > 0:
                    try:
                        served_locally(seconds=0.5)
                        break
                    except AssertionError:
                        pass
                get()
                time.sleep(0.05)
            assert stats()["connects"] > connects
            assert len(local_cache._trackers) == 3
            ports = {t.connection.port for t in local_cache._trackers}
            assert owner.port not in ports
            served_locally()
            VALUE["lc"] = 2
            # Invalidation on the promoted master reaches this process.
            for _ in range(100):
                try:
                    bump_elsewhere(type("B", (), {"raw": raw}), "lc")
                    break
                except redis.RedisError:
                    time.sleep(0.1)
            response = get()
            assert response["X-Cache"] == "MISS" and body(response)["value"] == 2
    finally:
        raw.close()


# -- where it cannot run ---------------------------------------------------------------


@pytest.mark.django_db
def test_fakeredis_with_local_cache_serves_through_redis(caplog):
    from tests.conftest import FAKE_SETTINGS

    VALUE["lc"] = 1
    with override_settings(DRF_REDIS_TOOLKIT={**FAKE_SETTINGS, "LOCAL_CACHE": True}):
        local_module.reset_stats()
        get()
        assert get()["X-Cache"] == "HIT"
        assert stats()["hits"] == 0 and stats()["connects"] == 0
    assert "cannot be tracked" in caplog.text


def test_local_cache_settings_are_validated():
    from django.core.exceptions import ImproperlyConfigured

    from drf_redis_toolkit.conf import toolkit_settings

    for key, value in (
        ("LOCAL_CACHE", "yes"),
        ("LOCAL_CACHE_MAX_BYTES", 0),
        ("LOCAL_CACHE_HEARTBEAT", -1),
    ):
        with override_settings(DRF_REDIS_TOOLKIT={key: value}):
            with pytest.raises(ImproperlyConfigured, match=key):
                toolkit_settings.check()


# -- the async shell ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_sync_redis_on_the_loop")
def test_async_views_are_served_locally_and_see_invalidations(lc_backend, settings):
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    from tests.caching_views import CALLS

    settings.ROOT_URLCONF = "tests.async_views"
    CALLS.clear()

    def fetch() -> Any:
        return async_to_sync(AsyncClient().get)("/async/counted/")

    fetch()
    deadline = time.monotonic() + 10
    hits = stats()["hits"]
    while stats()["hits"] == hits:  # tracking connects in a worker thread, off the loop
        assert time.monotonic() < deadline, stats()
        assert fetch()["X-Cache"] == "HIT"
    assert CALLS["async-counted"] == 1
    bump_elsewhere(lc_backend, "async-counted")
    response = fetch()
    assert response["X-Cache"] == "MISS" and CALLS["async-counted"] == 2


# -- fork: per process -------------------------------------------------------------------


@pytest.mark.django_db
def test_a_forked_worker_starts_empty_and_leaves_the_parents_tracking_alone(lc_backend):
    import gc
    import os

    VALUE["lc"] = 1
    get()
    served_locally()
    pid = os.fork()
    if pid == 0:  # the child: nothing of the parent's, and dropping it must not close it
        try:
            ok = not local_cache._trackers and local_cache.held_bytes() == 0
            ok = ok and not local_cache._healthy and stats()["hits"] == 0
            gc.collect()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    served_locally()  # the parent's tracking survived the child
    VALUE["lc"] = 2
    bump_elsewhere(lc_backend, "lc")
    assert body(get())["value"] == 2
    assert stats()["drops"] == 0


@pytest.mark.django_db
def test_own_invalidations_are_forgotten_before_any_message_is_read(lc_backend):
    """Rule 5: across a network the push may come late; this process's own write does not wait."""
    VALUE["lc"] = 1
    get()
    served_locally()
    gen_key = keyspace.generation_key("lc")
    assert gen_key in local_cache._copies
    invalidate_namespace("lc")  # nothing drained since: only forget() can have acted
    assert gen_key not in local_cache._copies
    get()
    entry_key = next(k for k in local_cache._copies if k.startswith("drt:c:"))
    served_locally()
    invalidate_key("lc", repr(("http", "testserver", "/v", "", "")))
    assert entry_key not in local_cache._copies


@pytest.mark.django_db
def test_an_older_generation_never_replaces_a_newer_one(lc_backend):
    """Two lookups in flight: the one that read the newer generation stored first."""
    get()
    served_locally()  # tracking up
    gen_key, entry_key, _ = keyspace.cache_keys("race", "m")
    _, older = local_cache.get(gen_key, entry_key, 0)
    _, newer = local_cache.get(gen_key, entry_key, 0)
    assert older is not None and newer is not None
    local_cache.put(newer, gen_key, entry_key, 20, b"20 1 e\n{}\nnew", 0, -1)
    refused = stats()["refused"]
    local_cache.put(older, gen_key, entry_key, 10, b"10 1 e\n{}\nold", 0, -1)
    assert stats()["refused"] == refused + 1
    (gen, raw, _), _ = local_cache.get(gen_key, entry_key, 0)
    assert (gen, raw) == (20, b"20 1 e\n{}\nnew")


@pytest.mark.django_db
def test_an_open_breaker_drops_every_copy_until_redis_answers_again(lc_backend):
    """Its own calls failing, a process does not trust its copies (others' invalidations
    may be waiting on a link about to be found broken)."""
    from drf_redis_toolkit.connection import get_breaker

    with override_settings(
        DRF_REDIS_TOOLKIT=tracked(
            lc_backend, LOCAL_CACHE_HEARTBEAT=0.05, CIRCUIT_BREAKER_COOLDOWN=0.1
        )
    ):
        VALUE["lc"] = 1
        get()
        served_locally()
        drops = stats()["drops"]
        get_breaker().record_failure()
        assert stats()["drops"] == drops + 1 and local_cache.held_bytes() == 0
        hits = stats()["hits"]
        get()  # skipped by the breaker: the view answers, nothing local
        assert stats()["hits"] == hits
        served_locally()  # the probe closed the breaker; tracking came back


@pytest.mark.django_db
def test_tracking_that_cannot_open_never_fails_a_request(lc_backend, monkeypatch, caplog):
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(local_module.tracking, "connect", broken)
    VALUE["lc"] = 1
    assert get()["X-Cache"] == "MISS"
    assert get()["X-Cache"] == "HIT"  # from Redis
    assert stats()["hits"] == 0 and stats()["connects"] == 0
    assert "could not open tracking" in caplog.text


@pytest.mark.django_db
def test_a_master_the_cluster_client_learns_of_rebuilds_tracking(lc_backend, monkeypatch):
    """A new master sends nothing to a process not tracking it: once the client knows
    it (its slot map changed), every copy is dropped and tracking covers it."""
    if lc_backend.name != "cluster":
        pytest.skip("cluster only")
    from drf_redis_toolkit import tracking

    with override_settings(DRF_REDIS_TOOLKIT=tracked(lc_backend, LOCAL_CACHE_HEARTBEAT=0.05)):
        get()
        served_locally()
        real_masters = tracking.masters
        monkeypatch.setattr(
            tracking, "masters", lambda client: real_masters(client) | {("127.0.0.1", 1)}
        )
        deadline = time.monotonic() + 10
        while stats()["drops"] == 0:
            assert time.monotonic() < deadline, stats()
            get()
            time.sleep(0.01)
        assert local_cache.held_bytes() == 0


@pytest.mark.slow
@pytest.mark.django_db
def test_a_restarted_server_drops_every_copy_and_tracking_comes_back(own_server):
    settings = {
        "REDIS_URL": own_server.url,
        "LOCAL_CACHE": True,
        "LOCAL_CACHE_HEARTBEAT": 0.05,
        "CIRCUIT_BREAKER_COOLDOWN": 0.1,
    }
    VALUE["lc"] = 1
    with override_settings(DRF_REDIS_TOOLKIT=settings):
        local_module.reset_stats()
        get()
        served_locally()
        own_server.restart()  # empty: every entry and generation is gone
        VALUE["lc"] = 2
        response = get()
        assert body(response)["value"] == 2 and response["X-Cache"] == "MISS"
        assert stats()["drops"] == 1 and local_cache.held_bytes() == 0
        deadline = time.monotonic() + 20
        while stats()["connects"] < 2:  # the breaker closes, tracking re-opens
            get()
            assert time.monotonic() < deadline, stats()
            time.sleep(0.02)
        assert body(served_locally())["value"] == 2
