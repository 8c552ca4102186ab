"""The broker under load: its results/s against the raw ZeroMQ ceiling, dispatch latency, memory.

Every process runs on this machine and talks over tcp://127.0.0.1. The machine the figures in
scripts/results come from has 2 cores, and in parts 1 to 3 the two sides of each measurement (echo
server and client, broker and fleet, broker and workers) each want a core of their own: they compete
for the CPU with each other and with ZeroMQ's I/O threads, so the figures are those of a loaded
2-core box, not of a broker with a head node to itself. The CPU columns give the cores each side used
on average over the window (user + system time of all its threads, from /proc/PID/stat), and "other"
the cores every other process on the machine used meanwhile (/proc/stat busy time less ours): a
figure taken while other work ran is slower than the code, and the column says so.

Part 1, the raw ceiling. A ROUTER in a process of its own echoes every message back as it came (a
blocking recv_multipart / send_multipart loop, no decoding); a DEALER in this process sends a real
encoded `result` (the 5-byte header frame and a 104-byte msgpack payload, the two frames the broker
sees). Pipelined: WINDOW_RAW messages kept in flight for PIPE_SECONDS after a 0.3 s warm-up; the
figure is round trips completed per second. It is repeated RAW_REPEATS times, each with a fresh server
process, since the figure moves with where the scheduler puts the four threads (two Python loops, two
ZeroMQ I/O threads) on two cores; the raw ceiling is the best repeat. A second mode answers the way
the broker acks: the server drains what has arrived (at most BATCH_MIN, the broker's batch for one
worker) and sends each peer one reply saying how many of its messages that was; its best repeat is
the ceiling of that message pattern, given beside the target's. A third mode echoes each message
with rung.sockets' calls on both sides (the broker's loop: poll, then take messages until none waits;
no enum flags, no RCVMORE lookup per frame), the calls the broker, the workers and the fleet use: on
this machine it is nearly twice the echo of pyzmq's send_multipart/recv_multipart, so the shares
against it are printed too, for comparison; the target is judged against the pyzmq echo, the issue's
"raw pyzmq round trip". One at a time: LATENCY_ROUNDS round trips, each sent after the previous came
back, RAW_REPEATS times with a fresh server; median and 99th percentile microseconds. On this virtual
machine a ping-pong between processes on the same core and one across cores (a cross-vCPU wake-up)
differ by about 3x, so the repeats may disagree. Both sides are Python (pyzmq), as the broker and the
workers are, so this is the ceiling of a Python loop that did no work.

Part 2, the broker's sustained results/s with the journal on. The broker runs as it is deployed, its
own process (`python -m rung broker --study FILE --dir DIR --bind tcp://127.0.0.1:0`, heartbeat 0.5 s,
liveness 5 s), so that it and the fleet do not share a GIL: an embedded `Broker(...).start()` thread
would be slowed by the fleet's Python, and the fleet by it. The study is random search with one rung
at budget 1e9 and no trial limit, so an attempt never ends and every message is a result. The fleet is
one more process (spawned by multiprocessing) holding N DEALER sockets driven by one zmq.Poller loop;
each socket is a simulated worker that speaks the real protocol through rung.protocol.encode/decode
and moves messages with rung.sockets, as a worker does:
hello, welcome, run, then results of its attempt (seq and step counting from 1) as fast as acks allow,
never more than result_window(N) unacknowledged per worker: RESULT_WINDOW, or more where fewer workers
would keep fewer than part 1's WINDOW_RAW in flight (a real worker sends each report as it comes and
keeps no window, so this only makes the offered load match the ceiling's), a heartbeat (listing its attempt) whenever it
has sent nothing for the broker's heartbeat interval, an `ended` when its step reaches the budget (not
here), and a fresh attempt for every run. After every worker holds a run and a warm-up, results whose
ack came back during a fixed window are counted: an ack is sent only after the journal's fsync for
the loop iteration that handled the result, so each counted result is durable. Cross-checks: the
results the journal stamped inside the window, and that the journal holds at least every result the
fleet saw acknowledged. Also given: result-to-ack latency; results per ack (the broker acks each
attempt once per loop iteration, cumulatively, so one ack covers every result of that worker the
iteration handled; an iteration takes at most max(BATCH_MIN, 16 per worker) messages); the ratio to
the three ceilings of part 1; the CPU each process used in the window;
broker CPU microseconds per result (broker CPU seconds / results); the time until every worker held a
run; and, read from the journal after the broker stopped (it is stopped before the fleet disconnects,
so leaving is never taken for a loss), the `worker_lost` events. Target: results/s >= half the raw
(echo) ceiling, at every worker count; with 1000 workers, none lost.

Part 3, per-trial dispatch overhead. (a) Real workers: the broker process as above and 1 or 2 worker
processes (`python -m rung worker --connect ADDR`, PYTHONPATH holding the repository root) run random
search with budget 1 and max_trials N of a no-op trainable from scripts/noop_trainable.py, which
reports once at step 1, in two forms. "after a trial": `train_then_linger` returns LINGER_S after
its report, as a trial that trains for a while does; meanwhile its worker starts the interpreter of
the next attempt (`rung.worker.attempt.Interpreter`), so the next dispatch finds it started up: the
case of every study whose trials outlast an interpreter's start-up. "back to back": `train` returns
at once, so the next run reaches the worker while that interpreter is still starting up, and part of
the start-up is on the path. From the journal, for each attempt: the wall time the broker stamped on
the event of the step that decided its `start`, to the stamp of its first `result` event. That
interval holds: the commit (fsync) of the deciding iteration, the `run` message to the worker, the
worker handing the spec to the interpreter (and, back to back, waiting for it to start up), the
import of the trainable's module, the report down the pipe to the worker, the `result` message, and
the broker's next loop iteration handling it. For reference the script times `python -c pass` and
`python -c "import rung.worker.child"` (median of a few runs), the start-up a dispatch would pay
without an interpreter started ahead; N is as many trials as DISPATCH_SECONDS allows one worker at
that import cost, within DISPATCH_TRIALS, so that the run stays a few minutes whatever a trial
process costs to start (the table gives N). Also: first result to the attempt's `ended` (the child
exiting and being reaped, after LINGER_S in the first form), and trials per second. (b) The broker
and protocol alone: the fleet of part 2 on a study with budget 1, where each simulated worker answers a
run with one result and, at once, `ended`. Per attempt: from the wall time the broker stamped on the
`attempt_finished` event (it handles the `ended`) to the fleet receiving the next `run` on that
worker, and from the fleet sending `ended` to receiving that `run` (both ends on one clock).
Target: dispatch overhead under 5 ms (median), printed for (a) "after a trial" and (b); the back to
back figure is printed beside it, and is bounded below by the interpreter's start-up.

Part 4, broker memory per trial. No sockets: ASHA (promotion, min_budget 1, max_budget 81, eta 3,
max_trials N) runs on CrossingCurves with 64 simulated workers and report_every=1.0, so every trial
holds several results, until the study finishes. Measured on the state it leaves: tracemalloc (bytes
still traced once everything but the state is released, at the smaller size only since tracing slows
the run about 5x) and a walk of every object reachable from the state summing sys.getsizeof (both
sizes). A stepper wrapper also rebuilds what the broker keeps beside the state (`assigned`, `seqs` and
the registry's per-worker `sent` map, one entry per attempt each) and the journal payloads; given are
their deep size, the journal's bytes on disk, the RSS growth of the whole build (noisy: this process
reuses memory freed by earlier parts, and the simulator's transient objects leave arenas behind), and
(smaller size) the deep size of the decoded records that a restarted broker keeps in
`broker.journal.records` for as long as it runs.

Every process started here is stopped at the end, also on error. Wall times are single runs.
"""

