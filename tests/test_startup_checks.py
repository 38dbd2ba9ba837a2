"""A bad setting, as a user meets it: ``manage.py check`` and friends in a new project.

The toolkit validates ``DRF_REDIS_TOOLKIT`` in ``AppConfig.ready()``, so every entry
point (``check``, ``migrate``, ``runserver``, gunicorn, which runs no checks) stops
at start-up with ``ImproperlyConfigured`` naming the key and the value; the system
check ``drf_redis_toolkit.E001`` is what reports a value that turned bad after
start-up (``override_settings``). A malformed throttle rate does not stop start-up:
``manage.py check`` reports it as ``drf_redis_toolkit.E002``. ``docs/configuration.md``
says exactly this.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from drf_redis_toolkit.checks import check_toolkit_settings
from tests.test_getting_started_project import _environment

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

TOOLKIT_APPS = """
INSTALLED_APPS += ["rest_framework", "drf_redis_toolkit"]
"""


class NewProject:
    def __init__(self, base: Path) -> None:
        # Start-up fails before any connection: no Redis is needed (nor reached).
        self.env = _environment(base, "redis://127.0.0.1:9/0")
        subprocess.run(
            [sys.executable, "-m", "django", "startproject", "mysite", str(base)],
            check=True,
            env=self.env,
            timeout=60,
        )
        self.base = base
        self.settings = base / "mysite" / "settings.py"
        self.original = self.settings.read_text()

    def configure(self, extra: str) -> None:
        self.settings.write_text(self.original + TOOLKIT_APPS + extra)

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.base,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> NewProject:
    return NewProject(tmp_path_factory.mktemp("startup"))


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    return (done.stderr.strip().splitlines() or [""])[-1]


@pytest.mark.parametrize("command", [["check"], ["migrate", "--plan"]])
def test_a_bad_value_stops_every_command_at_start_up_naming_key_and_value(project, command):
    project.configure('DRF_REDIS_TOOLKIT = {"KEY_PREFIX": "not a prefix!"}\n')
    done = project.manage(*command)
    assert done.returncode == 1
    assert _last_line(done).startswith(
        "django.core.exceptions.ImproperlyConfigured: "
        "DRF_REDIS_TOOLKIT['KEY_PREFIX'] = 'not a prefix!' is invalid"
    ), done.stderr[-2000:]


def test_an_unknown_key_stops_start_up_naming_it(project):
    project.configure('DRF_REDIS_TOOLKIT = {"REDIS_URI": "redis://x"}\n')
    done = project.manage("check")
    assert done.returncode == 1
    last = _last_line(done)
    assert last.startswith("django.core.exceptions.ImproperlyConfigured: DRF_REDIS_TOOLKIT")
    assert "'REDIS_URI'" in last


def test_a_malformed_throttle_rate_is_a_check_error(project):
    project.configure(
        "REST_FRAMEWORK = {\n"
        '    "DEFAULT_THROTTLE_CLASSES":'
        ' ["drf_redis_toolkit.throttling.AnonSlidingWindowThrottle"],\n'
        '    "DEFAULT_THROTTLE_RATES": {"anon": "5/fortnight"},\n'
        "}\n"
    )
    done = project.manage("check")
    assert done.returncode == 1
    assert "drf_redis_toolkit.E002" in done.stderr, done.stderr[-2000:]
    assert "REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['anon']" in done.stderr


def test_a_good_configuration_passes_check(project):
    project.configure('DRF_REDIS_TOOLKIT = {"KEY_PREFIX": "shop"}\n')
    done = project.manage("check")
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_value_that_turns_bad_after_start_up_is_check_error_e001():
    with override_settings(DRF_REDIS_TOOLKIT={"KEY_PREFIX": "not a prefix!"}):
        errors = check_toolkit_settings()
    assert [error.id for error in errors] == ["drf_redis_toolkit.E001"]
    assert "KEY_PREFIX" in errors[0].msg


def test_the_configuration_page_says_what_a_user_sees():
    text = " ".join((ROOT / "docs" / "configuration.md").read_text(encoding="utf-8").split())
    assert "reports it as `drf_redis_toolkit.E001`" not in text  # what check never gets to do
    for said in (
        "stops every command there, `manage.py check`, `migrate`",
        "ImproperlyConfigured: DRF_REDIS_TOOLKIT['KEY_PREFIX'] = 'not a prefix!' is invalid",
        "reports it as `drf_redis_toolkit.E002`",
        "`drf_redis_toolkit.E001` reports a `DRF_REDIS_TOOLKIT` value that turned bad after"
        " start-up",
    ):
        assert said in text, said
