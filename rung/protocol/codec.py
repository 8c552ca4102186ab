"""The sans-I/O codec: `encode(message) -> frames` and `decode(frames) -> message`.

`decode` takes whatever bytes a peer sent and either returns one of the message values of
`messages.py` or raises `ProtocolError`; it raises nothing else, whatever the input (a test feeds it
garbage to hold it to that). The checks run in this order, cheapest first:

1. the frame count (two, or three for the messages that carry bytes) and each frame's size;
2. the header frame: the magic, then the major version, before any byte of the payload is parsed;
3. msgpack, whose lengths are bounded by the payload's, with every ext type refused (its timestamp
   too), so that the payload holds only None, bool, int, float, str, bytes, lists and maps;
4. the schema of the message type: every field present with exactly its type and within its bound
   (below), down to the keys and values of maps; unknown fields are ignored so that a peer of a newer
   minor version can add fields (they never reach the receiver).

`encode` runs the same field checks and size limits on what it builds, and raises the same
`ProtocolError` naming the field: a sender learns of a bad value at its own side, never builds frames its
peer would refuse, and no bad value depends on the peer's checks alone. It costs the sender about a
microsecond per result, next to the milliseconds between two reports of a trial. (A value that is not
a message at all is a `TypeError`: a bug, not bad input.)

The bounds. A name is 1 to MAX_NAME characters, each printable (`str.isprintable`: no control
character, no line break, so a name reads whole on one line of a log); a text is at most MAX_TEXT
characters of any kind (reasons quote a trial's stderr, escapes included). Lengths count characters.

    field                                           bound
    worker, accelerator, metric names, upload,      a name, 1..128 (the checkpoint store takes upload
      key, checkpoint, config keys                  names of up to 128; its keys are under 90)
    host                                            a name, 1..255 (the DNS limit)
    reason (ended, goodbye, rejoin, run, stop,      a text, 0..4096 (the worker clips the reasons it
      error, shutdown, refused)                     writes, log tail included, to fit)
    metrics                                         at most 256 entries; values any number (NaN and
                                                    infinities are a diverged run's, and rank worst)
    config                                          at most 256 entries; values None, bool, int, float
                                                    or a text
    trainable                                       a text of 1..4096, or a command line of 1..256 texts
    digest                                          64 lowercase hex digits (SHA-256's hexdigest)
    step, budget, checkpoint_step, heartbeat,       a finite number >= 0
      liveness
    trial, attempt, seq, incarnation, pid, size,    an int, 0..2**64 - 1 (all that msgpack carries)
      offset, length, checkpoint_size
    running, next_seqs                              at most 1024 entries (a worker lists its attempt
                                                    and those whose messages wait for an ack)
    outcome                                         "finished" or "failed"
    summary (report)                                a map with str keys, bounded by the payload (it
                                                    answers `rung status` and is never journaled)
    the payload, the data frame (checkpoint         MAX_PAYLOAD (1 MiB), MAX_DATA (4 MiB) bytes
      chunks, log pieces)

A result is the message the broker decodes most (tens of thousands a second), so its checks are `type`
and `len` tests and one `str.isprintable` per name: C calls, no regular expression.
"""

from __future__ import annotations

import re
import sys
from dataclasses import fields
from typing import Any, Callable

import msgpack

from . import messages as m

MAGIC = b"RUNG"
MAJOR = 1
MINOR = 0
HEADER = MAGIC + bytes([MAJOR])

MAX_PAYLOAD = 1 << 20  # one msgpack map: configs, metrics and reasons fit with room to spare
MAX_DATA = 4 << 20  # one checkpoint chunk
MAX_NAME = 128  # characters of a name
MAX_HOST = 255  # characters of a host name
MAX_TEXT = 4096  # characters of a reason, a config string, a trainable or one of its arguments
MAX_ENTRIES = 256  # metrics of a result, entries of a config, arguments of a trainable
MAX_HELD = 1024  # attempts a worker lists as held
_MAX_FLOAT = sys.float_info.max


class ProtocolError(Exception):
    """A message that cannot be accepted; the text names the field, its bound and (clipped) the value."""


# Field checks: each returns the value or raises ProtocolError.

# msgpack decodes to exactly these types, never to subclasses, so `type(...) is` checks suffice, and
# they keep bool (whose type is bool) out of the ints and numbers; they are also the decoder's hot path.

