"""rung's wire protocol, version 1.0. This docstring is the contract; `codec.py` enforces it.

Transport: ZeroMQ, a ROUTER socket on the broker and a DEALER socket on each worker. A message is
two frames, or three for those that carry bytes:

    frame 0   header   b"RUNG" + one byte, the major version (1). Checked before anything is parsed;
                       a peer with another major version gets an error and is not understood.
    frame 1   payload  one msgpack map: "t" (the message type), "v" (the sender's minor version),
                       then the fields of that type (see `messages.py`). Unknown fields are ignored.
    frame 2   data     raw bytes, only for `checkpoint_chunk`, `log` and `chunk`.

Rules:
- A worker MUST send `hello` after every connect; the broker answers `welcome` with the heartbeat
  interval and the liveness window. The worker's identity is (worker, incarnation) in the payload:
  ZeroMQ routing ids change on every reconnect and are never used to name a worker.
- A worker MUST send a message at least every heartbeat interval, from its own loop (ZeroMQ's own
  heartbeats are answered by a background thread, so a stuck worker would still look alive). Any
  message counts. The broker declares a worker lost when its monotonic clock has seen nothing from
  it for the liveness window. The broker answers `heartbeat` with `pong`; a worker that hears
  nothing for the liveness window reconnects with exponential back-off and jitter, and says hello.
- A broker that does not know the sender (it restarted, or it declared the worker lost) answers
  `rejoin`; the worker says hello again, listing the attempts it holds.
- One attempt of a trial trains at a time (a lease). A worker that has heard nothing from the broker
  for half the liveness window MUST pause its attempt (SIGSTOP to its process group) and say hello;
  the `welcome` names the attempts the broker expects of that worker (`expected`), and a paused
  attempt resumes only if named there, else it is stopped. The broker retries a lost worker's attempt
  only once the whole window has passed, so the old attempt is paused before the retry starts. Any
  attempt a hello, a heartbeat or a trial message shows running that the broker does not expect of
  that worker gets `stop`; a `run` that comes while another attempt runs stops that one first and
  starts when it has ended.
- Trial messages (`result`, `checkpoint_end`, `log`, `ended`) carry (trial, attempt, seq), seq counting the
  attempt's messages from 1. The broker journals them, then sends `ack` with the highest seq done; the
  worker keeps every unacknowledged message and sends them again, in order, after each `welcome`.
  So every message MUST be safe to receive twice, and is: the broker drops a seq it has seen.
- Nothing is passed over. A worker MUST send its messages in order and never drop one its socket
  refuses (a full queue): it waits until the socket takes it. After a hello it sends no trial message
  until the `welcome`, then its whole outbox, oldest first. The broker takes seqs of an attempt only
  one after the other (from 1, or, for an attempt it inherited from its journal, from the first
  unacknowledged seq that the worker's hello names in `next_seqs`); a gap means messages lost with a
  dropped connection, and is answered by `rejoin` (at most once per liveness window), so the worker
  says hello and sends them all again. A worker says one hello at a time (a rejoin while its hello
  waits for the welcome is ignored), and says hello by itself when its messages get no ack for two
  liveness windows: a lost rejoin costs time, never messages.
- A checkpoint is uploaded as `checkpoint_begin`, `checkpoint_chunk`s in offset order, then
  `checkpoint_end`; begin and chunks are idempotent, and the upload counts once the end is acked. An
  end that finds bytes missing (chunks lost with a dropped connection) is answered by `error` and
  `rejoin`, not acked: the worker sends the upload again after the welcome. Chunks the broker cannot
  take get one `error` an upload, not one a chunk. An upload that fails the store's checks (its
  digest) is never acked either: asked for again at once, and after 3 refusals its attempt fails.
- A `log` carries bytes of an attempt's output from an offset; it is a trial message like the others
  (acked, resent), written at its offset, so a copy changes nothing.
  Resumption fetches a stored checkpoint with `fetch`, answered by `chunk`s.
- Worker names are unique among live workers. A hello naming a worker that another incarnation holds,
  alive (heard from within the liveness window, its connection still up), is answered by `refused`:
  that worker MUST exit with an error. A restarted worker (the old incarnation's connection gone, or
  silent past the window) takes the name over at once.
- Any client may send `query`; the broker answers `report` with the study's summary (`rung status`).
- Every field has a type and a bound (the table in `codec.py`: names of 1 to 128 printable characters,
  at most 256 metrics, steps finite and >= 0, ...). `decode` refuses a message outside them and `encode`
  refuses to build one, with a `ProtocolError` that names the field.
- A message the broker cannot accept gets `error` naming the problem and changes nothing; a peer that
  keeps sending bad messages is disconnected. Nothing is ever pickled.
"""

from .codec import HEADER, MAJOR, MINOR, ProtocolError, decode, encode
from .messages import (
    SEQUENCED,
    Ack,
    CheckpointBegin,
    CheckpointChunk,
    CheckpointEnd,
    Chunk,
    Ended,
    Error,
    Fetch,
    Goodbye,
    Heartbeat,
    Hello,
    Log,
    Pong,
    Query,
    Refused,
    Rejoin,
    Report,
    Result,
    Run,
    Shutdown,
    Stop,
    Welcome,
)

__all__ = [
    "HEADER", "MAJOR", "MINOR", "SEQUENCED", "Ack", "CheckpointBegin", "CheckpointChunk",
    "CheckpointEnd", "Chunk", "Ended", "Error", "Fetch", "Goodbye", "Heartbeat", "Hello", "Log",
    "Pong", "ProtocolError", "Query", "Refused", "Rejoin", "Report", "Result", "Run", "Shutdown", "Stop", "Welcome", "decode", "encode",
]
