"""docs/reliability.md's measured figures are the ones in docs/data/reliability.json."""

from __future__ import annotations

import json

from tests import render_reliability


def test_the_measured_block_is_rendered_from_the_recorded_run():
    page = render_reliability.PAGE.read_text()
    data = json.loads(render_reliability.DATA.read_text())
    assert render_reliability.BEGIN in page and render_reliability.END in page
    assert page == render_reliability.rewrite(page, data), (
        "docs/reliability.md differs from docs/data/reliability.json: run "
        "`make reliability-docs` (or tests/render_reliability.py), never edit the figures"
    )
