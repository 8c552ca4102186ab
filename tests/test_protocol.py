"""The wire codec: every message type round-trips; any garbage gives ProtocolError and nothing else."""

import hashlib
import math
from dataclasses import fields

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rung import protocol as p
from rung.protocol import ProtocolError, decode, encode

ids = st.integers(0, 2**40)
# Names are printable (str.isprintable: no category C or Z character but the space); texts are anything.
names = st.text(st.characters(exclude_categories=("C", "Z"), include_characters=" "), min_size=1, max_size=20)
texts = st.text(max_size=20)
amounts = st.floats(min_value=0, allow_nan=False, allow_infinity=False)
digests = st.text("0123456789abcdef", min_size=64, max_size=64)
metrics = st.dictionaries(names, st.floats() | st.integers(-(2**63), 2**63 - 1), max_size=5)
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | texts
config = st.dictionaries(names, scalars, max_size=5)
trainable = st.text(min_size=1, max_size=30) | st.lists(texts, min_size=1, max_size=4)
held = st.lists(st.lists(ids, min_size=2, max_size=2), max_size=3)

MESSAGES = {
    p.Hello: st.builds(p.Hello, names, ids, names, names, ids, held),
    p.Heartbeat: st.builds(p.Heartbeat, names, ids, held),
    p.Result: st.builds(p.Result, names, ids, ids, ids, ids, amounts, metrics),
    p.CheckpointBegin: st.builds(p.CheckpointBegin, names, ids, ids, ids, names, amounts, ids, digests),
    p.CheckpointChunk: st.builds(p.CheckpointChunk, names, ids, names, ids, st.binary(max_size=64)),
    p.CheckpointEnd: st.builds(p.CheckpointEnd, names, ids, ids, ids, ids, names, amounts),
    p.Log: st.builds(p.Log, names, ids, ids, ids, ids, ids, st.binary(max_size=64)),
    p.Ended: st.builds(p.Ended, names, ids, ids, ids, ids, st.sampled_from(["finished", "failed"]), texts),
    p.Fetch: st.builds(p.Fetch, names, ids, names, ids, ids),
    p.Goodbye: st.builds(p.Goodbye, names, ids, texts),
    p.Welcome: st.builds(p.Welcome, names, amounts, amounts),
    p.Pong: st.builds(p.Pong, names),
    p.Rejoin: st.builds(p.Rejoin, texts),
    p.Run: st.builds(p.Run, ids, ids, trainable, config, amounts, st.none() | names, amounts, ids, texts),
    p.Stop: st.builds(p.Stop, ids, ids, texts),
    p.Ack: st.builds(p.Ack, ids, ids, ids),
    p.Chunk: st.builds(p.Chunk, names, ids, st.binary(max_size=64)),
    p.Error: st.builds(p.Error, texts),
    p.Shutdown: st.builds(p.Shutdown, texts),
    p.Refused: st.builds(p.Refused, texts),
    p.Query: st.builds(p.Query),
    p.Report: st.builds(p.Report, st.dictionaries(texts, scalars, max_size=4)),
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


# Every bound of the table in codec.py: (id, field, a message built around one value, the value at the
# bound, the value one past it). The sender's encode refuses the past value, and so does the receiver's
# decode of frames that a careless sender built without encode; both name the field, briefly.
SHA = hashlib.sha256(b"").hexdigest()
R, K, M = "r" * 4096, "k" * 128, 4 << 20


def result(worker="w", step=1.0, metrics=None):
    return p.Result(worker, 1, 0, 1, 1, step, metrics or {})


def begin(upload="u", step=1.0, digest=SHA):
    return p.CheckpointBegin("w", 1, 0, 1, upload, step, 0, digest)


def run(trainable="m:f", config=None, budget=1.0, checkpoint=None, checkpoint_step=0.0, reason="r"):
    return p.Run(0, 1, trainable, config or {}, budget, checkpoint, checkpoint_step, 0, reason)


BOUNDS = [
    ("Result.worker-128-chars", "worker", lambda v: result(worker=v), "w" * 128, "w" * 129),
    ("Heartbeat.worker-empty", "worker", lambda v: p.Heartbeat(v, 1), "w", ""),
    ("Goodbye.worker-line-break", "worker", lambda v: p.Goodbye(v, 1, "done"), "a worker", "a\nworker"),
    ("Welcome.worker-escape", "worker", lambda v: p.Welcome(v, 1.0, 5.0), "w\u00e9", "w\x1b[31m"),
    ("Hello.accelerator-128-chars", "accelerator", lambda v: p.Hello("w", 1, v, "h", 1), "a" * 128, "a" * 129),
    ("Hello.host-255-chars", "host", lambda v: p.Hello("w", 1, "cpu", v, 1), "h" * 255, "h" * 256),
    ("Hello.running-1024", "running", lambda v: p.Hello("w", 1, "cpu", "h", 1, v),
     [[0, 1]] * 1024, [[0, 1]] * 1025),
    ("Hello.next_seqs-1024", "next_seqs", lambda v: p.Hello("w", 1, "cpu", "h", 1, [], v),
     [[0, 1, 2]] * 1024, [[0, 1, 2]] * 1025),
    ("Heartbeat.running-1024", "running", lambda v: p.Heartbeat("w", 1, v), [[0, 1]] * 1024, [[0, 1]] * 1025),
    ("Result.step-negative", "step", lambda v: result(step=v), 0.0, -1.0),
    ("Result.metrics-256", "metrics", lambda v: result(metrics=v),
     {f"m{i}": 1.0 for i in range(256)}, {f"m{i}": 1.0 for i in range(257)}),
    ("Result.metric-name-128-chars", "metrics key", lambda v: result(metrics={v: 1.0}), "m" * 128, "m" * 129),
    ("Result.metric-name-empty", "metrics key", lambda v: result(metrics={v: 1.0}), "m", ""),
    ("Result.metric-name-nul", "metrics key", lambda v: result(metrics={v: 1.0}), "val loss", "loss\x00"),
    ("CheckpointBegin.upload-128-chars", "upload", lambda v: begin(upload=v), "u" * 128, "u" * 129),
    ("CheckpointBegin.step-negative", "step", lambda v: begin(step=v), 0.0, -1.0),
    ("CheckpointBegin.digest-64-digits", "digest", lambda v: begin(digest=v), SHA, SHA + "0"),
    ("CheckpointBegin.digest-uppercase", "digest", lambda v: begin(digest=v), SHA, SHA.upper()),
    ("CheckpointBegin.digest-not-hex", "digest", lambda v: begin(digest=v), SHA, SHA[:-1] + "g"),
    ("CheckpointChunk.upload-128-chars", "upload", lambda v: p.CheckpointChunk("w", 1, v, 0, b"x"),
     "u" * 128, "u" * 129),
    ("CheckpointChunk.data-4-MiB", "data", lambda v: p.CheckpointChunk("w", 1, "u", 0, v),
     bytes(M), bytes(M + 1)),
    ("CheckpointEnd.upload-128-chars", "upload", lambda v: p.CheckpointEnd("w", 1, 0, 1, 2, v, 1.0),
     "u" * 128, "u" * 129),
    ("CheckpointEnd.step-negative", "step", lambda v: p.CheckpointEnd("w", 1, 0, 1, 2, "u", v), 0.0, -1.0),
    ("Ended.reason-4096-chars", "reason", lambda v: p.Ended("w", 1, 0, 1, 3, "failed", v),
     "r\n" * 2048, "r\n" * 2048 + "!"),
    ("Fetch.key-128-chars", "key", lambda v: p.Fetch("w", 1, v, 0, 1 << 20), K, K + "k"),
    ("Goodbye.reason-4096-chars", "reason", lambda v: p.Goodbye("w", 1, v), R, R + "r"),
    ("Welcome.heartbeat-negative", "heartbeat", lambda v: p.Welcome("w", v, 5.0), 0.0, -1.0),
    ("Welcome.liveness-negative", "liveness", lambda v: p.Welcome("w", 1.0, v), 0.0, -1.0),
    ("Rejoin.reason-4096-chars", "reason", lambda v: p.Rejoin(v), R, R + "r"),
    ("Run.trainable-4096-chars", "trainable", lambda v: run(trainable=v), "t" * 4096, "t" * 4097),
    ("Run.trainable-256-arguments", "trainable", lambda v: run(trainable=v), ["a"] * 256, ["a"] * 257),
    ("Run.trainable-argument-4096-chars", "trainable argument", lambda v: run(trainable=["run", v]),
     "a" * 4096, "a" * 4097),
    ("Run.config-256-entries", "config", lambda v: run(config=v),
     {f"x{i}": i for i in range(256)}, {f"x{i}": i for i in range(257)}),
    ("Run.config-key-128-chars", "config key", lambda v: run(config={v: 1}), "x" * 128, "x" * 129),
    ("Run.config-value-4096-chars", "config.x", lambda v: run(config={"x": v}), "v" * 4096, "v" * 4097),
    ("Run.budget-negative", "budget", lambda v: run(budget=v), 0.0, -1.0),
    ("Run.checkpoint-128-chars", "checkpoint", lambda v: run(checkpoint=v), K, K + "k"),
    ("Run.checkpoint_step-negative", "checkpoint_step", lambda v: run(checkpoint="k", checkpoint_step=v),
     0.0, -1.0),
    ("Run.reason-4096-chars", "reason", lambda v: run(reason=v), R, R + "r"),
    ("Stop.reason-4096-chars", "reason", lambda v: p.Stop(0, 1, v), R, R + "r"),
    ("Chunk.key-128-chars", "key", lambda v: p.Chunk(v, 0, b""), K, K + "k"),
    ("Error.reason-4096-chars", "reason", lambda v: p.Error(v), R, R + "r"),
    ("Shutdown.reason-4096-chars", "reason", lambda v: p.Shutdown(v), R, R + "r"),
]
each_bound = pytest.mark.parametrize("field, build, at, past", [row[1:] for row in BOUNDS],
                                     ids=[row[0] for row in BOUNDS])


def careless(message, valid):
    """The frames of `message` as a sender that skips encode's checks would build them: `valid`'s
    frames with `message`'s values put in."""
    frames = encode(valid)
    body = msgpack.unpackb(frames[1])
    body.update({f.name: getattr(message, f.name) for f in fields(message) if f.name != "data"})
    return [frames[0], msgpack.packb(body, use_bin_type=True), *([message.data] if frames[2:] else [])]


@each_bound
def test_a_value_at_its_bound_is_taken(field, build, at, past):
    message = build(at)
    assert same(decode(encode(message)), message)


@each_bound
def test_a_value_past_its_bound_is_refused_by_the_receiver_naming_the_field(field, build, at, past):
    with pytest.raises(ProtocolError) as error:
        decode(careless(build(past), build(at)))
    assert str(error.value).startswith(f"`{field}`") and len(str(error.value)) < 300


@each_bound
def test_a_value_past_its_bound_is_refused_by_the_sender_naming_the_field(field, build, at, past):
    with pytest.raises(ProtocolError) as error:
        encode(build(past))
    assert str(error.value).startswith(f"`{field}`") and len(str(error.value)) < 300


def test_a_900_kib_metric_name_is_refused_in_a_short_error_that_gives_its_length():
    name = "loss" * (225 * 1024)
    with pytest.raises(ProtocolError) as error:
        decode(careless(result(metrics={name: 0.5}), result()))
    assert len(str(error.value)) < 300 and f"length {len(name)}" in str(error.value)


def test_an_int_beyond_msgpack_is_refused_by_the_sender_naming_the_field():
    assert decode(encode(p.Ack(2**64 - 1, 1, 1))) == p.Ack(2**64 - 1, 1, 1)
    with pytest.raises(ProtocolError, match="^`trial` must be an int"):
        encode(p.Ack(2**64, 1, 1))


def test_the_sender_refuses_a_payload_its_receiver_would_refuse():
    with pytest.raises(ProtocolError, match="^payload of .* bytes exceeds 1048576"):
        encode(p.Report({"rows": "r" * (1 << 20)}))


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
                    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
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
         "`incarnation` must be an int >= 0 and < 2**64, got bool"),
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
