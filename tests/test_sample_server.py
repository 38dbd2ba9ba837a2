"""The end-to-end tests' HTTP helper: every failure is a recorded outcome, never a dead thread."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from tests import servers
from tests.sample_server import NO_ANSWER, http
from tests.workers import Workers


def _serve_once(behaviour: str) -> tuple[str, threading.Thread, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        if behaviour == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # SO_LINGER 0: the client sees a reset
        elif behaviour == "close":
            conn.recv(65536)
            conn.close()  # no status line at all
        else:  # "hang": read the request, never answer
            conn.recv(65536)
            threading.Event().wait(5)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{port}/", thread, listener


@pytest.mark.parametrize("behaviour", ["reset", "close", "hang"])
def test_a_request_without_an_answer_is_an_outcome(behaviour):
    url, _thread, listener = _serve_once(behaviour)
    try:
        status, body, headers, _ = http(url, timeout=0.5)
    finally:
        listener.close()
    assert status == NO_ANSWER and headers == {}
    assert body  # the error, for the failure message


def test_a_refused_connection_is_an_outcome():
    status, body, _, _ = http(f"http://127.0.0.1:{servers.free_port()}/")
    assert status == NO_ANSWER and b"refused" in body.lower()


def test_a_worker_that_dies_fails_the_join():
    def work(index: int) -> None:
        if index == 2:
            raise ConnectionResetError("peer reset")

    workers = Workers(work, 4).start()
    with pytest.raises(AssertionError, match=r"1 of 4 workers died; worker 2: ConnectionReset"):
        workers.join(timeout=10)


def test_a_worker_that_hangs_fails_the_join():
    release = threading.Event()
    workers = Workers(lambda index: release.wait(10), 2).start()
    try:
        with pytest.raises(AssertionError, match="still running"):
            workers.join(timeout=0.1)
    finally:
        release.set()
