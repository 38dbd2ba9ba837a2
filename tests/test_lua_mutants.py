"""CI runs the Lua mutants (``tests/lua_mutants.py``): every one must be killed or known equivalent.

All scripts' mutants run on fakeredis (real Lua; no server start) in one
subprocess: about 40 s of CPU. ``make mutate`` runs them on a real server too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.lua_mutants import LUA, MUTANTS

ROOT = Path(__file__).resolve().parent.parent

def test_every_mutation_still_applies_to_its_script():
    for mutant in MUTANTS:
        mutant.apply((LUA / f"{mutant.script}.lua").read_text())


@pytest.mark.slow
@pytest.mark.stack_independent  # judges the tests, not the stack; the unmutated tests run there
def test_lua_mutants_are_all_killed():
    args = [sys.executable, "-m", "tests.lua_mutants"]
    result = subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
    )
    report = result.stdout[result.stdout.find("killed") :]
    assert result.returncode == 0, report[-4000:] + result.stderr[-2000:]
    assert "SURVIVED" not in report
