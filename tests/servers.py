"""Start and stop real ``redis-server`` processes (standalone, cluster) and PostgreSQL on loopback.

Used by the test fixtures, the demo runner and the load tests. Every process is
started on a free port, in a temporary directory, with persistence off (Redis)
or durability off (PostgreSQL), and stopped by PID. Nothing here talks to
anything but 127.0.0.1.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import fakeredis
import redis

#: The one in-process fakeredis server shared by every ``fake_redis()`` client.
FAKE_SERVER = fakeredis.FakeServer()


def fake_redis() -> fakeredis.FakeRedis:
    """``CONNECTION_FACTORY`` for tests: a fakeredis client (with Lua) on the shared server."""
    return fakeredis.FakeRedis(server=FAKE_SERVER)


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


#: Ports the tests listen on, all below Linux's ephemeral range (32768-60999 by default),
#: so that no outgoing connection (a client's local port) can take one between the check
#: below and the server's bind. Cluster nodes get their own range, whose cluster-bus
#: ports (port + 10000) fall between the two: none of the three ranges overlap.
SERVER_PORTS = (27000, 32700)
CLUSTER_NODE_PORTS = (11000, 16999)  # buses on 21000-26999


_ports = random.SystemRandom()

#: Working directories made by this process for its servers, removed when it exits.
#: A server's directory outlives ``stop()`` (``restart()`` starts a new server on it),
#: so nothing else removes it: a day of test runs left thousands of them in /tmp.
_SCRATCH_DIRECTORIES: list[str] = []


def _scratch_directory(prefix: str) -> str:
    directory = tempfile.mkdtemp(prefix=prefix)
    _SCRATCH_DIRECTORIES.append(directory)
    return directory


@atexit.register
def _remove_scratch_directories() -> None:
    while _SCRATCH_DIRECTORIES:
        shutil.rmtree(_SCRATCH_DIRECTORIES.pop(), ignore_errors=True)


class PortTaken(RuntimeError):
    """Another process bound the port between ``free_port()`` and the server's start."""


def free_port(cluster_bus: bool = False) -> int:
    """A free loopback port (and, for cluster nodes, ``port + 10000`` free too)."""
    low, high = CLUSTER_NODE_PORTS if cluster_bus else SERVER_PORTS
    for _ in range(200):
        # Not the ``random`` module: pytest-randomly reseeds it before every test, which
        # would offer every test (and every process run with the same seed) one sequence.
        port = _ports.randint(low, high)
        if _port_is_free(port) and (not cluster_bus or _port_is_free(port + 10000)):
            return port
    raise RuntimeError("no free loopback port found")


@dataclass
class RedisProcess:
    port: int
    directory: str
    process: subprocess.Popen
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    @property
    def pid(self) -> int:
        return self.process.pid

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections hang, like a stuck Redis."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def restart(self) -> None:
        """Start a new server on the same port and directory (after ``stop()``)."""
        self.stop()
        new = _spawn(self.port, self.directory, self.extra_args)
        self.process = new


def _spawn(port: int, directory: str, extra_args: list[str]) -> subprocess.Popen:
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    args = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", directory,
        "--daemonize", "no",
        "--loglevel", "warning",
        "--logfile", os.path.join(directory, f"redis-{port}.log"),
        *extra_args,
    ]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    probe = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                logfile = os.path.join(directory, f"redis-{port}.log")
                try:
                    with open(logfile, errors="replace") as handle:
                        why = handle.read()[-1500:]
                except OSError:
                    why = "(no log)"
                error = PortTaken if "Address already in use" in why else RuntimeError
                raise error(f"redis-server on port {port} exited with {process.returncode}: {why}")
            try:
                answered = probe.info("server").get("process_id")
            except redis.RedisError:
                time.sleep(0.05)
                continue
            if answered == process.pid:
                return process
            # Another redis-server took the port between the check and this start.
            process.kill()
            process.wait(timeout=10)
            raise PortTaken(f"port {port} is served by another redis-server (pid {answered})")
    finally:
        probe.close()
    process.kill()
    raise RuntimeError(f"redis-server on port {port} did not answer within 10 s")


def start_redis(
    extra_args: list[str] | None = None, port: int | None = None, *, cluster_node: bool = False
) -> RedisProcess:
    """Start one ``redis-server`` on a free loopback port (a cluster node, not yet joined)."""
    for attempt in range(3):  # a port taken meanwhile: another one, unless it was asked for
        directory = _scratch_directory("drt-redis-")
        chosen = port or free_port(cluster_bus=cluster_node)
        args = list(extra_args or [])
        if cluster_node:
            args = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{chosen}.conf",
                "--cluster-node-timeout", "2000",
                *args,
            ]  # fmt: skip
        try:
            return RedisProcess(chosen, directory, _spawn(chosen, directory, args), args)
        except PortTaken:
            shutil.rmtree(directory, ignore_errors=True)
            if port is not None or attempt == 2:
                raise
    raise AssertionError("unreachable")


