"""``make load MODE=saturate``'s decisions (loadtests/saturate.py), without running a load."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from loadtests import cpu, saturate
from loadtests.checks import REQUIRED_CHECKS


def _step(
    users: int, rps: float, p95: float, ok: bool = True, checked=None, others: float = 50.0
) -> dict:
    """A step whose browsers made ``rps`` requests/s, and the paced users ``others`` more."""
    return {
        "users": users, "browse_requests_per_s": rps, "requests_per_s": rps + others,
        "p50_ms": p95 / 3, "p95_ms": p95, "ok": ok,
        "failed_because": [] if ok else ["violations {'stale-read': 1}"],
        "checked": dict.fromkeys(REQUIRED_CHECKS, 1) if checked is None else checked,
        "stale_reads": 0 if ok else 1, "over_admission": 0, "cpu": {},
    }  # fmt: skip


def test_user_steps_double_up_to_the_bound():
    assert saturate.user_steps(8, 128) == [8, 16, 32, 64, 128]
    assert saturate.user_steps(8, 100) == [8, 16, 32, 64]
    assert saturate.user_steps(0, 3) == [1, 2]


def test_steps_down_halve_below_the_first_to_the_floor():
    assert saturate.steps_down(8, 4) == [4]
    assert saturate.steps_down(16, 3) == [8, 4]
    assert saturate.steps_down(4, 4) == []


def test_a_configuration_past_the_bound_at_its_first_step_steps_down(tmp_path, monkeypatch):
    """The baseline at 8 users already past 100 ms: measured at 4 instead of failing."""
    import argparse

    p95_at = {"toolkit": {8: 40, 16: 60, 32: 140}, "baseline": {8: 110, 4: 70}}
    asked: list[tuple[str, int]] = []

    def run_once(args, mode, users, outdir):
        asked.append((mode, users))
        p95 = p95_at[mode].get(users, 200)
        step = _step(users, 30.0 * users if mode == "toolkit" else 12.0 * users, p95)
        return {
            **step, "mode": mode, "locust_exit": 0, "requests": 100, "errors": 0,
            "violations": {}, "early_refusals": 0,
            "browse": {"requests_per_s": step["browse_requests_per_s"]},
        }  # fmt: skip

    args = argparse.Namespace(
        duration=20, first_users=8, max_users=128, spawn_rate=1.0, abusers=2, extra_env={}
    )
    without_local = [c for c in saturate.CONFIGURATIONS if c[0] != "toolkit + LOCAL_CACHE"]
    monkeypatch.setattr(saturate, "CONFIGURATIONS", without_local)
    report, _code = saturate.run(args, run_once, tmp_path)
    # Each past the bound just above its best step: the midpoint is tried once.
    assert asked == [
        ("toolkit", 8), ("toolkit", 16), ("toolkit", 32), ("toolkit", 24),
        ("baseline", 8), ("baseline", 4), ("baseline", 6),
    ]  # fmt: skip
    baseline = report["modes"]["baseline"]
    assert [s["users"] for s in baseline["steps"]] == [4, 6, 8]
    assert baseline["best"]["users"] == 4  # 6 users: past the bound too (p95 200 ms)
    assert report["ratios"] == {"toolkit": round(480 / 48, 2)}


def test_the_midpoint_is_tried_only_next_to_a_step_past_the_bound():
    assert saturate.refinement([_step(8, 300, 40), _step(16, 500, 120)]) == 12
    assert saturate.refinement([_step(8, 300, 40), _step(16, 305, 60)]) is None  # flat
    assert saturate.refinement([_step(8, 300, 120)]) is None  # nothing in bound
    assert saturate.refinement([_step(4, 300, 40), _step(6, 310, 90), _step(8, 320, 130)]) is None


def test_the_best_step_is_the_fastest_within_the_latency_bound():
    steps = [_step(8, 300, 40), _step(16, 450, 90), _step(32, 500, 140)]
    assert saturate.best(steps) is steps[1]
    assert saturate.best([_step(8, 300, 101)]) is None


def test_a_failed_step_never_sets_the_ratio_however_fast():
    # Errors answered fast: a low p95 and many requests/s, and a wrong run.
    steps = [_step(8, 300, 40), _step(16, 900, 20, ok=False)]
    assert saturate.best(steps) is steps[0]
    assert saturate.best(steps, saturate.ALL) is steps[0]
    assert saturate.best([_step(8, 900, 20, ok=False)]) is None


def _summary(shared_names: list[str]) -> dict:
    """One step's summary as ``loadtests/run.py`` writes it, every check passed."""
    return {
        "mode": "toolkit", "locust_exit": 0, "requests": 1000, "errors": 0,
        "violations": {}, "over_admission": 0, "early_refusals": 0, "users": 8,
        "requests_per_s": 50.0, "p50_ms": 10, "p95_ms": 30, "stale_reads": 0,
        "checked": dict.fromkeys(REQUIRED_CHECKS, 1),
        "browse": {"requests_per_s": 40.0, "shared_names": shared_names},
    }  # fmt: skip


