"""The versions the package declares are the ones CI runs (.ci/matrix, .ci/run, the docs).

A bound lowered without a stack to prove it, a classifier for a version no stack runs,
or a stack dropped from CI would each make the package promise more than was tested.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.stack_independent  # reads files: the same on every stack


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _oldest_stack() -> dict[str, str]:
    """The oldest stack's Python and pins, as .ci/matrix installs them."""
    text = (ROOT / ".ci" / "matrix").read_text()
    match = re.search(r"oldest\) setup_stack oldest (\d+\.\d+) [^\n]*\\\n([^\n]*)", text)
    assert match, "no oldest stack in .ci/matrix"
    pins = dict(re.findall(r'"([a-z]+)==([\d.]+)\.\*"', match.group(2)))
    return {"python": match.group(1), **pins}


def _lower_bounds() -> dict[str, str]:
    bounds = {}
    for requirement in _pyproject()["dependencies"]:
        name, version = re.fullmatch(r"([a-z]+)>=([\d.]+)", requirement).groups()
        bounds[name] = version
    return bounds


def _table_column(column: str) -> set[str]:
    """The ``X.Y`` versions in one column of docs/supported-versions.md's stack table."""
    lines = [
        line
        for line in (ROOT / "docs" / "supported-versions.md").read_text().splitlines()
        if line.startswith("| ")  # the header and the rows, not the |---| line
    ]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    index = header.index(column)
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]
    return {re.match(r"\d+\.\d+", row[index]).group() for row in rows}


def _classified(prefix: str) -> set[str]:
    return {
        c.removeprefix(prefix)
        for c in _pyproject()["classifiers"]
        if c.startswith(prefix) and re.fullmatch(r"\d+\.\d+", c.removeprefix(prefix))
    }


def test_each_lower_bound_is_the_oldest_stacks_version():
    oldest = _oldest_stack()
    assert _lower_bounds() == {
        "django": oldest["django"],
        "djangorestframework": oldest["djangorestframework"],
        "redis": oldest["redis"],
    }
    assert _pyproject()["requires-python"] == f">={oldest['python']}"


def test_the_classifiers_name_exactly_the_versions_the_stacks_run():
    assert _classified("Framework :: Django :: ") == _table_column("Django")
    assert _classified("Programming Language :: Python :: ") == _table_column("Python")
    assert _oldest_stack()["django"] in _table_column("Django")


def test_ci_runs_both_matrix_stacks():
    run = (ROOT / ".ci" / "run").read_text()
    assert re.search(r'^MATRIX="oldest newest" [A-Z_=1 ]*bash \.ci/matrix$', run, re.MULTILINE)
