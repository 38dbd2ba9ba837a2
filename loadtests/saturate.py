"""``make load MODE=saturate``: the most browsing requests/s each side sustains, p95 <= 100 ms.

The usual ``make load`` paces its simulated users, so their think time, not the
server, sets the throughput. Here the browsers send their next request as soon as
the last one is answered (``DRT_LOAD_THINK=0``; shoppers, staff and the abuser
keep their pace, so writes, invalidations and throttling still happen and every
answer is still judged), and the number of users doubles from step to step until
the 95th percentile passes ``TARGET_P95_MS`` or the browsers' throughput stops
growing. The result of a configuration is its best step within the latency bound,
judged on the browse mix (the browsers' requests/s; every request's requests/s is
reported next to it).

The toolkit (with ``LOCAL_CACHE`` off, then on) and the baseline (no response
cache, DRF's throttles on django-redis) run the same steps in the same invocation.
The server side (Redis, gunicorn and its workers) and Locust are pinned to
different CPUs where the machine has two, and the CPU seconds each side used are
reported: on a two-core machine Locust's own cost is part of the picture. A step
with a stale read, over-admission or any other wrong answer fails the run, whatever
its speed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from loadtests import checks

#: The latency bound a step must keep to count.
TARGET_P95_MS = 100.0
#: The issue's target: the toolkit sustains this many times the baseline's requests/s.
TARGET_RATIO = 3.0
#: Browsers never meet a limit (each has its own address, and its decision costs the
#: same whether or not it is near the limit); the abuser's account still does.
SATURATE_RATES = {"anon": "1000000/s", "user": "20/s,600/min", "cart_write": "120/min"}
#: A step must add this share of requests/s over the best so far, or the server is saturated.
MIN_GROWTH = 0.05
#: The configurations, in the order they run: (label, load mode, the server's extra
#: environment). ``LOCAL_CACHE`` serves hits from process memory (docs/local-cache.md);
#: its answers are judged like the others'.
CONFIGURATIONS: list[tuple[str, str, dict[str, str]]] = [
    ("toolkit", "toolkit", {"DRT_LOCAL_CACHE": "0"}),
    ("toolkit + LOCAL_CACHE", "toolkit", {"DRT_LOCAL_CACHE": "1"}),
    ("baseline", "baseline", {"DRT_LOCAL_CACHE": "0"}),
]


def user_steps(first: int, most: int) -> list[int]:
    """Doubling user counts from ``first`` up to ``most`` (both included when reached)."""
    steps, users = [], max(1, first)
    while users <= most and len(steps) < 16:
        steps.append(users)
        users *= 2
    return steps


def step_record(summary: dict[str, Any]) -> dict[str, Any]:
    """What one step contributes to the report.

    A step is judged like any load run, except that a kind of check may stay
    unused in one short step: the kinds must each have run over the steps of a
    configuration (``verdict``).
    """
    reasons = checks.verdict(
        mode=summary["mode"],
        locust_exit=summary["locust_exit"],
        requests=summary["requests"],
        errors=summary["errors"],
        violations=summary["violations"],
        over_admission=summary["over_admission"],
        early_refusals=summary["early_refusals"],
        checked=dict.fromkeys(checks.REQUIRED_CHECKS, 1),
        shared_names=summary["browse"].get("shared_names"),
    )
    return {
        "users": summary["users"],
        "requests_per_s": summary["requests_per_s"],
        "browse_requests_per_s": summary["browse"]["requests_per_s"],
        "p50_ms": summary["p50_ms"],
        "p95_ms": summary["p95_ms"],
        "ok": not reasons,
        "failed_because": reasons,
        "checked": summary["checked"],
        "stale_reads": summary["stale_reads"],
        "over_admission": summary["over_admission"],
        "cpu": summary.get("cpu", {}),
    }


#: What the target is judged on: the browsers' requests/s (the browse mix). Shoppers,
#: staff and the abuser keep their own pace (at most about 55 requests/s, fewer once
#: the server falls behind), so counted in, they add about the same to both sides and
#: pull the ratio towards 1; ``ALL`` is reported next to it.
BROWSE = "browse_requests_per_s"
ALL = "requests_per_s"


def steps_down(first: int, floor: int) -> list[int]:
    """Halving user counts below ``first``, down to ``floor``: tried while no step is in bound.

    A server already past the bound at the first step (the baseline at 8 users
    on a slow run) gets a result at fewer users instead of none.
    """
    steps, users = [], first // 2
    while users >= max(1, floor) and len(steps) < 16:
        steps.append(users)
        users //= 2
    return steps


def best(steps: list[dict[str, Any]], key: str = BROWSE) -> dict[str, Any] | None:
    """The step with the most requests/s (``key``) among the passed ones within the
    latency bound.

    The bound is on the 95th percentile of every request (the paced users' too). A
    failed step (errors answered fast, a wrong answer) never sets the ratio.
    """
    within = [s for s in steps if s["ok"] and s["p95_ms"] <= TARGET_P95_MS]
    return max(within, key=lambda s: s.get(key, 0.0), default=None)


def saturated(steps: list[dict[str, Any]]) -> bool:
    """Stop climbing: the last step broke the latency bound, or added too little."""
    last = steps[-1]
    if last["p95_ms"] > TARGET_P95_MS:
        return True
    earlier = best(steps[:-1])
    return earlier is not None and last[BROWSE] < earlier[BROWSE] * (1 + MIN_GROWTH)


def ratios(report: dict[str, Any], key: str = BROWSE) -> dict[str, float | None]:
    """Each toolkit configuration's best requests/s (``key``) over the baseline's best."""
    baseline = best(report["modes"]["baseline"]["steps"], key)
    out: dict[str, float | None] = {}
    for label, result in report["modes"].items():
        if label == "baseline":
            continue
        mine = best(result["steps"], key)
        out[label] = (
            round(mine[key] / baseline[key], 2) if mine and baseline and baseline.get(key) else None
        )
    return out


def verdict(report: dict[str, Any]) -> list[str]:
    """Why the run fails (wrong answers only: the speed ratio is reported, not enforced)."""
    reasons = []
    modes = {label: mode for label, mode, _ in CONFIGURATIONS}
    for label, result in report["modes"].items():
        for step in result["steps"]:
            if not step["ok"]:
                reasons.append(f"{label} at {step['users']} users: {step['failed_because']}")
        if result["best"] is None:
            reasons.append(f"{label}: no passed step kept p95 <= {TARGET_P95_MS:.0f} ms")
        ran = {kind for step in result["steps"] for kind, n in step["checked"].items() if n}
        required = checks.required_checks(modes.get(label, label))
        never = [kind for kind in required if kind not in ran]
        if never:
            reasons.append(f"{label}: checks that never ran in any step: {never}")
    return reasons


def describe(report: dict[str, Any]) -> str:
    lines = [
        f"saturation (p95 <= {TARGET_P95_MS:.0f} ms), step {report['step_s']} s, "
        f"pinned: {report['pinned']}",
        "",
        "| configuration | users | browse req/s | all req/s | p50 ms | p95 ms | server CPU s "
        "| locust CPU s | stale reads | over-admission |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, result in report["modes"].items():
        for step in result["steps"]:
            mark = " (best)" if step is result["best"] else ""
            cpu_used = step["cpu"]
            browse = step.get(BROWSE)
            lines.append(
                f"| {mode}{mark} | {step['users']} | "
                f"{'?' if browse is None else f'{browse:.1f}'} | {step[ALL]:.1f} | "
                f"{step['p50_ms']:.0f} | {step['p95_ms']:.0f} | {cpu_used.get('server_s', '?')} | "
                f"{cpu_used.get('locust_s', '?')} | {step['stale_reads']} | "
                f"{step['over_admission']} |"
            )
    lines.append("")
    every = report.get("ratios_all", {})
    for label, ratio in report["ratios"].items():
        if ratio is None:
            met = "not measurable (a configuration has no passed step within the bound)"
        else:
            met = "met" if ratio >= TARGET_RATIO else "**not met**"
        lines.append(
            f"- {label} / baseline at saturation, browse mix: {ratio}x "
            f"(target >= {TARGET_RATIO:.0f}x): {met}; all requests: {every.get(label)}x"
        )
    for reason in report["failed_because"]:
        lines.append(f"failed because: {reason}")
    return "\n".join(lines)


def climb(
    args: argparse.Namespace, run_once: Any, out: Path, label: str, mode: str
) -> list[dict[str, Any]]:
    """One configuration's steps, by users: up until saturated, then down if none in bound."""
    tag = label.replace(" + ", "-").replace(" ", "-").lower()
    steps: list[dict[str, Any]] = []

    def step(users: int) -> None:
        args.spawn_rate = max(args.spawn_rate, float(users))  # ramp within a second
        summary = run_once(args, mode, users, out / f"saturate-{tag}-u{users}")
        record = step_record(summary)
        steps.append(record)
        print(
            f"saturate: {label} {users} users: {summary['requests_per_s']} req/s "
            f"({summary['browse']['requests_per_s']} browsing), "
            f"p95 {summary['p95_ms']:.0f} ms, ok={record['ok']}",
            flush=True,
        )

    for users in user_steps(args.first_users, args.max_users):
        step(users)
        if saturated(steps):
            break
    # The abusers and the staff user are fixed; one more user browses.
    for users in steps_down(args.first_users, args.abusers + 2):
        if best(steps) is not None:
            break
        step(users)
    between = refinement(steps)
    if between is not None:
        step(between)
    return sorted(steps, key=lambda s: s["users"])


def refinement(steps: list[dict[str, Any]]) -> int | None:
    """One more user count halfway between the best step and the next one, if past the bound.

    Doubling is coarse: a server whose p95 passes the bound just above the best
    step's users would be judged at up to half its load. The midpoint is
    tried once, for every configuration alike.
    """
    top = best(steps)
    if top is None:
        return None
    over = [s["users"] for s in steps if s["users"] > top["users"] and s["p95_ms"] > TARGET_P95_MS]
    if not over or min(over) != 2 * top["users"] or top["users"] < 2:
        return None
    return top["users"] + top["users"] // 2


def run(args: argparse.Namespace, run_once: Any, out: Path) -> tuple[dict[str, Any], int]:
    """Climb the steps for the toolkit, then the baseline; the report and the exit code."""
    from loadtests import cpu

    args.rates = SATURATE_RATES
    args.no_think = True
    args.pin = cpu.can_pin()
    report: dict[str, Any] = {
        "step_s": args.duration,
        "pinned": "server CPU 0, locust CPU 1" if args.pin else "no (one CPU or no taskset)",
        "modes": {},
    }
    for label, mode, extra_env in CONFIGURATIONS:
        args.extra_env = extra_env
        steps = climb(args, run_once, out, label, mode)
        report["modes"][label] = {"steps": steps, "best": best(steps)}
    args.extra_env = {}
    report["ratios"] = ratios(report, BROWSE)
    report["ratios_all"] = ratios(report, ALL)
    report["target_ratio"] = TARGET_RATIO
    report["failed_because"] = verdict(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "saturate.json").write_text(json.dumps(report, indent=1))
    return report, 0 if not report["failed_because"] else 1