def _int(name: str, value: Any) -> int:
    # Two comparisons cost less than one chained (a hot path: five ints in every result).
    if type(value) is not int or value < 0 or value >= 18446744073709551616:  # 2**64
        raise ProtocolError(f"`{name}` must be an int >= 0 and < 2**64, got {_show(value)}")
    return value


def _number(name: str, value: Any) -> float:
    if type(value) not in _NUMBERS:
        raise ProtocolError(f"`{name}` must be a number, got {_show(value)}")
    return value


_NUMBERS = frozenset({int, float})


def _amount(name: str, value: Any) -> float:
    """A step, a budget or a time: finite and >= 0 (the chained comparison is False for NaN)."""
    if type(value) not in _NUMBERS or not 0 <= value <= _MAX_FLOAT:
        raise ProtocolError(f"`{name}` must be a finite number >= 0, got {_show(value)}")
    return value


def _name(name: str, value: Any) -> str:
    # No closure over the limit, and the cheapest test first: every message names its worker.
    if type(value) is not str or len(value) > MAX_NAME or not value or not value.isprintable():
        raise ProtocolError(f"`{name}` must be 1 to {MAX_NAME} printable characters, got {_show(value)}")
    return value


def _host(name: str, value: Any) -> str:
    if type(value) is not str or len(value) > MAX_HOST or not value or not value.isprintable():
        raise ProtocolError(f"`{name}` must be 1 to {MAX_HOST} printable characters, got {_show(value)}")
    return value


def _text(name: str, value: Any) -> str:
    if type(value) is not str or len(value) > MAX_TEXT:
        raise ProtocolError(f"`{name}` must be a str of at most {MAX_TEXT} characters, got {_show(value)}")
    return value


def _optional_name(name: str, value: Any) -> str | None:
    return None if value is None else _name(name, value)


_DIGEST = re.compile("[0-9a-f]{64}")


def _digest(name: str, value: Any) -> str:
    if type(value) is not str or not _DIGEST.fullmatch(value):
        raise ProtocolError(f"`{name}` must be 64 lowercase hex digits (SHA-256), got {_show(value)}")
    return value


def _data(name: str, value: Any) -> bytes:
    if type(value) is not bytes:
        raise ProtocolError(f"`{name}` must be bytes, got {_show(value)}")
    if len(value) > MAX_DATA:
        raise _oversized(f"`{name}`", value, MAX_DATA)
    return value


def _map(name: str, value: Any) -> dict:
    if type(value) is not dict:
        raise ProtocolError(f"`{name}` must be a map, got {_show(value)}")
    for key in value:
        if type(key) is not str:
            raise ProtocolError(f"`{name}` keys must be str, got {_show(key)}")
    return value


def _entries(name: str, value: Any) -> dict:
    """A map of at most MAX_ENTRIES entries whose keys are names."""
    if type(value) is not dict or len(value) > MAX_ENTRIES:
        raise ProtocolError(f"`{name}` must be a map of at most {MAX_ENTRIES} entries, got {_show(value)}")
    for key in value:
        _name(f"{name} key", key)
    return value


def _metrics(name: str, value: Any) -> dict:
    """A result's metrics: `_entries` whose values are numbers, in one pass, as it runs for every
    result. NaN and infinities are allowed: a diverged run says so."""
    if type(value) is not dict or len(value) > MAX_ENTRIES:
        _entries(name, value)
    for key, number in value.items():
        if type(key) is not str or len(key) > MAX_NAME or not key or not key.isprintable():
            _name(f"{name} key", key)
        if type(number) not in _NUMBERS:
            _number(f"{name}.{key}", number)  # the metric's name is built only for the error
    return value


def _config(name: str, value: Any) -> dict:
    for key, item in _entries(name, value).items():
        kind = type(item)
        if kind is str:
            _text(f"{name}.{key}", item)
        elif kind not in _CONFIG_VALUES:
            raise ProtocolError(f"`{name}.{key}` must be a plain value, got {_show(item)}")
    return value


_CONFIG_VALUES = frozenset({type(None), bool, int, float})


