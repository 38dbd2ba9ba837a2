"""The mutmut gate's verdict (tests/mutation_gate.py), without running mutmut: CI runs that."""

from __future__ import annotations

from pathlib import Path

from tests.mutation_gate import ALLOW_LIST, allowed, verdict

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
        "gone: listed but no longer a mutant; drop it"
    ]
    assert verdict({}, {}) == ["mutmut reported no mutants for ratelimit.py: the run itself failed"]


def test_every_allowed_mutant_has_a_reason_and_the_docs_name_the_list():
    allow = allowed()
    assert allow, "the allow-list parses"
    assert all(len(reason.split()) >= 8 for reason in allow.values()), "a reason, not a label"
    testing = (ROOT / "docs" / "testing.md").read_text()
    assert str(ALLOW_LIST.relative_to(ROOT)) in testing
