"""Write the measured part of ``docs/reliability.md`` from a run's measurements.

    DRT_MEASUREMENTS=docs/data/reliability.json python -m pytest tests/test_outage_under_load.py
    python tests/render_reliability.py

(``make reliability-docs`` does both.) Only the block between the two markers in
``docs/reliability.md`` is rewritten; ``tests/test_reliability_doc.py`` fails when
the page and the JSON file disagree, so the figures can never be edited by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "data" / "reliability.json"
PAGE = ROOT / "docs" / "reliability.md"
BEGIN = (
    "<!-- measured: begin (written by tests/render_reliability.py from "
    "docs/data/reliability.json; do not edit by hand) -->"
)
END = "<!-- measured: end -->"


def _seconds(value: float) -> str:
    return f"{value:.2f} s"


def render(data: dict[str, Any]) -> str:
    lines: list[str] = []
    load = data.get("outage_under_load")
    if load:
        lines += [
            f"**Redis frozen, killed and restarted under load** "
            f"(`tests/test_outage_under_load.py::test_freeze_kill_restart_under_load`: "
            f"gunicorn {load['workers']} workers x {load['threads']} threads, "
            f"{load['clients']} client threads; a staff `PATCH` while Redis is frozen):",
            "",
            "| phase | requests | 5xx | non-200 | took 0.25 s or more | p50 | p99 | max |",
            "|---|---|---|---|---|---|---|---|",
        ]
        order = ["before", "frozen", "thawed", "killed", "restarted"]
        phases = sorted(load["phases"].items(), key=lambda kv: [*order, kv[0]].index(kv[0]))
        for phase, row in phases:
            lines.append(
                f"| {phase} | {row['requests']:,} | {row['errors_5xx']} | {row['non_200']} | "
                f"{row['slow']} | {row['p50_ms']} ms | {row['p99_ms']} ms | {row['max_ms']} ms |"
            )
        lines += [
            "",
            f"Outage {load['outage_s']} s; the workers counted {load['timeouts']} socket "
            f"timeouts (`connection.stats()`; asserted bound: {load['timeout_bound']}) and "
            f"{load['skips']:,} calls skipped by the open breaker. After the thaw the entry cached "
            f"before the outage was served **{load['stale_reads_after_thaw']} times**; the new "
            f"price was cached again {_seconds(load['cached_again_after_thaw_s'])} after the "
            "thaw.",
            "",
        ]
    stale = data.get("stale_window")
    if stale:
        lines += [
            f"**Stale window in every worker after an outage, live and killed writers** "
            "(`tests/test_outage_under_load.py::"
            "test_no_worker_serves_a_stale_entry_after_an_outage_whoever_wrote`: "
            f"gunicorn {stale['workers']} workers x {stale['threads']} threads, "
            f"{stale['readers']} reader threads on one cached detail; Redis frozen, the price "
            "changed by a staff `PATCH` (live writer) or by a `manage.py shell` process killed "
            "with SIGKILL right after its commit (killed writer), then Redis resumed):",
            "",
            "| run | writer | reads after the write | of them after the thaw | stale during the "
            "outage | stale after the thaw | stale window after the thaw | outbox delivered "
            "after the thaw | new price cached after the thaw | slowest read |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for index, run in enumerate(stale["runs"], 1):
            lines.append(
                f"| {index} | {run['kind']} | {run['reads_after_write']} | "
                f"{run['reads_after_thaw']} | {run['stale_reads_during_outage']} | "
                f"{run['stale_reads_after_thaw']} | {_seconds(run['stale_window_after_thaw_s'])} | "
                f"{_seconds(run['delivered_after_thaw_s'])} | "
                f"{_seconds(run['cached_again_after_thaw_s'])} | "
                f"{_seconds(run['max_latency_s'])} |"
            )
        worst = stale["worst"]
        lines += [
            f"| **worst** | | | | | **{worst['stale_reads']} stale reads in all** | "
            f"**{_seconds(worst['stale_window_after_thaw_s'])}** | "
            f"{_seconds(worst['delivered_after_thaw_s'])} | "
            f"{_seconds(worst['cached_again_after_thaw_s'])} | |",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def rewrite(page: str, data: dict[str, Any]) -> str:
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{render(data)}{END}{tail}"


def main() -> int:
    data = json.loads(DATA.read_text())
    PAGE.write_text(rewrite(PAGE.read_text(), data))
    print(f"wrote the measured block of {PAGE.relative_to(ROOT)} from {DATA.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
