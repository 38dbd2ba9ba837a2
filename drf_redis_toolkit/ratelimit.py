"""The rate-limit engine shared by the throttles, the middleware and the commands.

One call to ``decide()`` is one Lua script, one round trip: it trims the
history, checks every limit of a rate all-or-nothing, records the request only
if all admit it, and returns what ``wait()`` and the rate-limit headers need.
Time is the Redis server's, so app servers with skewed clocks agree.
``decide_many()`` decides several throttles' questions about one request in one
call of ``throttle_round.lua`` (one per cluster slot), all-or-nothing.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, NoScriptError, TryAgainError

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit.connection import aguarded, guarded, is_cluster
from drf_redis_toolkit.rates import Limit
from drf_redis_toolkit.scripts import arun_script, get_script, run_script, run_script_direct

#: The two algorithms: an exact log of requests, or weighted fixed-window counters.
LOG = "sw"
COUNTER = "swc"
_SCRIPTS = {LOG: "sliding_window", COUNTER: "sliding_window_counter"}
#: Several throttles of one request in one call (``lua/throttle_round.lua``).
ROUND_SCRIPT = "throttle_round"
#: A request may count as at most this many (the log stores one member per unit).
MAX_COST = 10_000


class _Tokens:
    """Unique log members without a syscall per request: a per-process random prefix + a counter.

    The prefix is drawn again in every forked child, at the fork, before any of the
    child's threads run: two processes never share one, or members would collide
    and a request would be admitted without being counted.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        # One tuple, swapped at once: a thread never pairs a new prefix with an old counter.
        self.state = (secrets.token_hex(8), itertools.count())

    def next(self) -> str:
        prefix, counter = self.state
        return f"{prefix}{next(counter):x}"


_tokens = _Tokens()
os.register_at_fork(after_in_child=_tokens.reset)


@dataclass(slots=True)
class LimitState:
    """How one limit stands after a decision."""

    limit: int
    window: int  # seconds
    remaining: int
    reset: float  # seconds until the oldest counted request leaves the window
    retry_after: float  # seconds until a request of this cost fits (0: it does now)


@dataclass(slots=True)
class Decision:
    """The outcome of one ``decide()`` call, kept on the request for the headers."""

    scope: str
    allowed: bool
    limits: list[LimitState]
    key: str
    kind: str
    recorded: list[str] = field(default_factory=list)  # what to remove to undo it
    now_us: int = 0
    cost: int = 1

    @property
    def retry_after(self) -> float:
        """Seconds until the request would be admitted by every limit (0 if admitted)."""
        return max((state.retry_after for state in self.limits), default=0.0)

    def most_restrictive(self) -> LimitState:
        """The limit to report: a blocking one with the longest wait, else the fewest left."""
        blocking = [s for s in self.limits if s.retry_after > 0]
        if blocking:
            return max(blocking, key=lambda s: s.retry_after)
        return min(self.limits, key=lambda s: (s.remaining, -s.reset))


@dataclass(slots=True)
class Question:
    """One throttle's question about one request, ready to send (see ``decide_many``)."""

    kind: str
    scope: str
    key: str
    limits: Sequence[Limit]
    cost: int
    record: bool
    args: list[int | str]
    token: str


def ask(
    kind: str,
    scope: str,
    ident: str,
    limits: Sequence[Limit],
    cost: int = 1,
    record: bool = True,
) -> Question:
    """Build the script arguments for a request of ``cost`` for ``ident`` under ``limits``."""
    if not 0 <= cost <= MAX_COST:
        raise ValueError(f"throttle cost must be between 0 and {MAX_COST}, got {cost}")
    args: list[int | str] = [cost]
    token = ""
    if kind == LOG:
        token = _tokens.next()
        args.append(token)
    args.append(1 if record else 0)
    for limit in limits:
        args.extend((limit.limit, limit.window * 1_000_000))
    return Question(
        kind, scope, keyspace.throttle_key(kind, scope, ident), limits, cost, record, args, token
    )


