"""The wire codec: every message type round-trips; any garbage gives ProtocolError and nothing else."""

import math

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rung import protocol as p
from rung.protocol import ProtocolError, decode, encode

ids = st.integers(0, 2**40)
names = st.text(max_size=20)
finite = st.floats(allow_nan=False, allow_infinity=False)
metrics = st.dictionaries(names, st.floats() | st.integers(-(2**63), 2**63 - 1), max_size=5)
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | finite | names
config = st.dictionaries(names, scalars, max_size=5)
trainable = st.text(min_size=1, max_size=30) | st.lists(names, min_size=1, max_size=4)

MESSAGES = {
    p.Hello: st.builds(p.Hello, names, ids, names, names, ids, st.lists(st.lists(ids, min_size=2, max_size=2), max_size=3)),
    p.Heartbeat: st.builds(p.Heartbeat, names, ids, st.lists(st.lists(ids, min_size=2, max_size=2), max_size=3)),
    p.Result: st.builds(p.Result, names, ids, ids, ids, ids, finite, metrics),
    p.CheckpointBegin: st.builds(p.CheckpointBegin, names, ids, ids, ids, names, finite, ids, names),
    p.CheckpointChunk: st.builds(p.CheckpointChunk, names, ids, names, ids, st.binary(max_size=64)),
    p.CheckpointEnd: st.builds(p.CheckpointEnd, names, ids, ids, ids, ids, names, finite),
    p.Log: st.builds(p.Log, names, ids, ids, ids, ids, ids, st.binary(max_size=64)),
    p.Ended: st.builds(p.Ended, names, ids, ids, ids, ids, st.sampled_from(["finished", "failed"]), names),
    p.Fetch: st.builds(p.Fetch, names, ids, names, ids, ids),
    p.Goodbye: st.builds(p.Goodbye, names, ids, names),
    p.Welcome: st.builds(p.Welcome, names, finite, finite),
    p.Pong: st.builds(p.Pong, names),
    p.Rejoin: st.builds(p.Rejoin, names),
    p.Run: st.builds(p.Run, ids, ids, trainable, config, finite, st.none() | names, finite, ids, names),
    p.Stop: st.builds(p.Stop, ids, ids, names),
    p.Ack: st.builds(p.Ack, ids, ids, ids),
    p.Chunk: st.builds(p.Chunk, names, ids, st.binary(max_size=64)),
    p.Error: st.builds(p.Error, names),
    p.Shutdown: st.builds(p.Shutdown, names),
    p.Refused: st.builds(p.Refused, names),
    p.Query: st.builds(p.Query),
    p.Report: st.builds(p.Report, st.dictionaries(names, scalars, max_size=4)),
}
any_message = st.one_of(*MESSAGES.values())


def same(a, b):
    return msgpack.packb(encode(a)) == msgpack.packb(encode(b))  # NaN-safe equality


@pytest.mark.parametrize("kind", list(MESSAGES), ids=lambda k: k.__name__)
@given(data=st.data())
def test_every_message_type_round_trips(kind, data):
    message = data.draw(MESSAGES[kind])
    decoded = decode(encode(message))
    assert type(decoded) is kind and same(decoded, message)


def test_a_nan_metric_survives_the_wire():
    decoded = decode(encode(p.Result("w", 1, 0, 1, 1, 3.0, {"loss": math.nan})))
    assert math.isnan(decoded.metrics["loss"])


def garbage_frames():
    frame = st.binary(max_size=200)
    valid = any_message.map(encode)
    mutated = st.tuples(valid, st.integers(0, 2), st.integers(0, 300), st.integers(0, 255)).map(
        lambda t: [f if i != t[1] % len(t[0]) else _flip(f, t[2], t[3]) for i, f in enumerate(t[0])])
    truncated = st.tuples(valid, st.integers(0, 300)).map(lambda t: [t[0][0], t[0][1][: t[1]], *t[0][2:]])
    return st.lists(frame, max_size=4) | mutated | truncated | st.lists(frame, min_size=2, max_size=3).map(
        lambda fs: [p.HEADER, *fs[1:]])


