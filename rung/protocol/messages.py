"""The messages of rung's wire protocol: two closed sets of values.

They are slotted dataclasses, not frozen ones: no code changes a message once it is built (a worker's
outbox keeps its messages as they were built until they are acknowledged), and a frozen dataclass's
`__init__` sets each field through `object.__setattr__`: 0.8 us against 0.2 for a result's seven
fields, about 5% of what the broker spends on a result. The algorithm's events and decisions, which
the state keeps, are frozen.

Worker to broker, every message names the worker and its incarnation (a number the worker draws when
its process starts, so the broker can tell a restarted worker from a reconnecting one). Trial messages
also carry (trial, attempt, seq): seq counts the attempt's trial messages from 1, so the broker can
acknowledge them cumulatively and drop repeats.

Broker to worker, messages carry what the worker needs and nothing of the broker's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


# Worker -> broker ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Hello:
    """First message after every (re)connect. `running` lists the attempts the worker holds: running,
    or ended with messages not yet acknowledged; `next_seqs` gives, for each of them, the seq of its
    first message not acknowledged (or of its next message, when all are): a restarted broker, whose
    journal keeps no seqs, takes the attempt's messages from there on, one after another."""

    worker: str
    incarnation: int
    accelerator: str
    host: str
    pid: int
    running: list = field(default_factory=list)  # [[trial, attempt], ...]
    next_seqs: list = field(default_factory=list)  # [[trial, attempt, seq], ...]


@dataclass(slots=True)
class Heartbeat:
    """Sent from the worker's own loop; `running` lists the attempts it holds (running, or with
    messages not yet acknowledged), so the broker can tell a Run that never arrived."""

    worker: str
    incarnation: int
    running: list = field(default_factory=list)  # [[trial, attempt], ...]


@dataclass(slots=True)
class Result:
    worker: str
    incarnation: int
    trial: int
    attempt: int
    seq: int
    step: float
    metrics: dict


@dataclass(slots=True)
class CheckpointBegin:
    """An upload of `size` bytes with sha256 `digest` starts under the worker's name `upload`.
    Begin and chunks are idempotent; the upload counts once its `CheckpointEnd` is acknowledged."""

    worker: str
    incarnation: int
    trial: int
    attempt: int
    upload: str
    step: float
    size: int
    digest: str


@dataclass(slots=True)
class CheckpointChunk:
    """Bytes of an upload at `offset`; the bytes travel in their own frame."""

    worker: str
    incarnation: int
    upload: str
    offset: int
    data: bytes


@dataclass(slots=True)
class CheckpointEnd:
    worker: str
    incarnation: int
    trial: int
    attempt: int
    seq: int
    upload: str
    step: float


@dataclass(slots=True)
class Ended:
    """An attempt ended: `outcome` is "finished" or "failed", with a human reason."""

    worker: str
    incarnation: int
    trial: int
    attempt: int
    seq: int
    outcome: str
    reason: str


@dataclass(slots=True)
class Log:
    """Bytes of an attempt's output (its stdout and stderr, as its log file holds them) from `offset`;
    the bytes travel in their own frame. The first LOG_HEAD bytes of a log come as they are written;
    past that only the last bytes, once the attempt has ended, so that a chatty trial cannot fill the
    head node."""

    worker: str
    incarnation: int
    trial: int
    attempt: int
    seq: int
    offset: int
    data: bytes


@dataclass(slots=True)
class Fetch:
    """Asks for `length` bytes of the stored checkpoint `key` from `offset`."""

    worker: str
    incarnation: int
    key: str
    offset: int
    length: int


@dataclass(slots=True)
class Goodbye:
    worker: str
    incarnation: int
    reason: str


@dataclass(slots=True)
class Query:
    """From any client (`rung status ADDR`), not only workers: the broker answers with a Report."""


# Broker -> worker ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Welcome:
    """Answers Hello: how often to heartbeat, after how long without a message the broker declares
    the worker lost, and which attempts it expects of the worker now ([[trial, attempt]]: at most
    one): an attempt the worker paused for want of word from the broker resumes only if it is named
    here, and is stopped if not."""

    worker: str
    heartbeat: float
    liveness: float
    expected: list = field(default_factory=list)


@dataclass(slots=True)
class Pong:
    """Answers Heartbeat, so that a worker hears from a live broker even when nothing happens."""

    worker: str


@dataclass(slots=True)
class Rejoin:
    """The broker does not know this worker (it restarted, or declared the worker lost): say hello."""

    reason: str


@dataclass(slots=True)
class Run:
    """Run one attempt of a trial up to `budget`, resuming from checkpoint `checkpoint` (a key to
    fetch, `checkpoint_size` bytes, taken at `checkpoint_step`) when one is given."""

    trial: int
    attempt: int
    trainable: Any  # "module:function" or a command line (list of str)
    config: dict
    budget: float
    checkpoint: str | None
    checkpoint_step: float
    checkpoint_size: int
    reason: str


@dataclass(slots=True)
class Stop:
    trial: int
    attempt: int
    reason: str


@dataclass(slots=True)
class Ack:
    """Every trial message of the attempt up to `seq` is journaled: the worker may forget them."""

    trial: int
    attempt: int
    seq: int


@dataclass(slots=True)
class Chunk:
    """Bytes of a stored checkpoint at `offset`, in their own frame; empty at the end."""

    key: str
    offset: int
    data: bytes


@dataclass(slots=True)
class Error:
    """The broker could not accept a message; `reason` names the problem."""

    reason: str


@dataclass(slots=True)
class Shutdown:
    """The study is over, or the broker was stopped and dismisses its workers: stop and exit."""

    reason: str


@dataclass(slots=True)
class Refused:
    """The broker will not take this worker (its name belongs to another live worker): exit with an
    error, and say `reason`."""

    reason: str


@dataclass(slots=True)
class Report:
    """Answers Query: the study's summary as plain data (see rung/summary.py)."""

    summary: dict


WorkerMessage = (
    Hello | Heartbeat | Result | CheckpointBegin | CheckpointChunk | CheckpointEnd | Log | Ended
    | Fetch | Goodbye
)
BrokerMessage = (
    Welcome | Pong | Rejoin | Run | Stop | Ack | Chunk | Error | Shutdown | Refused | Report
)
SEQUENCED = (Result, CheckpointEnd, Log, Ended)  # the trial messages a worker keeps until acknowledged
LOG_HEAD = 1 << 20  # bytes of an attempt's log kept from its start
LOG_TAIL = 64 << 10  # bytes kept from its end, when it is longer
