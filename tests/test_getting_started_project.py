"""``docs/getting-started.md`` followed literally in a new ``django-admin startproject``.

The page is read top to bottom, as a new user reads it, in a temporary directory
with a real ``redis-server`` of its own (``REDIS_URL`` in the environment, as the
page says):

- a ``bash`` block is run, line by line, in a shell whose working directory
  carries over (``cd mysite``); ``python`` and ``django-admin`` are this
  interpreter's;
- a ``python`` block whose first line is ``# path/to/file.py`` writes that file,
  or appends to it when the line says ``add`` (``# mysite/settings.py: add at the end``);
- any other ``python`` or ``pycon`` block is typed into ``python manage.py shell``:
  consecutive ones in one session, a new session after a file or a command (the
  page tells the reader to restart the shell after a settings change);
- blocks marked ``<!-- no-test -->`` (installing packages, ``make``) are skipped.

Around that, what the page promises a new project is checked: what
``startproject`` wrote in ``INSTALLED_APPS`` and ``MIDDLEWARE`` is kept (the
admin works), ``manage.py check`` is clean, a later settings block never drops
a ``DRF_REDIS_TOOLKIT`` key an earlier one set, the toolkit talks to the Redis of
``REDIS_URL``, and the page's anonymous rate does not lock out someone trying it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import servers
from tests.test_docs import Block, extract_blocks

pytestmark = [pytest.mark.real_redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "getting-started.md"
_FILE_HEADER = re.compile(r"^#\s+(?P<path>[\w./-]+\.py)\b(?P<how>.*)$")
#: Every subprocess is bounded: a hung step fails the test instead of the run.
STEP_TIMEOUT = 120


@dataclass
class Step:
    kind: str  # "bash", "write", "append" or "shell"
    blocks: list[Block]
    path: str = ""


def page_steps(text_blocks: list[Block]) -> list[Step]:
    """The page as a reader's actions, in order."""
    steps: list[Step] = []
    for block in text_blocks:
        if block.skipped:
            continue
        if block.lang in ("bash", "sh", "shell", "console"):
            steps.append(Step("bash", [block]))
        elif block.lang in ("python", "py", "pycon"):
            first = block.code.lstrip("\n").splitlines()[0] if block.code.strip() else ""
            header = _FILE_HEADER.match(first)
            if header:
                kind = "append" if re.search(r"\badd\b", header["how"]) else "write"
                steps.append(Step(kind, [block], header["path"]))
            elif steps and steps[-1].kind == "shell":
                steps[-1].blocks.append(block)
            else:
                steps.append(Step("shell", [block]))
    return steps