def _answer(question: Question, raw: Sequence[int], recorded: bool) -> Decision:
    """The ``Decision`` from a script's reply; ``recorded``: whether the script recorded it.

    On every request's path: positional construction, no per-limit generator.
    """
    allowed = raw[0] == 1
    now_us = int(raw[1])
    states = []
    at = 2
    for limit in question.limits:
        states.append(
            LimitState(
                limit.limit,
                limit.window,
                int(raw[at]),
                int(raw[at + 1]) / 1_000_000,
                int(raw[at + 2]) / 1_000_000,
            )
        )
        at += 3
    kept: list[str] = []
    cost = question.cost
    if recorded and allowed and cost:
        if question.kind == LOG:
            token = question.token
            kept = [token + ":1"] if cost == 1 else [f"{token}:{j}" for j in range(1, cost + 1)]
        else:
            kept = [
                f"{limit.window * 1_000_000}:{now_us // (limit.window * 1_000_000)}"
                for limit in question.limits
            ]
    return Decision(
        question.scope, allowed, states, question.key, question.kind, kept, now_us, cost
    )


def decide(
    kind: str,
    scope: str,
    ident: str,
    limits: Sequence[Limit],
    cost: int = 1,
    record: bool = True,
) -> Decision:
    """Decide a request of ``cost`` for ``ident`` under ``limits``; record it if admitted.

    Raises ``RedisUnavailable`` when Redis can't be reached; the caller applies
    the failure policy.
    """
    return decide_one(ask(kind, scope, ident, limits, cost, record))


def decide_one(question: Question) -> Decision:
    """Decide one question alone: its own script, one call."""
    with guarded() as client:
        raw = run_script_direct(_SCRIPTS[question.kind], client, [question.key], question.args)
    return _answer(question, raw, question.record)


async def adecide_one(question: Question) -> Decision:
    """``decide_one`` on the event loop's async client: the same script, the same answer."""
    async with aguarded() as client:
        raw = await arun_script(_SCRIPTS[question.kind], client, [question.key], question.args)
    return _answer(question, raw, question.record)


class Decide:
    """A step (``drivers``): decide one question, sync or on the loop."""

    __slots__ = ("question",)

    def __init__(self, question: Question) -> None:
        self.question = question

    def run(self) -> Decision:
        return decide_one(self.question)

    async def arun(self) -> Decision:
        return await adecide_one(self.question)


class Undo:
    """A step (``drivers``): take admitted decisions back, sync or on the loop."""

    __slots__ = ("decisions",)

    def __init__(self, decisions: Sequence[Decision]) -> None:
        self.decisions = decisions

    def run(self) -> None:
        undo(self.decisions)

    async def arun(self) -> None:
        await aundo(self.decisions)


def _round_call(questions: Sequence[Question]) -> tuple[str, list[str], list[int | str]]:
    """The script, keys and arguments deciding ``questions`` together (one slot)."""
    if len(questions) == 1:
        only = questions[0]
        return _SCRIPTS[only.kind], [only.key], only.args
    args: list[int | str] = []
    for question in questions:
        args.append(question.kind)
        args.append(len(question.args))
        args.extend(question.args)
    return ROUND_SCRIPT, [question.key for question in questions], args


