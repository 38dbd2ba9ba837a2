"""Plots of a load-test sweep (``make load MODE=compare SWEEP=10,25,50,100``): ``make load-plots``.

Reads ``loadtests/results/sweep.json`` and each run's ``client.json``, writes PNGs:

* ``load-scaling.png``: requests/s and p95 latency against users, toolkit vs baseline;
* ``throttle-accuracy.png``: the abusive client's admitted requests in every
  sliding one-second window, against the limit, toolkit vs DRF's throttle.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests.checks import certain_counts, parse_rate  # noqa: E402

COLOURS = {"toolkit": "#1f77b4", "baseline": "#d62728"}
LABELS = {
    "toolkit": "drf-redis-toolkit (cache + sliding-window throttles)",
    "baseline": "baseline (no response cache, DRF throttles on django-redis)",
}


def scaling(runs: list[dict[str, Any]], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode in ("toolkit", "baseline"):
        points = sorted((r["users"], r) for r in runs if r["mode"] == mode)
        if not points:
            continue
        users = [u for u, _ in points]
        left.plot(users, [r["requests_per_s"] for _, r in points], "o-",
                  color=COLOURS[mode], label=LABELS[mode])  # fmt: skip
        right.plot(users, [r["p95_ms"] for _, r in points], "o-",
                   color=COLOURS[mode], label=LABELS[mode])  # fmt: skip
    left.set(title="Throughput", xlabel="simulated users", ylabel="requests/s")
    right.set(title="p95 latency (all endpoints)", xlabel="simulated users", ylabel="ms")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.set_ylim(bottom=0)
    left.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def accuracy(runs: list[dict[str, Any]], results: Path, path: Path) -> None:
    """The abuser's run at the fewest users: the one where it pushes hardest against its limit."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    window = 1
    top = 0
    for axis, mode in zip(axes, ("toolkit", "baseline"), strict=True):
        candidates = [r for r in runs if r["mode"] == mode]
        if not candidates:
            axis.set_visible(False)
            continue
        run = min(candidates, key=lambda r: r["users"])
        client = json.loads((results / f"{mode}-u{run['users']}" / "client.json").read_text())
        abuse = client["abuse"]
        limit, window = parse_rate(abuse["rate"])[0]
        admitted = [(s, e) for s, e, status in abuse["log"] if status == 200]
        series = certain_counts(admitted, window)
        worst = max((n for _, n in series), default=0)
        top = max(top, worst, limit)
        axis.plot([t for t, _ in series], [n for _, n in series], color=COLOURS[mode], lw=1)
        axis.axhline(limit, color="black", ls="--", lw=1, label=f"limit {limit}/{window}s")
        axis.set(
            title=f"{LABELS[mode].split(' (')[0]}, {run['users']} users: worst {worst}",
            xlabel="seconds into the run (window start)",
        )
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right", fontsize=8)
    axes[0].set_ylim(0, top * 1.15 + 1)
    axes[0].set_ylabel(f"admitted within {window}s (certainly)")
    fig.suptitle(
        "One account hammered by 2 clients at ~50 requests/s; limit 20/s, 4 gunicorn workers",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=ROOT / "loadtests" / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    sweep = args.results / "sweep.json"
    if not sweep.exists():
        print(f"plot: {sweep} not found; run `make load MODE=compare SWEEP=10,25,50,100` first")
        return 1
    runs = json.loads(sweep.read_text())["sweep"]
    args.out.mkdir(parents=True, exist_ok=True)
    scaling(runs, args.out / "load-scaling.png")
    accuracy(runs, args.results, args.out / "throttle-accuracy.png")
    print(f"plot: wrote {args.out / 'load-scaling.png'} and {args.out / 'throttle-accuracy.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
