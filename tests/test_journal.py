"""The study journal on real files: round trips, torn tails, corruption, refused headers, fsync failure,
group commit; and the lock that keeps a second broker off a study directory."""

import collections
import enum
import errno
import math
import os
import re
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rung.broker.journal import (MAGIC, Journal, JournalCorrupt, JournalError, JournalFailed,
                                 JournalFull)
from rung.broker.lock import LockHeld, StudyLock

STUDY = "study-7"
HEADER = len(MAGIC) + 2 + 2 + len(STUDY.encode())


def frame(record):
    payload = msgpack.packb(record, use_bin_type=True)
    return struct.pack(">II", len(payload), zlib.crc32(payload)) + payload


def step_record(n):
    return [["result", n, 1, float(n) / 3, {"loss": 1.0 / (n + 1)}], [["promote", n, 2, "because"]]]


def write_journal(path, records):
    with Journal.open(path, STUDY) as journal:
        for record in records:
            journal.append(record)
        journal.commit()
    return path.read_bytes()


def test_records_round_trip_and_a_reopened_journal_carries_on(tmp_path):
    path = tmp_path / "journal"
    first = [step_record(n) for n in range(300)]
    with Journal.open(path, STUDY) as journal:
        assert journal.records == [] and journal.torn is None
        for start in range(0, 300, 50):  # several commits, as several broker loop iterations
            for record in first[start:start + 50]:
                journal.append(record)
            journal.commit()
        assert journal.size == path.stat().st_size

    with Journal.open(path, STUDY) as journal:
        assert journal.records == first
        journal.append({"snapshot": b"\x00\x01", "n": None})
        journal.commit()

    with Journal.open(path, STUDY) as journal:
        assert journal.records == first + [{"snapshot": b"\x00\x01", "n": None}]
        assert journal.torn is None


def test_the_file_layout_is_the_documented_one(tmp_path):
    path = tmp_path / "journal"
    data = write_journal(path, [1, "two"])
    header = MAGIC + b"\x00\x01" + struct.pack(">H", len(STUDY)) + STUDY.encode()
    assert data == header + frame(1) + frame("two")


def test_a_torn_last_record_is_truncated_at_every_cut_and_kept_aside(tmp_path):
    full = write_journal(tmp_path / "whole", [step_record(n) for n in range(3)])
    last = frame(step_record(2))
    start = len(full) - len(last)
    for cut in range(1, len(last)):
        path = tmp_path / f"cut-{cut}" / "journal"
        path.parent.mkdir()
        path.write_bytes(full[:start + cut])

        with Journal.open(path, STUDY) as journal:
            assert journal.records == [step_record(0), step_record(1)], cut
            assert journal.torn == path.with_name(f"journal.torn-{start}")
            assert journal.torn.read_bytes() == last[:cut]
            assert path.stat().st_size == start
            journal.append("after recovery")
            journal.commit()

        with Journal.open(path, STUDY) as journal:
            assert journal.records == [step_record(0), step_record(1), "after recovery"]
            assert journal.torn is None



def test_a_journal_whose_creation_a_crash_cut_short_is_created_afresh(tmp_path):
    (tmp_path / "journal.creating").write_bytes(MAGIC[:3])  # the header was being written
    with Journal.open(tmp_path / "journal", STUDY) as journal:
        assert journal.records == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal"]
    (tmp_path / "journal.creating").write_bytes(b"linked, not unlinked yet")
    Journal.open(tmp_path / "journal", STUDY).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal"]

@pytest.mark.parametrize("garbage", [
    b"\x00" * 4096,  # blocks that a crash allocated but never filled
    b"\xff" * 40,  # a length far past the limit
    frame("a record cut short")[:-1] + b"\x00\x00\x00\x05",
    struct.pack(">II", 3, 0) + b"abc",  # a whole frame with a wrong checksum
], ids=["zeros", "huge-length", "short-then-bytes", "bad-checksum"])
def test_garbage_after_the_last_record_is_a_torn_tail(tmp_path, garbage):
    path = tmp_path / "journal"
    clean = write_journal(path, ["kept", 1, 2.5])
    with path.open("ab") as file:
        file.write(garbage)

    with Journal.open(path, STUDY) as journal:
        assert journal.records == ["kept", 1, 2.5]
        assert journal.torn.read_bytes() == garbage
    assert path.read_bytes() == clean


