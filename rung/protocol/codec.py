"""The sans-I/O codec: `encode(message) -> frames` and `decode(frames) -> message`.

`decode` takes whatever bytes a peer sent and either returns one of the message values of
`messages.py` or raises `ProtocolError`; it raises nothing else, whatever the input (a test feeds it
garbage to hold it to that). The checks run in this order, cheapest first:

1. the frame count (two, or three for the messages that carry bytes) and each frame's size;
2. the header frame: the magic, then the major version, before any byte of the payload is parsed;
3. msgpack, whose lengths are bounded by the payload's, with every ext type refused (its timestamp
   too), so that the payload holds only None, bool, int, float, str, bytes, lists and maps;
4. the schema of the message type: every field present with exactly its type, down to the keys and
   values of maps; unknown fields are ignored so that a peer of a newer minor version can add
   fields (they never reach the receiver).
"""

from __future__ import annotations

import math
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


class ProtocolError(Exception):
    """A message that cannot be accepted; the text names the problem."""


# Field checks: each returns the (possibly normalised) value or raises ProtocolError.

# msgpack decodes to exactly these types, never to subclasses, so `type(...) is` checks suffice, and
# they keep bool (whose type is bool) out of the ints and numbers; they are also the decoder's hot path.

def _int(name: str, value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ProtocolError(f"`{name}` must be an int >= 0, got {_show(value)}")
    return value


def _number(name: str, value: Any) -> float:
    if type(value) not in _NUMBERS:
        raise ProtocolError(f"`{name}` must be a number, got {_show(value)}")
    return value


_NUMBERS = frozenset({int, float})


def _finite(name: str, value: Any) -> float:
    if not math.isfinite(_number(name, value)):
        raise ProtocolError(f"`{name}` must be finite, got {value!r}")
    return value


def _str(name: str, value: Any) -> str:
    if type(value) is not str:
        raise ProtocolError(f"`{name}` must be a str, got {_show(value)}")
    return value


def _optional_str(name: str, value: Any) -> str | None:
    return None if value is None else _str(name, value)


def _bytes(name: str, value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise ProtocolError(f"`{name}` must be bytes, got {_show(value)}")
    return value


def _map(name: str, value: Any) -> dict:
    if type(value) is not dict:
        raise ProtocolError(f"`{name}` must be a map, got {_show(value)}")
    for key in value:
        if type(key) is not str:
            raise ProtocolError(f"`{name}` keys must be str, got {_show(key)}")
    return value


def _metrics(name: str, value: Any) -> dict:
    for key, number in _map(name, value).items():
        # NaN and infinities are allowed: a diverged run says so. The metric's name is built only
        # for the error: metrics are checked for every result.
        if type(number) not in _NUMBERS:
            _number(f"{name}.{key}", number)
    return value


def _config(name: str, value: Any) -> dict:
    for key, item in _map(name, value).items():
        if type(item) not in _CONFIG_VALUES:
            raise ProtocolError(f"`{name}.{key}` must be a plain value, got {_show(item)}")
    return value


_CONFIG_VALUES = frozenset({type(None), bool, int, float, str})


def _int_lists(length: int, shape: str) -> Callable[[str, Any], list]:
    """A check for a list of `length`-long lists of ints >= 0, such as [trial, attempt] pairs."""

    def check(name: str, value: Any) -> list:
        if not isinstance(value, list):
            raise ProtocolError(f"`{name}` must be a list, got {_show(value)}")
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
        return value
    if isinstance(value, list) and value and all(isinstance(a, str) for a in value):
        return value
    raise ProtocolError(f"`{name}` must be 'module:function' or a command line, got {_show(value)}")


def _outcome(name: str, value: Any) -> str:
    if value not in ("finished", "failed"):
        raise ProtocolError(f"`{name}` must be 'finished' or 'failed', got {_show(value)}")
    return value


_CHECKS: dict[type, dict[str, Callable[[str, Any], Any]]] = {
    m.Hello: dict(worker=_str, incarnation=_int, accelerator=_str, host=_str, pid=_int, running=_pairs,
                  next_seqs=_int_lists(3, "[trial, attempt, seq]")),
    m.Heartbeat: dict(worker=_str, incarnation=_int, running=_pairs),
    m.Result: dict(worker=_str, incarnation=_int, trial=_int, attempt=_int, seq=_int, step=_finite,
                   metrics=_metrics),
    m.CheckpointBegin: dict(worker=_str, incarnation=_int, trial=_int, attempt=_int, upload=_str,
                            step=_finite, size=_int, digest=_str),
    m.CheckpointChunk: dict(worker=_str, incarnation=_int, upload=_str, offset=_int, data=_bytes),
    m.CheckpointEnd: dict(worker=_str, incarnation=_int, trial=_int, attempt=_int, seq=_int,
                          upload=_str, step=_finite),
    m.Log: dict(worker=_str, incarnation=_int, trial=_int, attempt=_int, seq=_int, offset=_int,
                data=_bytes),
    m.Ended: dict(worker=_str, incarnation=_int, trial=_int, attempt=_int, seq=_int, outcome=_outcome,
                  reason=_str),
    m.Fetch: dict(worker=_str, incarnation=_int, key=_str, offset=_int, length=_int),
    m.Goodbye: dict(worker=_str, incarnation=_int, reason=_str),
    m.Query: dict(),
    m.Welcome: dict(worker=_str, heartbeat=_finite, liveness=_finite),
    m.Pong: dict(worker=_str),
    m.Rejoin: dict(reason=_str),
    m.Run: dict(trial=_int, attempt=_int, trainable=_trainable, config=_config, budget=_finite,
                checkpoint=_optional_str, checkpoint_step=_finite, checkpoint_size=_int, reason=_str),
    m.Stop: dict(trial=_int, attempt=_int, reason=_str),
    m.Ack: dict(trial=_int, attempt=_int, seq=_int),
    m.Chunk: dict(key=_str, offset=_int, data=_bytes),
    m.Error: dict(reason=_str),
    m.Shutdown: dict(reason=_str),
    m.Refused: dict(reason=_str),
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
    for name, _ in _BODY_CHECKS[cls]:
        body[name] = getattr(message, name)
    frames = [HEADER, msgpack.packb(body, use_bin_type=True)]
    if cls in _WITH_DATA:
        frames.append(bytes(message.data))
    return frames


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
        raise ProtocolError(f"payload of {len(frames[1])} bytes exceeds {MAX_PAYLOAD}")
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
        if len(frames[2]) > MAX_DATA:
            raise ProtocolError(f"chunk of {len(frames[2])} bytes exceeds {MAX_DATA}")
        values.append(frames[2])
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
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
