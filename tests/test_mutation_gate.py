"""The mutmut gate's verdict (tests/mutation_gate.py), without running mutmut: .ci/run runs that."""

from __future__ import annotations

from pathlib import Path

from tests.mutation_gate import (
    ALLOW_LIST,
    CLUSTER_SELECT,
    CLUSTER_TESTS,
    GATE_SELECT,
    GATE_TESTS,
    _config,
    allowed,
    cluster_only,
    verdict,
)

ROOT = Path(__file__).resolve().parent.parent


def test_a_survivor_not_listed_fails_the_gate():
    problems = verdict({"x_decide__mutmut_1": "killed", "x_decide__mutmut_2": "survived"}, {})
    assert problems == [
        "x_decide__mutmut_2: survived (kill it with a test, or list it with its reason)"
    ]


def test_a_listed_survivor_passes_and_a_mutant_no_test_reached_fails():
    statuses = {"a": "survived", "b": "no tests", "c": "timeout", "d": "killed", "x1": "no tests"}
    assert verdict(statuses, {"a": "equivalent: because ...", "x*": "cluster-only: ..."}) == [
        "b: no tests (kill it with a test, or list it with its reason)",
        "c: timeout (kill it with a test, or list it with its reason)",
    ]


def test_a_stale_entry_or_an_empty_run_fails_the_gate():
    assert verdict({"a": "killed"}, {"gone": "why"}) == [
        "gone: listed but no surviving mutant has that name; drop it"
    ]
    # Renumbered (ratelimit.py changed): the name now belongs to a mutant the tests kill.
    assert verdict({"a": "killed", "b": "survived"}, {"a": "why", "b": "why"}) == [
        "a: listed but no surviving mutant has that name; drop it"
    ]
    assert verdict({}, {}) == ["mutmut reported no mutants for ratelimit.py: the run itself failed"]


def test_a_mutant_listed_twice_fails_the_gate():
    allow = {"x_*": "equivalent: ...", "x_1": "cluster-only: ..."}
    assert verdict({"x_1": "survived"}, allow) == ["x_1: listed by 2 entries (x_*, x_1)"]


def test_cluster_only_mutants_must_die_on_the_cluster():
    statuses = {"c1": "no tests", "c2": "survived", "e1": "survived", "k": "killed"}
    allow = {"c*": "cluster-only: only a cluster client", "e1": "equivalent: ..."}
    assert cluster_only(statuses, allow) == ["c1", "c2"]
    assert verdict(statuses, allow, {"c1": "killed", "c2": "killed"}) == []
    assert verdict(statuses, allow, {"c1": "killed", "c2": "survived"}) == [
        "c2: cluster-only, but survived on the cluster"
    ]
    assert verdict(statuses, allow, {"c1": "killed"}) == [
        "c2: cluster-only, but not run on the cluster"
    ]


def test_the_cluster_run_selects_cluster_tests_and_the_fake_run_none():
    assert '"-k", "cluster"' in _config(CLUSTER_TESTS, CLUSTER_SELECT)
    fake = _config(GATE_TESTS, GATE_SELECT)
    assert f'"-k", "{GATE_SELECT}"' in fake and "not real and not cluster" in GATE_SELECT
    assert 'only_mutate = ["drf_redis_toolkit/ratelimit.py"]' in fake


def test_every_allowed_mutant_has_a_reason_and_the_docs_name_the_list():
    allow = allowed()
    assert allow, "the allow-list parses"
    assert all(len(reason.split()) >= 8 for reason in allow.values()), "a reason, not a label"
    testing = (ROOT / "docs" / "testing.md").read_text()
    assert str(ALLOW_LIST.relative_to(ROOT)) in testing


def test_ci_runs_the_gate():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert any(line.strip().endswith("-m tests.mutation_gate") for line in lines)
