"""The package as PyPI would get it: built, checked by twine, installed in a fresh venv.

These run the real tools (``python -m build``, ``twine check``, ``pip install`` of
the wheel into a new virtualenv), so they need the package index that ``pip`` is
configured with; they are marked ``slow``.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import drf_redis_toolkit

ROOT = Path(__file__).resolve().parent.parent
# The built artifacts are the same bytes on every stack, and the fresh virtualenvs resolve
# the newest dependencies whatever stack runs this: make test covers it (docs/testing.md).
pytestmark = [pytest.mark.slow, pytest.mark.stack_independent]


def _run(*args: str | Path, cwd: Path = ROOT, timeout: float = 300) -> str:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", out)
    return out


def _one(dist: Path, pattern: str) -> Path:
    found = sorted(dist.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_twine_accepts_both_distributions(dist: Path) -> None:
    out = _run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()))
    assert out.count("PASSED") == 2


def test_the_version_has_one_source(dist: Path) -> None:
    wheel = _one(dist, "*.whl")
    assert wheel.name.startswith(f"drf_redis_toolkit-{drf_redis_toolkit.__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(
            f"drf_redis_toolkit-{drf_redis_toolkit.__version__}.dist-info/METADATA"
        ).decode()
    assert f"Version: {drf_redis_toolkit.__version__}\n" in meta
    assert "License-Expression: MIT\n" in meta
    assert "Project-URL: Source, " in meta


def test_the_wheel_ships_the_lua_scripts_types_and_licence(dist: Path) -> None:
    with zipfile.ZipFile(_one(dist, "*.whl")) as zf:
        names = set(zf.namelist())
    assert "drf_redis_toolkit/py.typed" in names
    lua = {n for n in names if n.endswith(".lua")}
    shipped = {
        f"drf_redis_toolkit/lua/{p.name}" for p in (ROOT / "drf_redis_toolkit/lua").glob("*.lua")
    }
    assert lua == shipped and lua
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "sample_api/")) for n in names)


def test_the_sdist_ships_no_half_test_suite(dist: Path) -> None:
    with tarfile.open(_one(dist, "*.tar.gz")) as tf:
        names = [n.split("/", 1)[1] for n in tf.getnames() if "/" in n]
    assert not [n for n in names if n.startswith(("tests/", "sample_api/", "loadtests/"))]
    assert "LICENSE" in names and "CHANGELOG.md" in names
    assert "drf_redis_toolkit/lua/sliding_window.lua" in names


def test_the_wheel_installs_and_imports_in_a_fresh_virtualenv(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    _run(python, "-m", "pip", "install", "-q", _one(dist, "*.whl"), timeout=600)
    out = _run(
        python,
        "-c",
        "import drf_redis_toolkit, importlib.resources as r;"
        "print(drf_redis_toolkit.__version__);"
        "print(r.files('drf_redis_toolkit').joinpath('lua/sliding_window.lua').is_file())",
        cwd=tmp_path,
    )
    assert out.split() == [drf_redis_toolkit.__version__, "True"]


def test_the_readme_quick_start_works_from_the_wheel_in_a_fresh_virtualenv(
    dist: Path, tmp_path: Path
) -> None:
    """``pip install`` of the built wheel, then the README followed literally in a new project.

    The README's blocks are followed as ``docs/getting-started.md``'s are (files
    written, commands run, ``pycon`` sessions typed into ``manage.py shell`` and
    their answers compared), with the fresh virtualenv's interpreter and a real
    ``redis-server``: nothing from this checkout is importable there.
    """
    from tests import servers
    from tests.test_getting_started_project import check_page_in_a_new_project

    if servers.redis_server_binary() is None:
        pytest.skip("redis-server is not installed")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    _run(python, "-m", "pip", "install", "-q", _one(dist, "*.whl"), timeout=600)
    server = servers.start_redis()
    try:
        (tmp_path / "project").mkdir()
        check_page_in_a_new_project(ROOT / "README.md", tmp_path / "project", server, str(python))
    finally:
        server.stop()


def test_the_docs_site_builds_in_strict_mode(tmp_path: Path) -> None:
    _run(sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", tmp_path / "site")
    assert (tmp_path / "site" / "index.html").is_file()
