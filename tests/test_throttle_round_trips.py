"""One round trip per request, whatever the number of the toolkit's throttles on a view.

Counted on the real server and on every node of the real cluster: script calls
with ``INFO commandstats`` deltas (what the servers executed), round trips by
counting the packed writes redis-py's connections send (one per command or per
pipeline). Nothing is mocked. A view with anon + user + scoped throttles (log
and counter mixed) costs one ``EVALSHA`` in one round trip whether it admits or
refuses: the take-back of DRF #6491 happens inside that script.
"""

from __future__ import annotations

import pytest
import redis
from django.test import override_settings
from redis.connection import AbstractConnection
from redis.crc import key_slot
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit import ratelimit, scripts
from drf_redis_toolkit.connection import get_client
from drf_redis_toolkit.rates import parse_rate
from drf_redis_toolkit.throttling import (
    AnonSlidingWindowThrottle,
    ScopedSlidingWindowCounterThrottle,
    SlidingWindowThrottle,
    UserSlidingWindowThrottle,
)
from tests.conftest import toolkit_settings_for

factory = APIRequestFactory()
CLIENT = "198.51.100.7"


class Anon(AnonSlidingWindowThrottle):
    scope = "rt_anon"
    rate = "5/min"


class User(UserSlidingWindowThrottle):
    scope = "rt_user"
    rate = "3/min"


class Scoped(ScopedSlidingWindowCounterThrottle):
    THROTTLE_RATES = {"rt_scoped": "10/min"}


class ThreeThrottlesView(APIView):
    throttle_classes = (Anon, User, Scoped)
    throttle_scope = "rt_scoped"
    authentication_classes = ()
    permission_classes = ()

    def get(self, request):
        return Response({"ok": True})


def node_clients(backend):
    if backend.name == "cluster":
        return [redis.Redis.from_url(node.url) for node in backend.server.nodes]
    return [redis.Redis.from_url(backend.server.url)]


def commands(clients) -> dict[str, int]:
    """Calls per command, summed over ``clients``' servers (``INFO`` itself left out)."""
    totals: dict[str, int] = {}
    for client in clients:
        for name, stats in client.info("commandstats").items():
            command = name.removeprefix("cmdstat_")
            if command not in ("info",):
                totals[command] = totals.get(command, 0) + int(stats["calls"])
    return totals


#: What the throttle scripts call inside the server (commandstats counts those too).
IN_SCRIPTS = {
    "time", "zremrangebyscore", "zcard", "zcount", "zrange", "zadd", "pexpire",
    "hmget", "hincrby", "hkeys", "hdel", "zrem",
}  # fmt: skip