def test_a_step_whose_browsers_share_a_request_name_fails():
    """The browse mix counts the browsers' request names: one shared with the shoppers
    would count their requests too. The step fails, and with it the run."""
    assert saturate.step_record(_summary([]))["ok"]
    record = saturate.step_record(_summary(["/api/products/ [list]"]))
    assert not record["ok"]
    assert record["failed_because"] == [
        "request names sent by browsers and other users: ['/api/products/ [list]']"
    ]
    report = {"modes": {"toolkit": {"steps": [record], "best": saturate.best([record])}}}
    assert any("request names" in r for r in saturate.verdict(report))


def test_a_ratio_without_a_passed_step_reads_not_measurable():
    report = {
        "step_s": 20, "pinned": "no", "failed_because": [],
        "modes": {"toolkit": {"steps": [], "best": None}, "baseline": {"steps": [], "best": None}},
        "ratios": {"toolkit": None}, "ratios_all": {"toolkit": None},
    }  # fmt: skip
    text = saturate.describe(report)
    assert "not measurable" in text and "not met" not in text


def test_the_best_step_is_judged_on_the_browse_mix_or_on_every_request():
    # The paced users' share shrinks as the server slows down: the two can disagree.
    steps = [_step(8, 300, 40, others=60), _step(16, 310, 60, others=20)]
    assert saturate.best(steps) is steps[1]
    assert saturate.best(steps, saturate.ALL) is steps[0]


def test_climbing_stops_past_the_bound_or_when_throughput_stops_growing():
    assert not saturate.saturated([_step(8, 300, 40)])
    assert not saturate.saturated([_step(8, 300, 40), _step(16, 320, 60)])  # +6.7%
    assert saturate.saturated([_step(8, 300, 40), _step(16, 310, 60)])  # +3.3%
    assert saturate.saturated([_step(8, 300, 40), _step(16, 600, 101)])
    # Judged on the browsers' requests/s: +3.3% of browsing is saturated, even when
    # the paced users' requests make every request's requests/s grow by 13%.
    assert saturate.saturated([_step(8, 300, 40, others=0), _step(16, 310, 60, others=30)])


def test_the_verdict_fails_on_a_wrong_answer_whatever_the_speed():
    report = {"modes": {"toolkit": {"steps": [_step(8, 900, 20, ok=False)], "best": None}}}
    report["modes"]["toolkit"]["best"] = saturate.best(report["modes"]["toolkit"]["steps"])
    reasons = saturate.verdict(report)
    assert any("stale-read" in r for r in reasons), reasons


def test_every_kind_of_check_must_run_in_some_step_of_a_configuration():
    first = dict.fromkeys(REQUIRED_CHECKS, 1) | {"cart-price": 0}
    second = dict.fromkeys(REQUIRED_CHECKS, 0) | {"cart-price": 2}
    steps = [_step(8, 300, 40, checked=first), _step(16, 400, 50, checked=second)]
    assert saturate.verdict({"modes": {"toolkit": {"steps": steps, "best": steps[1]}}}) == []
    steps = [_step(8, 300, 40, checked=first)]
    reasons = saturate.verdict({"modes": {"toolkit": {"steps": steps, "best": steps[0]}}})
    assert reasons == ["toolkit: checks that never ran in any step: ['cart-price']"]


