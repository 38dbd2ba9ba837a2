"""ratelimit.py's own decisions on every backend: what `make mutate`'s mutants showed unwatched."""

from __future__ import annotations

import os

import pytest
from asgiref.sync import async_to_sync

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit import ratelimit
from drf_redis_toolkit.rates import Limit, parse_rate

# Every test: no sync Redis call on the event loop (conftest, tests/loop_guard.py).
pytestmark = pytest.mark.usefixtures("no_sync_redis_on_the_loop")


class Steps:
    """Decide and take back through the ``drivers`` steps, sync or on an event loop."""

    def __init__(self, way: str) -> None:
        self.way = way

    def decide(self, kind, scope, ident, limits, cost=1, record=True) -> ratelimit.Decision:
        step = ratelimit.Decide(ratelimit.ask(kind, scope, ident, limits, cost, record))
        return step.run() if self.way == "sync" else async_to_sync(step.arun)()

    def undo(self, decisions) -> None:
        step = ratelimit.Undo(decisions)
        step.run() if self.way == "sync" else async_to_sync(step.arun)()


@pytest.fixture(params=["sync", "async"])
def steps(request) -> Steps:
    """``decide_one``/``undo`` (sync) or ``adecide_one``/``aundo`` (the async client)."""
    return Steps(request.param)


def server_us(raw) -> int:
    seconds, micros = raw.time()
    return int(seconds) * 1_000_000 + int(micros)


def test_cost_bounds(backend):
    top = (Limit(ratelimit.MAX_COST, 60),)
    assert ratelimit.decide(ratelimit.COUNTER, "e", "c", top, cost=ratelimit.MAX_COST).allowed
    with pytest.raises(ValueError, match=f"between 0 and {ratelimit.MAX_COST}, got 10001"):
        ratelimit.decide(ratelimit.COUNTER, "e", "c", top, cost=ratelimit.MAX_COST + 1)
    with pytest.raises(ValueError, match="got -1"):
        ratelimit.decide(ratelimit.COUNTER, "e", "c", top, cost=-1)


@pytest.mark.parametrize("kind", [ratelimit.LOG, ratelimit.COUNTER])
def test_each_limit_reports_its_own_reset(backend, kind):
    ratelimit.decide(kind, "e", "c", parse_rate("5/10s,5/hour"))
    decision = ratelimit.decide(kind, "e", "c", parse_rate("5/10s,5/hour"), record=False)
    ten, hour = decision.limits
    assert (ten.window, hour.window) == (10, 3600)
    assert 0 < ten.reset <= 10
    assert 10 < hour.reset <= 3600
    if kind == ratelimit.LOG:  # to the microsecond: when the oldest entry leaves each window
        key = keyspace.throttle_key(kind, "e", "c")
        oldest = backend.raw.zrange(key, 0, 0, withscores=True)[0][1]
        for state in (ten, hour):
            leaves = (oldest + state.window * 1_000_000 - decision.now_us) / 1_000_000
            assert state.reset == pytest.approx(leaves, abs=1e-6)
    # Same remaining: the one that frees its slot later is the most restrictive.
    assert ten.remaining == hour.remaining == 4
    assert decision.most_restrictive() is hour


def test_the_blocking_limit_with_the_longest_wait_is_the_most_restrictive(backend):
    """Cost 2: the 10 s limit is full (0 left), but the minute limit makes it wait longer."""
    key = keyspace.throttle_key(ratelimit.LOG, "e", "c")
    now = server_us(backend.raw)
    old = {f"old:{i}": now - 30_000_000 + i for i in range(6)}  # in the minute only
    new = {f"new:{i}": now - 1_000_000 + i for i in range(3)}  # in both
    backend.raw.zadd(key, {**old, **new})
    decision = ratelimit.decide(ratelimit.LOG, "e", "c", parse_rate("3/10s,10/min"), cost=2)
    assert decision.allowed is False
    ten, minute = decision.limits
    assert (ten.remaining, minute.remaining) == (0, 1)
    assert ten.retry_after < 10 < minute.retry_after
    assert decision.most_restrictive() is minute
    assert decision.retry_after == minute.retry_after