def test_a_second_recovery_at_the_same_offset_keeps_both_torn_tails(tmp_path):
    path = tmp_path / "journal"
    clean = write_journal(path, ["kept"])
    for garbage in (b"\xff" * 9, b"\xee" * 9):
        with path.open("ab") as file:
            file.write(garbage)
        Journal.open(path, STUDY).close()
    assert path.read_bytes() == clean
    assert (tmp_path / f"journal.torn-{len(clean)}").read_bytes() == b"\xff" * 9
    assert (tmp_path / f"journal.torn-{len(clean)}.1").read_bytes() == b"\xee" * 9


@pytest.mark.parametrize("damage", ["payload", "checksum", "length"])
def test_a_corrupt_record_followed_by_valid_ones_refuses_to_start_and_names_its_offset(tmp_path, damage):
    path = tmp_path / "journal"
    records = [step_record(n) for n in range(5)]
    data = bytearray(write_journal(path, records))
    bad = HEADER + len(frame(records[0])) + len(frame(records[1]))  # the third record
    at = {"payload": bad + 12, "checksum": bad + 5, "length": bad}[damage]
    data[at] ^= 0x40
    path.write_bytes(bytes(data))

    with pytest.raises(JournalCorrupt, match=f"record at byte {bad} is corrupt and valid records follow"):
        Journal.open(path, STUDY)
    with pytest.raises(JournalCorrupt) as refused:
        Journal.open(path, STUDY)
    assert refused.value.offset == bad
    assert "move the file aside" in str(refused.value)
    assert path.read_bytes() == bytes(data)  # refusing touches nothing
    assert not list(tmp_path.glob("journal.torn-*"))


def test_a_lost_block_in_the_middle_refuses_too(tmp_path):
    path = tmp_path / "journal"
    records = [step_record(n) for n in range(40)]
    data = bytearray(write_journal(path, records))
    data[200:300] = bytes(100)
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt) as refused:
        Journal.open(path, STUDY)
    assert HEADER < refused.value.offset <= 200


@pytest.mark.parametrize("contents, message", [
    (b"", "not a rung journal"),
    (b"NOTAJNL\x00\x00\x01\x00\x00", "not a rung journal"),
    (MAGIC + b"\x00", "header is cut short"),
    (MAGIC + b"\x00\x02" + struct.pack(">H", len(STUDY)) + STUDY.encode(), "format version 2, but this rung "
                                                                           "reads only version 1"),
    (MAGIC + b"\x00\x01\x00\x09abc", "header is cut short"),
    (MAGIC + b"\x00\x01\x00\x05other", "belongs to study 'other', not 'study-7'"),
], ids=["empty", "magic", "short", "version", "short-id", "study"])
def test_a_file_that_is_not_this_studys_journal_is_refused(tmp_path, contents, message):
    path = tmp_path / "journal"
    path.write_bytes(contents)
    with pytest.raises(JournalError, match=message):
        Journal.open(path, STUDY)
    assert path.read_bytes() == contents


def test_a_journal_of_another_study_is_refused(tmp_path):
    write_journal(tmp_path / "journal", ["mine"])
    with pytest.raises(JournalError, match="belongs to study 'study-7', not 'study-8'"):
        Journal.open(tmp_path / "journal", "study-8")