@dataclass
class RedisCluster:
    nodes: list[RedisProcess]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def flushall(self) -> None:
        _flush_masters(node.port for node in self.nodes)


def _flush_masters(ports: Iterable[int]) -> None:
    for port in ports:
        client = redis.Redis(host="127.0.0.1", port=port)
        try:
            role = client.execute_command("ROLE")[0]
            if role in (b"master", "master"):
                client.flushall()
        finally:
            client.close()


@dataclass
class SharedNode:
    """One node of a ``SharedCluster``: its address only (no process to pause or stop)."""

    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@dataclass
class SharedCluster:
    """A cluster another process started and will stop, named by its nodes' ports.

    ``DRT_CLUSTER_PORTS=p1,p2,p3`` makes the ``redis_cluster`` fixture use it
    instead of starting its own: tests/mutation_gate.py starts one cluster for
    hundreds of pytest sessions (one per mutant), each of which would otherwise
    spend seconds creating a cluster. It is flushed like the session's own, never
    stopped here.
    """

    ports: list[int]

    @property
    def nodes(self) -> list[SharedNode]:
        return [SharedNode(port) for port in self.ports]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def flushall(self) -> None:
        _flush_masters(self.ports)

    def stop(self) -> None:
        pass  # its owner stops it


def start_cluster(
    masters: int = 3,
    replicas: int = 0,
    ports: list[int] | None = None,
    announce_ports: list[int] | None = None,
) -> RedisCluster:
    """Start `masters * (1 + replicas)` nodes and join them with `redis-cli --cluster create`.

    ``ports`` places the nodes on ports reserved earlier (a client already points there).
    ``announce_ports`` makes node *i* announce that port to clients (``cluster-announce-port``)
    while its bus stays on its own port + 10000: a proxy on that port (tests/faultproxy.py)
    then sees every connection a cluster client makes to that node. The proxies must be
    listening before this is called (``redis-cli`` connects through them).
    """
    if shutil.which("redis-cli") is None:
        raise RuntimeError("redis-cli is not installed")
    nodes: list[RedisProcess] = []
    try:
        wanted = list(ports or [])
        for index in range(masters * (1 + replicas)):
            port = wanted[index] if index < len(wanted) else None
            announce: list[str] = []
            if announce_ports:
                if port is None:
                    raise ValueError("announce_ports needs the nodes' ports")
                announce = ["--cluster-announce-ip", "127.0.0.1"]
                announce += ["--cluster-announce-port", str(announce_ports[index])]
                announce += ["--cluster-announce-bus-port", str(port + 10000)]
            nodes.append(start_redis(announce, port=port, cluster_node=True))
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        _wait_cluster_ok(nodes)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return RedisCluster(nodes)