from __future__ import annotations

import ctypes
import gc
import math
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import types
from collections import deque
from pathlib import Path

import msgpack
import numpy as np
import zmq

from benchlib import environment, parse_args, table, verdict, write_json
from rung import protocol as p
from rung import sockets
from rung.algorithms import ASHA, CloneTrial, PromoteTrial, StartTrial, step
from rung.algorithms.benchmarks import CrossingCurves
from rung.algorithms.records import record_to_data
from rung.algorithms.simulate import Simulator
from rung.broker.broker import BATCH_MIN
from rung.broker.journal import read_records

ROOT = Path(__file__).resolve().parent.parent
HOST = "tcp://127.0.0.1"

# Part 1
WINDOW_RAW = 1000
PIPE_SECONDS, QUICK_PIPE_SECONDS = 1.5, 0.5
RAW_REPEATS, QUICK_RAW_REPEATS = 3, 1
LATENCY_ROUNDS, QUICK_LATENCY_ROUNDS = 3000, 1000
# Part 2
WORKER_COUNTS = (1, 10, 100, 1000)
RESULT_WINDOW = 16
WARMUP, QUICK_WARMUP = 2.0, 0.5
MEASURE, QUICK_MEASURE = 8.0, 1.0
HEARTBEAT, LIVENESS = 0.5, 5.0
NEVER_ENDS = 1e9
# Part 3
DISPATCH_TRIALS, QUICK_DISPATCH_TRIALS = (30, 200), (5, 20)  # (fewest, most) trials per run
DISPATCH_SECONDS, QUICK_DISPATCH_SECONDS = 25.0, 2.0  # what one worker's run may take, roughly
DISPATCH_WORKERS = (1, 2)
PROTOCOL_WORKERS, QUICK_PROTOCOL_WORKERS = (1, 10), (1, 10)
PROTOCOL_SECONDS, QUICK_PROTOCOL_SECONDS = 3.0, 0.75
STARTUP_RUNS, QUICK_STARTUP_RUNS = 7, 2
TRAINABLE = "scripts.noop_trainable:train"  # part 2's fleet never runs it; named for a valid study
DISPATCH_TRAINABLES = {"after a trial": "scripts.noop_trainable:train_then_linger",
                       "back to back": "scripts.noop_trainable:train"}
# Part 4
MEMORY_SIZES, QUICK_MEMORY_SIZES = (10_000, 100_000), (1_000, 10_000)
MEMORY_WORKERS = 64
SEED = 0
# Targets
TARGET_CEILING_SHARE = 0.5
TARGET_LOST_AT = 1000
TARGET_DISPATCH_MS = 5.0

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------------
# Processes: every one is registered, and `close` stops whatever is still running.


def _die_with_parent() -> None:
    """preexec_fn: the kernel kills the child if this script dies (PR_SET_PDEATHSIG = 1). SIGINT is
    reset to its default, so that Python in the child turns it into KeyboardInterrupt (the broker's
    graceful stop) even when this script was started with SIGINT ignored, as a shell's background job."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except Exception:
        pass


class Processes:
    def __init__(self):
        self.items: list = []

    def popen(self, args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
        with open(log, "ab") as out:
            process = subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self.items.append(process)
        return process

    def spawn(self, target, *args):
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(target=target, args=(theirs, *args), daemon=True)
        process.start()
        theirs.close()
        self.items.append(process)
        return process, ours

    def close(self) -> None:
        for item in reversed(self.items):
            stop_process(item, grace=0.0)
        self.items.clear()


def stop_process(item, grace: float, interrupt: bool = False) -> None:
    """SIGINT (if asked) and `grace` seconds to exit, then SIGKILL; always reaped."""
    if isinstance(item, subprocess.Popen):
        if item.poll() is None and interrupt:
            item.send_signal(signal.SIGINT)
            try:
                item.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        if item.poll() is None:
            item.kill()
        item.wait()
    else:
        item.join(grace)
        if item.is_alive():
            item.kill()
        item.join()


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU time of a process, all its threads (from /proc)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = data[data.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy() -> float:
    """CPU seconds every process on the machine has used (all cores: /proc/stat, idle and iowait
    excluded), so that the load of processes not ours shows next to the figures."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


