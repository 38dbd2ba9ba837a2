"""The test servers' own helpers (tests/servers.py): a taken port never makes a test talk to
another server, and a server that lost its port to another process starts on a new one."""

from __future__ import annotations

import pytest

from tests import servers
from tests.conftest import _unavailable

pytestmark = pytest.mark.real_redis


@pytest.fixture
def occupied():
    if servers.redis_server_binary() is None:
        _unavailable("redis-server is not installed")
    server = servers.start_redis()
    yield server
    server.stop()


def test_a_port_served_by_another_redis_is_refused(occupied):
    with pytest.raises(servers.PortTaken):
        servers.start_redis(port=occupied.port)


def test_a_port_taken_after_the_check_gets_another(occupied, monkeypatch):
    picks = iter([occupied.port])  # what a racing process would leave: a checked port, now taken
    real = servers.free_port
    monkeypatch.setattr(
        servers, "free_port", lambda cluster_bus=False: next(picks, None) or real(cluster_bus)
    )
    server = servers.start_redis()
    try:
        assert server.port != occupied.port
        client = server.client()
        assert client.info("server")["process_id"] == server.pid
        client.close()
    finally:
        server.stop()


def test_ports_stay_below_the_ephemeral_range():
    with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
        ephemeral_low = int(handle.read().split()[0])
    for _ in range(50):
        assert servers.free_port() < ephemeral_low
        node = servers.free_port(cluster_bus=True)
        assert node + 10000 < ephemeral_low
        assert not servers.SERVER_PORTS[0] <= node + 10000 <= servers.SERVER_PORTS[1]
