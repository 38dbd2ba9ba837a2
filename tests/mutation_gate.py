"""CI's mutmut gate: every mutant of ``ratelimit.py`` is killed or listed as equivalent.

Runs ``mutmut run`` on a scratch copy of the tree (the worktree and its ``mutants/``
stay untouched) with a configuration of its own: only ``drf_redis_toolkit/ratelimit.py``
is mutated, and only the fast throttle tests on fakeredis run (``GATE_TESTS``). Then
it reads ``mutmut results`` and fails, naming them, on survivors (or mutants no test
reached, or timeouts) that are not in ``tests/equivalent_mutants.toml``. Each entry
there gives its kind and reason: ``equivalent`` (cannot be told apart) or
``cluster-only`` (reached only with a Redis Cluster client, which this fakeredis run
never builds); docs/testing.md explains both.
An allow-list entry whose mutant no longer exists fails too: the list stays honest
when ratelimit.py changes.

``python -m tests.mutation_gate`` (exit 0 = gate passed); ``make mutate`` runs the full set.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOW_LIST = ROOT / "tests" / "equivalent_mutants.toml"
MODULE = "drf_redis_toolkit/ratelimit.py"
PREFIX = "drf_redis_toolkit.ratelimit."
GATE_TESTS = [
    "tests/test_ratelimit_engine.py",
    "tests/test_throttling.py",
    "tests/test_throttle_rounds.py",
]
COPY_SKIP = {
    ".git",
    "mutants",
    ".venv",
    "node_modules",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
}


KINDS = ("equivalent", "cluster-only")


def allowed() -> dict[str, str]:
    """Mutant name (or glob) -> its kind and the reason the gate lets it survive."""
    data = tomllib.loads(ALLOW_LIST.read_text(encoding="utf-8"))
    entries = {}
    for entry in data["ratelimit"]:
        if entry["kind"] not in KINDS:
            raise ValueError(f"{entry['name']}: kind must be one of {KINDS}")
        entries[entry["name"]] = f"{entry['kind']}: {entry['reason']}"
    return entries


def _listed(name: str, allow: dict[str, str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in allow)


def _config() -> str:
    quoted = ", ".join(f'"{test}"' for test in GATE_TESTS)
    return (
        "[tool.mutmut]\n"
        'source_paths = ["drf_redis_toolkit/"]\n'
        f'only_mutate = ["{MODULE}"]\n'
        'also_copy = ["sample_api/", "loadtests/", "benchmarks/"]\n'
        'pytest_add_cli_args = ["-p", "no:randomly", "-p", "no:cacheprovider", '
        '"-k", "not real and not cluster"]\n'
        f"pytest_add_cli_args_test_selection = [{quoted}]\n"
    )


def _scratch_copy(dest: Path) -> None:
    def ignore(_dir: str, names: list[str]) -> set[str]:
        return {n for n in names if n in COPY_SKIP or n == "__pycache__"}

    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
    pyproject = dest / "pyproject.toml"
    text = pyproject.read_text()
    # Replace the [tool.mutmut] table (up to the next table or the end) with the gate's.
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
    pyproject.write_text(text.rstrip() + "\n\n" + _config())


def run_mutmut(workdir: Path, max_children: int) -> dict[str, str]:
    """Mutant name -> mutmut's status for every mutant of ratelimit.py."""
    mutmut = Path(sys.executable).with_name("mutmut")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("DRT_REQUIRE_REDIS", None)  # the gate runs the [fake] tests only
    subprocess.run(
        [str(mutmut), "run", "--max-children", str(max_children)],
        cwd=workdir,
        env=env,
        check=False,
        stdout=subprocess.DEVNULL,
        timeout=1800,
    )
    out = subprocess.run(
        [str(mutmut), "results", "--all", "true"],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    statuses = {}
    for line in out.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name.startswith(PREFIX):
            statuses[name.removeprefix(PREFIX)] = status
    return statuses


def verdict(statuses: dict[str, str], allow: dict[str, str]) -> list[str]:
    """Why the gate fails (empty: it passes)."""
    problems = []
    if not statuses:
        problems.append("mutmut reported no mutants for ratelimit.py: the run itself failed")
    for name, status in sorted(statuses.items()):
        if status != "killed" and not _listed(name, allow):
            problems.append(f"{name}: {status} (kill it with a test, or list it with its reason)")
    for pattern in sorted(allow):
        if not any(fnmatch.fnmatchcase(name, pattern) for name in statuses):
            problems.append(f"{pattern}: listed but no longer a mutant; drop it")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch copy (its path is printed)"
    )
    args = parser.parse_args(argv)
    allow = allowed()
    workdir = Path(tempfile.mkdtemp(prefix="drt-mutation-gate-"))
    try:
        _scratch_copy(workdir / "tree")
        statuses = run_mutmut(workdir / "tree", args.max_children)
    finally:
        if args.keep:
            print(f"scratch copy kept: {workdir / 'tree'}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    killed = sum(status == "killed" for status in statuses.values())
    kinds = {kind: 0 for kind in KINDS}
    for name, status in statuses.items():
        if status != "killed":
            for pattern, why in allow.items():
                if fnmatch.fnmatchcase(name, pattern):
                    kinds[why.split(":")[0]] += 1
                    break
    listed = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
    print(f"ratelimit.py: {killed}/{len(statuses)} killed; surviving and listed: {listed}")
    problems = verdict(statuses, allow)
    for problem in problems:
        print("  " + problem)
    print("mutation gate: " + ("FAILED" if problems else "passed"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
