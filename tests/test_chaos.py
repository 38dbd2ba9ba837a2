"""The chaos checker on synthetic histories (violations planted), then a short seeded chaos run.

The checker's unit tests build a clean history by hand, check that it passes, then
plant one violation at a time and check that exactly that one is reported, and
that what the bounds allow (a stale read shortly after a fault, an uncounted
``FAIL_OPEN`` admission) is not. The slow test runs ``loadtests/chaos.py`` for about
half a minute with a fixed seed, on a standalone Redis and on the cluster.
"""

from __future__ import annotations

import pytest

from tests import chaos_checker as cc
from tests.chaos_checker import FaultWindow, Record

LIMIT, WINDOW, BOUND, COOLDOWN = 3, 1.0, 0.5, 5.0
FAULT = FaultWindow("blackhole", "redis", 10.0, 12.0)


def _clean() -> list[Record]:
    history = [
        Record("write", 1.0, 1.1, 200, versions={1: 1}),
        Record("read", 1.2, 1.25, 200, "MISS", {1: 1}),
        Record("read", 1.3, 1.31, 200, "HIT", {1: 1}),
        Record("read", 0.5, 1.5, 200, "HIT", {1: 0}),  # sent before the write: not stale
    ]
    # The abuser: 3 counted admissions, then 429s, in each 1 s window.
    for second in (2, 13, 15):
        for n in range(5):
            status, sent = (200 if n < LIMIT else 429), second + n * 0.05
            history.append(Record("abuse", sent, sent + 0.01, status, limit=LIMIT))
    # During the fault: FAIL_OPEN admissions carry no headers: not counted.
    for n in range(10):
        history.append(Record("abuse", 10.5 + n * 0.05, 10.52 + n * 0.05, 200))
    history.append(Record("read", 12.5, 12.51, 200, "MISS", {1: 1}))
    history.append(Record("read", 12.6, 12.61, 200, "HIT", {1: 1}))
    return history


def _check(history: list[Record], faults: list[FaultWindow] | None = None) -> cc.Report:
    return cc.check(
        history,
        [FAULT] if faults is None else faults,
        limit=LIMIT,
        window=WINDOW,
        bound=BOUND,
        cooldown=COOLDOWN,
        run_end=20.0,
    )


def _checks(report: cc.Report) -> list[str]:
    return sorted({v.check for v in report.violations})


def test_a_clean_history_passes() -> None:
    report = _check(_clean())
    assert report.ok, report.violations
    assert report.measurements["over_admission"] == 0
    assert report.measurements["stale_reads"] == 0
    assert report.measurements["abuser_fail_open"] == 10


def test_a_5xx_and_an_unanswered_request_are_found() -> None:
    report = _check([*_clean(), Record("read", 3.0, 3.1, 502), Record("abuse", 4.0, 14.0, 0)])
    assert _checks(report) == ["5xx"] and len(report.violations) == 2


def test_a_stale_read_far_from_any_fault_is_found() -> None:
    report = _check([*_clean(), Record("read", 1.2, 1.21, 200, "HIT", {1: 0})])
    assert _checks(report) == ["stale"]
    assert report.measurements["stale_window_max_s"] == pytest.approx(0.1)


def test_a_stale_read_soon_after_a_fault_affected_write_is_within_the_bound() -> None:
    write = Record("write", 11.0, 11.1, 200, versions={2: 2})
    soon = Record("read", 11.1 + BOUND * 0.8, 11.95, 200, "HIT", {2: 1})
    report = _check([*_clean(), write, soon])
    assert report.ok, report.violations
    assert report.measurements["stale_window_max_s"] == pytest.approx(BOUND * 0.8)
    # Past the bound from the acknowledgement: a violation, even while the fault lasts.
    late = Record("read", 11.1 + BOUND * 1.2, 11.9, 200, "HIT", {2: 1})
    assert _checks(_check([*_clean(), write, late])) == ["stale"]


