"""``make mutate``'s report: each mutated module's score, and every survivor accounted for.

Reads ``mutmut results --all true`` in the tree where ``mutmut run`` ran, and the
lists of the mutants allowed to survive, each with its kind and reason:

* ``tests/equivalent_mutants.toml`` for ``ratelimit.py``: the list CI's gate
  (tests/mutation_gate.py) reads; its ``cluster-only`` mutants are killed by the
  gate's cluster run, which ``make mutate`` does not repeat;
* ``tests/classified_mutants.toml`` for every other module of pyproject.toml's
  ``[tool.mutmut] only_mutate``.

A module fails the report like the gate fails ``ratelimit.py`` (``verdict()``): a
survivor, or a mutant no test reached, that no entry lists; a mutant two entries
list; an entry that names no surviving mutant (it was killed, or its module changed
and mutmut's numbers moved). A timeout counts as a kill (mutmut stops a mutant that
runs past its CPU budget: the mutation made a test hang), and is counted apart.
A run stopped before the end leaves mutants "not checked": the report says so and
fails. ``python -m tests.mutation_report [TREE]`` (default: the working directory).
"""

from __future__ import annotations

import argparse
import fnmatch
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

from tests.mutation_gate import allowed as ratelimit_allowed
from tests.mutation_gate import verdict

ROOT = Path(__file__).resolve().parent.parent
CLASSIFIED = ROOT / "tests" / "classified_mutants.toml"
PACKAGE = "drf_redis_toolkit."
#: Why a mutant may survive, besides ratelimit.py's "equivalent" and "cluster-only".
KINDS = (
    "equivalent",
    "timing only",
    "log text only",
    "built at import time",
    "one database only",
    "adrf async only",
    "LOCAL_CACHE only",
    "columns read only",
    "cluster-only",
)


def modules() -> list[str]:
    """The mutated modules, dotted and without the package (``invalidation.rules``)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    paths = config["tool"]["mutmut"]["only_mutate"]
    return [
        path.removeprefix("drf_redis_toolkit/").removesuffix(".py").replace("/", ".")
        for path in paths
    ]


def classified(path: Path | None = None) -> dict[str, dict[str, str]]:
    """Module -> {mutant name (or glob) without the module: "kind: reason"}."""
    path = path or CLASSIFIED
    entries: dict[str, dict[str, str]] = {}
    for entry in tomllib.loads(path.read_text(encoding="utf-8"))["mutant"]:
        if entry["kind"] not in KINDS:
            raise ValueError(f"{entry['names']}: kind must be one of {KINDS}")
        for qualified in entry["names"]:
            module, _, name = qualified.rpartition(".")
            if name in entries.get(module, {}):
                raise ValueError(f"{qualified}: listed twice in {path.name}")
            entries.setdefault(module, {})[name] = f"{entry['kind']}: {entry['reason']}"
    return entries


def statuses_by_module(results: str, names: list[str]) -> dict[str, dict[str, str]]:
    """``mutmut results --all true`` -> module -> {mutant name: status}."""
    found: dict[str, dict[str, str]] = {module: {} for module in names}
    for line in results.splitlines():
        qualified, _, status = line.strip().rpartition(": ")
        module, _, name = qualified.removeprefix(PACKAGE).rpartition(".")
        if module in found:
            found[module][name] = status
    return found


def report(results: str) -> tuple[list[str], list[str]]:
    """The report's lines, and the problems that fail it (empty: every survivor classified)."""
    allow = classified()
    allow["ratelimit"] = ratelimit_allowed()
    lines, problems = [], []
    for module, statuses in statuses_by_module(results, modules()).items():
        if not statuses:
            lines.append(f"{module}: not in this run")
            continue
        if any(status == "not checked" for status in statuses.values()):
            problems.append(f"{module}: the run stopped before every mutant was checked")
        counted = {
            name: "killed" if status == "timeout" else status for name, status in statuses.items()
        }
        killed = sum(status == "killed" for status in counted.values())
        timeouts = sum(status == "timeout" for status in statuses.values())
        kinds: Counter[str] = Counter()
        for name, status in counted.items():
            if status != "killed":
                for pattern, why in allow.get(module, {}).items():
                    if fnmatch.fnmatchcase(name, pattern):
                        kinds[why.split(":")[0]] += 1
                        break
        listed = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
        lines.append(
            f"{module}: {killed}/{len(statuses)} killed"
            + (f" ({timeouts} by timeout)" if timeouts else "")
            + (f"; surviving, listed: {listed}" if listed else "")
        )
        problems += [f"{module}.{problem}" for problem in verdict(counted, allow.get(module, {}))]
    return lines, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree", nargs="?", default=".", help="where mutmut ran (default: here)")
    args = parser.parse_args(argv)
    mutmut = Path(sys.executable).with_name("mutmut")
    results = subprocess.run(
        [str(mutmut), "results", "--all", "true"],
        cwd=args.tree,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    lines, problems = report(results)
    for line in lines:
        print(line)
    for problem in problems:
        print("  " + problem)
    print("mutation report: " + ("FAILED" if problems else "every survivor is classified"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
