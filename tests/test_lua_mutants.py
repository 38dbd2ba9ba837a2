"""CI runs the Lua mutants (``tests/lua_mutants.py``): every one must be killed or known equivalent.

The throttle scripts' mutants run on fakeredis (real Lua; no server start), in one
subprocess, so this costs about a minute. ``make mutate`` runs all scripts, on
the real server too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.lua_mutants import LUA, MUTANTS

ROOT = Path(__file__).resolve().parent.parent
#: The scripts whose mutants CI runs (the rate-limit decisions).
CI_SCRIPTS = ("sliding_window", "sliding_window_counter")


def test_every_mutation_still_applies_to_its_script():
    for mutant in MUTANTS:
        mutant.apply((LUA / f"{mutant.script}.lua").read_text())


@pytest.mark.slow
def test_throttle_script_mutants_are_all_killed():
    args = [sys.executable, "-m", "tests.lua_mutants"]
    for script in CI_SCRIPTS:
        args += ["--script", script]
    result = subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
    )
    report = result.stdout[result.stdout.find("killed") :]
    assert result.returncode == 0, report[-4000:] + result.stderr[-2000:]
    assert "SURVIVED" not in report
