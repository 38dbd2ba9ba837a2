"""The sample API's ``DATABASE_URL``: parsed without a dependency, and served on PostgreSQL.

The PostgreSQL test runs the sample's own migrations and ``seed_demo`` on a
throwaway cluster (``postgres_server``), in another process, as ``make load
DB=postgres`` does; it skips where PostgreSQL is not installed, unless the session
itself runs on PostgreSQL (``DRT_DATABASE=postgres``), where that is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from config.settings import database_from_url

from tests import servers

ROOT = Path(__file__).resolve().parent.parent


def test_a_postgres_url_is_split_and_percent_decoded():
    entry = database_from_url("postgres://shop%40eu:p%3Ass%2Fw@db.internal:6432/shop_prod")
    assert entry == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "shop_prod",
        "USER": "shop@eu",
        "PASSWORD": "p:ss/w",
        "HOST": "db.internal",
        "PORT": "6432",
    }
    assert database_from_url("postgresql://127.0.0.1/shop")["PORT"] == ""
    assert database_from_url("pgsql://u@127.0.0.1/shop")["USER"] == "u"


def test_a_sqlite_url_names_a_relative_or_an_absolute_file():
    assert database_from_url("sqlite:///db.sqlite3")["NAME"] == "db.sqlite3"
    assert database_from_url("sqlite:////tmp/shop.sqlite3")["NAME"] == "/tmp/shop.sqlite3"
    assert database_from_url("sqlite:///")["NAME"] == ":memory:"


def test_an_unknown_scheme_is_refused():
    with pytest.raises(ValueError, match="mysql"):
        database_from_url("mysql://u:p@127.0.0.1/shop")


def test_a_throwaway_postgres_runs_unprivileged_and_is_stopped_by_its_pid():
    """``initdb`` refuses root: as root, the cluster belongs to another account."""
    if servers.postgres_bin_dir() is None:
        pytest.skip("PostgreSQL (initdb, postgres) is not installed")
    server = servers.start_postgres()
    try:
        owner = os.stat(f"/proc/{server.pid}").st_uid
        assert owner != 0 if os.geteuid() == 0 else owner == os.geteuid()
        assert server.url().startswith("postgres://postgres@127.0.0.1:")
    finally:
        server.stop()
    assert server.process.returncode == 0  # a clean fast shutdown
    assert not os.path.exists(f"/proc/{server.pid}") and not os.path.exists(server.directory)


@pytest.mark.slow
def test_the_sample_migrates_and_seeds_on_postgres(postgres_server):
    url = postgres_server.create_database("sample_migrations")
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        "DATABASE_URL": url,
        "REDIS_URL": "redis://127.0.0.1:1/0",  # unreachable: seeding must not need Redis
    }
    manage = [sys.executable, str(ROOT / "sample_api" / "manage.py")]
    for argv in (["migrate", "--noinput", "-v", "0"], ["seed_demo", "--products", "30"]):
        done = subprocess.run(
            [*manage, *argv], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
    count = subprocess.run(
        [
            *manage, "shell", "-c",
            "from django.db import connection; from catalog.models import Product; "
            "print(connection.vendor, Product.objects.count())",
        ],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert count.returncode == 0, count.stderr
    assert count.stdout.splitlines()[-1].split() == ["postgresql", "30"]