def _int_lists(length: int, shape: str) -> Callable[[str, Any], list]:
    """A check for a list of at most MAX_HELD `length`-long lists of ints >= 0, such as [trial, attempt]
    pairs."""

    def check(name: str, value: Any) -> list:
        if not isinstance(value, list) or len(value) > MAX_HELD:
            raise ProtocolError(f"`{name}` must be a list of at most {MAX_HELD} entries, got {_show(value)}")
        for item in value:
            if not isinstance(item, list) or len(item) != length:
                raise ProtocolError(f"`{name}` must hold {shape} lists, got {_show(item)}")
            for number in item:
                _int(name, number)
        return value

    return check


_pairs = _int_lists(2, "[trial, attempt]")


def _trainable(name: str, value: Any) -> Any:
    if isinstance(value, str) and value:
        return _text(name, value)
    if isinstance(value, list) and 0 < len(value) <= MAX_ENTRIES:
        for argument in value:
            _text(f"{name} argument", argument)
        return value
    raise ProtocolError(f"`{name}` must be 'module:function' or a command line of 1 to {MAX_ENTRIES} "
                        f"arguments, got {_show(value)}")


def _outcome(name: str, value: Any) -> str:
    if value not in ("finished", "failed"):
        raise ProtocolError(f"`{name}` must be 'finished' or 'failed', got {_show(value)}")
    return value


_CHECKS: dict[type, dict[str, Callable[[str, Any], Any]]] = {
    m.Hello: dict(worker=_name, incarnation=_int, accelerator=_name, host=_host, pid=_int, running=_pairs,
                  next_seqs=_int_lists(3, "[trial, attempt, seq]")),
    m.Heartbeat: dict(worker=_name, incarnation=_int, running=_pairs),
    m.Result: dict(worker=_name, incarnation=_int, trial=_int, attempt=_int, seq=_int, step=_amount,
                   metrics=_metrics),
    m.CheckpointBegin: dict(worker=_name, incarnation=_int, trial=_int, attempt=_int, upload=_name,
                            step=_amount, size=_int, digest=_digest),
    m.CheckpointChunk: dict(worker=_name, incarnation=_int, upload=_name, offset=_int, data=_data),
    m.CheckpointEnd: dict(worker=_name, incarnation=_int, trial=_int, attempt=_int, seq=_int,
                          upload=_name, step=_amount),
    m.Log: dict(worker=_name, incarnation=_int, trial=_int, attempt=_int, seq=_int, offset=_int,
                data=_data),
    m.Ended: dict(worker=_name, incarnation=_int, trial=_int, attempt=_int, seq=_int, outcome=_outcome,
                  reason=_text),
    m.Fetch: dict(worker=_name, incarnation=_int, key=_name, offset=_int, length=_int),
    m.Goodbye: dict(worker=_name, incarnation=_int, reason=_text),
    m.Query: dict(),
    m.Welcome: dict(worker=_name, heartbeat=_amount, liveness=_amount, expected=_pairs),
    m.Pong: dict(worker=_name),
    m.Rejoin: dict(reason=_text),
    m.Run: dict(trial=_int, attempt=_int, trainable=_trainable, config=_config, budget=_amount,
                checkpoint=_optional_name, checkpoint_step=_amount, checkpoint_size=_int, reason=_text),
    m.Stop: dict(trial=_int, attempt=_int, reason=_text),
    m.Ack: dict(trial=_int, attempt=_int, seq=_int),
    m.Chunk: dict(key=_name, offset=_int, data=_data),
    m.Error: dict(reason=_text),
    m.Shutdown: dict(reason=_text),
    m.Refused: dict(reason=_text),
    m.Report: dict(summary=_map),
}
# The wire names of the message types: the only place a kind of message is named by a string.
_NAMES = {
    m.Hello: "hello", m.Heartbeat: "heartbeat", m.Result: "result",
    m.CheckpointBegin: "checkpoint_begin", m.CheckpointChunk: "checkpoint_chunk",
    m.CheckpointEnd: "checkpoint_end", m.Log: "log", m.Ended: "ended", m.Fetch: "fetch", m.Goodbye: "goodbye",
    m.Welcome: "welcome", m.Pong: "pong", m.Rejoin: "rejoin", m.Run: "run", m.Stop: "stop", m.Ack: "ack", m.Chunk: "chunk",
    m.Error: "error", m.Shutdown: "shutdown", m.Refused: "refused", m.Query: "query",
    m.Report: "report",
}
_TYPES = {name: cls for cls, name in _NAMES.items()}
_WITH_DATA = (m.CheckpointChunk, m.Log, m.Chunk)  # their `data` travels as a third frame
# What the payload map carries: every field but the bytes that travel as a third frame.
_BODY_CHECKS = {cls: [(name, check) for name, check in checks.items()
                      if not (name == "data" and cls in _WITH_DATA)] for cls, checks in _CHECKS.items()}