def changes(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What clients sent: the change, without the commands run inside scripts."""
    return {k: v for k, v in changes(before, after).items() if k not in IN_SCRIPTS}


@pytest.fixture
def counted(backend):
    if not backend.is_real:
        pytest.skip("counts what a real server executed (INFO commandstats)")
    clients = node_clients(backend)
    yield clients
    for client in clients:
        client.close()


@pytest.fixture
def round_trips(monkeypatch):
    """Counts the writes every redis-py connection sends (one per command or pipeline)."""
    sent = [0]
    original = AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sent[0] += 1
        return original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return sent


def trips(sent, call):
    before = sent[0]
    result = call()
    return result, sent[0] - before


def request_anonymous():
    return factory.get("/", REMOTE_ADDR=CLIENT)


@pytest.mark.parametrize(
    "order", [(Anon, User, Scoped), (Scoped, Anon, User)], ids=["refuser-between", "refuser-last"]
)
def test_three_throttles_cost_one_script_call_on_admit_and_on_refusal(
    backend, counted, round_trips, order
):
    """User (3/min) refuses the 4th: the log and counter before it are taken back in the script."""

    class View(ThreeThrottlesView):
        throttle_classes = order

    view = View.as_view()
    view(request_anonymous())  # loads the scripts (SCRIPT LOAD after a NOSCRIPT)
    for raw in counted:
        try:
            raw.flushall()
        except redis.ResponseError:
            pass  # a replica
    statuses, calls, sent = [], [], []
    for _ in range(5):
        before = commands(counted)
        response, trip_count = trips(round_trips, lambda: view(request_anonymous()))
        statuses.append(response.status_code)
        calls.append(delta(before, commands(counted)))
        sent.append(trip_count)
    assert statuses == [200, 200, 200, 429, 429]
    assert calls == [{"evalsha": 1}] * 5
    assert sent == [1] * 5
    # The refusals left nothing counted in the other throttles' keys.
    ident = f"ip:{CLIENT}"
    assert backend.raw.zcard(keyspace.throttle_key(ratelimit.LOG, "rt_anon", ident)) == 3
    scoped = backend.raw.hgetall(keyspace.throttle_key(ratelimit.COUNTER, "rt_scoped", ident))
    assert sum(int(v) for v in scoped.values()) == 3


made: list[SlidingWindowThrottle] = []


class Kept:
    """Keeps every throttle made, so a test can ask each class afterwards."""

    def __init__(self):
        super().__init__()
        made.append(self)


class KeptAnon(Kept, Anon):
    pass


class KeptUser(Kept, User):
    pass


class KeptScoped(Kept, Scoped):
    pass


def test_wait_and_decision_per_class_after_one_call(backend, counted, round_trips):
    """Each class still answers ``wait()`` and reports its own limit, from the one call."""

    class View(ThreeThrottlesView):
        throttle_classes = (KeptAnon, KeptUser, KeptScoped)

    view = View.as_view()
    for _ in range(3):
        assert view(request_anonymous()).status_code == 200
    made.clear()
    before = commands(counted)
    response, sent = trips(round_trips, lambda: view(request_anonymous()))
    assert delta(before, commands(counted)) == {"evalsha": 1}
    assert sent == 1
    assert response.status_code == 429
    anon, user, scoped = made[:3]  # DRF's own (the look-ahead made three more)
    assert 0 < user.wait() <= 60
    assert int(response["Retry-After"]) == pytest.approx(user.wait(), abs=1)
    assert anon.wait() is None and scoped.wait() is None
    remaining = [t.decision.most_restrictive().remaining for t in (anon, user, scoped)]
    assert remaining == [2, 0, 7]  # what is left, nothing of this refused request counted


class DrfStrict(UserRateThrottle):
    rate = "1/min"

    def get_cache_key(self, request, view):
        return "drf-strict-round-trips"


def test_a_drf_throttle_refusal_still_takes_the_round_back(backend, counted):
    from django.core.cache import cache

    cache.delete("drf-strict-round-trips")

    class Mixed(ThreeThrottlesView):
        throttle_classes = (Anon, DrfStrict, User, Scoped)

    view = Mixed.as_view()
    assert view(request_anonymous()).status_code == 200
    assert view(request_anonymous()).status_code == 429
    ident = f"ip:{CLIENT}"
    assert backend.raw.zcard(keyspace.throttle_key(ratelimit.LOG, "rt_anon", ident)) == 1
    assert backend.raw.zcard(keyspace.throttle_key(ratelimit.LOG, "rt_user", ident)) == 1
    cache.delete("drf-strict-round-trips")


def two_slot_idents() -> tuple[str, str]:
    """Two identities whose throttle keys fall in different cluster slots."""
    first = "slot-a"
    key = keyspace.throttle_key(ratelimit.LOG, "rt_x", first)
    for i in range(100):
        other = f"slot-b{i}"
        if key_slot(keyspace.throttle_key(ratelimit.LOG, "rt_y", other).encode()) != key_slot(
            key.encode()
        ):
            return first, other
    raise AssertionError("no second slot found")


def test_keys_of_other_identities_take_one_call_per_slot(backend, counted, round_trips):
    """Different identities (different slots on a cluster): one call per slot.

    On one server it is one call. On a cluster it is one call per slot, pipelined
    per node; when one slot refuses after another recorded, the round takes the
    other's record back (one more pipelined round trip), so nothing stays counted.
    """
    first, other = two_slot_idents()

    class X(SlidingWindowThrottle):
        scope = "rt_x"
        rate = "5/min"

        def get_cache_key(self, request, view):
            return first

    class Y(SlidingWindowThrottle):
        scope = "rt_y"
        rate = "2/min"

        def get_cache_key(self, request, view):
            return other

    class View(ThreeThrottlesView):
        throttle_classes = (X, Y)

    view = View.as_view()
    view(request_anonymous())
    for raw in counted:
        try:
            raw.flushall()
        except redis.ResponseError:
            pass
    if backend.name == "real":
        expected = [({"evalsha": 1}, 1)] * 3
    else:
        keys = [
            keyspace.throttle_key(ratelimit.LOG, "rt_x", first),
            keyspace.throttle_key(ratelimit.LOG, "rt_y", other),
        ]
        nodes = len({backend.raw.get_node_from_key(key).name for key in keys})
        admit = ({"evalsha": 2}, nodes)
        expected = [admit, admit, ({"evalsha": 2}, nodes + 1)]
    results = []
    for _ in range(3):
        before = commands(counted)
        _, sent = trips(round_trips, lambda: view(request_anonymous()))
        results.append((delta(before, commands(counted)), sent))
    assert results == expected
    assert backend.raw.zcard(keyspace.throttle_key(ratelimit.LOG, "rt_x", first)) == 2


class Costly(UserSlidingWindowThrottle):
    scope = "rt_costly"
    rate = "10/min"

    def get_cost(self, request, view):
        return 2


def test_one_round_trip_for_four_throttles_on_every_backend(backend, round_trips):
    """The look-ahead, counted on fakeredis too: anon, user, scoped and a cost-2 throttle.

    Every request, admitted or refused (User allows 3 a minute), is one round trip,
    and each key ends up holding exactly its own throttle's records: nothing asked
    ahead under another name, scope or cost.
    """

    class View(ThreeThrottlesView):
        throttle_classes = (Anon, User, Scoped, Costly)

    view = View.as_view()
    first = view(request_anonymous())  # the scripts are loaded now
    assert first.status_code == 200
    statuses, sent = [], []
    for _ in range(4):
        response, trips_made = trips(round_trips, lambda: view(request_anonymous()))
        statuses.append(response.status_code)
        sent.append(trips_made)
    assert statuses == [200, 200, 429, 429]
    assert sent == [1, 1, 1, 1]
    ident = f"ip:{CLIENT}"
    log_keys = {
        keyspace.throttle_key(ratelimit.LOG, scope, ident): records
        for scope, records in (("rt_anon", 3), ("rt_user", 3), ("rt_costly", 6))
    }
    counter = keyspace.throttle_key(ratelimit.COUNTER, "rt_scoped", ident)
    stored = {key.decode() for key in backend.raw.scan_iter(match="drt:*")}
    assert stored == {*log_keys, counter}
    assert {key: backend.raw.zcard(key) for key in log_keys} == log_keys
    assert sum(int(v) for v in backend.raw.hgetall(counter).values()) == 3


def test_a_throttle_listed_twice_counts_twice(backend):
    """The same key twice in one round: the second sees the first's record (as before)."""

    class View(ThreeThrottlesView):
        throttle_classes = (User, User)

    view = View.as_view()
    statuses = [view(request_anonymous()).status_code for _ in range(3)]
    assert statuses == [200, 429, 429]
    ident = f"ip:{CLIENT}"
    assert backend.raw.zcard(keyspace.throttle_key(ratelimit.LOG, "rt_user", ident)) == 2


class Unscoped(ScopedSlidingWindowCounterThrottle):
    """Scoped by the view's ``other_scope``, which the views here do not set: not limited."""

    scope_attr = "other_scope"


class DrfLoose(UserRateThrottle):
    rate = "100/min"

    def get_cache_key(self, request, view):
        return "drf-loose-round-trips"


def log_count(backend, scope: str) -> int:
    return backend.raw.zcard(keyspace.throttle_key(ratelimit.LOG, scope, f"ip:{CLIENT}"))


class OwnCall(UserSlidingWindowThrottle):
    """Overrides ``allow_request``: DRF may not call the base's, so it decides in its own call."""

    scope = "rt_own_call"
    rate = "100/min"

    def allow_request(self, request, view):
        return super().allow_request(request, view)


@pytest.mark.parametrize("between", ["drf", "unlimited", "own-call", "listed-twice"])
def test_what_stands_between_the_toolkit_throttles_of_a_round(backend, round_trips, between):
    """The look-ahead reaches past a DRF throttle, an unlimited toolkit throttle and one
    that decides in its own call, to the throttle after them; a key listed twice is left
    to its second throttle's own call."""
    from django.core.cache import cache

    cache.clear()
    middle = {"drf": DrfLoose, "unlimited": Unscoped, "own-call": OwnCall, "listed-twice": User}

    class View(ThreeThrottlesView):
        throttle_classes = (Anon, middle[between], User)

    view = View.as_view()
    view(request_anonymous())  # the scripts are loaded now
    # And the pool holds a connection for the take-back (the scripts run on a kept one):
    # a new connection's handshake is not a round trip of the request.
    get_client().ping()
    sent = [trips(round_trips, lambda: view(request_anonymous()))[1] for _ in range(2)]
    if between == "listed-twice":
        # User (3/min) counted twice by the first request; from the second on, its second
        # throttle refuses in a call of its own, and one more round trip takes back what
        # Anon and its first throttle recorded.
        assert sent == [3, 3]
        assert (log_count(backend, "rt_anon"), log_count(backend, "rt_user")) == (1, 2)
    else:
        assert sent == ([2, 2] if between == "own-call" else [1, 1])
        assert (log_count(backend, "rt_anon"), log_count(backend, "rt_user")) == (3, 3)
    cache.clear()


def test_a_throttle_called_by_hand_or_a_view_of_its_own_decides_alone(backend, round_trips):
    """No DRF ``check_throttles`` running the round: each throttle asks for itself only.

    By hand (no view frame on the stack), through a view's own loop that calls only its
    first throttle, and with a view object that takes no attributes (no round on it):
    nothing is asked ahead for a throttle that will not be called.
    """
    request = APIRequestFactory().get("/", REMOTE_ADDR=CLIENT)
    view = ThreeThrottlesView()
    view.throttle_classes = (Anon, User)
    Anon().allow_request(view.initialize_request(request), view)  # scripts loaded
    assert (log_count(backend, "rt_anon"), log_count(backend, "rt_user")) == (1, 0)

    def first_only(self, request):
        if not self.get_throttles()[0].allow_request(request, self):
            self.throttled(request, None)

    class OwnLoop(ThreeThrottlesView):
        throttle_classes = (Anon, User)
        check_throttles = first_only

    assert OwnLoop.as_view()(request_anonymous()).status_code == 200
    assert (log_count(backend, "rt_anon"), log_count(backend, "rt_user")) == (2, 0)

    class NoAttributes:
        __slots__ = ()
        throttle_classes = (Anon, User)

    _, sent = trips(round_trips, lambda: Anon().allow_request(request, NoAttributes()))
    assert sent == 1
    assert (log_count(backend, "rt_anon"), log_count(backend, "rt_user")) == (3, 0)


def test_a_hook_answering_otherwise_the_second_time_decides_alone(backend):
    """A cost that changes between the look-ahead and the throttle's own call: no double count."""
    costs = iter([1, 2, 1, 2])

    class Fickle(UserSlidingWindowThrottle):
        scope = "rt_fickle"
        rate = "10/min"

        def get_cost(self, request, view):
            return next(costs)

    class View(ThreeThrottlesView):
        throttle_classes = (User, Fickle)

    view = View.as_view()
    assert view(request_anonymous()).status_code == 200
    ident = f"ip:{CLIENT}"
    # The look-ahead asked for 1 and recorded it; the throttle's own call asked for 2:
    # the first is taken back, the second recorded: 2 in all, not 3.
    assert backend.raw.zcard(keyspace.throttle_key(ratelimit.LOG, "rt_fickle", ident)) == 2


def test_a_flushed_script_is_loaded_again_and_decides_once(real_backend):
    """The hot path's own ``EVALSHA``: a ``NOSCRIPT`` answer loads the script and decides once."""
    view = ThreeThrottlesView.as_view()
    assert view(request_anonymous()).status_code == 200
    assert scripts._direct(get_client())  # the toolkit's own client takes the direct path
    real_backend.raw.script_flush()
    assert view(request_anonymous()).status_code == 200
    ident = f"ip:{CLIENT}"
    assert real_backend.raw.zcard(keyspace.throttle_key(ratelimit.LOG, "rt_user", ident)) == 2
    assert real_backend.raw.zcard(keyspace.throttle_key(ratelimit.LOG, "rt_anon", ident)) == 2


def test_a_killed_connection_is_not_reused(real_backend):
    """The server closed the toolkit's pooled connection: the next decisions still count exactly."""

    class Single(User):
        scope = "rt_single"

    class View(ThreeThrottlesView):
        throttle_classes = (Single,)

    view = View.as_view()
    assert view(request_anonymous()).status_code == 200
    real_backend.raw.client_kill_filter(_type="normal", skipme=True)
    statuses = [view(request_anonymous()).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    ident = f"ip:{CLIENT}"
    assert real_backend.raw.zcard(keyspace.throttle_key(ratelimit.LOG, "rt_single", ident)) == 3


@pytest.fixture
def cluster(request):
    """The real 3-master cluster only (what follows is the per-slot path, which needs one)."""
    chosen = toolkit_settings_for("cluster", request)
    with override_settings(DRF_REDIS_TOOLKIT=chosen.settings):
        yield chosen
    chosen.raw.close()


LIMITS = parse_rate("2/min")


def two_node_idents(client) -> tuple[str, str]:
    """Two identities whose throttle keys (scope ``rt_n``) live on two different nodes."""
    home = client.get_node_from_key(keyspace.throttle_key(ratelimit.LOG, "rt_n", "node-a"))
    for i in range(200):
        other = f"node-b{i}"
        node = client.get_node_from_key(keyspace.throttle_key(ratelimit.LOG, "rt_n", other))
        if node.name != home.name:
            return "node-a", other
    raise AssertionError("no key on a second node found")


def round_of(idents) -> list[ratelimit.Decision]:
    """One round asking once for each identity (new questions: new log members)."""
    return ratelimit.decide_many([ratelimit.ask(ratelimit.LOG, "rt_n", i, LIMITS) for i in idents])


def error_counts(clients) -> dict[str, int]:
    """Error replies per kind (``INFO errorstats``), summed over the nodes."""
    totals: dict[str, int] = {}
    for client in clients:
        for name, stats in client.info("errorstats").items():
            totals[name] = totals.get(name, 0) + int(stats["count"])
    return totals


def recorded(cluster, idents) -> list[int]:
    return [cluster.raw.zcard(keyspace.throttle_key(ratelimit.LOG, "rt_n", i)) for i in idents]


def test_on_a_cluster_each_slot_call_goes_to_its_own_node_the_first_time(cluster):
    """A round over two nodes: one call on each node's own pipeline; no node answers MOVED."""
    nodes = node_clients(cluster)
    idents = two_node_idents(get_client())
    round_of(idents)  # the scripts are loaded on those nodes now
    errors, calls = error_counts(nodes), [commands([node]) for node in nodes]
    assert [d.allowed for d in round_of(idents)] == [True, True]
    assert error_counts(nodes) == errors
    sent = [
        delta(before, commands([n])).get("evalsha", 0)
        for before, n in zip(calls, nodes, strict=True)
    ]
    assert sorted(sent) == [0, 1, 1]
    assert recorded(cluster, idents) == [2, 2]


def test_on_a_cluster_a_round_over_two_slots_survives_flushed_scripts(cluster):
    """``SCRIPT FLUSH`` on every node: each slot's call answers NOSCRIPT, runs again once.

    Each call is decided exactly once (a retried call did nothing the first time),
    and the answers are the scripts' own: admitted twice, then refused.
    """
    nodes = node_clients(cluster)
    idents = two_node_idents(get_client())
    for expected in ([True, True], [True, True], [False, False]):
        for node in nodes:
            node.script_flush()
        decisions = round_of(idents)
        assert [d.allowed for d in decisions] == expected
        assert all(d.limits[0].limit == 2 for d in decisions)
    assert recorded(cluster, idents) == [2, 2]
    assert [d.limits[0].remaining for d in decisions] == [0, 0]


def test_decisions_send_on_a_kept_connection_not_through_the_pool(real_backend, monkeypatch):
    """After the first decision, none takes a connection from the pool or opens one."""
    view = ThreeThrottlesView.as_view()
    assert view(request_anonymous()).status_code == 200
    checkouts = [0]
    original = redis.ConnectionPool.get_connection

    def counting(self, *args, **kwargs):
        checkouts[0] += 1
        return original(self, *args, **kwargs)

    get_client().ping()  # the pool holds a connection of its own (for the take-back)
    monkeypatch.setattr(redis.ConnectionPool, "get_connection", counting)
    clients_before = len(real_backend.raw.client_list())
    statuses = [view(request_anonymous()).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert checkouts[0] == 1  # the take-back of the refusal: a pooled connection, once
    assert len(real_backend.raw.client_list()) == clients_before
    kept = scripts._kept(get_client())
    assert kept is not None and len(kept.idle) == 1


def test_kept_connections_are_closed_with_the_client_and_never_shared_after_a_fork(real_backend):
    """``close()`` closes the kept connections; a forked child keeps its own."""
    client = get_client()
    assert ratelimit.decide(ratelimit.LOG, "rt_kept", "a", LIMITS).allowed
    kept = scripts._kept(client)
    assert kept is not None and [c._sock is not None for c in kept.idle] == [True]
    conn = kept.idle[0]
    scripts._forked()  # what os.fork() runs in the child
    child = scripts._kept(client)
    assert child is not kept and child is not None and child.idle == []
    client.close()
    assert conn._sock is None


def test_a_bounded_or_retrying_pool_keeps_no_connection(real_backend):
    """Kept connections are never handed to other callers: only unbounded pools keep them."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    url = real_backend.settings["REDIS_URL"]
    assert scripts._direct(redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0)))
    bounded = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), max_connections=4)
    assert not scripts._direct(bounded)
    assert not scripts._direct(redis.Redis.from_url(url))  # redis-py retries by default
