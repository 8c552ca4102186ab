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
import select
import socket
import socketserver
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
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()


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
    """Open, with nothing to read (an end of stream or a reset would make it readable)."""
    return not select.select([sock], [], [], 0)[0]


def test_the_proxy_forwards_a_stream_whole_and_in_order(echo):
    data = os.urandom(3 << 20)
    with Proxy(echo.server_address) as proxy:
        sock = _connect(proxy)
        threading.Thread(target=sock.sendall, args=(data,), daemon=True).start()
        assert _receive(sock, len(data)) == data
        sock.close()
        # The proxy counts a forward once it has handed the bytes on: the echo may come back first.
        wait_for(lambda: proxy.forwarded == {"up": len(data), "down": len(data)}, 10, "the count")
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


def test_a_peer_that_closes_on_a_slow_link_is_heard_after_its_last_bytes():
    # The server answers once and closes while the client keeps talking, so that the server's kernel
    # resets the connection while the answer is still on its way. A wire delivers the answer first.
    server = socket.create_server(("127.0.0.1", 0))
    with server, Proxy(server.getsockname()) as proxy:
        proxy.delay(0.2)
        sock = _connect(proxy)
        talking = threading.Event()

        def talk():
            while True:
                try:
                    sock.send(b"more")
                except OSError:
                    return
                talking.set()
                time.sleep(0.02)

        threading.Thread(target=talk, daemon=True).start()
        talking.wait(10)
        accepted, _ = server.accept()
        with accepted:
            assert _receive(accepted, 4) == b"more"
            accepted.sendall(b"bye")
        received = b""
        try:
            while data := sock.recv(16):
                received += data
        except ConnectionResetError:
            pass
        sock.close()
        assert received == b"bye"


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
    wait_for(lambda: set(os.listdir("/proc/self/fd")) <= before, 10, "every socket closed")


# --------------------------------------------------------------------------------------------------
# The runtime behind the proxy.


def _trained(log) -> list[list]:
    """[trial, attempt, step, pid, time] per step trained, as the curve trainable logs them."""
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _overlap(log) -> float:
    """The longest time two attempts of one trial trained together: between each attempt's first and
    last step."""
    spans: dict[tuple[int, int], list[float]] = {}
    for trial, attempt, _, _, at in _trained(log):
        span = spans.setdefault((trial, attempt), [at, at])
        span[0], span[1] = min(span[0], at), max(span[1], at)
    longest = 0.0
    for (trial, attempt), (start, end) in spans.items():
        for (other_trial, other), (other_start, other_end) in spans.items():
            if other_trial == trial and other > attempt:
                longest = max(longest, min(end, other_end) - max(start, other_start))
    return longest


def _lost(directory) -> list[list]:
    return [event for event, _ in _records(directory) if event[0] == "worker_lost"]


def _settled(broker: Broker, budget: int) -> None:
    """The study finished, no trial failed, and every trial counted each step of its budget, at most
    once per attempt."""
    state = broker.state
    assert state.finished
    assert [t.status.name for t in state.trials] == ["COMPLETED"] * len(state.trials)
    counted_once(state)
    for trial in state.trials:
        assert {int(step) for _, step, _ in trial.history} == set(range(1, budget + 1)), trial.id


def _finish(broker: Broker, processes) -> None:
    """Wait for the study to end and for every worker to exit, told that it has."""
    assert broker.wait(60)
    assert [process.wait(timeout=30) for process in processes] == [0] * len(processes)


def _curve_study(log, budget: int, trials: int = 1, sleep: float = 0.1) -> Study:
    return Study(CURVE, {"x": grid([0.1 * (i + 1) for i in range(trials)]), "sleep": sleep,
                         "log": str(log)}, "grid", {"budget": budget})


def test_a_partition_shorter_than_the_liveness_window_costs_nothing(tmp_path):
    log = tmp_path / "steps.jsonl"
    broker = Broker(_curve_study(log, 20), tmp_path / "study", **FAST).start()
    with Proxy(broker.address) as proxy:
        process = worker(proxy.address, "w")
        try:
            wait_for(lambda: len(_trained(log)) >= 2, 30, "two steps trained")
            proxy.blackhole()
            time.sleep(LIVENESS / 3)  # the partition
            proxy.heal()
            _finish(broker, [process])
        finally:
            stop(process)
        assert proxy.dropped["up"] > 0  # it cut something (the broker, hearing nothing, said nothing)
    _settled(broker, 20)
    assert _lost(tmp_path / "study") == []
    assert broker.results()[0]["attempts"] == 1


def _starts(directory) -> list[list]:
    """Every start decision: [kind, trial, attempt, worker, config, budget, checkpoint, ...]."""
    return [d for _, ds in _records(directory) for d in ds if d[0] == "start"]


@pytest.fixture(scope="module", params=["both ways", "broker to worker"])
def long_partition(request, tmp_path_factory):
    """One trial on the victim, a spare worker idle beside it; then the victim's link goes dark (both
    ways, or only from the broker) for three liveness windows, and heals."""
    folder = tmp_path_factory.mktemp("partition")
    log, directory = folder / "steps.jsonl", folder / "study"
    broker = Broker(_curve_study(log, 60), directory, **FAST).start()
    with Proxy(broker.address) as proxy:
        victim = worker(proxy.address, "victim", "--workdir", str(folder / "work"))
        processes = [victim]
        try:
            wait_for(lambda: broker.progress()[0].get("running"), 30, "the victim at work")
            processes.append(worker(broker.address, "spare", "--workdir", str(folder / "work")))
            wait_for(lambda: len(broker.state.workers) == 2, 30, "the spare to join")
            wait_for(lambda: len(_trained(log)) >= 2, 30, "two steps trained")
            proxy.blackhole(up=request.param == "both ways", down=True)
            time.sleep(3 * LIVENESS)  # the partition
            proxy.heal()
            _finish(broker, processes)
        finally:
            stop(*processes)
    return broker, directory, log


