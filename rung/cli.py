"""The `rung` command line.

    rung run FILE [--workers N] [--dir DIR]       broker and local workers in one command
    rung broker --study FILE --dir DIR [--bind ADDR] [--curve KEYS | --insecure]
    rung worker --connect ADDR [--gpu N | --gpus all|LIST] [--curve KEYS] [--workdir DIR]
    rung keys DIR                                 CurveZMQ keys for a broker bound beyond 127.0.0.1
    rung status DIR|ADDR                          trials per rung and status, workers, best so far
    rung results DIR [--top K] [--format table|csv|json] [--schedule]
    rung logs DIR TRIAL [--attempt N] [--follow]  what a trial's attempt printed
    rung simulate [--algorithm NAME] [--workers N] ...   a study on virtual workers, in simulated time

Errors are one line on stderr and exit status 2; a study that failed (`max_failures`, or no good
trial) ends `rung run` with status 1, its first failure and the end of that trial's log. SIGTERM and
SIGINT end every command gracefully (rung/shutdown.py); the exit status is then 128 + the signal's
number (143, 130).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rung.algorithms import (
    ASHA,
    AsyncHyperband,
    Hyperband,
    MedianStopping,
    RandomSearch,
    SuccessiveHalving,
    TrialStatus,
    step,
)
from rung.algorithms.benchmarks import CrossingCurves
from rung.algorithms.simulate import Simulator
from rung.shutdown import (
    Interrupted,
    child_environment,
    cleanup,
    end_with_parent,
    interrupt,
    on_signals,
)
from rung.study import Study, StudyFailed
from rung.summary import format_summary, schedule_rows, study_failure, study_summary, trial_rows

SIMULATED = {
    "random": lambda a, space: RandomSearch(space, budget=a.max_budget, **limits(a)),
    "sha": lambda a, space: SuccessiveHalving(space, n_configs=a.n_configs, min_budget=a.min_budget,
                                              max_budget=a.max_budget, eta=a.eta, brackets=None,
                                              overlap=True, **limits(a)),
    "hyperband": lambda a, space: Hyperband(space, a.min_budget, a.max_budget, a.eta,
                                            iterations=None, overlap=True, **limits(a)),
    "asha": lambda a, space: ASHA(space, a.min_budget, a.max_budget, a.eta, **limits(a)),
    "asha-stopping": lambda a, space: ASHA(space, a.min_budget, a.max_budget, a.eta,
                                           variant="stopping", **limits(a)),
    "async-hyperband": lambda a, space: AsyncHyperband(space, a.min_budget, a.max_budget, a.eta,
                                                       **limits(a)),
    "median": lambda a, space: MedianStopping(space, budget=a.max_budget, **limits(a)),
}


def limits(args) -> dict:
    return {"metric": CrossingCurves.metric, "max_trials": args.max_trials,
            "total_budget": args.total_budget}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="rung", description="Distributed hyperparameter tuning.")
    commands = top.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a study: broker and local workers in one command")
    run.add_argument("study", help="the study file (TOML)")
    run.add_argument("--workers", type=int, default=2)
    run.add_argument("--dir", help="the study directory (default: runs/NAME); rerun to resume")
    run.add_argument("--progress-timeout", type=float, default=600.0,
                     help="fail an attempt silent for this many seconds")

    broker = commands.add_parser("broker", help="run the broker of a study (head node)")
    broker.add_argument("--study", required=True)
    broker.add_argument("--dir", required=True)
    broker.add_argument("--bind", default="tcp://127.0.0.1:5555")
    broker.add_argument("--insecure", action="store_true",
                        help="allow binding beyond the loopback without authentication")
    broker.add_argument("--curve", help="a key directory (see `rung keys`): accept only its workers")
    broker.add_argument("--heartbeat", type=float, default=0.5)
    broker.add_argument("--liveness", type=float, default=5.0)

    worker = commands.add_parser("worker", help="run a worker (one per accelerator)")
    worker.add_argument("--connect", required=True)
    device = worker.add_mutually_exclusive_group()
    device.add_argument("--gpu", help="pin this device (sets CUDA_VISIBLE_DEVICES and the like)")
    device.add_argument("--gpus", help="'all' or a list like 0,1: one worker per device")
    worker.add_argument("--name")
    worker.add_argument("--progress-timeout", type=float, default=600.0)
    worker.add_argument("--stop-grace", type=float, default=10.0)
    worker.add_argument("--curve", help="a key directory with this worker's pair and broker.key")
    worker.add_argument("--workdir", help="where attempts run, keep logs and checkpoints until uploaded "
                        "(a fresh folder inside it, removed when the worker ends, and by the next "
                        "worker there if this one is killed; default: $TMPDIR)")
    worker.add_argument("--max-outbox", type=int, default=10_000, metavar="N",
                        help="trial messages kept while the broker cannot be reached; past that, the "
                        "trial's next report waits (default: 10000)")
    worker.add_argument("--give-up", type=float, default=None, metavar="SECONDS",
                        help="exit with an error after this long without a word from the broker "
                        "(default: keep trying)")

    keys = commands.add_parser("keys", help="make CurveZMQ keys for a broker and its workers")
    keys.add_argument("dir")

    status = commands.add_parser("status", help="a study's trials, workers and best so far")
    status.add_argument("target", help="a study directory, or a live broker's address (tcp://...)")
    status.add_argument("--timeout", type=float, default=5.0)

    results = commands.add_parser("results", help="a study's trials, the best first")
    results.add_argument("dir")
    results.add_argument("--top", type=int, default=None)
    results.add_argument("--format", choices=["table", "csv", "json"], default="table")
    results.add_argument("--schedule", action="store_true",
                         help="PBT, FIRE PBT: the best member's hyperparameter schedule instead")

    logs = commands.add_parser("logs", help="what a trial's attempt printed (stdout and stderr)")
    logs.add_argument("dir")
    logs.add_argument("trial", type=int)
    logs.add_argument("--attempt", type=int, default=None, help="default: the latest with a log")
    logs.add_argument("--follow", "-f", action="store_true",
                      help="keep printing as the attempt prints, until it ends")

    sim = commands.add_parser("simulate", help="run a study on virtual workers in simulated time")
    sim.add_argument("--algorithm", choices=sorted(SIMULATED), default="asha")
    sim.add_argument("--workers", type=int, default=16)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--max-trials", type=int, default=500)
    sim.add_argument("--total-budget", type=float, default=None)
    sim.add_argument("--min-budget", type=float, default=1)
    sim.add_argument("--max-budget", type=float, default=81)
    sim.add_argument("--eta", type=int, default=3)
    sim.add_argument("--n-configs", type=int, default=81, help="configurations per SHA bracket")
    sim.add_argument("--until", type=float, default=None, help="stop at this simulated time")
    sim.add_argument("--drop-rate", type=float, default=0.0, help="share of attempts losing their worker")
    sim.add_argument("--straggler-rate", type=float, default=0.0)
    sim.add_argument("--top", type=int, default=5, help="how many trials to list")
    return top


def simulate(args) -> None:
    benchmark = CrossingCurves()
    algorithm = SIMULATED[args.algorithm](args, benchmark.space)
    progress = Progress(sys.stderr)
    simulator = Simulator(algorithm, benchmark, args.workers, seed=args.seed, report_every=None,
                          drop_rate=args.drop_rate, straggler_rate=args.straggler_rate,
                          rejoin_after=10.0, stepper=progress.step)
    result = simulator.run(until=args.until)
    progress.done()
    state = result.state
    counts = {status.name.lower(): sum(t.status == status for t in state.trials) for status in TrialStatus}
    print(f"{args.algorithm} on {args.workers} virtual workers, seed {args.seed}")
    print(f"  {'finished: ' + state.finish_reason if result.finished else 'stopped at the time limit'}")
    print(f"  simulated time {result.makespan:.1f} s, utilisation {result.utilisation:.3f}, "
          f"{result.events} events")
    print("  trials: " + ", ".join(f"{n} {name}" for name, n in counts.items() if n))
    ranked = sorted((t for t in state.trials if t.best is not None), key=lambda t: t.best)
    print(f"\n  {'trial':>5}  {'status':<9} {'budget':>6}  {'best error':>10}  config")
    for trial in ranked[: args.top]:
        config = " ".join(f"{k}={v:.3f}" for k, v in trial.config.items())
        print(f"  {trial.id:>5}  {trial.status.name.lower():<9} {trial.budget:>6g}  "
              f"{trial.best:>10.4f}  {config}")


class Progress:
    """Steps the study and, at most twice a second, shows how far it got."""

    def __init__(self, stream):
        self.stream = stream
        self.live = stream.isatty()
        self.events = 0
        self.shown = time.monotonic()

    def step(self, algorithm, state, event):
        self.events += 1
        if self.live and self.events % 1000 == 0 and time.monotonic() - self.shown > 0.5:
            self.shown = time.monotonic()
            self.stream.write(f"\r  {self.events} events, {len(state.trials)} trials, "
                              f"simulated time {event.time:.0f} s")
            self.stream.flush()
        return step(algorithm, state, event)

    def done(self):
        if self.live:
            self.stream.write("\r" + " " * 70 + "\r")


def run_study(args) -> None:
    from rung.local import run_local

    study = Study.load(args.study)
    directory = Path(args.dir or Path("runs") / study.name)
    print(f"rung: study {study.name!r} ({study.algorithm}) in {directory}, {args.workers} workers",
          file=sys.stderr)
    with on_signals(interrupt):
        broker = run_local(study, directory, args.workers, progress=sys.stderr,
                           progress_timeout=args.progress_timeout)
    ended = "failed" if broker.state.failed else "finished"
    print(f"{ended}: {broker.state.finish_reason}" if broker.finished else "stopped")
    rows = broker.results()
    print_results(rows, study, top=10, form="table")
    schedule = broker.schedule()
    if schedule is not None:
        print(f"\nthe best member's schedule (replay it from scratch; `rung results {directory} "
              "--schedule`):")
        print_schedule(schedule, form="table")
    failure = study_failure(broker.state, rows)
    if failure is not None:
        raise StudyFailed(f"{failure}\nrung: every trial's log: rung logs {directory} TRIAL")


def serve_broker(args) -> None:
    from rung.broker.broker import Broker

    from rung.local import show_progress

    broker = Broker(Study.load(args.study), args.dir, bind=args.bind, insecure=args.insecure,
                    curve=args.curve, heartbeat=args.heartbeat, liveness=args.liveness).start()
    print(f"rung broker: serving {args.dir} on {broker.address}", file=sys.stderr, flush=True)
    began = shown = time.monotonic()
    try:
        with on_signals(interrupt):
            while not broker.wait(0.5):
                if time.monotonic() - shown >= (0.5 if sys.stderr.isatty() else 10.0):
                    shown = time.monotonic()
                    show_progress(sys.stderr, broker, shown - began)
    finally:
        # Workers are not dismissed: they wait for this broker to be started again (or give up).
        with cleanup():
            broker.stop(dismiss=None)
            broker.wait()
    print(f"finished: {broker.state.finish_reason}" if broker.finished else "stopped")


def serve_workers(args) -> None:
    from rung.worker.agent import Worker
    from rung.worker.devices import device_env, parse_gpus
    from rung.worker.folders import make_folder

    if args.gpus is not None:
        devices = parse_gpus(args.gpus)
        if not devices:
            print("rung worker: no GPU visible; running one CPU worker", file=sys.stderr)
        elif len(devices) > 1:
            serve_devices(args, devices)
            return
        gpu = devices[0] if devices else None
    else:
        gpu = args.gpu
    accelerator = "cpu" if gpu is None else f"gpu{gpu}"
    workdir = make_folder(args.workdir)
    worker = Worker(args.connect, name=args.name, accelerator=accelerator, env=device_env(gpu),
                    workdir=workdir, progress_timeout=args.progress_timeout,
                    stop_grace=args.stop_grace, curve=args.curve, give_up=args.give_up,
                    subreaper=True, max_outbox=args.max_outbox)
    signals: list[int] = []

    def leave(signum: int) -> None:
        signals.append(signum)
        worker.leave(signal.Signals(signum).name)

    try:
        with on_signals(leave):
            end_with_parent()
            reason = worker.run()
    finally:
        with cleanup():
            worker.cleanup()
    if worker.refused is not None:
        raise ValueError(f"worker {worker.name} refused by the broker: {worker.refused}")
    if worker.gave_up is not None:
        raise ValueError(f"worker {worker.name} gave up: {worker.gave_up}")
    if signals:
        print(f"rung worker {worker.name}: left ({signal.Signals(signals[0]).name})", file=sys.stderr)
        sys.exit(Interrupted(signals[0]).exit_status)  # said, with the worker's name
    print(f"rung worker {worker.name}: the study is over: {reason}", file=sys.stderr)


def serve_devices(args, devices: list[str]) -> None:
    """One worker process per device; a signal to this parent reaches each of them once, and they
    end with it even if it is killed."""
    flags = ["--progress-timeout", str(args.progress_timeout), "--stop-grace", str(args.stop_grace),
             *(["--curve", args.curve] if args.curve else []),
             *(["--workdir", args.workdir] if args.workdir else []),
             *(["--give-up", str(args.give_up)] if args.give_up is not None else []),
             "--max-outbox", str(args.max_outbox)]
    env = child_environment(dict(os.environ))
    signals: list[int] = []

    def forward(signum: int) -> None:
        signals.append(signum)
        for child in children:
            child.send_signal(signum)

    children: list[subprocess.Popen] = []
    with on_signals(forward):
        for device in devices:
            if signals:  # told to leave while starting them: start no more
                break
            # Names are unique among live workers: each device's worker gets one of its own.
            name = ["--name", f"{args.name}-gpu{device}"] if args.name else []
            children.append(subprocess.Popen(
                [sys.executable, "-m", "rung", "worker", "--connect", args.connect, "--gpu", device,
                 *flags, *name], env=env, start_new_session=True))
            if signals:  # it came while this child was being started: it leaves too
                children[-1].send_signal(signals[0])
        statuses = [child.wait() for child in children]
    if signals:
        raise Interrupted(signals[0])
    if any(statuses):
        raise ValueError(f"{sum(1 for s in statuses if s)} of {len(devices)} workers failed "
                         f"(exit statuses {statuses})")


def load_directory(directory: str):
    from rung.algorithms.records import record_from_data
    from rung.broker.journal import read_records

    path = Path(directory) / "journal"
    if not path.exists():
        raise ValueError(f"{directory} holds no study (no journal)")
    records = read_records(path)
    if not records or not isinstance(records[0], dict) or "study" not in records[0]:
        raise ValueError(f"{path} does not start with a study")
    study = Study.from_data(records[0]["study"])
    algorithm = study.build()
    state = algorithm.initial_state(study.seed)
    for data in records[1:]:
        event, decisions = record_from_data(data)
        algorithm.apply(state, event)
        for decision in decisions:
            algorithm.apply(state, decision)
    return study, state, trial_rows(state, algorithm.maximise)


def show_status(args) -> None:
    if "://" in args.target:
        print(format_summary(query(args.target, args.timeout)))
        return
    study, state, _ = load_directory(args.target)
    print(format_summary(study_summary(study, state)))


def query(address: str, timeout: float) -> dict:
    """Ask a live broker for its study's summary."""
    import zmq

    from rung import protocol as p

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(address)
        sock.send_multipart(p.encode(p.Query()))
        if not sock.poll(int(timeout * 1000)):
            raise ValueError(f"no answer from a broker at {address} within {timeout:g} s")
        reply = p.decode(sock.recv_multipart())
    finally:
        sock.close()
    if not isinstance(reply, p.Report):
        raise ValueError(f"the broker at {address} answered {type(reply).__name__}")
    return reply.summary