def decide_many(questions: Sequence[Question]) -> list[Decision]:
    """Decide several throttles' questions about one request: all-or-nothing, one round trip.

    The keys must differ. On one server (or when every key is in one cluster
    slot, as the identity's hash tag makes them for one client) it is one script
    call: when one throttle refuses, nothing is recorded. On a cluster, keys in
    different slots get one call per slot, pipelined per node; each call is
    all-or-nothing on its own, so when one slot refuses while another admitted
    and recorded, the caller must take the admitted ones back (``undo``), as a
    ``ThrottleRound`` does.
    """
    if len(questions) == 1:
        return [decide_one(questions[0])]
    with guarded() as client:
        groups: list[list[Question]] = [list(questions)]
        # (A plain client is one server: no need to ask, on every request.)
        if type(client) is not redis.Redis and is_cluster(client):
            by_slot: dict[int, list[Question]] = {}
            for question in questions:
                by_slot.setdefault(key_slot(question.key.encode()), []).append(question)
            groups = list(by_slot.values())
        if len(groups) == 1:
            name, keys, args = _round_call(groups[0])
            replies = [run_script_direct(name, client, keys, args)]
        else:
            replies = _pipelined(client, [_round_call(group) for group in groups])
    answers: dict[int, Decision] = {}
    for group, reply in zip(groups, replies, strict=True):
        if len(group) == 1:
            reply = [reply]
        admitted = all(raw[0] == 1 for raw in reply)
        for question, raw in zip(group, reply, strict=True):
            answers[id(question)] = _answer(question, raw, question.record and admitted)
    return [answers[id(question)] for question in questions]


def _pipelined(client: Any, calls: list[tuple[str, list[str], list[int | str]]]) -> list[Any]:
    """Run script ``calls`` (one per slot), pipelined: one round trip per node holding them.

    A cluster client refuses pipelined scripts, so each node's calls go through
    that node's own client. Errors are collected, not raised at the first: a
    call that found no script, or whose slot moved, did nothing, and only it
    runs again through the cluster client (the others must not record twice).
    """
    by_node: dict[str, tuple[Any, list[int]]] = {}
    for i, (_name, keys, _args) in enumerate(calls):
        node = client.get_node_from_key(keys[0])
        by_node.setdefault(node.name, (node.redis_connection, []))[1].append(i)
    replies: list[Any] = [None] * len(calls)
    for node_client, indexes in by_node.values():
        pipe = node_client.pipeline(transaction=False)
        for i in indexes:
            name, keys, args = calls[i]
            pipe.evalsha(get_script(name).sha, len(keys), *keys, *args)
        for i, reply in zip(indexes, pipe.execute(raise_on_error=False), strict=True):
            replies[i] = reply
    for i, reply in enumerate(replies):
        if isinstance(reply, NoScriptError | MovedError | AskError | TryAgainError):
            name, keys, args = calls[i]
            replies[i] = run_script(name, client, keys, args)
        elif isinstance(reply, Exception):
            raise reply
    return replies


def undo(decisions: Sequence[Decision]) -> None:
    """Take back admitted requests (when another throttle refused them in the same round).

    Removing entries can only lower a count, so this never lets more through
    than the limit. One pipelined round trip for all of them.
    """
    todo = [d for d in decisions if d.allowed and d.recorded]
    if not todo:
        return
    with guarded() as client:
        _queue_undo(client.pipeline(transaction=False), todo).execute()
    _undone(todo)


async def aundo(decisions: Sequence[Decision]) -> None:
    """``undo`` on the event loop's async client."""
    todo = [d for d in decisions if d.allowed and d.recorded]
    if not todo:
        return
    async with aguarded() as client:
        await _queue_undo(client.pipeline(transaction=False), todo).execute()
    _undone(todo)


def _queue_undo(pipe: Any, todo: list[Decision]) -> Any:
    """Queue the commands taking ``todo`` back on ``pipe`` (sync or async)."""
    for decision in todo:
        if decision.kind == LOG:
            pipe.zrem(decision.key, *decision.recorded)
        else:
            for field_name in decision.recorded:
                pipe.hincrby(decision.key, field_name, -decision.cost)
    return pipe


def _undone(todo: list[Decision]) -> None:
    for decision in todo:
        decision.recorded = []
        for state in decision.limits:  # the headers then report what is really left
            state.remaining = min(state.limit, state.remaining + decision.cost)


def reset(kind: str, scope: str, ident: str) -> int:
    """Forget everything recorded for ``ident`` in ``scope``; return keys deleted."""
    with guarded() as client:
        return int(client.delete(keyspace.throttle_key(kind, scope, ident)))
