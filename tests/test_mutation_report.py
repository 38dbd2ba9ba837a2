"""``make mutate``'s report (tests/mutation_report.py), on made-up ``mutmut results``."""

from __future__ import annotations

import pytest

from tests import mutation_report
from tests.mutation_report import classified, modules, report


@pytest.fixture
def lists(monkeypatch, tmp_path):
    listed = tmp_path / "classified.toml"
    listed.write_text(
        '[[mutant]]\nnames = ["keys.x_a__mutmut_1", "keys.x_b__mutmut_[23]"]\n'
        'kind = "equivalent"\nreason = "because"\n',
        encoding="utf-8",
    )
    monkeypatch.setattr(mutation_report, "CLASSIFIED", listed)
    monkeypatch.setattr(
        mutation_report, "ratelimit_allowed", lambda: {"x_r__mutmut_1": "cluster-only: c"}
    )
    monkeypatch.setattr(mutation_report, "modules", lambda: ["ratelimit", "keys", "rates"])


def line(module: str, name: str, status: str) -> str:
    return f"    drf_redis_toolkit.{module}.{name}: {status}"


def test_every_survivor_listed_passes_and_the_score_counts_timeouts_as_kills(lists):
    out = "\n".join(
        [
            line("ratelimit", "x_r__mutmut_1", "no tests"),
            line("ratelimit", "x_r__mutmut_2", "killed"),
            line("keys", "x_a__mutmut_1", "survived"),
            line("keys", "x_b__mutmut_2", "survived"),
            line("keys", "x_b__mutmut_3", "survived"),
            line("keys", "x_c__mutmut_1", "timeout"),
        ]
    )
    lines, problems = report(out)
    assert problems == []
    assert lines == [
        "ratelimit: 1/2 killed; surviving, listed: 1 cluster-only",
        "keys: 1/4 killed (1 by timeout); surviving, listed: 3 equivalent",
        "rates: not in this run",
    ]


def test_an_unlisted_survivor_a_stale_entry_and_an_unfinished_run_fail(lists):
    out = "\n".join(
        [
            line("ratelimit", "x_r__mutmut_1", "survived"),
            line("keys", "x_a__mutmut_1", "killed"),  # listed, but killed now
            line("keys", "x_b__mutmut_2", "survived"),
            line("keys", "x_b__mutmut_3", "not checked"),  # listed, yet the run is unfinished
            line("keys", "x_d__mutmut_7", "survived"),
            line("rates", "x_e__mutmut_1", "no tests"),
        ]
    )
    _, problems = report(out)
    assert problems == [
        "keys: the run stopped before every mutant was checked",
        "keys.x_d__mutmut_7: survived (kill it with a test, or list it with its reason)",
        "keys.x_a__mutmut_1: listed but no surviving mutant has that name; drop it",
        "rates.x_e__mutmut_1: no tests (kill it with a test, or list it with its reason)",
    ]


def test_the_real_list_names_mutated_modules_and_known_kinds():
    entries = classified()  # raises on an unknown kind or a name listed twice
    assert set(entries) <= set(modules()) - {"ratelimit"}
    assert all(
        why.split(":")[0] in mutation_report.KINDS
        for names in entries.values()
        for why in names.values()
    )