def test_a_write_soon_after_a_fault_counts_as_affected_by_it() -> None:
    # Sent within COOLDOWN of the fault's end: a breaker still open may have skipped Redis.
    write = Record("write", 12.0 + COOLDOWN - 1, 16.1, 200, versions={2: 2})
    assert _check([*_clean(), write, Record("read", 16.3, 16.4, 200, "HIT", {2: 1})]).ok
    much_later = Record("write", 12.0 + COOLDOWN + 1, 18.1, 200, versions={2: 2})
    read = Record("read", 18.2, 18.3, 200, "HIT", {2: 1})
    assert _checks(_check([*_clean(), much_later, read])) == ["stale"]


def test_a_redis_error_a_worker_saw_makes_a_nearby_write_fault_affected() -> None:
    """A worker's own Redis error (a timeout on a starved CPU) counts like a fault nearby.

    Far from every injected fault, a stale read after a write is a violation; when a
    worker logged a Redis error within the cool-down before the write, its names may
    have gone to the outbox, so the bound applies, and only the bound.
    """
    write = Record("write", 30.0, 30.1, 200, versions={2: 2})
    soon = Record("read", 30.1 + BOUND * 0.5, 30.4, 200, "HIT", {2: 1})
    history = [*_clean(), write, soon]
    assert _checks(_check(history)) == ["stale"]
    seen = [FaultWindow("TimeoutError seen by a worker", "worker 7", 29.0, 29.0)]
    report = cc.check(
        history, [FAULT], limit=LIMIT, window=WINDOW, bound=BOUND, cooldown=COOLDOWN,
        run_end=40.0, observed=seen,
    )  # fmt: skip
    assert report.ok, report.violations
    assert report.measurements["observed_only_writes"] == 1
    assert report.measurements["observed_errors_outside_faults"] == 1
    late = Record("read", 30.1 + BOUND * 1.2, 30.8, 200, "HIT", {2: 1})
    report = cc.check(
        [*_clean(), write, late], [FAULT], limit=LIMIT, window=WINDOW, bound=BOUND,
        cooldown=COOLDOWN, run_end=40.0, observed=seen,
    )  # fmt: skip
    assert _checks(report) == ["stale"]
    # An error logged after the write was acknowledged explains nothing about it.
    after = [FaultWindow("TimeoutError seen by a worker", "worker 7", 30.2, 30.2)]
    report = cc.check(
        history, [FAULT], limit=LIMIT, window=WINDOW, bound=BOUND, cooldown=COOLDOWN,
        run_end=40.0, observed=after,
    )  # fmt: skip
    assert _checks(report) == ["stale"]


def test_a_failed_write_makes_no_read_stale() -> None:
    history = [*_clean(), Record("write", 3.0, 3.1, 400, versions={1: 5})]
    assert _check([*history, Record("read", 3.2, 3.3, 200, "HIT", {1: 1})]).ok


def test_over_admission_is_found_and_counted() -> None:
    extra = Record("abuse", 2.02, 2.04, 200, limit=LIMIT)
    report = _check([*_clean(), extra])
    assert _checks(report) == ["over-admission"]
    assert report.measurements["over_admission"] == 1


def test_admissions_that_may_span_two_windows_are_not_over_admission() -> None:
    # The 4th counted admission was answered 1 s after the first was sent: the server
    # may have decided them in different windows, so nothing is certain.
    slow = Record("abuse", 2.3, 2.0 + WINDOW, 200, limit=LIMIT)
    assert _check([*_clean(), slow]).ok
    # FAIL_OPEN admissions (no headers) never count, however many.
    uncounted = [Record("abuse", 2.01 + n * 0.001, 2.02, 200) for n in range(10)]
    assert _check([*_clean(), *uncounted]).ok


def test_no_recovery_after_a_fault_is_found() -> None:
    no_hit = [r for r in _clean() if not (r.role == "read" and r.sent > FAULT.end)]
    assert [v.detail for v in _check(no_hit).violations] == [
        "no cache HIT after blackhole ended at 12.000s"
    ]
    no_429 = [r for r in _clean() if not (r.role == "abuse" and r.sent > FAULT.end)]
    assert [v.detail for v in _check(no_429).violations] == [
        "no 429 for the abuser after blackhole ended"
    ]