def _wait_cluster_ok(nodes: list[RedisProcess], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for node in nodes:
            client = node.client(socket_timeout=1)
            try:
                info = client.execute_command("CLUSTER INFO")
            finally:
                client.close()
            if isinstance(info, dict):
                states.append(info.get("cluster_state") == "ok")
            else:
                text = info.decode() if isinstance(info, bytes) else str(info)
                states.append("cluster_state:ok" in text)
        if all(states):
            return
        time.sleep(0.1)
    raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")


@dataclass
class SentinelSetup:
    """A master, one replica and one Sentinel watching them (quorum 1)."""

    master: RedisProcess
    replica: RedisProcess
    sentinel: RedisProcess
    service_name: str = "drtmaster"

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", self.sentinel.port)]

    def stop(self) -> None:
        for process in (self.sentinel, self.replica, self.master):
            process.stop()


def start_sentinel_setup(
    service_name: str = "drtmaster", sentinel_port: int | None = None
) -> SentinelSetup:
    """Start master + replica + Sentinel on loopback; fail-over detection in about 1 s."""
    master = start_redis()
    replica = start_redis(["--replicaof", "127.0.0.1", str(master.port)])
    directory = _scratch_directory("drt-sentinel-")
    port = sentinel_port or free_port()
    config = os.path.join(directory, "sentinel.conf")
    with open(config, "w") as handle:
        handle.write(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            f"dir {directory}\n"
            f"sentinel monitor {service_name} 127.0.0.1 {master.port} 1\n"
            f"sentinel down-after-milliseconds {service_name} 1000\n"
            f"sentinel failover-timeout {service_name} 3000\n"
            f"sentinel parallel-syncs {service_name} 1\n"
        )
    binary = redis_server_binary()
    assert binary is not None
    process = subprocess.Popen(
        [binary, config, "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    sentinel = RedisProcess(port, directory, process)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5)
            try:
                info = client.sentinel_master(service_name)
                if int(info.get("num-slaves", 0)) >= 1:
                    return SentinelSetup(master, replica, sentinel, service_name)
            finally:
                client.close()
        except redis.RedisError:
            pass
        time.sleep(0.1)
    for proc in (sentinel, replica, master):
        proc.stop()
    raise RuntimeError("Sentinel did not see the master and its replica within 10 s")


# -- PostgreSQL ----------------------------------------------------------------------------


def postgres_bin_dir() -> str | None:
    """Where ``initdb`` and ``postgres`` are: on PATH, or Debian's ``/usr/lib/postgresql/*/bin``.

    Debian's ``postgresql`` package puts the server binaries under a versioned
    directory off PATH (only wrappers such as ``pg_ctlcluster`` are on it); the
    newest version found is used.
    """
    on_path = shutil.which("initdb")
    if on_path:
        directory = os.path.dirname(os.path.realpath(on_path))
        if os.access(os.path.join(directory, "postgres"), os.X_OK):
            return directory

    def version(initdb: str) -> int:
        name = initdb.split("/")[-3]
        return int(name) if name.isdigit() else 0

    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True):
        directory = os.path.dirname(initdb)
        if os.access(os.path.join(directory, "postgres"), os.X_OK):
            return directory
    return None


def _postgres_os_user() -> pwd.struct_passwd | None:
    """Who runs the cluster: ``None`` (ourselves) unless we are root, which ``initdb`` refuses.

    As root, the ``postgres`` account if it exists (Debian's package creates
    it), else ``nobody``: the cluster's files live in a directory given to that
    account, and the server process is started with its uid and gid.
    """
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' account exists")


@dataclass
class PostgresProcess:
    """A throwaway PostgreSQL cluster: superuser ``postgres``, trust auth, loopback only."""

    port: int
    directory: str
    process: subprocess.Popen
    user: str = "postgres"

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, database: str = "postgres") -> str:
        return f"postgres://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (dropped with the cluster); return its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster, which stops its children); remove the files."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres(port: int | None = None) -> PostgresProcess:
    """``initdb`` a cluster in a temporary directory and run ``postgres`` on a free loopback port.

    The server is our child process (not daemonised by ``pg_ctl``), so it is
    stopped by its PID like ``redis-server``. Durability is off (``fsync``,
    ``synchronous_commit``, ``full_page_writes``): the data is thrown away.
    """
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL (initdb, postgres) is not installed")
    directory = tempfile.mkdtemp(prefix="drt-postgres-")
    account = _postgres_os_user()
    as_user: dict[str, int] = {}
    if account is not None:
        os.chown(directory, account.pw_uid, account.pw_gid)
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    data = os.path.join(directory, "data")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": directory}
    initdb = subprocess.run(
        [
            os.path.join(bin_dir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale", "C", "--no-sync",
        ],
        capture_output=True, text=True, timeout=120, cwd=directory, env=env, **as_user,
    )  # fmt: skip
    if initdb.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {initdb.stderr or initdb.stdout}")
    port = port or free_port()
    log = open(os.path.join(directory, "postgres.log"), "wb")
    try:
        process = subprocess.Popen(
            [
                os.path.join(bin_dir, "postgres"), "-D", data, "-p", str(port),
                "-h", "127.0.0.1", "-k", directory,
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=200",
            ],
            stdout=log, stderr=subprocess.STDOUT, cwd=directory, env=env, **as_user,
        )  # fmt: skip
    finally:
        log.close()
    server = PostgresProcess(port, directory, process)
    try:
        _wait_postgres_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_postgres_ready(server: PostgresProcess, timeout: float = 30) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            with open(os.path.join(server.directory, "postgres.log"), errors="replace") as handle:
                tail = handle.read()[-2000:]
            raise RuntimeError(f"postgres exited with {server.process.returncode}: {tail}")
        try:
            psycopg.connect(server.url(), connect_timeout=1).close()
            return
        except psycopg.OperationalError:
            time.sleep(0.1)
    raise RuntimeError(f"PostgreSQL on port {server.port} did not answer within {timeout:.0f} s")


def fake_async_redis() -> fakeredis.FakeAsyncRedis:
    """``ASYNC_CONNECTION_FACTORY`` for tests: an async fakeredis client on the same server."""
    return fakeredis.FakeAsyncRedis(server=FAKE_SERVER)
