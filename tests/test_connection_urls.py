"""``rediss://`` (TLS) and ``unix://`` URLs against real redis-server processes.

The TLS server gets a throwaway CA and certificate made with ``openssl`` in a
temporary directory; the Unix one listens on a socket file there. Each test checks
that the toolkit's own connection went over the intended transport (``CLIENT
LIST`` seen from the server), then that throttles and the client work through it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from django.test import override_settings

from drf_redis_toolkit import ratelimit
from drf_redis_toolkit.client import redis_client
from drf_redis_toolkit.rates import parse_rate
from tests import servers
from tests.conftest import _unavailable

pytestmark = pytest.mark.real_redis


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _throwaway_certificates(directory: Path) -> None:
    """ca.crt, and server.crt/server.key for 127.0.0.1 signed by it.

    The extensions are the ones Python 3.13's default strict verification
    (``VERIFY_X509_STRICT``) requires: a CA with key usage and a subject key id, a
    leaf with an authority key id.
    """
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=drt-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=directory)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=directory)  # fmt: skip
    (directory / "san.cnf").write_text(
        "subjectAltName=IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        "subjectKeyIdentifier=hash\n"
    )
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "1", "-extfile", "san.cnf", "-out", "server.crt",
             cwd=directory)  # fmt: skip


@pytest.fixture
def workdir(redis_server):
    directory = Path(tempfile.mkdtemp(prefix="drt-urls-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _toolkit_connections(server: servers.RedisProcess) -> list[dict]:
    """The server's clients other than the one asking (``CLIENT LIST``, parsed)."""
    raw = server.client()
    try:
        return [c for c in raw.client_list() if c.get("cmd") != "client|list"]
    finally:
        raw.close()


def _exercise(server: servers.RedisProcess) -> None:
    redis_client.set("over", {"transport": True}, timeout=60)
    assert redis_client.get("over") == {"transport": True}
    limits = parse_rate("2/min")
    decisions = [ratelimit.decide(ratelimit.LOG, "url", "client", limits) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    raw = server.client()
    try:
        assert raw.exists("drt:over") == 1  # the same server, seen over plain TCP
    finally:
        raw.close()


def test_rediss_url_connects_over_tls(workdir):
    if shutil.which("openssl") is None:
        _unavailable("openssl is not installed")
    _throwaway_certificates(workdir)
    tls_port = servers.free_port()
    server = servers.start_redis(
        [
            "--tls-port", str(tls_port),
            "--tls-cert-file", str(workdir / "server.crt"),
            "--tls-key-file", str(workdir / "server.key"),
            "--tls-ca-cert-file", str(workdir / "ca.crt"),
            "--tls-auth-clients", "no",
        ]
    )  # fmt: skip
    url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={workdir / 'ca.crt'}"
    try:
        with override_settings(DRF_REDIS_TOOLKIT={"REDIS_URL": url}):
            _exercise(server)
            local_ports = {c["laddr"].rsplit(":", 1)[1] for c in _toolkit_connections(server)}
            assert local_ports == {str(tls_port)}, local_ports
        # An untrusted certificate is refused: TLS is really verified.
        bad = f"rediss://127.0.0.1:{tls_port}/0"
        with override_settings(DRF_REDIS_TOOLKIT={"REDIS_URL": bad, "FAIL_OPEN": True}):
            assert redis_client.ping() is False
    finally:
        server.stop()


def test_unix_socket_url(workdir):
    socket_path = workdir / "redis.sock"
    server = servers.start_redis(["--unixsocket", str(socket_path), "--unixsocketperm", "700"])
    try:
        with override_settings(DRF_REDIS_TOOLKIT={"REDIS_URL": f"unix://{socket_path}?db=0"}):
            _exercise(server)
            addresses = {c["laddr"] for c in _toolkit_connections(server)}
            assert addresses == {f"{socket_path}:0"}, addresses
    finally:
        server.stop()


def test_sentinel_with_a_password_and_a_db(redis_server):
    """The password and db of REDIS_URL reach the master Sentinel names (the host is unused)."""
    setup = servers.start_sentinel_setup()
    try:
        replica = setup.replica.client()
        master = setup.master.client()
        sentinel = setup.sentinel.client()
        try:
            replica.config_set("masterauth", "s3cret")
            master.config_set("requirepass", "s3cret")
            sentinel.execute_command("SENTINEL", "SET", setup.service_name, "auth-pass", "s3cret")
        finally:
            for client in (replica, master, sentinel):
                client.close()
        settings = {
            "SENTINELS": setup.sentinels,
            "SENTINEL_SERVICE_NAME": setup.service_name,
            "REDIS_URL": "redis://:s3cret@unused/3",
        }
        with override_settings(DRF_REDIS_TOOLKIT=settings):
            redis_client.set("via-sentinel", 1, timeout=60)
            assert redis_client.get("via-sentinel") == 1
            limits = parse_rate("1/min")
            decisions = [ratelimit.decide(ratelimit.LOG, "s", "c", limits) for _ in range(2)]
            assert [d.allowed for d in decisions] == [True, False]
        raw3 = setup.master.client(password="s3cret", db=3)
        raw0 = setup.master.client(password="s3cret", db=0)
        try:
            assert raw3.exists("drt:via-sentinel") == 1
            assert raw0.dbsize() == 0  # nothing went to the default db
        finally:
            raw3.close()
            raw0.close()
        wrong = {**settings, "REDIS_URL": "redis://:wrong@unused/3"}
        with override_settings(DRF_REDIS_TOOLKIT=wrong):
            assert redis_client.ping() is False
    finally:
        setup.stop()