def test_a_partition_longer_than_the_liveness_window_retries_the_attempt_elsewhere(long_partition):
    broker, directory, _ = long_partition
    _settled(broker, 60)
    assert [event[1] for event in _lost(directory)] == ["victim"]
    retry = [d for d in _starts(directory) if d[2] == 2]
    assert len(retry) == 1 and retry[0][3] == "spare" and retry[0][6] is not None  # from a checkpoint


def test_a_partitioned_worker_never_trains_beside_the_retry_of_its_attempt(long_partition):
    # At most one attempt of a trial runs at any moment: the old one ends before its retry starts.
    _, _, log = long_partition
    assert _overlap(log) == 0


def test_a_slow_link_slows_the_study_and_loses_nothing(tmp_path):
    log = tmp_path / "steps.jsonl"
    broker = Broker(_curve_study(log, 5, trials=3, sleep=0.05), tmp_path / "study", **FAST).start()
    with Proxy(broker.address) as proxy:
        proxy.delay(LIVENESS / 5)  # each way: a round trip takes 0.6 s of the 1.5 s window
        processes = [worker(proxy.address, f"w{i}") for i in range(2)]
        try:
            _finish(broker, processes)
        finally:
            stop(*processes)
    _settled(broker, 5)
    assert _lost(tmp_path / "study") == []
    assert [row["attempts"] for row in broker.results()] == [1, 1, 1]


def test_connections_reset_again_and_again_lose_nothing(tmp_path):
    log = tmp_path / "steps.jsonl"
    broker = Broker(_curve_study(log, 30, trials=2), tmp_path / "study", **FAST).start()
    with Proxy(broker.address) as proxy:
        processes = [worker(proxy.address, f"w{i}") for i in range(2)]
        try:
            wait_for(lambda: len(_trained(log)) >= 2, 30, "two steps trained")
            for _ in range(4):
                proxy.reset()
                time.sleep(0.5)
            _finish(broker, processes)
        finally:
            stop(*processes)
        assert proxy.accepted >= 2 + 2 * 4  # every worker came back after every reset
    _settled(broker, 30)
    assert _lost(tmp_path / "study") == []  # each came back well within its liveness window
    assert _overlap(log) == 0


def test_a_broker_unreachable_for_three_liveness_windows_then_back(tmp_path):
    # The broker cannot tell a worker it does not hear from a dead one: after one liveness window each
    # is declared lost, and its attempt waits for a retry. What must not happen is a loss once the
    # broker is reachable again (a worker waiting out a reconnect back-off); and each retry resumes
    # its trial from the checkpoint the broker holds.
    log = tmp_path / "steps.jsonl"
    broker = Broker(_curve_study(log, 60, trials=2), tmp_path / "study", **FAST).start()
    with Proxy(broker.address) as proxy:
        processes = [worker(proxy.address, f"w{i}") for i in range(2)]
        try:
            wait_for(lambda: len({entry[0] for entry in _trained(log)}) == 2, 30, "both trials training")
            proxy.refuse(True)
            proxy.reset()
            time.sleep(3 * LIVENESS)  # the outage
            proxy.refuse(False)
            back = time.time()
            _finish(broker, processes)
        finally:
            stop(*processes)
    _settled(broker, 60)
    lost = _lost(tmp_path / "study")
    assert sorted(event[1] for event in lost) == ["w0", "w1"] and all(event[3] < back for event in lost)
    retries = [d for d in _starts(tmp_path / "study") if d[2] == 2]
    assert sorted(d[1] for d in retries) == [0, 1] and all(d[6] is not None for d in retries)


@pytest.fixture(scope="module")
def cut_upload(tmp_path_factory):
    """A worker floods its broker with results and an 8 MiB checkpoint; the link is cut in the middle
    of the upload and stays dark both ways for three liveness windows, then heals."""
    folder = tmp_path_factory.mktemp("cut-upload")
    study = Study("tests.trainables.study:flood", {"kib": 8192}, "grid", {"budget": 2000}, metric="loss")
    broker = Broker(study, folder / "study", **FAST).start()
    said = folder / "worker.stderr"
    with Proxy(broker.address) as proxy, open(said, "w") as stderr:
        proxy.blackhole(up=True, down=False, after=4 << 20)  # the results come first: a few KiB
        process = rung("worker", "--connect", proxy.address, "--name", "w", "--stop-grace", "1",
                       "--workdir", str(folder / "work"), stderr=stderr)
        try:
            wait_for(lambda: proxy.dropped["up"] > 0, 30, "the upload to be cut")
            proxy.blackhole()
            time.sleep(3 * LIVENESS)  # the partition
            proxy.heal()
            _finish(broker, [process])
        finally:
            stop(process)
    return broker, said.read_text()


def test_an_upload_cut_by_a_partition_is_sent_again_and_nothing_is_lost(cut_upload):
    broker, _ = cut_upload
    _settled(broker, 2000)


def test_a_healed_partition_does_not_flood_the_workers_log(cut_upload):
    _, said = cut_upload
    refused = [line for line in said.splitlines() if "the broker refused a message" in line]
    assert len(refused) <= 3, f"{len(refused)} lines like {refused[0]!r}"