def test_recovery_is_judged_before_the_next_fault_starts() -> None:
    second = FaultWindow("reset", "redis", 12.55, 19.0)  # starts before the HIT at 12.6
    report = _check(_clean(), [FAULT, second])
    assert "no cache HIT after blackhole ended at 12.000s" in [v.detail for v in report.violations]


def test_added_latency_is_measured_per_fault_kind() -> None:
    slow = Record("read", 11.0, 11.3, 200, "MISS", {1: 1})
    latency = cc.latency_by_fault([*_clean(), slow], [FAULT])
    assert latency["blackhole"] == pytest.approx(0.3 - 0.01, abs=0.011)


def test_the_chaos_block_of_the_docs_is_rendered_from_the_recorded_runs() -> None:
    import json

    from loadtests import chaos

    page = chaos.RELIABILITY.read_text()
    runs = json.loads(chaos.DATA.read_text())["runs"]
    assert chaos.BEGIN in page and chaos.END in page and runs
    assert page == chaos.rewrite(page, runs), (
        "docs/reliability.md differs from docs/data/chaos.json: run `make chaos` "
        "(or `python loadtests/chaos.py --render`), never edit the figures by hand"
    )


# -- the short seeded run (make chaos runs a longer one) -------------------------------------

SHORT_SEED, SHORT_SECONDS = 20261202, 40.0


def test_plan_is_seeded_bounded_and_covers_every_kind() -> None:
    from loadtests import chaos

    first = chaos.plan(SHORT_SEED, SHORT_SECONDS, chaos.STANDALONE_KINDS, 1)
    assert first == chaos.plan(SHORT_SEED, SHORT_SECONDS, chaos.STANDALONE_KINDS, 1)
    assert first != chaos.plan(SHORT_SEED + 1, SHORT_SECONDS, chaos.STANDALONE_KINDS, 1)
    assert sorted(f.kind for f in first) == sorted(chaos.STANDALONE_KINDS)
    for fault, following in zip(first, [*first[1:], None], strict=True):
        end = fault.at + fault.seconds
        next_start = following.at if following else SHORT_SECONDS
        assert next_start - end >= chaos.COOLDOWN + 1  # a healthy gap longer than the cool-down
    on_cluster = chaos.plan(SHORT_SEED, SHORT_SECONDS, chaos.CLUSTER_KINDS, 3)
    assert "cut" in [f.kind for f in on_cluster]


@pytest.mark.slow
@pytest.mark.parametrize("topology", ["real", "cluster"])  # real: one redis-server
def test_a_short_seeded_fault_schedule_under_load(topology: str, request, capsys) -> None:
    from loadtests import chaos
    from tests import servers
    from tests.conftest import _unavailable

    if servers.redis_server_binary() is None:
        _unavailable("redis-server is not installed")
    cluster = topology == "cluster"
    report = chaos.run(SHORT_SEED, SHORT_SECONDS, cluster)
    with capsys.disabled():
        print(f"\nchaos ({topology}, seed {SHORT_SEED}): {report.measurements}")
    assert report.ok, (
        "\n".join(f"{v.check}: {v.detail}" for v in report.violations[:20])
        + f"\nreproduce with: {chaos.reproduce_command(SHORT_SEED, SHORT_SECONDS, cluster)}"
    )


@pytest.mark.slow
@pytest.mark.stack_independent  # the checker's eyes: writes that bypass invalidation are stale
def test_the_run_reports_stale_reads_when_writes_bypass_invalidation() -> None:
    """The whole pipeline can see a stale read: writes straight to the database are one."""
    from loadtests import chaos
    from tests import servers
    from tests.conftest import _unavailable

    if servers.redis_server_binary() is None:
        _unavailable("redis-server is not installed")
    report = chaos.run(SHORT_SEED, 9.0, cluster=False, bypass=True)  # too short for faults
    assert report.measurements["faults"] == []
    assert [v.check for v in report.violations if v.check != "stale"] == []
    assert report.measurements["stale_reads"] > 0
