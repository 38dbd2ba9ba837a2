"""Fixtures: the three Redis backends (fakeredis, a real redis-server, a real 3-master cluster).

Tests that take the ``backend`` fixture run once per backend; the test ids say
which (``[fake]``, ``[real]``, ``[cluster]``), and the summary at the end counts
them. Without ``redis-server`` the real ones skip on a laptop, but with
``DRT_REQUIRE_REDIS=1`` (set by ``.ci/run``) a missing server is a failure.

The database is SQLite (a file per pytest process). ``DRT_DATABASE=postgres``
runs the session on a throwaway PostgreSQL cluster instead (``postgres_server``),
started like ``redis-server``; without PostgreSQL installed that is a failure.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import pytest
from django.test import override_settings

from tests import servers

# The sample API's fixtures (shop, real_shop, catalog), shared by its test modules.
pytest_plugins = ["tests.sample_fixtures"]

REQUIRE_REDIS = os.environ.get("DRT_REQUIRE_REDIS") == "1"
#: The database the session runs on: "sqlite" (tests/settings.py) or "postgres".
DATABASE = os.environ.get("DRT_DATABASE", "sqlite")
BACKENDS = ["fake", "real", "cluster"]
#: ``DRT_LOCAL_CACHE=1``: the real backends run with ``LOCAL_CACHE`` on (docs/local-cache.md).
LOCAL_CACHE = os.environ.get("DRT_LOCAL_CACHE") == "1"
#: The toolkit's settings on the fake backend: a sync and an async fakeredis client.
FAKE_SETTINGS = {
    "CONNECTION_FACTORY": "tests.servers.fake_redis",
    "ASYNC_CONNECTION_FACTORY": "tests.servers.fake_async_redis",
}
_outcomes: Counter[tuple[str, str]] = Counter()


def _unavailable(why: str) -> None:
    if REQUIRE_REDIS:
        pytest.fail(f"{why} (DRT_REQUIRE_REDIS=1 forbids skipping)")
    pytest.skip(why)


class _Stoppable(Protocol):
    def stop(self) -> None: ...


_Server = TypeVar("_Server", bound=_Stoppable)


def _until_the_end(start: Callable[[], _Server]) -> Iterator[_Server]:
    """Start a server for a fixture, and stop it (by PID) however the fixture ends."""
    server = start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[servers.RedisProcess]:
    """A real standalone ``redis-server`` for the whole session."""
    if servers.redis_server_binary() is None:
        _unavailable("redis-server is not installed")
    yield from _until_the_end(servers.start_redis)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[servers.RedisCluster | servers.SharedCluster]:
    """A real 3-master Redis Cluster for the whole session (or ``DRT_CLUSTER_PORTS``'s)."""
    shared = os.environ.get("DRT_CLUSTER_PORTS")
    if shared:
        yield servers.SharedCluster([int(port) for port in shared.split(",")])
        return
    if servers.redis_server_binary() is None:
        _unavailable("redis-server is not installed")
    yield from _until_the_end(lambda: servers.start_cluster(masters=3))


@pytest.fixture
def cluster_with_replicas() -> Iterator[servers.RedisCluster]:
    """A real cluster of 3 masters with a replica each, for one test (fail-overs)."""
    if servers.redis_server_binary() is None:
        _unavailable("redis-server is not installed")
    yield from _until_the_end(lambda: servers.start_cluster(masters=3, replicas=1))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[servers.PostgresProcess]:
    """A throwaway PostgreSQL cluster for the whole session (``initdb`` in a temporary dir)."""
    if servers.postgres_bin_dir() is None:
        message = "PostgreSQL (initdb, postgres) is not installed"
        if DATABASE == "postgres":
            pytest.fail(f"{message} (DRT_DATABASE=postgres)")
        pytest.skip(message)
    yield from _until_the_end(servers.start_postgres)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    request: pytest.FixtureRequest, django_db_modify_db_settings_parallel_suffix: None
) -> None:
    """With ``DRT_DATABASE=postgres``, point ``default`` at ``postgres_server`` before set-up.

    pytest-django calls this before it creates the test database. The entry is
    built by the sample API's own ``DATABASE_URL`` parser, and changed in place:
    Django's connection handler holds that very dict.
    """
    if DATABASE == "sqlite":
        _own_sqlite_test_file()
        return
    if DATABASE != "postgres":
        raise pytest.UsageError(f"DRT_DATABASE={DATABASE!r}: use sqlite or postgres")
    from config.settings import database_from_url
    from django.conf import settings
    from django.db import connections

    server = request.getfixturevalue("postgres_server")
    entry = database_from_url(server.create_database("drt"))
    entry = connections.configure_settings({"default": entry})["default"]
    connections.close_all()
    if hasattr(connections._connections, "default"):
        del connections["default"]  # a wrapper built for SQLite would stay SQLite
    settings.DATABASES["default"].clear()
    settings.DATABASES["default"].update(entry)