def show_results(args) -> None:
    study, state, rows = load_directory(args.dir)
    if not args.schedule:
        print_results(rows, study, top=args.top, form=args.format)
        return
    schedule = schedule_rows(state, study.mode == "max")
    if schedule is None:
        raise ValueError(f"study {study.name!r} ({study.algorithm}) keeps no schedules; only pbt "
                         "and fire-pbt do, once a member has finished a segment")
    print_schedule(schedule, form=args.format)


def print_schedule(schedule, *, form) -> None:
    if form == "json":
        json.dump(schedule, sys.stdout, indent=1)
        print()
        return
    names = sorted({k for row in schedule for k in row["config"]})
    print_table(["from_step", "member", *names],
                [[f"{row['from_step']:g}", row["member"], *(_cell(row["config"].get(n)) for n in names)]
                 for row in schedule], form)


def print_results(rows, study, *, top, form) -> None:
    rows = rows[:top] if top is not None else rows
    names = sorted({k for r in rows for k in r["config"]})
    if form == "json":
        json.dump(rows, sys.stdout, indent=1, default=str)
        print()
        return
    header = ["trial", "status", f"best_{study.metric}", "budget", "attempts", *names, "reason"]
    print_table(header, [[r["trial"], r["status"], "" if r["best"] is None else f"{r['best']:.6g}",
                          f"{r['budget']:g}", r["attempts"], *(_cell(r["config"].get(n)) for n in names),
                          r["reason"] if form == "csv" else _first_line(r["reason"])]
                         for r in rows], form)


