"""Every Python example in ``README.md`` and ``docs/*.md`` runs, so the docs cannot drift.

The fenced ```` ```python ```` blocks of one page run in order in one namespace
(like a reader pasting them into ``manage.py shell``), against the test suite's
fakeredis and test database, with the sample API's apps installed. Blocks whose
first line starts with ``>>>`` are doctests: their printed results are compared.

Settings fragments run too, on top of the lists ``startproject`` writes (so
``INSTALLED_APPS += ["drf_redis_toolkit"]`` works as in a real ``settings.py``),
and what they assign is then checked: every ``DRF_REDIS_TOOLKIT`` key and value
through the toolkit's own validators, every throttle rate through its parser,
every dotted path the toolkit names is imported.

A block that cannot run here (a model in an app that doesn't exist, a view that
needs a URLconf) is preceded by ``<!-- no-test -->`` on the line before its
fence; use it sparingly. Pages in ``PROJECT_PAGES`` (files to write, commands to
run) are followed in a project of their own by the test named there.
"""

from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from drf_redis_toolkit.conf import DEFAULTS, VALIDATORS
from drf_redis_toolkit.rates import parse_rate
from drf_redis_toolkit.tracking import push_handlers_available
from tests.doc_session import run_source

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_MARK = "<!-- no-test -->"
#: Pages that write files and run commands: each is followed, block by block, in a
#: project of its own by the test named here instead of in this process.
PROJECT_PAGES = {
    ROOT / "docs" / "getting-started.md": "tests/test_getting_started_project.py",
    ROOT / "README.md": "tests/test_packaging.py",  # from the built wheel, in a fresh venv
}
_FENCE = re.compile(r"^(?P<indent>[ ]{0,3})```(?P<lang>[\w+-]*)\s*$")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skipped: bool

    def __str__(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"


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
            if key == "LOCAL_CACHE" and value and not push_handlers_available():
                # Valid wherever redis-py has invalidation handlers (5.1+); this stack
                # refuses it by design, naming the version (test_conf.py checks that).
                with pytest.raises(ImproperlyConfigured, match=r"redis-py 5\.1 or newer"):
                    VALIDATORS[key](key, value)
                continue
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
    run_source(block.code, namespace, str(block), str(block.page), block.line)
    if not block.code.lstrip().startswith(">>>"):
        check_settings(namespace, block)


def startproject_settings() -> dict[str, list[str]]:
    """The lists ``django-admin startproject`` writes in a new ``settings.py``."""
    import django

    template = Path(django.__file__).parent / "conf" / "project_template" / "project_name"
    source = (template / "settings.py-tpl").read_text(encoding="utf-8")
    found: dict[str, list[str]] = {}
    for name in ("INSTALLED_APPS", "MIDDLEWARE"):
        match = re.search(rf"^{name} = (\[.*?\])$", source, re.MULTILINE | re.DOTALL)
        assert match, f"startproject's settings template has no {name}"
        found[name] = ast.literal_eval(match[1])
    return found


def _pages_with_python() -> list[Path]:
    return [p for p in PAGES if p.exists() and p not in PROJECT_PAGES and python_blocks(p)]


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
    # A settings fragment adds to what ``startproject`` wrote (``INSTALLED_APPS += [...]``).
    namespace: dict[str, Any] = {"__name__": "docs_example", **startproject_settings()}
    ran = 0
    for block in python_blocks(page):
        if block.skipped:
            continue
        run_block(block, namespace)
        ran += 1
    assert ran, f"{page}: every Python block is marked {SKIP_MARK}"


def test_pages_describe_the_api_on_their_own() -> None:
    """No page cites the guide the project grew from ("the seed guide", "the seed's
    Example 7"): readers do not have it. ``seed_demo`` (a command) and a random seed
    (``make chaos SEED=``, "seed 101") are other words."""
    cited = re.compile(
        r"\bseed(?:'s|\s+(?:guide|document|example|api))\b"
        r"|\b(?:in|from|of|per|like|as)\s+the\s+seed\b(?!\s*(?:=|\d))",
        re.IGNORECASE,
    )
    hits = [
        f"{page.relative_to(ROOT)}:{number}: {line.strip()}"
        for page in PAGES
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if cited.search(line)
    ]
    assert not hits, "\n".join(hits)


def test_project_pages_have_their_own_test() -> None:
    for page, test in PROJECT_PAGES.items():
        assert page.exists() and (ROOT / test).exists(), (page, test)


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


_STATED_MINIMUM = re.compile(
    r"(?P<name>Django REST Framework|DRF|Django|redis-py|Python) (?P<version>\d+(?:\.\d+)*)\+"
)
_REQUIREMENT = {"django": "Django", "djangorestframework": "DRF", "redis": "redis-py"}


def test_stated_minimum_versions_are_the_packages_bounds() -> None:
    """A "Django 5.2+" the docs say is needed is ``pyproject.toml``'s lower bound."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds = {"Python": project["requires-python"].removeprefix(">=")}
    for requirement in project["dependencies"]:
        name, _, version = requirement.partition(">=")
        if name.strip() in _REQUIREMENT:
            bounds[_REQUIREMENT[name.strip()]] = version.strip()
    wrong = []
    for page, paragraph in ((pg, p) for pg in PAGES for p in pg.read_text().split("\n\n")):
        if not re.search(r"\b(needs|requires)\b", paragraph):
            continue  # "Django 6.0+ changed ..." is about a version, not the minimum
        for match in _STATED_MINIMUM.finditer(paragraph):
            name = "DRF" if match["name"] == "Django REST Framework" else match["name"]
            if bounds.get(name) != match["version"]:
                wrong.append(f"{page.relative_to(ROOT)}: {match[0]} (installs {bounds.get(name)})")
    assert wrong == []
