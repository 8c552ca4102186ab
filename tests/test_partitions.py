"""Partitions and slow links between real workers and a real broker, through tests/proxy.py.

The proxy first, against an echo server: it forwards faithfully, and each fault does what it says.
Then the runtime: a study runs while the proxy cuts, slows and resets the workers' connections.
After each fault the study finishes, no trial fails, nothing is lost (every step of a trial's budget
is counted) and nothing is counted twice (each step at most once per attempt); the step log, in which
the trainable writes who trained which step when, shows whether two attempts of a trial ever trained
at the same time.
"""

import json
import os
import socket
import socketserver
import subprocess
import threading
import time

import pytest

from rung.algorithms import grid
from rung.broker.broker import Broker
from rung.study import Study
from tests.proxy import Proxy
from tests.runtime import rung, stop, wait_for, worker
from tests.test_runtime import CURVE, FAST, _records, counted_once

LIVENESS = FAST["liveness"]


# --------------------------------------------------------------------------------------------------
# The proxy itself.


class _Echo(socketserver.ThreadingTCPServer):
    """Sends back what it receives; counts what it received."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.received = 0
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                while True:
                    try:
                        data = self.request.recv(1 << 16)
                        if not data:
                            return
                        outer.received += len(data)
                        self.request.sendall(data)
                    except OSError:
                        return

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def echo():
    server = _Echo()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _connect(proxy: Proxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(proxy.address.rsplit(":", 1)[1])), timeout=10)


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _reset_by_peer(sock: socket.socket) -> bool:
    try:
        sock.recv(1)
    except ConnectionResetError:
        return True
    return False


def _turned_away(proxy: Proxy) -> bool:
    """A new connection is reset as it opens (the reset may beat connect's return)."""
    try:
        sock = _connect(proxy)
    except ConnectionResetError:
        return True
    with sock:
        return _reset_by_peer(sock)


def _silent(sock: socket.socket) -> bool:
    """Open, with nothing to read."""
    try:
        sock.recv(1, socket.MSG_DONTWAIT)
    except (BlockingIOError, TimeoutError):
        return True
    return False


def test_the_proxy_forwards_a_stream_whole_and_in_order(echo):
    data = os.urandom(3 << 20)
    with Proxy(echo.server_address) as proxy:
        sock = _connect(proxy)
        threading.Thread(target=sock.sendall, args=(data,), daemon=True).start()
        assert _receive(sock, len(data)) == data
        sock.close()
        assert proxy.forwarded == {"up": len(data), "down": len(data)}
        assert proxy.dropped == {"up": 0, "down": 0}


def test_a_blackhole_swallows_bytes_silently_and_heal_resets_what_it_cut(echo):
    with Proxy(echo.server_address) as proxy:
        cut, idle = _connect(proxy), _connect(proxy)
        cut.sendall(b"before")
        assert _receive(cut, 6) == b"before"
        proxy.blackhole()
        cut.sendall(b"into the void")
        wait_for(lambda: proxy.dropped["up"] == 13, 10, "the bytes to be dropped")
        assert echo.received == 6 and _silent(cut)  # nothing reached the server; no one was told
        late = _connect(proxy)  # new connections are dark too
        late.sendall(b"x")
        wait_for(lambda: proxy.dropped["up"] == 14, 10, "the late connection's byte to be dropped")
        proxy.heal()
        assert _reset_by_peer(cut) and _reset_by_peer(late)  # their streams have holes
        idle.sendall(b"still here")  # it lost nothing: it carries on
        assert _receive(idle, 10) == b"still here"
        fresh = _connect(proxy)
        fresh.sendall(b"healed")
        assert _receive(fresh, 6) == b"healed"


def test_one_way_loss_and_a_cut_at_a_chosen_byte(echo):
    with Proxy(echo.server_address) as proxy:
        sock = _connect(proxy)
        proxy.blackhole(up=False, down=True)
        sock.sendall(b"heard")
        wait_for(lambda: proxy.dropped["down"] == 5, 10, "the echo to be dropped")
        assert echo.received == 5 and _silent(sock)
        proxy.heal()
        sock = _connect(proxy)
        proxy.blackhole(up=True, down=False, after=4)
        sock.sendall(b"half and half")
        assert _receive(sock, 4) == b"half"
        wait_for(lambda: proxy.dropped["up"] == 9, 10, "the rest to be dropped")


def test_a_delay_holds_every_byte_and_keeps_the_order(echo):
    with Proxy(echo.server_address) as proxy:
        proxy.delay(0.2)
        sock = _connect(proxy)
        sent = time.monotonic()
        for word in (b"one ", b"two ", b"three"):
            sock.sendall(word)
        assert _receive(sock, 13) == b"one two three"
        assert time.monotonic() - sent >= 0.4  # 0.2 s each way


def test_reset_and_refuse_close_connections_at_once(echo):
    with Proxy(echo.server_address) as proxy:
        sock = _connect(proxy)
        sock.sendall(b"ping")
        assert _receive(sock, 4) == b"ping"
        proxy.reset()
        assert _reset_by_peer(sock)
        wait_for(lambda: proxy.connections == 0, 10, "no connection left")
        proxy.refuse(True)
        assert _turned_away(proxy)
        proxy.refuse(False)
        sock = _connect(proxy)
        sock.sendall(b"back")
        assert _receive(sock, 4) == b"back"
        assert proxy.accepted == 3


def test_the_proxy_stops_without_leaving_a_thread_or_a_socket(echo):
    before = set(os.listdir("/proc/self/fd"))
    with Proxy(echo.server_address) as proxy:
        sock = _connect(proxy)
        sock.sendall(b"x")
        assert _receive(sock, 1) == b"x"
        proxy.blackhole()
        sock.sendall(b"y")
    sock.close()
    assert not any(thread.name == "fault-proxy" for thread in threading.enumerate())
    assert set(os.listdir("/proc/self/fd")) <= before