@dataclass
class Project:
    """A scratch directory, the environment a reader's terminal would have, and the steps' log."""

    base: Path
    env: dict[str, str]
    cwd: Path
    log: list[str] = field(default_factory=list)
    python: str = sys.executable

    def run(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            args,
            cwd=self.cwd,
            env={**self.env, **kwargs.pop("env", {})},
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            **kwargs,
        )
        self.log.append(f"$ {' '.join(args)[:200]}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        return done

    def bash(self, block: Block) -> None:
        marker = self.base / ".cwd"
        script = f"set -e\ncd {self.cwd}\n{block.code}\npwd > {marker}\n"
        done = self.run(["bash", "-c", script])
        assert done.returncode == 0, f"{block}: a command failed\n{self.log[-1]}"
        self.cwd = Path(marker.read_text().strip())

    def manage_py(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert (self.cwd / "manage.py").exists(), f"no manage.py in {self.cwd}"
        return self.run([self.python, "manage.py", *args], **kwargs)

    def shell(self, blocks: list[Block]) -> None:
        session = self.base / "session.json"
        session.write_text(
            json.dumps(
                [
                    {"code": b.code, "name": str(b), "file": str(b.page), "line": b.line}
                    for b in blocks
                ]
            )
        )
        script = str(ROOT / "tests" / "doc_session.py")
        driver = f"import runpy; runpy.run_path({script!r}, run_name='__main__')"
        done = self.manage_py("shell", "-c", driver, env={"DRT_DOC_SESSION": str(session)})
        assert done.returncode == 0, f"{blocks[0]}: the shell session failed\n{self.log[-1]}"

    def settings_value(self, expression: str) -> Any:
        """``expression`` evaluated in ``manage.py shell`` (settings loaded, apps ready)."""
        code = (
            "import json, sys; from django.conf import settings; "
            f"sys.stdout.write('\\n@@' + json.dumps({expression}, default=str))"
        )
        done = self.manage_py("shell", "-c", code)
        assert done.returncode == 0, self.log[-1]
        return json.loads(done.stdout.rsplit("\n@@", 1)[1])


@pytest.fixture(scope="module")
def redis_for_the_page():
    if servers.redis_server_binary() is None:
        pytest.skip("redis-server is not installed")
    server = servers.start_redis()
    yield server
    server.stop()


def _environment(base: Path, redis_url: str, python: str | None = None) -> dict[str, str]:
    """A reader's terminal: an interpreter first on PATH, the toolkit importable.

    With ``python`` (a virtualenv's, where the toolkit was installed), that is all.
    Without, this interpreter, and only this checkout's package is put on
    ``sys.path`` (through a directory holding a link to it), so the project cannot
    import the test suite or the sample API by accident.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "DRT_", "REDIS_", "PYTHON", "VIRTUAL_ENV"))
    }
    if python is None:
        site = base / "site"
        site.mkdir()
        (site / "drf_redis_toolkit").symlink_to(ROOT / "drf_redis_toolkit")
        env["PYTHONPATH"] = str(site)
    bin_dir = str(Path(python or sys.executable).parent)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONDONTWRITEBYTECODE="1",
        REDIS_URL=redis_url,
    )
    return env


def follow_page(
    blocks: list[Block], base: Path, redis_url: str, python: str | None = None
) -> Project:
    """Do what the page says; check the project's promises after every step that changes it.

    ``python``: a virtualenv's interpreter to follow the page with (default: this one,
    with this checkout's package).
    """
    project = Project(
        base, _environment(base, redis_url, python), base / "work", python=python or sys.executable
    )
    project.cwd.mkdir()
    startproject_apps: list[str] | None = None
    startproject_middleware: list[str] | None = None
    toolkit_keys_so_far: set[str] = set()
    for step in page_steps(blocks):
        if step.kind == "bash":
            project.bash(step.blocks[0])
            continue
        if step.kind == "shell":
            project.shell(step.blocks)
            continue
        target = project.cwd / step.path
        if step.path.endswith("settings.py") and startproject_apps is None:
            startproject_apps = project.settings_value("settings.INSTALLED_APPS")
            startproject_middleware = project.settings_value("settings.MIDDLEWARE")
        code = step.blocks[0].code
        if step.kind == "append":
            assert target.exists(), f"{step.blocks[0]}: adds to {step.path}, which does not exist"
            target.write_text(target.read_text() + "\n\n" + code)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(code)
        if step.path.endswith("settings.py"):
            toolkit = project.settings_value("getattr(settings, 'DRF_REDIS_TOOLKIT', {})")
            lost = toolkit_keys_so_far - set(toolkit)
            assert not lost, f"{step.blocks[0]} drops DRF_REDIS_TOOLKIT keys set before: {lost}"
            toolkit_keys_so_far |= set(toolkit)
    assert startproject_apps is not None, "the page never changes settings.py"
    final_apps = project.settings_value("settings.INSTALLED_APPS")
    final_middleware = project.settings_value("settings.MIDDLEWARE")
    assert [a for a in final_apps if a in startproject_apps] == startproject_apps, final_apps
    assert [
        m for m in final_middleware if m in (startproject_middleware or [])
    ] == startproject_middleware, final_middleware
    return project


def check_page_in_a_new_project(
    page: Path, base: Path, server: servers.RedisProcess, python: str | None = None
) -> None:
    """Follow ``page`` in a new project under ``base``; assert everything it promises."""
    server.client().flushall()
    project = follow_page(extract_blocks(page), base, server.url, python)

    check = project.manage_py("check", "--fail-level", "WARNING")
    assert check.returncode == 0, project.log[-1]
    # The admin startproject set up still works next to the API.
    admin = project.settings_value(
        "__import__('django.test', fromlist=['Client'])"
        ".Client(HTTP_HOST='localhost').get('/admin/login/').status_code"
    )
    assert admin == 200
    # The toolkit used the Redis the environment named, and wrote under the page's prefix.
    assert (
        project.settings_value(
            "__import__('drf_redis_toolkit.conf', fromlist=['x']).toolkit_settings.REDIS_URL"
        )
        == server.url
    )
    assert server.client().keys("shop:*"), "nothing was written to the Redis of REDIS_URL"


def test_the_getting_started_page_runs_in_a_new_project(redis_for_the_page, tmp_path):
    check_page_in_a_new_project(PAGE, tmp_path, redis_for_the_page)


def test_the_pages_anonymous_rate_does_not_lock_out_someone_trying_it():
    check_anonymous_rates(PAGE)


def check_anonymous_rates(page: Path) -> None:
    """Everything a reader sends from their machine (the shell sessions, a browser on
    the browsable API, curl) is one anonymous client. Every limit anonymous requests
    meet must free up within a minute, or allow a long session of trying things
    out (1,000 requests) first; the page's ``100/hour`` locked readers out for an hour.
    """
    from drf_redis_toolkit.rates import parse_rate

    namespace: dict[str, Any] = {"INSTALLED_APPS": [], "MIDDLEWARE": []}
    for step in page_steps(extract_blocks(page)):
        if step.kind in ("write", "append") and step.path.endswith("settings.py"):
            exec(step.blocks[0].code, namespace)
    framework = namespace["REST_FRAMEWORK"]
    classes = " ".join(framework["DEFAULT_THROTTLE_CLASSES"])
    # Both throttles meet anonymous requests: the user throttle counts them by IP.
    scopes = {"anon": "AnonSlidingWindow", "user": "UserSlidingWindow"}
    checked = 0
    for scope, throttle in scopes.items():
        if throttle not in classes:
            continue
        for limit in parse_rate(framework["DEFAULT_THROTTLE_RATES"][scope]):
            checked += 1
            assert limit.window <= 60 or limit.limit >= 1000, (
                f"{scope} {limit}: a reader trying the page is locked out for "
                f"{limit.window} s after {limit.limit} requests"
            )
    assert checked