@pytest.mark.parametrize("kind", [ratelimit.LOG, ratelimit.COUNTER])
def test_undo_takes_back_exactly_the_cost(backend, kind, steps):
    limits = parse_rate("10/min,100/hour")
    steps.decide(kind, "e", "c", limits, cost=2)
    taken = steps.decide(kind, "e", "c", limits, cost=3)
    assert taken.allowed and taken.cost == 3
    assert [s.remaining for s in taken.limits] == [5, 95]
    steps.undo([taken])
    assert taken.recorded == []
    assert [s.remaining for s in taken.limits] == [8, 98]  # what the headers then report
    after = steps.decide(kind, "e", "c", limits, record=False)
    assert [s.remaining for s in after.limits] == [8, 98]
    steps.undo([taken])  # a second undo takes nothing more
    after = steps.decide(kind, "e", "c", limits, record=False)
    assert [s.remaining for s in after.limits] == [8, 98]


def test_undo_of_the_counter_touches_this_windows_fields_only(backend, steps):
    limits = parse_rate("10/min,100/hour")
    taken = steps.decide(ratelimit.COUNTER, "e", "c", limits, cost=3)
    key = keyspace.throttle_key(ratelimit.COUNTER, "e", "c")
    fields = {k.decode() for k in backend.raw.hkeys(key)}
    assert fields == {
        f"{limit.window * 1_000_000}:{taken.now_us // (limit.window * 1_000_000)}"
        for limit in limits
    }
    steps.undo([taken])
    assert {k.decode(): int(v) for k, v in backend.raw.hgetall(key).items()} == dict.fromkeys(
        fields, 0
    )


def test_a_dry_run_or_a_refusal_records_nothing_to_undo(backend, steps):
    limits = parse_rate("1/min")
    dry = steps.decide(ratelimit.LOG, "e", "c", limits, record=False)
    assert dry.allowed and dry.recorded == []
    kept = steps.decide(ratelimit.LOG, "e", "c", limits)
    assert kept.recorded
    refused = steps.decide(ratelimit.LOG, "e", "c", limits)
    assert refused.allowed is False and refused.recorded == []
    free = steps.decide(ratelimit.LOG, "e", "other", limits, cost=0)
    assert free.allowed and free.recorded == []
    # Taking back decisions that recorded nothing sends nothing and changes nothing.
    steps.undo([dry, refused, free])
    assert [d.limits[0].remaining for d in (dry, refused, free)] == [1, 0, 1]
    key = keyspace.throttle_key(ratelimit.LOG, "e", "c")
    assert backend.raw.zcard(key) == 1
    steps.undo([dry, kept, refused, free])  # only the one admitted and recorded goes back
    assert backend.raw.zcard(key) == 0
    assert [d.limits[0].remaining for d in (dry, kept, refused, free)] == [1, 1, 0, 1]


def test_sub_second_waits_still_pick_the_longest_blocking_limit():
    """Two limits refusing for under a second: the longer wait is reported, not the fewer left."""
    short = ratelimit.LimitState(limit=5, window=1, remaining=0, reset=0.3, retry_after=0.3)
    long = ratelimit.LimitState(limit=50, window=60, remaining=0, reset=40.0, retry_after=0.7)
    decision = ratelimit.Decision(
        scope="e", allowed=False, limits=[long, short], key="k", kind="sw"
    )
    assert decision.most_restrictive() is long
    # And one refusing for under a second beats an admitting limit with fewer left.
    open_ = ratelimit.LimitState(limit=5, window=60, remaining=0, reset=59.0, retry_after=0.0)
    decision.limits = [open_, short]
    assert decision.most_restrictive() is short


def _prefix_in_child(write_fd: int) -> None:
    from drf_redis_toolkit.ratelimit import _tokens

    token = _tokens.next()  # the at-fork hook drew this child's prefix, its counter from 0
    os.write(write_fd, token.encode() + b"\n")