def rss_bytes(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def percentile(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


# ------------------------------------------------------------------------------------------------
# Part 1: the raw ROUTER/DEALER ceiling.


def sample_result() -> list[bytes]:
    return p.encode(p.Result("sim-0000", 123456789, 12, 1, 1, 1.0, {"loss": 0.123}))


def echo_server(conn, batched: bool, rung_calls: bool = False) -> None:
    """Echo every message back as it came; or, `batched`, drain what has arrived (up to BATCH_MIN)
    and answer each peer once with how many of its messages that was, as the broker acks. With
    `rung_calls`, the loop the broker runs: poll, then take messages with rung.sockets until none
    waits, echoing each."""
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 10 * WINDOW_RAW)  # nothing is dropped: the window fits the queues
    sock.setsockopt(zmq.RCVHWM, 10 * WINDOW_RAW)
    sock.setsockopt(zmq.RCVTIMEO, 1000)  # to notice a dead parent; no poll call per message
    sock.bind(f"{HOST}:0")
    conn.send(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    parent = os.getppid()
    try:
        while True:
            if rung_calls:
                if not sock.poll(1000):
                    if os.getppid() != parent:
                        return
                    continue
                while True:
                    try:
                        frames = sockets.receive(sock)
                    except zmq.Again:
                        break
                    if len(frames) == 2 and frames[1] == b"QUIT":
                        return
                    sockets.send(sock, frames)
                continue
            try:
                frames = sock.recv_multipart()
            except zmq.Again:
                if os.getppid() != parent:
                    return
                continue
            if len(frames) == 2 and frames[1] == b"QUIT":
                return
            if not batched:
                sock.send_multipart(frames)
                continue
            counts = {frames[0]: 1}
            for _ in range(BATCH_MIN - 1):
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                counts[frames[0]] = counts.get(frames[0], 0) + 1
            for route, count in counts.items():
                sock.send_multipart([route, p.HEADER, str(count).encode()])
    finally:
        sock.close(0)
        context.term()


def pipelined(processes: Processes, batched: bool, seconds: float, rung_calls: bool = False) -> dict:
    """Keep WINDOW_RAW messages in flight for `seconds` after a warm-up; round trips per second.
    With `rung_calls`, both sides move messages with rung.sockets, as the broker and fleet do."""
    server, conn = processes.spawn(echo_server, batched, rung_calls)
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 10 * WINDOW_RAW)
    sock.setsockopt(zmq.RCVHWM, 10 * WINDOW_RAW)
    frames = sample_result()
    if rung_calls:
        def send():
            sockets.send(sock, frames)

        def receive(wait: bool):
            if wait:
                sock.poll()
            return sockets.receive(sock)
    else:
        def send():
            sock.send_multipart(frames)

        def receive(wait: bool):
            return sock.recv_multipart(0 if wait else zmq.NOBLOCK)
    try:
        sock.connect(conn.recv())
        sent = done = 0
        began = time.perf_counter()
        start_at, end_at = began + 0.3, began + 0.3 + seconds
        counted_from = None
        while True:
            while sent - done < WINDOW_RAW:
                send()
                sent += 1
            reply = receive(True)
            while reply is not None:
                done += int(reply[1]) if batched else 1
                try:
                    reply = receive(False)
                except zmq.Again:
                    reply = None
            now = time.perf_counter()
            if counted_from is None and now >= start_at:
                counted_from, t0 = done, now
                server_cpu0, client_cpu0 = cpu_seconds(server.pid), cpu_seconds("self")
                busy0 = machine_busy()
            if now >= end_at:
                break
        window = now - t0
        row = {"seconds": window, "round_trips": done - counted_from,
               "per_s": (done - counted_from) / window,
               "server_cpu": (cpu_seconds(server.pid) - server_cpu0) / window,
               "client_cpu": (cpu_seconds("self") - client_cpu0) / window}
        row["other_cpu"] = (machine_busy() - busy0) / window - row["server_cpu"] - row["client_cpu"]
        while done < sent:
            reply = sock.recv_multipart()
            done += int(reply[1]) if batched else 1
        sock.send(b"QUIT")  # one frame: the server sees [route, b"QUIT"]
    finally:
        sock.close(0)
        context.term()
        stop_process(server, grace=2.0)
    return row


def one_at_a_time(processes: Processes, rounds: int) -> dict:
    server, conn = processes.spawn(echo_server, False)
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    frames = sample_result()
    try:
        sock.connect(conn.recv())
        for _ in range(200):
            sock.send_multipart(frames)
            sock.recv_multipart()
        latencies = []
        for _ in range(rounds):
            t = time.perf_counter_ns()
            sock.send_multipart(frames)
            sock.recv_multipart()
            latencies.append(time.perf_counter_ns() - t)
        sock.send(b"QUIT")
    finally:
        sock.close(0)
        context.term()
        stop_process(server, grace=2.0)
    micro = np.array(latencies) / 1000
    return {"rounds": rounds, "median_us": float(np.median(micro)), "p99_us": percentile(micro, 99),
            "per_s": 1e6 / float(np.mean(micro))}


def measure_raw(processes: Processes, quick: bool) -> dict:
    seconds = QUICK_PIPE_SECONDS if quick else PIPE_SECONDS
    repeats = QUICK_RAW_REPEATS if quick else RAW_REPEATS
    echo = [pipelined(processes, False, seconds) for _ in range(repeats)]
    lean = [pipelined(processes, False, seconds, rung_calls=True) for _ in range(repeats)]
    batched = [pipelined(processes, True, seconds) for _ in range(repeats)]
    latency = [one_at_a_time(processes, QUICK_LATENCY_ROUNDS if quick else LATENCY_ROUNDS)
               for _ in range(repeats)]
    best = max(echo, key=lambda r: r["per_s"])
    best_batched = max(batched, key=lambda r: r["per_s"])
    return {
        "payload_bytes": [len(f) for f in sample_result()],
        "window": WINDOW_RAW,
        "ceiling_per_s": best["per_s"],  # the best repeat: a ceiling
        "echo_repeats": echo,
        "rung_calls_ceiling_per_s": max(r["per_s"] for r in lean),
        "rung_calls_repeats": lean,
        "batched_ceiling_per_s": best_batched["per_s"],
        "batched_repeats": batched,
        "latency_repeats": latency,
        "latency_best_median_us": min(r["median_us"] for r in latency),
    }


# ------------------------------------------------------------------------------------------------
# The broker process.


def study_file(path: Path, *, budget: float, max_trials: int | None, trainable: str) -> Path:
    lines = [
        'name = "bench-broker"', f'trainable = "{trainable}"', 'metric = "loss"', 'mode = "min"',
        "seed = 0", "", "[algorithm]", 'name = "random"', f"budget = {float(budget)!r}",
    ]
    if max_trials is not None:
        lines.append(f"max_trials = {max_trials}")
    lines += ["", "[space]", 'x = ["uniform", 0.0, 1.0]', ""]
    path.write_text("\n".join(lines))
    return path


def start_broker(processes: Processes, work: Path, study: Path) -> tuple[subprocess.Popen, str, Path]:
    directory = work / "study"
    log = work / "broker.log"
    broker = processes.popen(
        [sys.executable, "-m", "rung", "broker", "--study", str(study), "--dir", str(directory),
         "--bind", f"{HOST}:0", "--heartbeat", str(HEARTBEAT), "--liveness", str(LIVENESS)], log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"serving .* on (tcp://\S+)", log.read_text(errors="replace"))
        if found:
            return broker, found.group(1), directory
        if broker.poll() is not None:
            break
        time.sleep(0.02)
    raise RuntimeError(f"the broker did not start: {log.read_text(errors='replace')[-2000:]}")


def journal_records(directory: Path) -> list:
    return read_records(directory / "journal")[1:]  # the first record is the study


# ------------------------------------------------------------------------------------------------
# The fleet of simulated workers (its own process).


class SimWorker:
    __slots__ = ("name", "incarnation", "sock", "run", "seq", "step", "acked", "ended", "last_sent",
                 "pending", "ended_at", "ended_key")

    def __init__(self, index: int, sock):
        self.name = f"sim-{index:04d}"
        self.incarnation = int.from_bytes(os.urandom(4), "big")
        self.sock = sock
        self.run: tuple | None = None  # (trial, attempt, budget)
        self.seq = 0
        self.step = 0
        self.acked = 0
        self.ended = False
        self.last_sent = 0.0
        self.pending: deque = deque()  # (seq, monotonic sent) of results not yet acknowledged
        self.ended_at = None  # wall time the last `ended` was sent
        self.ended_key = None  # (trial, attempt) it ended


class Fleet:
    def __init__(self, address: str, count: int, window: int):
        self.context = zmq.Context()
        self.context.set(zmq.MAX_SOCKETS, count + 64)
        self.poller = zmq.Poller()
        self.window = window
        self.heartbeat = HEARTBEAT
        self.workers: list[SimWorker] = []
        self.by_sock: dict = {}
        for index in range(count):
            sock = self.context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(address)
            worker = SimWorker(index, sock)
            self.workers.append(worker)
            self.by_sock[sock] = worker
            self.poller.register(sock, zmq.POLLIN)
        self.acked_results = 0  # results acknowledged, over the whole run
        self.recording = False
        self.acks = 0  # acks that moved a worker's window, while recording
        self.ack_latencies: list[float] = []
        self.dispatches: list[tuple] = []  # ((trial, attempt) ended, wall ended sent, wall run received)
        self.counts = dict(runs=0, welcomes=0, rejoins=0, errors=0, stops=0, shutdowns=0,
                           runs_while_busy=0, heartbeats=0)
        self.error_reasons: list[str] = []

    def send(self, worker: SimWorker, message, now: float) -> bool:
        """Whether the socket took `message`; a refused result is taken back by `pump`, as a real
        worker keeps it waiting, so that no seq is skipped."""
        try:
            sockets.send(worker.sock, p.encode(message))
        except zmq.Again:
            return False
        worker.last_sent = now
        return True

    def held(self, worker: SimWorker) -> list:
        run = worker.run
        if run is None or (worker.ended and worker.acked >= worker.seq):
            return []
        return [[run[0], run[1]]]

    def hello(self, worker: SimWorker, now: float) -> None:
        self.send(worker, p.Hello(worker.name, worker.incarnation, "cpu", socket.gethostname(),
                                  os.getpid(), self.held(worker)), now)

    def handle(self, worker: SimWorker, message, now: float) -> None:
        match message:
            case p.Ack(trial=trial, attempt=attempt, seq=seq):
                run = worker.run
                if run is None or (run[0], run[1]) != (trial, attempt) or seq <= worker.acked:
                    return
                results_before = min(worker.acked, worker.step)
                worker.acked = seq
                if self.recording:
                    self.acks += 1
                self.acked_results += min(seq, worker.step) - results_before
                pending = worker.pending
                while pending and pending[0][0] <= seq:
                    sent = pending.popleft()[1]
                    if self.recording:
                        self.ack_latencies.append(now - sent)
            case p.Run(trial=trial, attempt=attempt, budget=budget):
                self.counts["runs"] += 1
                if worker.run is not None and not worker.ended:
                    self.counts["runs_while_busy"] += 1
                if worker.ended_key is not None and self.recording:
                    self.dispatches.append((worker.ended_key, worker.ended_at, time.time()))
                worker.ended_key = None
                worker.run = (trial, attempt, budget)
                worker.seq = worker.step = worker.acked = 0
                worker.ended = False
                worker.pending.clear()
            case p.Welcome(heartbeat=heartbeat):
                self.counts["welcomes"] += 1
                self.heartbeat = heartbeat
            case p.Pong():
                pass
            case p.Rejoin():
                self.counts["rejoins"] += 1
                self.hello(worker, now)
            case p.Stop(trial=trial, attempt=attempt):
                self.counts["stops"] += 1
                run = worker.run
                if run is not None and (run[0], run[1]) == (trial, attempt) and not worker.ended:
                    worker.seq += 1
                    worker.ended = True
                    self.send(worker, p.Ended(worker.name, worker.incarnation, trial, attempt,
                                              worker.seq, "finished", "stopped"), now)
            case p.Shutdown():
                self.counts["shutdowns"] += 1
            case p.Error(reason=reason):
                self.counts["errors"] += 1
                if len(self.error_reasons) < 5:
                    self.error_reasons.append(reason)

    def pump(self, worker: SimWorker, now: float) -> None:
        """Send results up to the window; `ended` once the step reaches the budget."""
        run = worker.run
        if run is None or worker.ended:
            return
        trial, attempt, budget = run
        while worker.step < budget and worker.seq - worker.acked < self.window:
            if not self.send(worker, p.Result(worker.name, worker.incarnation, trial, attempt,
                                              worker.seq + 1, float(worker.step + 1),
                                              {"loss": 1.0 / (worker.step + 1)}), now):
                return
            worker.seq += 1
            worker.step += 1
            worker.pending.append((worker.seq, now))
        if worker.step >= budget:
            ended_at = time.time()
            if not self.send(worker, p.Ended(worker.name, worker.incarnation, trial, attempt,
                                             worker.seq + 1, "finished", "returned"), now):
                return
            worker.seq += 1
            worker.ended = True
            worker.ended_key = (trial, attempt)
            worker.ended_at = ended_at

    def serve(self, seconds: float, conn=None) -> bool:
        """Run the loop for `seconds` (or, with `conn`, until it says something); False if the
        parent died."""
        parent = os.getppid()
        if conn is not None:
            self.poller.register(conn.fileno(), zmq.POLLIN)
        deadline = time.monotonic() + seconds
        next_scan = 0.0
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return True
                ready = self.poller.poll(max(1, int(min(deadline - now, 0.05) * 1000)))
                now = time.monotonic()
                for sock, _ in ready:
                    worker = self.by_sock.get(sock)
                    if worker is None:  # the control pipe
                        return True
                    while True:
                        try:
                            frames = sockets.receive(sock)
                        except zmq.Again:
                            break
                        self.handle(worker, p.decode(frames), now)
                    self.pump(worker, now)
                if now >= next_scan:
                    next_scan = now + min(0.1, self.heartbeat / 4)
                    if os.getppid() != parent:
                        return False
                    for worker in self.workers:
                        if now - worker.last_sent >= self.heartbeat:
                            self.counts["heartbeats"] += 1
                            self.send(worker, p.Heartbeat(worker.name, worker.incarnation,
                                                          self.held(worker)), now)
        finally:
            if conn is not None:
                self.poller.unregister(conn.fileno())

    def close(self) -> None:
        for worker in self.workers:
            worker.sock.close(0)
        self.context.term()


def fleet_main(conn, count: int, window: int, warmup: float, seconds: float) -> None:
    # Started before the broker, so that the two import at once; the address follows on `conn`.
    if not conn.poll(60):
        return
    address, broker_pid = conn.recv()
    fleet = Fleet(address, count, window)
    try:
        began = time.monotonic()
        for worker in fleet.workers:
            fleet.hello(worker, began)
        # Connect: until every worker holds a run.
        while sum(w.run is not None for w in fleet.workers) < count:
            if time.monotonic() - began > 60:
                raise RuntimeError(f"only {sum(w.run is not None for w in fleet.workers)} of {count} "
                                   "workers got a run within 60 s")
            if not fleet.serve(0.05):
                return
        connect_s = time.monotonic() - began
        if not fleet.serve(warmup):
            return
        fleet.recording = True
        acked0, wall0, t0 = fleet.acked_results, time.time(), time.monotonic()
        broker_cpu0, fleet_cpu0, busy0 = cpu_seconds(broker_pid), cpu_seconds("self"), machine_busy()
        if not fleet.serve(seconds):
            return
        fleet.recording = False
        acked1, wall1, t1 = fleet.acked_results, time.time(), time.monotonic()
        broker_cpu1, fleet_cpu1, busy1 = cpu_seconds(broker_pid), cpu_seconds("self"), machine_busy()
        window = t1 - t0
        latencies = np.array(fleet.ack_latencies) * 1000
        conn.send({
            "workers": count, "connect_s": connect_s, "window_s": window, "wall0": wall0,
            "wall1": wall1, "results": acked1 - acked0, "results_per_s": (acked1 - acked0) / window,
            "results_per_ack": (acked1 - acked0) / fleet.acks if fleet.acks else math.nan,
            "acked_total_at_end": acked1,
            "ack_latency_median_ms": percentile(latencies, 50),
            "ack_latency_p99_ms": percentile(latencies, 99),
            "broker_cpu": (broker_cpu1 - broker_cpu0) / window,
            "fleet_cpu": (fleet_cpu1 - fleet_cpu0) / window,
            "other_cpu": ((busy1 - busy0) - (broker_cpu1 - broker_cpu0) - (fleet_cpu1 - fleet_cpu0)) / window,
            "broker_rss_bytes": rss_bytes(broker_pid),
            "dispatches": fleet.dispatches, "counts": dict(fleet.counts),
            "error_reasons": fleet.error_reasons,
        })
        # Keep answering (acks, heartbeats) until told to go: the broker is stopped first, so that
        # the fleet leaving is never taken for workers lost.
        fleet.serve(120, conn)
        conn.send({"acked_total": fleet.acked_results})
    except BaseException as error:
        conn.send({"error": f"{type(error).__name__}: {error}"})
        raise
    finally:
        fleet.close()


def run_fleet(processes: Processes, work: Path, *, workers: int, budget: float, warmup: float,
              seconds: float, window: int = RESULT_WINDOW) -> tuple[dict, list]:
    """A broker process and a fleet process; returns the fleet's figures and the journal."""
    study = study_file(work / "study.toml", budget=budget, max_trials=None, trainable=TRAINABLE)
    fleet, conn = processes.spawn(fleet_main, workers, window, warmup, seconds)
    broker, address, directory = start_broker(processes, work, study)
    try:
        conn.send((address, broker.pid))
        deadline = time.monotonic() + 60 + warmup + seconds + 30
        while not conn.poll(0.2):
            if broker.poll() is not None:
                break
            if fleet.exitcode is not None:
                raise RuntimeError(f"the fleet exited with code {fleet.exitcode} without a report")
            if time.monotonic() > deadline:
                raise RuntimeError("the fleet did not report in time")
        if broker.poll() is not None:
            raise RuntimeError(f"the broker exited with code {broker.returncode} during the measurement: "
                               f"{(work / 'broker.log').read_text(errors='replace')[-2000:]}")
        stats = conn.recv()
        if "error" in stats:
            raise RuntimeError(f"fleet: {stats['error']}")
        stop_process(broker, grace=15.0, interrupt=True)
        conn.send("quit")
        if conn.poll(15):
            stats.update(conn.recv())
    finally:
        stop_process(broker, grace=0.0)
        stop_process(fleet, grace=5.0)
    return stats, journal_records(directory)


def result_window(workers: int) -> int:
    """Unacknowledged results per simulated worker: at least RESULT_WINDOW, and at least WINDOW_RAW
    across the fleet."""
    return max(RESULT_WINDOW, -(-WINDOW_RAW // workers))


def measure_throughput(processes: Processes, work: Path, workers: int, quick: bool) -> dict:
    stats, records = run_fleet(processes, work, workers=workers, budget=NEVER_ENDS,
                               warmup=QUICK_WARMUP if quick else WARMUP,
                               seconds=QUICK_MEASURE if quick else MEASURE,
                               window=result_window(workers))
    kinds: dict[str, int] = {}
    in_window = 0
    for event, _ in records:
        kinds[event[0]] = kinds.get(event[0], 0) + 1
        if event[0] == "result" and stats["wall0"] <= event[-1] <= stats["wall1"]:
            in_window += 1
    stats.pop("dispatches")
    stats.update(
        result_window=result_window(workers),
        journal_results_in_window=in_window,
        journal_results_total=kinds.get("result", 0),
        journal_kinds=kinds,
        workers_lost=kinds.get("worker_lost", 0),
        acked_all_journaled=kinds.get("result", 0) >= stats.get("acked_total", stats["acked_total_at_end"]),
        broker_cpu_us_per_result=stats["broker_cpu"] * 1e6 / stats["results_per_s"]
        if stats["results_per_s"] else math.nan,
        journal_bytes=(work / "study" / "journal").stat().st_size,
    )
    return stats


def measure_protocol_dispatch(processes: Processes, work: Path, workers: int, quick: bool) -> dict:
    stats, records = run_fleet(processes, work, workers=workers, budget=1, warmup=0.5,
                               seconds=QUICK_PROTOCOL_SECONDS if quick else PROTOCOL_SECONDS)
    finished = {(e[1], e[2]): e[-1] for e, _ in records if e[0] == "attempt_finished"}
    lost = sum(e[0] == "worker_lost" for e, _ in records)
    from_stamp, from_send = [], []
    for key, ended_sent, run_received in stats["dispatches"]:
        key = tuple(key)
        if key in finished:
            from_stamp.append((run_received - finished[key]) * 1000)
        from_send.append((run_received - ended_sent) * 1000)
    return {
        "workers": workers, "window_s": stats["window_s"], "attempts": len(from_send),
        "attempts_per_s": len(from_send) / stats["window_s"],
        "stamp_to_run_median_ms": percentile(from_stamp, 50),
        "stamp_to_run_p99_ms": percentile(from_stamp, 99),
        "ended_to_run_median_ms": percentile(from_send, 50),
        "ended_to_run_p99_ms": percentile(from_send, 99),
        "broker_cpu": stats["broker_cpu"], "fleet_cpu": stats["fleet_cpu"],
        "other_cpu": stats["other_cpu"], "workers_lost": lost,
        "counts": stats["counts"], "error_reasons": stats["error_reasons"],
    }


# ------------------------------------------------------------------------------------------------
# Part 3 (a): real worker processes.


def worker_env(tmp: Path | None = None) -> dict:
    """The repository root on PYTHONPATH, so that the trial child imports the trainable; with `tmp`,
    the workers' scratch directories go there (removed with this script's work directory)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    if tmp is not None:
        tmp.mkdir(exist_ok=True)
        env["TMPDIR"] = str(tmp)
    return env


def median_run_ms(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=worker_env(), check=True, stdin=subprocess.DEVNULL)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def measure_real_dispatch(processes: Processes, work: Path, workers: int, trials: int, form: str) -> dict:
    study = study_file(work / "study.toml", budget=1, max_trials=trials,
                       trainable=DISPATCH_TRAINABLES[form])
    began = time.perf_counter()
    ours0, busy0 = os.times(), machine_busy()
    broker, address, directory = start_broker(processes, work, study)
    pool = [processes.popen([sys.executable, "-m", "rung", "worker", "--connect", address, "--name",
                             f"bench-{i}"], work / f"worker-{i}.log", env=worker_env(work / "tmp"))
            for i in range(workers)]
    try:
        try:
            broker.wait(timeout=30 + trials * 2.0)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the study of {trials} trials did not finish in time; see {work}")
        if broker.returncode != 0:
            raise RuntimeError(f"the broker exited with code {broker.returncode}: "
                               f"{(work / 'broker.log').read_text(errors='replace')[-2000:]}")
        for worker in pool:
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        exit_codes = [worker.poll() for worker in pool]  # None: still running after the study ended
    finally:
        for worker in pool:
            stop_process(worker, grace=0.0)
        stop_process(broker, grace=0.0)
    wall = time.perf_counter() - began
    ours1, busy1 = os.times(), machine_busy()
    # Reaped children count in ours: the broker, the workers and, reaped by them, the trial processes.
    ours = sum(ours1[i] - ours0[i] for i in range(4))
    started, first_result, finished = {}, {}, {}
    kinds: dict[str, int] = {}
    for event, decisions in journal_records(directory):
        at = event[-1]
        kinds[event[0]] = kinds.get(event[0], 0) + 1
        for decision in decisions:
            if decision[0] in ("start", "promote"):
                started[(decision[1], decision[2])] = at
        key = (event[1], event[2]) if event[0] in ("result", "attempt_finished", "attempt_failed") else None
        if event[0] == "result":
            first_result.setdefault(key, at)
        elif event[0] in ("attempt_finished", "attempt_failed"):
            finished[key] = at
    dispatch = [(first_result[k] - t) * 1000 for k, t in started.items() if k in first_result]
    ending = [(finished[k] - first_result[k]) * 1000 for k in first_result if k in finished]
    span = (max(finished.values()) - min(started.values())) if finished else math.nan
    return {
        "form": form, "workers": workers, "trials": trials, "attempts": len(started),
        "with_result": len(dispatch), "failed": kinds.get("attempt_failed", 0),
        "workers_lost": kinds.get("worker_lost", 0),
        "dispatch_median_ms": percentile(dispatch, 50), "dispatch_p90_ms": percentile(dispatch, 90),
        "result_to_end_median_ms": percentile(ending, 50),
        "trials_per_s": len(finished) / span if span else math.nan, "wall_s": wall,
        "our_cpu": ours / wall, "other_cpu": (busy1 - busy0 - ours) / wall,
        "worker_exit_codes": exit_codes,
    }


# ------------------------------------------------------------------------------------------------
# Part 4: memory.


def deep_size(root) -> int:
    """sys.getsizeof summed over every object reachable from `root`, each once (types, modules and
    functions excluded). Allocator overhead is not counted."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


class BrokerSide:
    """A stepper that also keeps what the broker keeps beside the state, and the journal payloads."""

    def __init__(self):
        self.assigned: dict = {}
        self.seqs: dict = {}
        self.sent: dict = {}
        self.payloads: list[bytes] = []
        self.clock = 0.0

    def __call__(self, algorithm, state, event):
        decisions = step(algorithm, state, event)
        self.payloads.append(msgpack.packb(record_to_data(event, decisions), use_bin_type=True))
        self.clock += 1e-3
        trial = getattr(event, "trial", None)
        if trial is not None and hasattr(event, "attempt"):
            key = (trial, event.attempt)
            self.seqs[key] = self.seqs.get(key, 0) + 1
        for decision in decisions:
            if isinstance(decision, (StartTrial, PromoteTrial, CloneTrial)):
                key = (decision.trial, decision.attempt)
                self.assigned[key] = (decision.worker, decision.checkpoint)
                self.sent.setdefault(decision.worker, {})[key] = self.clock
        return decisions


def build_state(trials: int, stepper=step):
    bench = CrossingCurves()
    algorithm = ASHA(bench.space, 1, 81, 3, metric=bench.metric, max_trials=trials)
    result = Simulator(algorithm, bench, MEMORY_WORKERS, seed=SEED, report_every=1.0,
                       stepper=stepper).run()
    return result.state, result.events


def measure_memory(sizes: tuple[int, ...]) -> list[dict]:
    rows = []
    small = sizes[0]
    # tracemalloc: only the state survives the build.
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    began = time.perf_counter()
    state, _ = build_state(small)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    traced_wall = time.perf_counter() - began
    del state
    gc.collect()
    for trials in sizes:
        gc.collect()
        rss0 = rss_bytes()
        side = BrokerSide()
        began = time.perf_counter()
        state, events = build_state(trials, side)
        wall = time.perf_counter() - began
        gc.collect()
        rss = rss_bytes() - rss0
        results = sum(len(t.history) for t in state.trials)

        def row(measure: str, size: int, note: str = "") -> dict:
            return {"trials": trials, "measure": measure, "bytes": size, "bytes_per_trial": size / trials,
                    "mib_per_10k_trials": size / trials * 1e4 / 2**20, "results": results,
                    "events": events, "note": note}

        if trials == small:
            rows.append(row("state (tracemalloc)", traced, f"traced build {traced_wall:.1f} s"))
        rows.append(row("state (deep getsizeof)", deep_size(state), f"untraced build {wall:.1f} s"))
        rows.append(row("broker side tables", deep_size((side.assigned, side.seqs, side.sent)),
                        "assigned, seqs, registry sent"))
        journal = sum(len(payload) + 8 for payload in side.payloads)
        rows.append(row("journal file on disk", journal, f"{len(side.payloads):,} records"))
        rows.append(row("RSS growth of the build", rss, "state + tables + journal bytes; noisy"))
        if trials == small:
            decoded = [msgpack.unpackb(payload, raw=False) for payload in side.payloads]
            rows.append(row("Journal.records after restart", deep_size(decoded),
                            "decoded on a restart, freed after replay"))
            del decoded
        del state, side
        gc.collect()
    return rows


# ------------------------------------------------------------------------------------------------
# Report.


def fmt(value, digits: int = 2):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return f"{value:,.{digits}f}"


def report(raw, throughput, real, protocol, startup, memory, quick, walls) -> dict:
    ceiling = raw["ceiling_per_s"]
    batched_ceiling = raw["batched_ceiling_per_s"]
    lean_ceiling = raw["rung_calls_ceiling_per_s"]
    print(f"Part 1: raw pyzmq ROUTER/DEALER over {HOST}, echo server in its own process, frames "
          f"{raw['payload_bytes']} bytes; pipelined rows are repeats, each with a fresh server")
    print()
    pipelined_modes = (("echo each", "echo_repeats"), ("echo each, rung.sockets calls", "rung_calls_repeats"),
                       ("one reply per drained batch", "batched_repeats"))
    rows = [[f"pipelined, {mode} (repeat {i + 1})", WINDOW_RAW, fmt(r["seconds"]), round(r["per_s"]),
             None, None, cores(r["server_cpu"]), cores(r["client_cpu"]), cores(r["other_cpu"])]
            for mode, key in pipelined_modes for i, r in enumerate(raw[key])]
    rows += [[f"one at a time (repeat {i + 1})", 1, None, round(r["per_s"]), fmt(r["median_us"], 1),
              fmt(r["p99_us"], 1), None, None, None] for i, r in enumerate(raw["latency_repeats"])]
    print(table(["mode", "in flight", "seconds", "round trips/s", "median us", "p99 us", "server CPU",
                 "client CPU", "other CPU"], rows))
    print("CPU columns: cores used on average in the window (all threads); other: every process not "
          "ours on this machine")
    print(f"raw ceiling (best pipelined echo repeat): {ceiling:,.0f} round trips/s; with one reply per "
          f"drained batch, as the broker's cumulative acks: {batched_ceiling:,.0f} messages/s; with "
          f"rung.sockets' calls (no enum flags, no RCVMORE lookups), as the broker and the fleet move "
          f"messages: {lean_ceiling:,.0f} round trips/s")
    print()
    print(f"Part 2: broker results/s with the journal on (fsync per loop iteration); broker and fleet "
          f"are separate processes on {os.cpu_count()} cores; unacked results per worker: the window "
          f"column (at least {RESULT_WINDOW}, and {WINDOW_RAW} in the whole fleet as in part 1)")
    print()
    print(table(
        ["workers", "window", "window s", "results acked", "results/s", "x ceiling", "x batched",
         "x rung.sockets", "results/ack", "journaled in window",
         "ack p50 ms", "ack p99 ms", "broker CPU", "fleet CPU", "other CPU", "broker us/result", "connect s",
         "lost", "anomalies"],
        [[r["workers"], r["result_window"], fmt(r["window_s"]), r["results"], round(r["results_per_s"]),
          fmt(r["results_per_s"] / ceiling, 3), fmt(r["results_per_s"] / batched_ceiling, 3),
          fmt(r["results_per_s"] / lean_ceiling, 3), fmt(r["results_per_ack"], 1),
          r["journal_results_in_window"],
          fmt(r["ack_latency_median_ms"]), fmt(r["ack_latency_p99_ms"]), cores(r["broker_cpu"]),
          cores(r["fleet_cpu"]), cores(r["other_cpu"]), fmt(r["broker_cpu_us_per_result"], 1),
          fmt(r["connect_s"]),
          r["workers_lost"], anomalies(r)] for r in throughput]))
    print("(every acked result was in the journal: "
          f"{'yes' if all(r['acked_all_journaled'] for r in throughput) else 'NO'})")
    print()
    print("Part 3a: dispatch with real worker processes, random search, budget 1, no-op trainables "
          f"({', '.join(f'{form}: {name}' for form, name in DISPATCH_TRAINABLES.items())})")
    print()
    print(table(
        ["form", "workers", "trials", "attempts", "failed", "start->result p50 ms", "p90 ms",
         "result->ended p50 ms", "trials/s", "wall s", "our CPU", "other CPU"],
        [[r["form"], r["workers"], r["trials"], r["attempts"], r["failed"], fmt(r["dispatch_median_ms"], 1),
          fmt(r["dispatch_p90_ms"], 1), fmt(r["result_to_end_median_ms"], 1), fmt(r["trials_per_s"]),
          fmt(r["wall_s"], 1), cores(r["our_cpu"]), cores(r["other_cpu"])] for r in real]))
    print(f"for reference, median of {startup['runs']} runs: `python -c pass` "
          f"{startup['python_ms']:.0f} ms, `python -c \"import rung.worker.child\"` "
          f"{startup['child_import_ms']:.0f} ms")
    print()
    print("Part 3b: dispatch by the broker and protocol alone (simulated workers, budget 1: one result, "
          "then ended)")
    print()
    print(table(
        ["workers", "attempts", "attempts/s", "stamp->run p50 ms", "p99 ms", "ended->run p50 ms",
         "p99 ms", "broker CPU", "fleet CPU", "other CPU", "lost"],
        [[r["workers"], r["attempts"], round(r["attempts_per_s"]), fmt(r["stamp_to_run_median_ms"], 3),
          fmt(r["stamp_to_run_p99_ms"], 3), fmt(r["ended_to_run_median_ms"], 3),
          fmt(r["ended_to_run_p99_ms"], 3), cores(r["broker_cpu"]), cores(r["fleet_cpu"]),
          cores(r["other_cpu"]), r["workers_lost"]]
         for r in protocol]))
    print("stamp: the broker's wall stamp on attempt_finished; ended: the fleet sending `ended`; "
          "run: the fleet receiving the next `run`")
    print()
    print(f"Part 4: broker memory, ASHA on CrossingCurves, {MEMORY_WORKERS} workers, report_every=1.0, "
          "run to the end of the study")
    print()
    print(table(
        ["trials", "results", "measure", "bytes", "bytes/trial", "MiB per 10^4 trials", "note"],
        [[r["trials"], r["results"], r["measure"], r["bytes"], round(r["bytes_per_trial"]),
          fmt(r["mib_per_10k_trials"]), r["note"]] for r in memory]))
    print()

    shares = [r["results_per_s"] / ceiling for r in throughput]
    ceiling_met = all(s >= TARGET_CEILING_SHARE for s in shares)
    big = [r for r in throughput if r["workers"] == TARGET_LOST_AT]
    lost_met = bool(big) and all(r["workers_lost"] == 0 for r in big)
    real_median = max((r["dispatch_median_ms"] for r in real if r["form"] == "after a trial"),
                      default=math.nan)
    back_to_back = max((r["dispatch_median_ms"] for r in real if r["form"] == "back to back"),
                       default=math.nan)
    protocol_median = max((r["stamp_to_run_median_ms"] for r in protocol), default=math.nan)
    real_met = real_median < TARGET_DISPATCH_MS
    protocol_met = protocol_median < TARGET_DISPATCH_MS
    print("Targets")
    print(f"  results/s >= {TARGET_CEILING_SHARE} x raw ceiling ({ceiling:,.0f}/s) at every worker count "
          f"(shares {', '.join(f'{s:.3f}' for s in shares)}) -> {verdict(ceiling_met)}")
    lean_shares = [r["results_per_s"] / lean_ceiling for r in throughput]
    print(f"  (for comparison, not the target: against the rung.sockets ceiling ({lean_ceiling:,.0f}/s), "
          f"shares {', '.join(f'{s:.3f}' for s in lean_shares)})")
    print(f"  {TARGET_LOST_AT} workers, none declared lost "
          f"({big[0]['workers_lost'] if big else '-'} lost) -> {verdict(lost_met)}")
    print(f"  dispatch overhead < {TARGET_DISPATCH_MS:g} ms, real workers after a trial (worst median "
          f"{real_median:.1f} ms; back to back {back_to_back:.1f} ms) -> {verdict(real_met)}")
    print(f"  dispatch overhead < {TARGET_DISPATCH_MS:g} ms, broker and protocol alone (worst median "
          f"{protocol_median:.3f} ms) -> {verdict(protocol_met)}")
    print()
    print("wall time: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in walls.items()))
    return {
        "ceiling_share": {"target": TARGET_CEILING_SHARE, "shares": shares, "met": ceiling_met,
                          "shares_of_rung_calls_ceiling": lean_shares},
        "none_lost": {"workers": TARGET_LOST_AT, "met": lost_met},
        "dispatch_real": {"target_ms": TARGET_DISPATCH_MS, "worst_median_ms": real_median,
                          "back_to_back_worst_median_ms": back_to_back, "met": real_met},
        "dispatch_protocol": {"target_ms": TARGET_DISPATCH_MS, "worst_median_ms": protocol_median,
                              "met": protocol_met},
    }


def cores(value: float) -> str | None:
    """Cores as printed; /proc/stat counts in ticks, so "other" can come out a little below zero."""
    return None if value is None or not math.isfinite(value) else f"{max(value, 0.0):.2f}"


def anomalies(row: dict) -> str:
    counts = row["counts"]
    found = [f"{counts[k]} {k}" for k in ("rejoins", "errors", "stops", "runs_while_busy") if counts[k]]
    return ", ".join(found) or "none"


def main() -> None:
    args = parse_args("bench_broker", __doc__)
    quick = args.quick
    processes = Processes()
    work = Path(tempfile.mkdtemp(prefix="rung-bench-broker-"))
    walls: dict[str, float] = {}
    began = time.perf_counter()
    try:
        t = time.perf_counter()
        raw = measure_raw(processes, quick)
        walls["part 1"] = time.perf_counter() - t

        t = time.perf_counter()
        throughput = []
        for workers in WORKER_COUNTS:
            folder = work / f"throughput-{workers}"
            folder.mkdir()
            throughput.append(measure_throughput(processes, folder, workers, quick))
        walls["part 2"] = time.perf_counter() - t

        t = time.perf_counter()
        runs = QUICK_STARTUP_RUNS if quick else STARTUP_RUNS
        startup = {"runs": runs, "python_ms": median_run_ms([sys.executable, "-c", "pass"], runs),
                   "child_import_ms": median_run_ms([sys.executable, "-c", "import rung.worker.child"],
                                                    runs)}
        # As many trials as fit DISPATCH_SECONDS at one worker, given what one trial process costs
        # to start (the child's imports dominate it), within DISPATCH_TRIALS.
        fewest, most = QUICK_DISPATCH_TRIALS if quick else DISPATCH_TRIALS
        per_trial = startup["child_import_ms"] / 1000 + 0.02
        trials = max(fewest, min(most, int((QUICK_DISPATCH_SECONDS if quick else DISPATCH_SECONDS)
                                           / per_trial)))
        real = []
        for form in DISPATCH_TRAINABLES:
            for workers in DISPATCH_WORKERS:
                folder = work / f"dispatch-{form.replace(' ', '-')}-{workers}"
                folder.mkdir()
                real.append(measure_real_dispatch(processes, folder, workers, trials, form))
        protocol = []
        for workers in QUICK_PROTOCOL_WORKERS if quick else PROTOCOL_WORKERS:
            folder = work / f"protocol-{workers}"
            folder.mkdir()
            protocol.append(measure_protocol_dispatch(processes, folder, workers, quick))
        walls["part 3"] = time.perf_counter() - t

        t = time.perf_counter()
        memory = measure_memory(QUICK_MEMORY_SIZES if quick else MEMORY_SIZES)
        walls["part 4"] = time.perf_counter() - t
    except BaseException:
        print(f"bench_broker: failed; logs and journals kept in {work}", file=sys.stderr)
        raise
    finally:
        processes.close()
    walls["total"] = time.perf_counter() - began
    targets = report(raw, throughput, real, protocol, startup, memory, quick, walls)
    shutil.rmtree(work, ignore_errors=True)
    write_json(args.out, {
        "benchmark": "bench_broker",
        "quick": quick,
        "settings": {
            "address": HOST, "raw_window": WINDOW_RAW, "worker_counts": list(WORKER_COUNTS),
            "result_window": {str(n): result_window(n) for n in WORKER_COUNTS}, "heartbeat": HEARTBEAT, "liveness": LIVENESS,
            "warmup_s": QUICK_WARMUP if quick else WARMUP,
            "measure_s": QUICK_MEASURE if quick else MEASURE,
            "throughput_study": {"algorithm": "random", "budget": NEVER_ENDS, "max_trials": None},
            "dispatch_trials": trials,
            "dispatch_workers": list(DISPATCH_WORKERS), "dispatch_trainables": DISPATCH_TRAINABLES,
            "memory_sizes": list(QUICK_MEMORY_SIZES if quick else MEMORY_SIZES),
            "memory_workers": MEMORY_WORKERS, "seed": SEED,
        },
        "raw": raw,
        "throughput": throughput,
        "dispatch_real": real,
        "dispatch_startup_reference": startup,
        "dispatch_protocol": protocol,
        "memory": memory,
        "targets": targets,
        "wall_seconds": walls,
        "environment": environment(),
    })
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