assert set(_CHECKS) == set(_NAMES)
# decode builds each message from its values in field order, the bytes of a third frame last.
assert all(list(_CHECKS[cls]) == [f.name for f in fields(cls)] for cls in _CHECKS)
assert all(fields(cls)[-1].name == "data" for cls in _WITH_DATA)


def encode(message) -> list[bytes]:
    cls = type(message)
    if cls not in _NAMES:
        raise TypeError(f"not a protocol message: {message!r:.200}")
    body = {"t": _NAMES[cls], "v": MINOR}
    for name, check in _BODY_CHECKS[cls]:
        body[name] = check(name, getattr(message, name))
    payload = msgpack.packb(body, use_bin_type=True)
    if len(payload) > MAX_PAYLOAD:
        raise _oversized("payload", payload, MAX_PAYLOAD)
    if cls in _WITH_DATA:
        return [HEADER, payload, _data("data", message.data)]
    return [HEADER, payload]


def decode(frames: list) -> Any:
    if not isinstance(frames, (list, tuple)) or not 2 <= len(frames) <= 3:
        count = len(frames) if isinstance(frames, (list, tuple)) else "no list of"
        raise ProtocolError(f"a message has 2 or 3 frames, got {count}")
    for frame in frames:
        if type(frame) is not bytes:
            frames = [_frame(frame) for frame in frames]
            break
    _check_header(frames[0])
    if len(frames[1]) > MAX_PAYLOAD:
        raise _oversized("payload", frames[1], MAX_PAYLOAD)
    body = _unpack(frames[1])
    kind = body.get("t")
    cls = _TYPES.get(kind) if type(kind) is str else None
    if cls is None:
        raise ProtocolError(f"unknown message type {_show(kind)}")
    _int("v", body.get("v"))
    try:
        values = [check(name, body[name]) for name, check in _BODY_CHECKS[cls]]
    except KeyError as missing:
        raise ProtocolError(f"{_NAMES[cls]} lacks `{missing.args[0]}`") from None
    if cls in _WITH_DATA:
        if len(frames) != 3:
            raise ProtocolError(f"{_NAMES[cls]} must carry its bytes in a third frame")
        values.append(_data("data", frames[2]))
    elif len(frames) == 3:
        raise ProtocolError(f"{_NAMES[cls]} carries an unexpected third frame")
    return cls(*values)


def _frame(frame: Any) -> bytes:
    if isinstance(frame, bytes):
        return frame
    try:
        return bytes(memoryview(frame))  # zmq.Frame and bytearray
    except TypeError:
        raise ProtocolError(f"a frame must be bytes, got {type(frame).__name__}") from None


def _check_header(header: bytes) -> None:
    if header == HEADER:
        return
    if len(header) == len(HEADER) and header.startswith(MAGIC):
        raise ProtocolError(f"protocol major version {header[-1]}, but this side speaks {MAJOR}")
    raise ProtocolError("not a rung message (bad magic)")


def _oversized(name: str, frame: bytes, limit: int) -> ProtocolError:
    return ProtocolError(f"{name} of {len(frame)} bytes exceeds {limit}")


def _unpack(payload: bytes) -> dict:
    try:
        # Every length is bounded by the payload's; max_ext_len=0 refuses the timestamp ext type too,
        # which an ext_hook would never see.
        body = msgpack.unpackb(payload, max_ext_len=0)
    except Exception as error:  # msgpack raises many types for malformed input
        raise ProtocolError(f"payload is not valid msgpack: {type(error).__name__}") from None
    if type(body) is not dict:
        raise ProtocolError(f"payload must be a map, got {_show(body)}")
    return body


def _show(value: Any) -> str:
    """The value for an error text: its type, its length when it is long, and its start."""
    kind = type(value)
    text = repr(value[:61] if kind in (str, bytes) else value)
    if len(text) <= 60:
        return f"{kind.__name__} {text}"
    length = f" of length {len(value)}" if kind in _SIZED else ""
    return f"{kind.__name__}{length} {text[:60]}..."


_SIZED = frozenset({str, bytes, list, dict})
