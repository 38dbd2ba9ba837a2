"""The rate-limit engine shared by the throttles, the middleware and the commands.

One call to ``decide()`` is one Lua script, one round trip: it trims the
history, checks every limit of a rate all-or-nothing, records the request only
if all admit it, and returns what ``wait()`` and the rate-limit headers need.
Time is the Redis server's, so app servers with skewed clocks agree.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from drf_redis_toolkit import keys as keyspace
from drf_redis_toolkit.connection import guarded
from drf_redis_toolkit.rates import Limit
from drf_redis_toolkit.scripts import run_script

#: The two algorithms: an exact log of requests, or weighted fixed-window counters.
LOG = "sw"
COUNTER = "swc"
_SCRIPTS = {LOG: "sliding_window", COUNTER: "sliding_window_counter"}
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


@dataclass
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
    if not 0 <= cost <= MAX_COST:
        raise ValueError(f"throttle cost must be between 0 and {MAX_COST}, got {cost}")
    key = keyspace.throttle_key(kind, scope, ident)
    args: list[int | str] = [cost]
    token = ""
    if kind == LOG:
        token = _tokens.next()
        args.append(token)
    args.append(1 if record else 0)
    for limit in limits:
        args.extend((limit.limit, limit.window * 1_000_000))
    with guarded() as client:
        raw = run_script(_SCRIPTS[kind], client, [key], args)
    allowed = raw[0] == 1
    now_us = int(raw[1])
    states = [
        LimitState(
            limit=limit.limit,
            window=limit.window,
            remaining=int(raw[2 + 3 * i]),
            reset=int(raw[3 + 3 * i]) / 1_000_000,
            retry_after=int(raw[4 + 3 * i]) / 1_000_000,
        )
        for i, limit in enumerate(limits)
    ]
    recorded: list[str] = []
    if allowed and record and cost:
        if kind == LOG:
            recorded = [f"{token}:{j}" for j in range(1, cost + 1)]
        else:
            recorded = [
                f"{limit.window * 1_000_000}:{now_us // (limit.window * 1_000_000)}"
                for limit in limits
            ]
    return Decision(scope, allowed, states, key, kind, recorded, now_us, cost)


def undo(decisions: Sequence[Decision]) -> None:
    """Take back admitted requests (when another throttle refused them in the same round).

    Removing entries can only lower a count, so this never lets more through
    than the limit. One pipelined round trip for all of them.
    """
    todo = [d for d in decisions if d.allowed and d.recorded]
    if not todo:
        return
    with guarded() as client:
        pipe = client.pipeline(transaction=False)
        for decision in todo:
            if decision.kind == LOG:
                pipe.zrem(decision.key, *decision.recorded)
            else:
                for field_name in decision.recorded:
                    pipe.hincrby(decision.key, field_name, -decision.cost)
        pipe.execute()
    for decision in todo:
        decision.recorded = []
        for state in decision.limits:  # the headers then report what is really left
            state.remaining = min(state.limit, state.remaining + decision.cost)


def reset(kind: str, scope: str, ident: str) -> int:
    """Forget everything recorded for ``ident`` in ``scope``; return keys deleted."""
    with guarded() as client:
        return int(client.delete(keyspace.throttle_key(kind, scope, ident)))