def test_a_failed_fsync_fails_the_journal_for_good(tmp_path, monkeypatch):
    path = tmp_path / "journal"
    journal = Journal.open(path, STUDY)
    journal.append("committed")
    journal.commit()

    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    journal.append("lost")
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(JournalFailed, match="Input/output error"):
        journal.commit()
    monkeypatch.undo()  # the disk "recovers"; the journal must not believe it

    with pytest.raises(JournalFailed, match="failed earlier"):
        journal.append("after")
    with pytest.raises(JournalFailed, match="failed earlier"):
        journal.commit()
    journal.close()

    with Journal.open(path, STUDY) as reopened:
        assert reopened.records[0] == "committed"


def test_a_failed_write_fails_the_journal_for_good(tmp_path, monkeypatch):
    journal = Journal.open(tmp_path / "journal", STUDY)

    def broken_disk(fd, data):
        raise OSError(errno.EIO, "Input/output error")

    journal.append("lost")
    monkeypatch.setattr(os, "write", broken_disk)
    with pytest.raises(JournalFailed, match="Input/output error"):
        journal.commit()
    monkeypatch.undo()
    with pytest.raises(JournalFailed):
        journal.append("after")
    journal.close()


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EFBIG], ids=["disk full", "file size limit"])
def test_a_write_that_finds_no_space_leaves_whole_records_and_is_written_by_a_later_commit(
        tmp_path, monkeypatch, error):
    path = tmp_path / "journal"
    journal = Journal.open(path, STUDY)
    journal.append("committed")
    journal.commit()
    real_write = os.write

    def fills_up(fd, data):
        # Room for part of the first record only, as a file system a few bytes from full.
        if os.fstat(fd).st_size < journal.size + 5:
            return real_write(fd, bytes(data[:5]))
        raise OSError(error, os.strerror(error))

    journal.append("first")
    journal.append("second")
    monkeypatch.setattr(os, "write", fills_up)
    with pytest.raises(JournalFull, match=os.strerror(error)) as raised:
        journal.commit()
    assert raised.value.path == path and raised.value.reason == os.strerror(error)
    assert path.stat().st_size == journal.size  # the torn bytes are gone
    assert journal.pending == 2  # both kept, to be written again
    with pytest.raises(JournalFull):
        journal.commit()  # still full: the same again
    monkeypatch.undo()  # space freed

    journal.append("third")
    journal.commit()
    journal.close()
    with Journal.open(path, STUDY) as reopened:
        assert reopened.records == ["committed", "first", "second", "third"]
        assert reopened.torn is None


def test_one_commit_of_a_thousand_records_is_one_fsync(tmp_path, monkeypatch):
    journal = Journal.open(tmp_path / "journal", STUDY)
    calls = []
    real_fsync = os.fsync

    def counting_fsync(fd):
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    for n in range(1000):
        journal.append(step_record(n))
    assert journal.pending == 1000
    journal.commit()
    assert len(calls) == 1 and journal.pending == 0
    journal.commit()  # nothing buffered, nothing to sync
    assert len(calls) == 1
    journal.close()
    assert len(Journal.open(tmp_path / "journal", STUDY).records) == 1000


def _nested(depth: int) -> list:
    record: list = []
    for _ in range(depth - 1):
        record = [record]
    return record


@pytest.mark.parametrize("record, message", [
    ({"x": {1.5}}, "can not serialize 'set' object"),
    ([object()], "can not serialize 'object' object"),
    ({(1, 2): "tuple key"}, "would not read back"),
    (_nested(1025), "would not read back"),
    (_nested(5000), "cannot be encoded"),
    (2**64, "must fit 64 bits"),
    ([2**64, (1,)], "must fit 64 bits"),
    ("\ud800", "cannot be encoded"),
    ([memoryview(b"abcd")[::2]], "cannot be encoded: BufferError"),
], ids=["set", "object", "tuple-key", "past-reader-nesting", "past-packer-nesting", "huge-int",
        "huge-int-beside-tuple", "surrogate", "strided-buffer"])
