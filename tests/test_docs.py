"""Every Python example in ``README.md`` and ``docs/*.md`` runs, so the docs cannot drift.

The fenced ```` ```python ```` blocks of one page run in order in one namespace
(like a reader pasting them into ``manage.py shell``), against the test suite's
fakeredis and test database, with the sample API's apps installed. Blocks whose
first line starts with ``>>>`` are doctests: their printed results are compared.

Settings fragments run too (``INSTALLED_APPS = [..., "drf_redis_toolkit"]`` is
valid Python), and what they assign is then checked: every ``DRF_REDIS_TOOLKIT``
key and value through the toolkit's own validators, every throttle rate through
its parser, every dotted path the toolkit names is imported.

A block that cannot run here (a model in an app that doesn't exist, a view that
needs a URLconf) is preceded by ``<!-- no-test -->`` on the line before its
fence; use it sparingly.
"""

from __future__ import annotations

import doctest
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.utils.module_loading import import_string

from drf_redis_toolkit.conf import DEFAULTS, VALIDATORS
from drf_redis_toolkit.rates import parse_rate

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_MARK = "<!-- no-test -->"
_FENCE = re.compile(r"^(?P<indent>[ ]{0,3})```(?P<lang>[\w+-]*)\s*$")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skipped: bool

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def extract_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, with their language and skip mark."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        start = index
        body: list[str] = []
        index += 1
        while index < len(lines) and not lines[index].lstrip().startswith("```"):
            body.append(lines[index])
            index += 1
        previous = next(
            (lines[i].strip() for i in range(start - 1, -1, -1) if lines[i].strip()), ""
        )
        blocks.append(
            Block(
                page,
                start + 1,
                match["lang"].lower(),
                "\n".join(body) + "\n",
                previous == SKIP_MARK,
            )
        )
        index += 1
    return blocks


def python_blocks(page: Path) -> list[Block]:
    return [b for b in extract_blocks(page) if b.lang in ("python", "py", "pycon")]


# -- what a settings fragment must satisfy ------------------------------------------------


def check_settings(namespace: dict[str, Any], block: Block) -> None:
    toolkit = namespace.get("DRF_REDIS_TOOLKIT")
    if isinstance(toolkit, dict):
        unknown = set(toolkit) - set(DEFAULTS)
        assert not unknown, f"{block}: unknown DRF_REDIS_TOOLKIT keys {sorted(unknown)}"
        for key, value in toolkit.items():
            VALIDATORS[key](key, value)
    framework = namespace.get("REST_FRAMEWORK")
    if isinstance(framework, dict):
        for scope, rate in (framework.get("DEFAULT_THROTTLE_RATES") or {}).items():
            if rate is not None:
                parse_rate(rate, setting=f"{block}: rate of {scope!r}")
        for path in framework.get("DEFAULT_THROTTLE_CLASSES") or []:
            import_string(path)
    for path in namespace.get("MIDDLEWARE") or []:
        if isinstance(path, str) and path.startswith("drf_redis_toolkit"):
            import_string(path)
    for app in namespace.get("INSTALLED_APPS") or []:
        if isinstance(app, str) and app.startswith(("drf_redis_toolkit", "rest_framework")):
            importlib.import_module(app)


def run_block(block: Block, namespace: dict[str, Any]) -> None:
    source = block.code
    if source.lstrip().startswith(">>>"):
        parser = doctest.DocTestParser()
        test = parser.get_doctest(source, namespace, str(block), str(block.page), block.line)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        failures: list[str] = []
        runner.run(test, out=failures.append, clear_globs=False)
        namespace.update(test.globs)  # DocTest works on a copy; later blocks see its names
        assert runner.failures == 0, f"{block}: doctest failed\n" + "".join(failures)
        return
    # Pad with newlines so tracebacks point at the Markdown line.
    code = compile("\n" * block.line + source, str(block.page), "exec")
    exec(code, namespace)
    check_settings(namespace, block)


def _pages_with_python() -> list[Path]:
    return [p for p in PAGES if p.exists() and python_blocks(p)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("redis", ["fake", "real"])
@pytest.mark.parametrize("page", _pages_with_python(), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_examples_run(
    page: Path,
    redis: str,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    from tests.conftest import toolkit_settings_for
    from tests.sample_fixtures import apply_shop_settings, apply_shop_view_classes

    # The sample API's settings (INVALIDATION rules, prefix) on fakeredis, then on a real
    # redis-server (flushed first): the examples' results hold on both.
    backend = toolkit_settings_for(redis, request)
    request.addfinalizer(backend.raw.close)
    apply_shop_settings(settings, backend)
    # DRF copies its settings into class attributes when ``rest_framework.views``
    # and ``.generics`` are first imported, which in this suite happens under the
    # test settings: give the views the docs define what the sample's settings say.
    apply_shop_view_classes(monkeypatch)
    from rest_framework.generics import GenericAPIView
    from rest_framework.views import APIView

    config = settings.REST_FRAMEWORK
    monkeypatch.setattr(
        GenericAPIView, "pagination_class", import_string(config["DEFAULT_PAGINATION_CLASS"])
    )
    monkeypatch.setattr(
        APIView,
        "authentication_classes",
        [import_string(path) for path in config["DEFAULT_AUTHENTICATION_CLASSES"]],
    )
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    ran = 0
    for block in python_blocks(page):
        if block.skipped:
            continue
        run_block(block, namespace)
        ran += 1
    assert ran, f"{page}: every Python block is marked {SKIP_MARK}"


# -- the harness itself ----------------------------------------------------------------------


def test_extracts_blocks_and_skip_marks(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# T\n\n```python\nx = 1\n```\n\n<!-- no-test -->\n```python\nraise SystemExit\n```\n"
        "\n```bash\nmake test\n```\n",
        encoding="utf-8",
    )
    blocks = extract_blocks(page)
    assert [(b.lang, b.skipped, b.line) for b in blocks] == [
        ("python", False, 3),
        ("python", True, 8),
        ("bash", False, 12),
    ]


def test_settings_fragments_are_validated() -> None:
    block = Block(ROOT / "README.md", 1, "python", "", False)
    with pytest.raises(Exception, match="RATELIMIT_HEADERS"):
        check_settings({"DRF_REDIS_TOOLKIT": {"RATELIMIT_HEADERS": "fancy"}}, block)
    with pytest.raises(Exception, match="month"):
        check_settings({"REST_FRAMEWORK": {"DEFAULT_THROTTLE_RATES": {"a": "5/month"}}}, block)
    with pytest.raises(AssertionError, match="unknown"):
        check_settings({"DRF_REDIS_TOOLKIT": {"REDIS_URI": "redis://x"}}, block)
