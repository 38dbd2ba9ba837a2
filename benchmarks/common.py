"""What every benchmark here needs: its own redis-server, optionally pinned with us to CPU 0.

On these 2-core VMs a loopback round trip is bimodal with CPU placement; pinning
the benchmark process and redis-server to one CPU gives repeatable figures, and an
unpinned pass shows what the scheduler does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.servers import RedisProcess, start_redis


@contextmanager
def benchmark_redis(pinned: bool) -> Iterator[RedisProcess]:
    """Start a loopback redis-server (pinned with us to CPU 0 if asked); stop it after."""
    server = start_redis()
    try:
        if pinned:
            os.sched_setaffinity(0, {0})
            subprocess.run(
                ["taskset", "-p", "-c", "0", str(server.pid)], check=True, stdout=subprocess.DEVNULL
            )
        yield server
    finally:
        server.stop()


def redis_server_version() -> str:
    """``v=7.0.15`` style, as ``redis-server --version`` prints it."""
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return out.split()[2]


def percentile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ratio_table(
    results: dict[str, dict[str, float]],
    anchor: str,
    *,
    first: str,
    rate: str,
    digits: int,
) -> list[str]:
    """A Markdown table of p50/p99/rate per row, with each p50 as a ratio to ``anchor``'s."""
    lines = [
        f"| {first} | p50 µs | p99 µs | {rate} | p50 vs {anchor} |",
        "|---|---:|---:|---:|---:|",
    ]
    base = results[anchor]["p50"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['p50']:.{digits}f} | {r['p99']:.{digits}f} | {r['per_s']:,.0f} | "
            f"{r['p50'] / base:.2f}x |"
        )
    return lines


def write_between_markers(path: Path, name: str, lines: list[str]) -> None:
    """Replace the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in
    ``path`` with ``lines``: the generated part of a doc, never edited by hand."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text()
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(head + start + "\n" + "\n".join(lines).rstrip() + "\n" + end + tail)


def verdict(ratio: float, target: str) -> str:
    """``met`` / ``**not met**`` for a ratio against ``"<= 0.60"`` or ``">= 3.0"``."""
    op, bound = target.split()
    ok = ratio <= float(bound) if op == "<=" else ratio >= float(bound)
    return "met" if ok else "**not met**"


def passes_into_markdown(
    script: str, common: list[str], passes: list[list[str]], path: Path, name: str
) -> None:
    """Run ``script`` once per pass (``common`` + that pass's flags), each in its own
    process, print each pass's output and write them all between ``name``'s markers."""
    lines: list[str] = []
    for flags in passes:
        command = [sys.executable, script, *common, *flags]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        print(output, flush=True)
        lines += [*output.splitlines(), ""]
    write_between_markers(path, name, lines)
    print(f"written to {path}")