def test_no_step_within_the_bound_fails_the_configuration():
    steps = [_step(8, 300, 150)]
    reasons = saturate.verdict({"modes": {"baseline": {"steps": steps, "best": None}}})
    assert reasons == ["baseline: no passed step kept p95 <= 100 ms"]


def test_cpu_accounting_sees_a_child_and_its_work():
    """A busy child shows in ``descendants`` and ``cpu_seconds``, and is gone once reaped."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys\nx = 0\nwhile x < 3_000_000: x += 1\nsys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    try:
        assert child.pid in cpu.descendants(os.getpid())
        used = 0.0
        for _ in range(200):  # bounded: until its ~0.1 s of counting shows
            used = cpu.cpu_seconds([child.pid])
            if used > 0:
                break
            time.sleep(0.05)
        assert used > 0
    finally:
        child.communicate(b"", timeout=10)
    assert cpu.cpu_seconds([child.pid]) == 0  # reaped: /proc forgets it


def test_each_toolkit_configuration_is_compared_with_the_baseline():
    fast, faster, slow = [_step(8, 600, 40)], [_step(8, 900, 40)], [_step(8, 200, 40)]
    report = {
        "step_s": 20,
        "pinned": "no",
        "failed_because": [],
        "modes": {
            "toolkit": {"steps": fast, "best": fast[0]},
            "toolkit + LOCAL_CACHE": {"steps": faster, "best": faster[0]},
            "baseline": {"steps": slow, "best": slow[0]},
        },
    }
    report["ratios"] = saturate.ratios(report)
    report["ratios_all"] = saturate.ratios(report, saturate.ALL)
    assert report["ratios"] == {"toolkit": 3.0, "toolkit + LOCAL_CACHE": 4.5}
    # The paced users' 50 requests/s on each side: (600 + 50) / (200 + 50).
    assert report["ratios_all"] == {"toolkit": 2.6, "toolkit + LOCAL_CACHE": 3.8}
    text = saturate.describe(report)
    assert (
        "- toolkit / baseline at saturation, browse mix: 3.0x (target >= 3x): met; "
        "all requests: 2.6x" in text
    )
    assert "- toolkit + LOCAL_CACHE / baseline at saturation, browse mix: 4.5x" in text
    assert "| toolkit (best) | 8 | 600.0 | 650.0 |" in text
    slow[0]["p95_ms"] = 101  # no step of the baseline within the bound
    assert saturate.ratios(report) == {"toolkit": None, "toolkit + LOCAL_CACHE": None}


def test_the_local_cache_configuration_reaches_the_server_environment():
    from loadtests import run

    args = run.parse_args(["--mode", "saturate"])
    labels = [label for label, _, _ in saturate.CONFIGURATIONS]
    assert labels == ["toolkit", "toolkit + LOCAL_CACHE", "baseline"]
    for _label, mode, extra in saturate.CONFIGURATIONS:
        args.extra_env = extra
        env = run.server_env(args, mode, "redis://127.0.0.1:1/0", Path("/tmp"))
        assert env["DRT_LOCAL_CACHE"] == extra["DRT_LOCAL_CACHE"]
        assert env["SHOP_BASELINE"] == ("1" if mode == "baseline" else "0")


def test_the_baseline_configuration_needs_no_304_check():
    no_304 = dict.fromkeys(REQUIRED_CHECKS, 1) | {"not-modified": 0}
    steps = [_step(8, 130, 80, checked=no_304)]
    assert saturate.verdict({"modes": {"baseline": {"steps": steps, "best": steps[0]}}}) == []
    for label in ("toolkit", "toolkit + LOCAL_CACHE"):
        reasons = saturate.verdict({"modes": {label: {"steps": steps, "best": steps[0]}}})
        assert reasons == [f"{label}: checks that never ran in any step: ['not-modified']"]