def test_every_forked_child_draws_its_own_prefix():
    """Two children of one parent never share a log-member prefix (a shared one would make
    ZADD update instead of add: admitted but not counted)."""
    from drf_redis_toolkit.ratelimit import _tokens

    # In this process too, so that mutmut's coverage-based test selection (blind to
    # forked children) runs this test against _Tokens.reset's mutants.
    before = _tokens.state[0]
    _tokens.reset()
    prefix = _tokens.state[0]
    assert prefix != before
    assert _tokens.next() == prefix + "0"  # the counter starts again
    prefixes = []
    for _ in range(2):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, then leave without running pytest's exit handlers
            status = 1
            try:
                os.close(read_fd)
                _prefix_in_child(write_fd)
                status = 0
            finally:
                os._exit(status)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            line = pipe.read().decode()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        token = line.strip()
        assert token.endswith("0")
        prefixes.append(token[:-1])
    assert len({prefix, *prefixes}) == 3


def test_each_limit_reports_its_own_wait_and_the_decision_its_scope(backend):
    """A refusal by the 10 s limit: that one waits under 10 s, the hour (4 left) not at all."""
    limits = parse_rate("1/10s,5/hour")
    assert ratelimit.decide(ratelimit.LOG, "e", "c", limits).allowed
    refused = ratelimit.decide(ratelimit.LOG, "e", "c", limits)
    assert refused.allowed is False and refused.scope == "e"
    ten, hour = refused.limits
    assert 0 < ten.retry_after <= 10
    assert (hour.remaining, hour.retry_after) == (4, 0)


def test_a_question_asks_for_one_request_by_default():
    question = ratelimit.ask(ratelimit.COUNTER, "e", "c", parse_rate("5/min"))
    assert (question.scope, question.cost, question.record) == ("e", 1, True)


@pytest.mark.parametrize("kind", [ratelimit.LOG, ratelimit.COUNTER])
def test_a_round_records_what_undo_takes_back_and_a_dry_round_nothing(backend, kind):
    limits = parse_rate("10/min")

    def round_(record: bool) -> list[ratelimit.Decision]:
        questions = [ratelimit.ask(kind, s, "c", limits, cost=2, record=record) for s in "ab"]
        return ratelimit.decide_many(questions)

    def left() -> list[int]:
        return [
            ratelimit.decide(kind, s, "c", limits, record=False).limits[0].remaining for s in "ab"
        ]

    dry = round_(record=False)
    assert all(d.allowed and d.recorded == [] for d in dry)
    assert left() == [10, 10]
    taken = round_(record=True)
    assert all(d.allowed and d.recorded for d in taken)
    assert left() == [8, 8]
    ratelimit.undo(taken)
    assert left() == [10, 10]


def test_a_round_over_two_identities_is_one_call_on_one_server(backend):
    """Keys in two cluster slots: one server decides them in one call, a cluster per slot."""
    from redis.crc import key_slot

    limits = parse_rate("1/min")
    idents = ("a", "b")
    slots = {key_slot(keyspace.throttle_key(ratelimit.LOG, "e2", i).encode()) for i in idents}
    assert len(slots) == 2

    def round_() -> list[bool]:
        questions = [ratelimit.ask(ratelimit.LOG, "e2", i, limits) for i in idents]
        return [d.allowed for d in ratelimit.decide_many(questions)]

    assert round_() == [True, True]
    assert round_() == [False, False]


@pytest.mark.parametrize("kind", [ratelimit.LOG, ratelimit.COUNTER])
def test_reset_forgets_one_client_in_one_scope(backend, kind):
    limits = parse_rate("2/min")
    for ident in ("c", "other"):
        ratelimit.decide(kind, "e", ident, limits)
    assert ratelimit.reset(kind, "e", "c") == 1
    assert ratelimit.reset(kind, "e", "c") == 0  # nothing left
    assert ratelimit.decide(kind, "e", "c", limits, record=False).limits[0].remaining == 2
    assert ratelimit.decide(kind, "e", "other", limits, record=False).limits[0].remaining == 1