def print_table(header: list, table: list[list], form: str) -> None:
    if form == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(header)
        writer.writerows(table)
        return
    widths = [max(len(str(c)) for c in column) for column in zip(header, *table)]
    for line in [header, *table]:
        print("  ".join(str(c).rjust(w) for c, w in zip(line, widths)))


def _first_line(text: str, width: int = 60) -> str:
    """A reason in a table: its first line, cut to `width` (the full text: --format csv or json)."""
    line = text.split("\n", 1)[0]
    return line if len(line) <= width and "\n" not in text else line[:width - 3] + "..."


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def show_logs(args) -> None:
    from rung.broker import logs

    study, state, _ = load_directory(args.dir)
    if not 0 <= args.trial < len(state.trials):
        raise ValueError(f"study {study.name!r} has no trial {args.trial} (it has {len(state.trials)})")
    attempt = args.attempt
    if attempt is None:
        found = logs.attempts(args.dir, args.trial)
        attempt = found[-1] if found else state.trials[args.trial].attempt
    if attempt > state.trials[args.trial].attempt + 1:
        raise ValueError(f"trial {args.trial} has had {state.trials[args.trial].attempt} attempts; "
                         f"there is no attempt {attempt}")
    if not args.follow and not logs.attempts(args.dir, args.trial):
        raise ValueError(f"trial {args.trial} has no log in {args.dir} yet")
    if not args.follow and attempt not in logs.attempts(args.dir, args.trial):
        raise ValueError(f"trial {args.trial} has no log of attempt {attempt}; it has logs of attempts "
                         f"{', '.join(map(str, logs.attempts(args.dir, args.trial)))}")
    shown = b""
    while True:
        text = logs.read(args.dir, args.trial, attempt)
        # A log only grows, but for its tail, which comes once, after its whole head.
        sys.stdout.buffer.write(text[len(shown):] if text.startswith(shown) else text)
        sys.stdout.buffer.flush()
        shown = text
        if not args.follow or not _running(args.dir, args.trial, attempt):
            return
        time.sleep(0.5)


