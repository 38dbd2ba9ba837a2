"""CI's mutmut gate: every mutant of ``ratelimit.py`` is killed or listed as equivalent.

Runs ``mutmut run`` on a scratch copy of the tree (the worktree and its ``mutants/``
stay untouched) with a configuration of its own: only ``drf_redis_toolkit/ratelimit.py``
is mutated, and only the fast throttle tests on fakeredis run (``GATE_TESTS``). Then
it reads ``mutmut results`` and fails, naming them, on survivors (or mutants no test
reached, or timeouts) that are not in ``tests/equivalent_mutants.toml``. Each entry
there gives its kind and reason: ``equivalent`` (cannot be told apart) or
``cluster-only`` (reached only with a Redis Cluster client, which the fakeredis run
never builds); docs/testing.md explains both.

The cluster-only ones are then checked for real: a second mutmut run, on a second
scratch copy, runs the ``[cluster]`` tests (``CLUSTER_TESTS``) against one 3-master
cluster started here for the whole run, and every cluster-only mutant must be killed
there. An allow-list entry that matches no surviving mutant fails too (it is gone, or
its number now names a mutant the tests kill): the list follows ratelimit.py's changes.

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
import time
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
    "tests/test_ratelimit_middleware.py",  # Decide/Undo, sync and on the event loop
]
#: The fakeredis run: no real server, no cluster. Left out too: the outage and fail-open
#: tests (each starts a redis-server and waits on socket timeouts; they judge the failure
#: policy in throttling.py and the middleware, not an answer of ratelimit.py) and the
#: counter test that sleeps for its wait (test_ratelimit_engine.py checks every wait to
#: the microsecond).
GATE_SELECT = (
    "not real and not cluster and not an_outage and not fail_open and not counter_wait_admits"
)
#: The cluster run (cluster-only mutants only): one shared cluster, one test at a time.
CLUSTER_TESTS = [
    "tests/test_throttle_round_trips.py",  # rounds over several slots and nodes
    "tests/test_ratelimit_middleware.py",  # take-backs over two slots, sync and async
]
CLUSTER_SELECT = "cluster"
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


def _config(tests: list[str], select: str) -> str:
    quoted = ", ".join(f'"{test}"' for test in tests)
    return (
        "[tool.mutmut]\n"
        'source_paths = ["drf_redis_toolkit/"]\n'
        f'only_mutate = ["{MODULE}"]\n'
        'also_copy = ["sample_api/", "loadtests/", "benchmarks/"]\n'
        'pytest_add_cli_args = ["-p", "no:randomly", "-p", "no:cacheprovider", '
        f'"-k", "{select}"]\n'
        f"pytest_add_cli_args_test_selection = [{quoted}]\n"
    )


def _scratch_copy(dest: Path, config: str) -> None:
    def ignore(_dir: str, names: list[str]) -> set[str]:
        return {n for n in names if n in COPY_SKIP or n == "__pycache__"}

    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
    pyproject = dest / "pyproject.toml"
    text = pyproject.read_text()
    # Replace the [tool.mutmut] table (up to the next table or the end) with the gate's.
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
    pyproject.write_text(text.rstrip() + "\n\n" + config)


def run_mutmut(
    workdir: Path, max_children: int, names: list[str] | None = None, **env_extra: str
) -> dict[str, str]:
    """Mutant name -> mutmut's status for every mutant of ratelimit.py (or of ``names``)."""
    mutmut = Path(sys.executable).with_name("mutmut")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **env_extra}
    env.pop("DRT_REQUIRE_REDIS", None)
    subprocess.run(
        [str(mutmut), "run", "--max-children", str(max_children)]
        + [PREFIX + name for name in names or []],
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
        if name.startswith(PREFIX) and (names is None or name.removeprefix(PREFIX) in names):
            statuses[name.removeprefix(PREFIX)] = status
    return statuses


def cluster_only(statuses: dict[str, str], allow: dict[str, str]) -> list[str]:
    """The surviving mutants the allow-list calls cluster-only: the cluster run's to kill."""
    return sorted(
        name
        for name, status in statuses.items()
        if status != "killed"
        and any(
            fnmatch.fnmatchcase(name, pattern) and why.startswith("cluster-only")
            for pattern, why in allow.items()
        )
    )


def run_on_a_cluster(workdir: Path, names: list[str]) -> dict[str, str]:
    """mutmut over ``names`` with the ``[cluster]`` tests, on one cluster started here."""
    from tests import servers

    cluster = servers.start_cluster(masters=3)
    try:
        ports = ",".join(str(node.port) for node in cluster.nodes)
        # One test at a time: every test flushes the one cluster they share.
        return run_mutmut(workdir, 1, names, DRT_CLUSTER_PORTS=ports)
    finally:
        cluster.stop()


def verdict(
    statuses: dict[str, str], allow: dict[str, str], on_cluster: dict[str, str] | None = None
) -> list[str]:
    """Why the gate fails (empty: it passes).

    ``on_cluster``: the cluster run's statuses of the cluster-only mutants (``None``:
    not run); each of them must be killed there.
    """
    problems = []
    if not statuses:
        problems.append("mutmut reported no mutants for ratelimit.py: the run itself failed")
    for name, status in sorted(statuses.items()):
        if status != "killed" and not _listed(name, allow):
            problems.append(f"{name}: {status} (kill it with a test, or list it with its reason)")
        entries = [pattern for pattern in allow if fnmatch.fnmatchcase(name, pattern)]
        if len(entries) > 1:
            problems.append(f"{name}: listed by {len(entries)} entries ({', '.join(entries)})")
    for pattern in sorted(allow):
        if not any(
            fnmatch.fnmatchcase(name, pattern) and status != "killed"
            for name, status in statuses.items()
        ):
            problems.append(f"{pattern}: listed but no surviving mutant has that name; drop it")
    if on_cluster is not None:
        for name in cluster_only(statuses, allow):
            status = on_cluster.get(name, "not run")
            if status != "killed":
                problems.append(f"{name}: cluster-only, but {status} on the cluster")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument(
        "--no-cluster", action="store_true", help="skip the cluster run of the cluster-only mutants"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch copies (their paths are printed)"
    )
    args = parser.parse_args(argv)
    allow = allowed()
    workdir = Path(tempfile.mkdtemp(prefix="drt-mutation-gate-"))
    on_cluster: dict[str, str] | None = None
    took: dict[str, float] = {}
    clock = time.monotonic()
    try:
        _scratch_copy(workdir / "tree", _config(GATE_TESTS, GATE_SELECT))
        statuses = run_mutmut(workdir / "tree", args.max_children)
        took["fakeredis run"] = time.monotonic() - clock
        names = cluster_only(statuses, allow)
        if names and not args.no_cluster:
            clock = time.monotonic()
            _scratch_copy(workdir / "cluster", _config(CLUSTER_TESTS, CLUSTER_SELECT))
            on_cluster = run_on_a_cluster(workdir / "cluster", names)
            took["cluster run"] = time.monotonic() - clock
    finally:
        if args.keep:
            print(f"scratch copies kept: {workdir}")
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
    if on_cluster is not None:
        killed_there = sum(status == "killed" for status in on_cluster.values())
        print(f"cluster run: {killed_there}/{len(names)} cluster-only mutants killed")
    print("wall time: " + ", ".join(f"{what} {seconds:.0f} s" for what, seconds in took.items()))
    problems = verdict(statuses, allow, on_cluster)
    for problem in problems:
        print("  " + problem)
    print("mutation gate: " + ("FAILED" if problems else "passed"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
