"""Measurements the fault tests record, for ``docs/reliability.md`` (rendered, never hand-copied).

A test calls ``record(name, data)``. With ``DRT_MEASUREMENTS=path.json`` set, the
data is merged into that file under ``name``; otherwise nothing is written.
``docs/render_reliability.py`` turns the file into the measured tables of
``docs/reliability.md``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ENV = "DRT_MEASUREMENTS"


def record(name: str, data: dict[str, Any]) -> None:
    target = os.environ.get(ENV)
    if not target:
        return
    path = Path(target)
    existing: dict[str, Any] = {}
    if path.exists():
        existing = json.loads(path.read_text())
    existing[name] = data
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