def _running(directory: str, trial: int, attempt: int) -> bool:
    """Whether the attempt may still print: a broker serves the study, and the attempt is the trial's
    current one, on a worker (or the next, still to start). An attempt's log reaches the broker
    before its end does, so once this is False the log is whole."""
    from rung.broker.lock import broker_running

    if not broker_running(directory):
        return False
    _, state, _ = load_directory(directory)
    current = state.trials[trial]
    return current.attempt <= attempt and (current.attempt < attempt or current.worker is not None)


def make_keys(args) -> None:
    from rung.keys import create_keys

    directory = create_keys(args.dir)
    print(f"keys in {directory}: give workers broker.key and the worker pair; keep broker.key_secret")


COMMANDS = {"keys": make_keys, "run": run_study, "broker": serve_broker, "worker": serve_workers,
            "status": show_status, "results": show_results, "logs": show_logs, "simulate": simulate}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except BrokenPipeError:
        # The reader went away (`rung results DIR | head`): nothing is wrong, and nothing more to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except StudyFailed as failed:
        print(f"rung: the study failed: {failed}", file=sys.stderr)
        return 1
    except Interrupted as stopped:
        print(f"rung: stopped by {stopped}", file=sys.stderr)
        return stopped.exit_status
    except KeyboardInterrupt:
        print("rung: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as error:
        print(f"rung: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # the runtime's own errors (journal, lock): one line, no traceback
        if os.environ.get("RUNG_DEBUG"):
            raise
        print(f"rung: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