def _flip(frame, position, value):
    if not frame:
        return bytes([value])
    position %= len(frame)
    return frame[:position] + bytes([value]) + frame[position + 1:]


@given(garbage_frames())
def test_garbage_gives_protocol_error_and_nothing_else(frames):
    try:
        decode(frames)
    except ProtocolError:
        pass


@given(st.recursive(scalars | st.binary(max_size=8),
                    lambda children: st.lists(children, max_size=3) | st.dictionaries(names, children, max_size=3),
                    max_leaves=20))
def test_any_well_formed_msgpack_payload_is_either_a_message_or_a_protocol_error(body):
    try:
        decode([p.HEADER, msgpack.packb(body, use_bin_type=True)])
    except ProtocolError:
        pass


@pytest.mark.parametrize(
    "frames, message",
    [
        ([p.HEADER], "a message has 2 or 3 frames, got 1"),
        ("not frames", "a message has 2 or 3 frames, got no list of"),
        ([b"HTTP/", b"x"], "not a rung message (bad magic)"),
        ([b"RUNG\x02", b"x"], "protocol major version 2, but this side speaks 1"),
        ([p.HEADER, b"\xc1"], "payload is not valid msgpack"),
        ([p.HEADER, msgpack.packb([1, 2])], "payload must be a map"),
        ([p.HEADER, msgpack.packb({"t": "launch", "v": 0})], "unknown message type"),
        ([p.HEADER, msgpack.packb({"t": "goodbye", "v": 0, "worker": "w"})], "goodbye lacks `incarnation`"),
        ([p.HEADER, msgpack.packb({"t": "goodbye", "v": 0, "worker": "w", "incarnation": True, "reason": ""})],
         "`incarnation` must be an int >= 0, got bool"),
        ([p.HEADER, msgpack.packb({"t": "goodbye", "v": 0, "worker": "w", "incarnation": -1, "reason": ""})],
         "`incarnation` must be an int >= 0"),
        ([p.HEADER, msgpack.packb({1: 2})], "payload is not valid msgpack"),
        ([p.HEADER, msgpack.packb({"t": "stop", "v": 0, "trial": 1, "attempt": 1, "reason": "x"}), b""],
         "stop carries an unexpected third frame"),
        ([p.HEADER, msgpack.packb({"t": "chunk", "v": 0, "key": "k", "offset": 0})],
         "chunk must carry its bytes in a third frame"),
        ([p.HEADER, b"\x00" * (p.codec.MAX_PAYLOAD + 1)], "payload of 1048577 bytes exceeds"),
    ],
    ids=["one-frame", "not-a-list", "magic", "major", "msgpack", "not-map", "type", "missing",
         "bool-for-int", "negative", "int-key", "extra-frame", "missing-frame", "oversized"],
)
def test_bad_messages_are_named(frames, message):
    with pytest.raises(ProtocolError) as error:
        decode(frames)
    assert str(error.value).startswith(message)


def test_msgpack_timestamps_and_ext_types_are_refused():
    stamp = msgpack.packb({"t": "error", "v": 0, "reason": msgpack.Timestamp(1, 0)}, datetime=False)
    with pytest.raises(ProtocolError):
        decode([p.HEADER, stamp])
    ext = msgpack.packb({"t": "error", "v": 0, "reason": msgpack.ExtType(5, b"x")})
    with pytest.raises(ProtocolError, match="not valid msgpack"):
        decode([p.HEADER, ext])


def test_a_newer_minor_version_may_add_fields():
    body = {"t": "stop", "v": 7, "trial": 1, "attempt": 2, "reason": "r", "priority": 3}
    assert decode([p.HEADER, msgpack.packb(body)]) == p.Stop(1, 2, "r")


def test_nothing_is_pickled():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent
    pickling = re.compile(r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle|marshal|shelve)\b", re.M)
    for path in root.glob("*/**/*.py"):
        if ".venv" not in path.parts:
            assert not pickling.search(path.read_text()), path
