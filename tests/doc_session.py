"""Run documentation code blocks the way a reader does: in order, in one namespace.

Used in process by ``tests/test_docs.py`` and, as a script, inside
``python manage.py shell`` by ``tests/test_getting_started_project.py``: there it
reads the blocks from the JSON file named by ``DRT_DOC_SESSION`` and stops at the
first failure with its traceback (a non-zero exit status). Blocks whose first
line starts with ``>>>`` are doctests (their printed results are compared);
others are executed.
"""

from __future__ import annotations

import doctest
import json
import os
import sys
from typing import Any


def run_source(source: str, namespace: dict[str, Any], name: str, filename: str, line: int) -> None:
    """Run one block in ``namespace``; raise ``AssertionError`` if a doctest fails."""
    if source.lstrip().startswith(">>>"):
        parser = doctest.DocTestParser()
        test = parser.get_doctest(source, namespace, name, filename, line)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        failures: list[str] = []
        runner.run(test, out=failures.append, clear_globs=False)
        namespace.update(test.globs)  # DocTest works on a copy; later blocks see its names
        assert runner.failures == 0, f"{name}: doctest failed\n" + "".join(failures)
        return
    # Pad with newlines so tracebacks point at the Markdown line.
    exec(compile("\n" * line + source, filename, "exec"), namespace)


def main() -> int:
    with open(os.environ["DRT_DOC_SESSION"], encoding="utf-8") as handle:
        blocks = json.load(handle)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for block in blocks:
        # A failure propagates: the reader's traceback, and a non-zero exit status.
        run_source(block["code"], namespace, block["name"], block["file"], block["line"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
