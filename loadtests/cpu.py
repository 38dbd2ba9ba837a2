"""CPU time of the processes a load run starts, and pinning them to CPUs (Linux ``/proc``).

Throughput at saturation means little without knowing who used the CPU: on a
two-core machine Locust and the server compete, so ``make load MODE=saturate``
pins the server side (Redis, gunicorn and its workers) and Locust to different
CPUs where it can, and reports the CPU seconds each side used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces.
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it (gunicorn's master and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir() if PROC.exists() else ():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo and len(found) < 10_000:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (those still alive)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _TICKS


def can_pin() -> bool:
    """Two CPUs or more and ``taskset`` (util-linux): then the sides get a CPU each."""
    return (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def pin(pid: int, cpus: str) -> bool:
    """Pin every thread of ``pid`` to ``cpus`` (``"0"``, ``"1-3"``); ``False`` if it failed."""
    if not can_pin():
        return False
    result = subprocess.run(
        ["taskset", "-a", "-p", "-c", cpus, str(pid)],
        capture_output=True, check=False, timeout=10,
    )  # fmt: skip
    return result.returncode == 0


def pinned(argv: list[str], cpus: str | None) -> list[str]:
    """``argv`` run under ``taskset -c cpus`` (its children inherit the set), if pinning."""
    return ["taskset", "-c", cpus, *argv] if cpus and can_pin() else argv