def test_a_record_that_would_not_read_back_is_refused_at_append(tmp_path, record, message):
    with Journal.open(tmp_path / "journal", STUDY) as journal:
        with pytest.raises(ValueError, match=message):
            journal.append(record)
        assert journal.pending == 0
        journal.append(["next"])  # the packers start clean after a refusal
        journal.commit()
    assert Journal.open(tmp_path / "journal", STUDY).records == [["next"]]


class Colour(enum.IntEnum):
    RED = 1


def test_tuples_and_subclasses_of_plain_types_are_written_as_their_plain_form(tmp_path):
    # A record of the plain types themselves is checked by msgpack's strict packer alone (and read
    # back once where it is long enough to nest past the reader's limit); these take the tolerant
    # packer, and read back in their plain form.
    written = [(1, 2), {"c": Colour.RED, "f": np.float64(0.5), "t": (3, [4])},
               collections.OrderedDict(a=1), _nested(1024)]
    with Journal.open(tmp_path / "journal", STUDY) as journal:
        for record in written:
            journal.append(record)
        journal.commit()
    read = Journal.open(tmp_path / "journal", STUDY).records
    assert read[:3] == [[1, 2], {"c": 1, "f": 0.5, "t": [3, [4]]}, {"a": 1}]
    assert [type(read[1]["c"]), type(read[1]["f"]), type(read[2])] == [int, float, dict]
    assert msgpack.packb(read[3]) == msgpack.packb(_nested(1024))  # the reader's deepest: read back


def test_a_record_longer_than_the_limit_is_refused_at_append(tmp_path):
    with Journal.open(tmp_path / "journal", STUDY, max_record=100) as journal:
        with pytest.raises(ValueError, match="but must be <= 100"):
            journal.append(b"x" * 200)


def test_records_appended_but_not_committed_are_dropped_at_close(tmp_path):
    path = tmp_path / "journal"
    with Journal.open(path, STUDY) as journal:
        journal.append("committed")
        journal.commit()
        journal.append("dropped")
    assert Journal.open(path, STUDY).records == ["committed"]
    with pytest.raises(JournalError, match="is closed"):
        journal.append("late")


keys = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8) \
    | st.binary(max_size=8)
plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text() | st.binary(),
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(keys, children, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None)
@given(records=st.lists(plain, max_size=12))
def test_any_plain_data_round_trips_exactly(records):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "journal"
        write_journal(path, records)
        with Journal.open(path, STUDY) as journal:
            # Bytes, not values: NaN != NaN, and -0.0 == 0.0 would hide a lost sign.
            assert [msgpack.packb(r, use_bin_type=True) for r in journal.records] == [
                msgpack.packb(r, use_bin_type=True) for r in records]


def test_nan_and_infinities_keep_their_bits(tmp_path):
    path = tmp_path / "journal"
    write_journal(path, [[math.nan, math.inf, -math.inf, -0.0]])
    (record,) = Journal.open(path, STUDY).records
    assert math.isnan(record[0]) and record[1:3] == [math.inf, -math.inf]
    assert math.copysign(1.0, record[3]) == -1.0


# One broker per directory: the lock that keeps a second broker off this journal.


def test_a_second_lock_on_the_same_directory_is_refused_until_the_first_is_released(tmp_path):
    with StudyLock(tmp_path):
        with pytest.raises(LockHeld, match=re.escape(f"another broker holds {tmp_path} (pid {os.getpid()})")):
            StudyLock(tmp_path)
    with StudyLock(tmp_path) as again:
        assert again.held
    assert not again.held


def test_a_lock_held_by_a_process_that_is_killed_is_free_again(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom rung.broker.lock import StudyLock\n"
         "lock = StudyLock(sys.argv[1])\nprint('locked', flush=True)\ntime.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeld, match=f"pid {holder.pid}"):
            StudyLock(tmp_path)
    finally:
        holder.kill()  # SIGKILL: no chance to release anything
        holder.wait()
        holder.stdout.close()
    with StudyLock(tmp_path) as lock:
        assert lock.held