def _own_sqlite_test_file() -> None:
    """Name the SQLite test database after this process, not the one that read the settings.

    tests/settings.py names the file after its own pid. mutmut forks its workers from
    one process that had read them, and each worker's session creates and destroys
    the test database: two workers sharing one file wipe each other's rows, and a
    test failing for that would count as a killed mutant.
    """
    import re

    from django.conf import settings

    test = settings.DATABASES["default"].get("TEST") or {}
    if test.get("NAME"):  # keeps any suffix pytest-xdist added
        test["NAME"] = re.sub(r"drt-tests-\d+", f"drt-tests-{os.getpid()}", test["NAME"])


@pytest.fixture(scope="session")
def django_db_use_migrations(request: pytest.FixtureRequest) -> bool:
    """On PostgreSQL, build the test schema from the models (``--no-migrations``).

    ``tests.testapp`` has no migrations, so Django creates its tables first,
    before ``auth_user`` exists; SQLite accepts the foreign key to a missing
    table, PostgreSQL does not. Without migrations every table is created in
    one pass and the foreign keys are added at its end. (The sample's own
    migrations still run on PostgreSQL wherever it is served: ``make load DB=postgres``.)
    """
    if DATABASE == "postgres":
        return False
    return not request.config.getvalue("nomigrations")


@dataclass
class Backend:
    """What a test needs to know about the Redis it runs against."""

    name: str
    settings: dict[str, Any]
    raw: Any  # a redis-py client that bypasses the toolkit (for assertions)
    server: Any = None  # RedisProcess / RedisCluster for real backends

    @property
    def is_real(self) -> bool:
        return self.name != "fake"


def toolkit_settings_for(name: str, request: pytest.FixtureRequest, **extra: Any) -> Backend:
    import redis
    from redis.cluster import RedisCluster

    if LOCAL_CACHE and name != "fake":  # fakeredis cannot track
        extra = {"LOCAL_CACHE": True, **extra}

    if name == "fake":
        servers.FAKE_SERVER.connected = True
        raw = servers.fake_redis()
        raw.flushall()
        return Backend(name, {**FAKE_SETTINGS, **extra}, raw)
    if name == "real":
        server = request.getfixturevalue("redis_server")
        raw = redis.Redis.from_url(server.url)
        raw.flushall()
        return Backend(name, {"REDIS_URL": server.url, **extra}, raw, server)
    if name == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        raw = RedisCluster.from_url(cluster.url)
        return Backend(name, {"REDIS_URL": cluster.url, "CLUSTER": True, **extra}, raw, cluster)
    raise ValueError(name)


@pytest.fixture
def no_sync_redis_on_the_loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """No sync redis-py command or pipeline runs on a thread running an event loop
    during the test (``tests/loop_guard.py``): it would stall every request there."""
    from tests import loop_guard

    on_loop: list[str] = []
    loop_guard.install(on_loop.append, monkeypatch.setattr)
    yield on_loop
    assert on_loop == [], f"sync Redis calls on the event loop: {on_loop}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Run the test on each backend, with the toolkit pointed at it and the data flushed."""
    chosen = toolkit_settings_for(request.param, request)
    with override_settings(DRF_REDIS_TOOLKIT=chosen.settings):
        yield chosen
    chosen.raw.close()


@pytest.fixture
def real_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Only the real standalone server (for TTL, timing and outage behaviour)."""
    chosen = toolkit_settings_for("real", request)
    with override_settings(DRF_REDIS_TOOLKIT=chosen.settings):
        yield chosen
    chosen.raw.close()


@pytest.fixture(autouse=True)
def _fresh_fake_redis() -> Iterator[None]:
    """Every test starts with an empty fakeredis and a closed circuit breaker."""
    from drf_redis_toolkit.connection import reset_connection

    servers.FAKE_SERVER.connected = True
    servers.fake_redis().flushall()
    reset_connection()
    yield
    reset_connection()


@pytest.fixture(autouse=True)
def _fresh_memos() -> None:
    """Every test judges hosts, permission classes and handlers afresh.

    The hit path keeps a few answers per process (``request_host``, the object check
    of a tuple of permission classes, whether a handler is async). A test must not be
    answered from what an earlier test left: mutmut's workers are forked from a process
    that already ran tests, so a memo filled there would hide a mutant of the check.
    """
    from drf_redis_toolkit import caching, drivers, request_host

    request_host.forget_hosts()
    caching._classes_check_objects.cache_clear()
    drivers._ASYNC_FUNCTIONS.clear()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    nodeid = report.nodeid
    for name in BACKENDS:
        if f"[{name}" in nodeid or f"-{name}]" in nodeid or f"-{name}-" in nodeid:
            _outcomes[(name, report.outcome)] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _outcomes:
        return
    terminalreporter.section("tests per Redis backend")
    for name in BACKENDS:
        counts = {o: _outcomes[(name, o)] for o in ("passed", "failed", "skipped")}
        terminalreporter.write_line(
            f"{name:8s} passed={counts['passed']} failed={counts['failed']} "
            f"skipped={counts['skipped']}"
        )
