"""Checks on a recorded history of requests made while faults were injected (pure functions).

A chaos run (``loadtests/chaos.py``) records every request: who sent it, when it was
sent and answered (one monotonic clock, the load driver's), its status, the
``X-Cache`` header, the product versions it showed or wrote, and for the abuser the
throttle headers. It also records each fault window. The functions here judge that
history; they never look at wall-clock budgets, only at the order of events.

What is checked, and how it is judged:

- **No 5xx**: every status below 500 (a request that got no answer at all counts as
  status 0 and is a violation too).
- **No stale read beyond the bound** (the guarantee of ``docs/operations.md#guarantees``).
  A read *starts after* write *k* of a product when it is sent after the write was
  acknowledged; it is stale if it shows a version older than *k*. A write is
  *fault-affected* when a fault was active at some moment between ``cooldown`` seconds
  before it was sent and its acknowledgement (its delivery may have failed, or a
  breaker still open after the fault may have skipped Redis). For a write that is not,
  every stale read is a violation: the invalidation was delivered before the
  response. Redis trouble the servers saw themselves counts like an injected fault
  (``observed``: each Redis error a worker logged, e.g. a socket timeout on a starved
  CPU, as a window of no length): the toolkit cannot tell it from an outage, so the
  write's names go the same way. For a fault-affected write, the names went to the outbox before the
  response, and every process looks at the outbox at most ``POLL_INTERVAL`` (0.25 s)
  after its previous look, plus one outbox query: a stale read is a violation when it
  starts more than ``bound`` seconds after the acknowledgement, whether the fault is
  over or not. The stale window measured is the longest delay from the acknowledgement
  to a stale read's start (0 when there is none).
- **No throttle over-admission**. The abuser's request is *counted* when its response
  carries the rate-limit headers of the abuser's scope (``X-RateLimit-Limit`` equal to
  that limit): the toolkit writes them only from a decision Redis returned. A request
  admitted with ``FAIL_OPEN`` while Redis was unreachable carries none and is not
  counted (Redis never saw it, by design). Over-admission is ``limit + 1`` counted
  admissions that certainly fell in one window: the server decided each between its
  send and its answer, so if the latest answer minus the earliest send of the group is
  under ``window``, they were all decided within one window. Sound (never a false
  alarm); it can miss an over-admission hidden by a slow answer.
- **Recovery by itself**: after each fault ends, before the next one starts (or the
  run ends), some read sent after the end is answered with ``X-Cache: HIT`` and the
  abuser gets a 429 (which only a Redis decision gives).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Record:
    """One request and its answer."""

    role: str  # "read", "write" or "abuse"
    sent: float
    answered: float
    status: int  # 0: no answer (connection error, client timeout)
    cache: str | None = None  # X-Cache
    versions: dict[int, int] = field(default_factory=dict)  # product id -> version shown/written
    limit: int | None = None  # X-RateLimit-Limit


@dataclass(frozen=True)
class FaultWindow:
    kind: str
    target: str  # "redis", or the cluster node's proxy port
    start: float
    end: float


@dataclass
class Violation:
    check: str
    detail: str


@dataclass
class Report:
    violations: list[Violation]
    measurements: dict[str, object]

    @property
    def ok(self) -> bool:
        return not self.violations


def no_5xx(history: list[Record]) -> list[Violation]:
    return [
        Violation("5xx", f"{r.role} sent at {r.sent:.3f}s answered {r.status}")
        for r in history
        if r.status >= 500 or r.status == 0
    ]


def _affecting(write: Record, faults: list[FaultWindow], cooldown: float) -> FaultWindow | None:
    """The last fault active between ``sent - cooldown`` and the acknowledgement, if any."""
    active = [f for f in faults if f.start <= write.answered and f.end >= write.sent - cooldown]
    return max(active, key=lambda f: f.end) if active else None


def stale_reads(
    history: list[Record],
    faults: list[FaultWindow],
    *,
    bound: float,
    cooldown: float,
    observed: list[FaultWindow] | None = None,
) -> tuple[list[Violation], float, int]:
    """``(violations, longest stale window, stale reads in total)``; see the module doc."""
    troubles = [*faults, *(observed or [])]
    writes: dict[int, list[tuple[float, int, FaultWindow | None]]] = defaultdict(list)
    for record in history:
        if record.role == "write" and 200 <= record.status < 300:
            for product, version in record.versions.items():
                writes[product].append(
                    (record.answered, version, _affecting(record, troubles, cooldown))
                )
    violations: list[Violation] = []
    window, stale = 0.0, 0
    for read in history:
        if read.role != "read" or read.status != 200:
            continue
        for product, shown in read.versions.items():
            newer = [w for w in writes[product] if w[0] < read.sent and w[1] > shown]
            if not newer:
                continue
            stale += 1
            acked, version, fault = max(newer, key=lambda w: w[1])
            delay = read.sent - acked
            window = max(window, delay)
            if fault is None or delay > bound:
                why = f"during/after {fault.kind}" if fault else "no fault near the write"
                violations.append(
                    Violation(
                        "stale",
                        f"read sent at {read.sent:.3f}s ({read.cache}) showed product "
                        f"{product} v{shown}; v{version} acknowledged at {acked:.3f}s, "
                        f"{delay:.3f}s before the read ({why}; bound {bound}s)",
                    )
                )
    return violations, window, stale


def over_admission(
    history: list[Record], *, limit: int, window: float
) -> tuple[list[Violation], int]:
    """``(violations, worst excess)`` for the abuser; see the module doc.

    The excess is the most counted admissions certainly decided within one window
    (sent at or after one request's send, answered less than ``window`` after it),
    minus ``limit``; 0 when the limit held.
    """
    counted = sorted(
        (r for r in history if r.role == "abuse" and r.status < 400 and r.limit == limit),
        key=lambda r: r.sent,
    )
    violations: list[Violation] = []
    worst = 0
    for i, first in enumerate(counted):
        inside = [r for r in counted[i:] if r.answered - first.sent < window]
        excess = len(inside) - limit
        if excess > 0:
            worst = max(worst, excess)
            violations.append(
                Violation(
                    "over-admission",
                    f"{len(inside)} counted admissions (limit {limit}) sent from "
                    f"{first.sent:.3f}s and answered by "
                    f"{max(r.answered for r in inside):.3f}s, within one {window}s window",
                )
            )
    return violations, worst


def recovery(history: list[Record], faults: list[FaultWindow], run_end: float) -> list[Violation]:
    """After each fault, before the next (or the run's end): a HIT and an abuser 429."""
    violations: list[Violation] = []
    ordered = sorted(faults, key=lambda f: f.start)
    for index, fault in enumerate(ordered):
        until = ordered[index + 1].start if index + 1 < len(ordered) else run_end
        after = [r for r in history if fault.end < r.sent and r.answered <= until]
        if not any(r.role == "read" and r.cache == "HIT" for r in after):
            violations.append(
                Violation("recovery", f"no cache HIT after {fault.kind} ended at {fault.end:.3f}s")
            )
        if not any(r.role == "abuse" and r.status == 429 for r in after):
            violations.append(
                Violation("recovery", f"no 429 for the abuser after {fault.kind} ended")
            )
    return violations


def latency_by_fault(history: list[Record], faults: list[FaultWindow]) -> dict[str, float]:
    """Worst added latency per fault kind: max during the fault minus the healthy median."""

    def during(record: Record) -> FaultWindow | None:
        for fault in faults:
            if record.sent < fault.end and record.answered > fault.start:
                return fault
        return None

    healthy = sorted(r.answered - r.sent for r in history if during(r) is None)
    median = healthy[len(healthy) // 2] if healthy else 0.0
    worst: dict[str, float] = {}
    for record in history:
        fault = during(record)
        if fault is not None:
            added = record.answered - record.sent - median
            worst[fault.kind] = max(worst.get(fault.kind, 0.0), added)
    return {kind: round(value, 3) for kind, value in sorted(worst.items())}


def check(
    history: list[Record],
    faults: list[FaultWindow],
    *,
    limit: int,
    window: float,
    bound: float,
    cooldown: float,
    run_end: float,
    observed: list[FaultWindow] | None = None,
) -> Report:
    """Every check at once, with the measurements the docs are generated from.

    ``observed``: Redis errors the servers logged (see ``stale_reads``); they widen
    which writes count as fault-affected, nothing else.
    """
    observed = observed or []
    stale_violations, stale_window, stale_total = stale_reads(
        history, faults, bound=bound, cooldown=cooldown, observed=observed
    )
    admission_violations, over = over_admission(history, limit=limit, window=window)
    server_errors = no_5xx(history)
    violations = [
        *server_errors,
        *stale_violations,
        *admission_violations,
        *recovery(history, faults, run_end),
    ]
    counted = sum(1 for r in history if r.role == "abuse" and r.limit == limit)
    measurements: dict[str, object] = {
        "requests": len(history),
        "reads": sum(1 for r in history if r.role == "read"),
        "writes": sum(1 for r in history if r.role == "write"),
        "fault_affected_writes": sum(
            1 for r in history if r.role == "write" and _affecting(r, faults, cooldown) is not None
        ),
        # Writes affected only by Redis errors the servers saw outside the injected faults.
        "observed_only_writes": sum(
            1
            for r in history
            if r.role == "write"
            and _affecting(r, faults, cooldown) is None
            and _affecting(r, observed, cooldown) is not None
        ),
        "observed_errors_outside_faults": sum(
            1 for o in observed if not any(f.start <= o.start <= f.end + cooldown for f in faults)
        ),
        "abuser_requests": sum(1 for r in history if r.role == "abuse"),
        "abuser_counted": counted,
        "abuser_fail_open": sum(
            1 for r in history if r.role == "abuse" and r.status < 400 and r.limit != limit
        ),
        "hits": sum(1 for r in history if r.cache == "HIT"),
        "faults": [f.kind for f in sorted(faults, key=lambda f: f.start)],
        "stale_reads": stale_total,
        "stale_window_max_s": round(stale_window, 3),
        "over_admission": over,
        "server_errors": len(server_errors),
        "added_latency_max_s": latency_by_fault(history, faults),
    }
    return Report(violations, measurements)
