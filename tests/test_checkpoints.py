"""The checkpoint store on real files: chunked uploads checked against their digest, downloads, path
traversal, garbage collection and the cleanup after a crash."""

import errno
import hashlib
import os
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rung.broker.checkpoints import (CheckpointError, CheckpointIncomplete, CheckpointStore,
                                     checkpoint_key)


def digest(content):
    return hashlib.sha256(content).hexdigest()


def upload(store, content, *, name="up-1", trial=3, attempt=1, step=4.0, chunk=7):
    store.begin(name, trial, attempt, step, len(content), digest(content))
    for offset in range(0, len(content), chunk):
        store.chunk(name, offset, content[offset:offset + chunk])
    return store.finish(name)


def temporaries(directory):
    return sorted(os.listdir(directory / "tmp"))


@settings(max_examples=30, deadline=None)
@given(content=st.binary(max_size=3000), chunk=st.integers(1, 700), data=st.data())
def test_a_chunked_upload_reads_back_exactly(content, chunk, data):
    with tempfile.TemporaryDirectory() as directory, CheckpointStore(directory) as store:
        key = upload(store, content, chunk=chunk)
        assert key == checkpoint_key(3, 1, 4.0, digest(content))
        assert store.exists(key) and store.size(key) == len(content)
        assert store.path(key).read_bytes() == content
        assert store.read(key, 0, len(content)) == content
        offset = data.draw(st.integers(0, len(content) + 5))
        length = data.draw(st.integers(0, len(content) + 5))
        assert store.read(key, offset, length) == content[offset:offset + length]
        assert os.listdir(os.path.join(directory, "tmp")) == []


def test_keys_are_file_names_that_say_what_they_hold():
    sha = digest(b"weights")
    assert checkpoint_key(12, 2, 30.0, sha) == f"12-2-30-{sha[:16]}"
    assert checkpoint_key(0, 1, 0.5, sha) == f"0-1-0.5-{sha[:16]}"
    assert checkpoint_key(1, 1, 1e20, sha.upper()) == f"1-1-1e20-{sha[:16]}"


def test_a_content_that_does_not_match_its_digest_is_refused_and_its_file_removed(tmp_path):
    store = CheckpointStore(tmp_path)
    store.begin("up", 1, 1, 2.0, 5, digest(b"hello"))
    store.chunk("up", 0, b"jello")
    with pytest.raises(CheckpointError, match="SHA-256 is .* but .* was declared"):
        store.finish("up")
    assert temporaries(tmp_path) == [] and store.keys() == [] and store.uploads == frozenset()
    with pytest.raises(CheckpointError, match="no upload up in progress"):
        store.finish("up")


def test_a_content_shorter_than_declared_is_refused(tmp_path):
    store = CheckpointStore(tmp_path)
    store.begin("up", 1, 1, 2.0, 10, digest(b"0123456789"))
    store.chunk("up", 0, b"01234")
    with pytest.raises(CheckpointError, match="5 bytes written, but the declared size is 10"):
        store.finish("up")
    assert temporaries(tmp_path) == []


def test_a_chunk_past_the_declared_size_is_refused(tmp_path):
    store = CheckpointStore(tmp_path)
    store.begin("up", 1, 1, 2.0, 4, digest(b"0123"))
    with pytest.raises(CheckpointError, match="runs past the declared size of 4 bytes"):
        store.chunk("up", 0, b"01234")


def test_a_gap_is_refused_and_the_sender_may_carry_on_from_the_right_offset(tmp_path):
    store = CheckpointStore(tmp_path)
    content = b"abcdefghij"
    store.begin("up", 1, 1, 2.0, len(content), digest(content))
    store.chunk("up", 0, b"abc")
    with pytest.raises(CheckpointError, match="chunk at byte 6, but 3 bytes are written so far"):
        store.chunk("up", 6, b"ghij")
    store.chunk("up", 3, b"def")
    store.chunk("up", 6, b"ghij")
    assert store.read(store.finish("up"), 0, 100) == content


def test_a_retransmitted_chunk_is_a_no_op_but_a_different_one_is_refused(tmp_path):
    store = CheckpointStore(tmp_path)
    content = b"abcdefghij"
    store.begin("up", 1, 1, 2.0, len(content), digest(content))
    store.chunk("up", 0, b"abcd")
    store.chunk("up", 4, b"efgh")
    store.chunk("up", 4, b"efgh")  # the same chunk again
    store.chunk("up", 0, b"abcd")
    with pytest.raises(CheckpointError, match="differs from the bytes already written"):
        store.chunk("up", 4, b"EFGH")
    with pytest.raises(CheckpointError, match="overlaps the 8 bytes written so far and runs past them"):
        store.chunk("up", 6, b"ghij")
    store.chunk("up", 8, b"ij")
    assert store.read(store.finish("up"), 0, 100) == content


def test_finishing_twice_or_storing_the_same_content_again_returns_the_same_key(tmp_path):
    store = CheckpointStore(tmp_path)
    key = upload(store, b"weights" * 100)
    assert store.finish("up-1") == key
    assert upload(store, b"weights" * 100, name="up-2") == key
    assert store.keys() == [key] and temporaries(tmp_path) == []


def test_a_repeated_begin_is_a_no_op_but_a_conflicting_one_is_refused(tmp_path):
    store = CheckpointStore(tmp_path)
    key = store.begin("up", 1, 1, 2.0, 3, digest(b"abc"))
    store.chunk("up", 0, b"ab")
    assert store.begin("up", 1, 1, 2.0, 3, digest(b"abc")) == key
    with pytest.raises(CheckpointError, match="already in progress with other arguments"):
        store.begin("up", 1, 2, 2.0, 3, digest(b"abc"))
    store.chunk("up", 2, b"c")
    assert store.finish("up") == key


@pytest.mark.parametrize("name", ["..", ".", "../journal", "a/b", "/etc/passwd", "", "x" * 129, ".hidden",
                                  "tmp/x", "a\x00b", 7])
def test_an_upload_id_that_could_leave_the_store_is_refused(tmp_path, name):
    store = CheckpointStore(tmp_path)
    with pytest.raises(CheckpointError, match="upload id"):
        store.begin(name, 1, 1, 2.0, 3, digest(b"abc"))


@pytest.mark.parametrize("key", ["..", ".", "../journal", "tmp", "lock", "/etc/passwd",
                                 "1-1-2-0123456789abcdef/../../journal", "1-1-2-0123456789ABCDEF", None])
def test_a_key_that_could_leave_the_store_is_refused(tmp_path, key):
    store = CheckpointStore(tmp_path)
    for call in (store.exists, store.path, store.size, lambda k: store.read(k, 0, 1)):
        with pytest.raises(CheckpointError, match="not a checkpoint key"):
            call(key)


@pytest.mark.parametrize("arguments, message", [
    ((-1, 1, 2.0, 3, digest(b"abc")), "`trial` is -1"),
    ((1, True, 2.0, 3, digest(b"abc")), "`attempt` is True"),
    ((1, 1, float("nan"), 3, digest(b"abc")), "`step` is nan"),
    ((1, 1, -1.0, 3, digest(b"abc")), "`step` is -1.0"),
    ((1, 1, 2.0, -3, digest(b"abc")), "`size` is -3"),
    ((1, 1, 2.0, 3, "abc"), "must be 64 hexadecimal digits"),
    ((1, 1, 2.0, 1001, digest(b"abc")), "1001 bytes exceeds the limit of 1000 bytes"),
], ids=["trial", "attempt", "step-nan", "step-negative", "size", "digest", "too-large"])
def test_a_begin_with_bad_arguments_is_refused(tmp_path, arguments, message):
    store = CheckpointStore(tmp_path, max_size=1000)
    with pytest.raises(CheckpointError, match=message):
        store.begin("up", *arguments)
    assert temporaries(tmp_path) == []


def test_reads_at_offsets_and_past_the_end(tmp_path):
    store = CheckpointStore(tmp_path)
    content = bytes(range(256)) * 4
    key = upload(store, content, chunk=100)
    assert store.read(key, 0, 10) == content[:10]
    assert store.read(key, 1000, 100) == content[1000:]
    assert store.read(key, 1024, 10) == b""
    assert store.read(key, 5000, 10) == b""
    assert store.read(key, 17, 0) == b""
    with pytest.raises(CheckpointError, match="offset -1"):
        store.read(key, -1, 10)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        store.read(checkpoint_key(9, 9, 9, digest(b"none")), 0, 10)


def test_collect_keeps_what_is_asked_and_removes_the_rest_and_abandoned_temporary_files(tmp_path):
    store = CheckpointStore(tmp_path)
    keys = [upload(store, f"checkpoint {n}".encode(), name=f"up-{n}", step=n) for n in range(4)]
    store.begin("in-progress", 5, 1, 1.0, 6, digest(b"abcdef"))
    store.chunk("in-progress", 0, b"abc")
    (tmp_path / "tmp" / "crashed.part").write_bytes(b"left behind")
    (tmp_path / "notes.txt").write_text("not a checkpoint")

    removed = store.collect({keys[1], keys[3], "never-stored"})

    assert removed == sorted([keys[0], keys[2]])
    assert store.keys() == sorted([keys[1], keys[3]])
    assert temporaries(tmp_path) == ["in-progress.part"]
    assert (tmp_path / "notes.txt").exists()
    store.chunk("in-progress", 3, b"def")  # an upload in progress survives a collection
    assert store.read(store.finish("in-progress"), 0, 10) == b"abcdef"
    assert store.collect(set(store.keys())) == []


def test_reopening_after_a_crash_removes_its_temporary_files_and_keeps_stored_checkpoints(tmp_path):
    crashed = CheckpointStore(tmp_path)
    key = upload(crashed, b"durable")
    crashed.begin("cut-short", 1, 1, 9.0, 100, digest(b"x" * 100))
    crashed.chunk("cut-short", 0, b"x" * 50)
    assert temporaries(tmp_path) == ["cut-short.part"]
    # The broker dies here: `crashed` is never closed.

    store = CheckpointStore(tmp_path)
    assert temporaries(tmp_path) == []
    assert store.keys() == [key] and store.read(key, 0, 100) == b"durable"
    assert store.uploads == frozenset()


def test_an_aborted_upload_leaves_nothing_behind(tmp_path):
    store = CheckpointStore(tmp_path)
    store.begin("up", 1, 1, 2.0, 3, digest(b"abc"))
    store.chunk("up", 0, b"a")
    store.abort("up")
    store.abort("up")
    assert temporaries(tmp_path) == [] and store.uploads == frozenset()
    with pytest.raises(CheckpointError, match="no upload up in progress"):
        store.chunk("up", 1, b"b")


def test_the_number_of_uploads_in_progress_is_bounded(tmp_path):
    store = CheckpointStore(tmp_path, max_uploads=2)
    store.begin("a", 1, 1, 1.0, 1, digest(b"a"))
    store.begin("b", 2, 1, 1.0, 1, digest(b"b"))
    with pytest.raises(CheckpointError, match="2 uploads are in progress"):
        store.begin("c", 3, 1, 1.0, 1, digest(b"c"))
    store.chunk("a", 0, b"a")
    store.finish("a")
    store.begin("c", 3, 1, 1.0, 1, digest(b"c"))


@pytest.mark.parametrize("setting, value", [("max_size", -1), ("max_uploads", 0)])
def test_bad_settings_are_refused(tmp_path, setting, value):
    with pytest.raises(ValueError, match=f"`{setting}` is {value}, but must be"):
        CheckpointStore(tmp_path, **{setting: value})


def test_missing_bytes_ask_for_the_upload_again_but_a_refused_begin_does_not(tmp_path):
    store = CheckpointStore(tmp_path)
    content = b"0123456789"
    store.begin("short", 3, 1, 4.0, len(content), digest(content))
    store.chunk("short", 0, content[:4])
    with pytest.raises(CheckpointIncomplete, match="4 bytes written"):
        store.finish("short")
    with pytest.raises(CheckpointIncomplete, match="no upload never-begun"):
        store.finish("never-begun")  # its begin was lost on the way
    with pytest.raises(CheckpointError):
        store.begin("huge", 3, 1, 4.0, store.max_size + 1, digest(b""))
    with pytest.raises(CheckpointError, match="refused at its begin") as refused:
        store.finish("huge")
    assert not isinstance(refused.value, CheckpointIncomplete)  # sending it again cannot help


def test_a_copy_of_a_finished_upload_sent_again_leaves_nothing_open(tmp_path):
    store = CheckpointStore(tmp_path)
    key = upload(store, b"weights")
    assert store.begin("up-1", 3, 1, 4.0, 7, digest(b"weights")) == key
    with pytest.raises(CheckpointError):
        store.chunk("up-1", 0, b"weights")
    assert store.finish("up-1") == key
    assert store.uploads == frozenset() and temporaries(tmp_path) == []


def test_an_upload_left_idle_is_abandoned_by_collect(tmp_path):
    store = CheckpointStore(tmp_path)
    store.begin("orphan", 3, 1, 4.0, 10, digest(b"0123456789"))  # its worker died mid-upload
    store.chunk("orphan", 0, b"0123")
    store.begin("alive", 3, 2, 4.0, 10, digest(b"0123456789"))
    store.collect(set(), idle=3600)
    assert store.uploads == {"orphan", "alive"}
    store.collect(set(), idle=0)
    assert store.uploads == frozenset() and temporaries(tmp_path) == []


def test_a_chunk_that_finds_no_space_abandons_its_upload_until_a_write_of_its_size_fits(
        tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)
    content = b"0123456789"
    store.begin("up", 3, 1, 4.0, len(content), digest(content))
    store.chunk("up", 0, content[:4])
    assert store.has_room()  # nothing found the store full
    real_pwrite = os.pwrite
    tries = []

    def full_disk(fd, data, offset):
        tries.append((len(data), offset))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device"):
        store.chunk("up", 4, content[4:])
    assert store.uploads == frozenset() and temporaries(tmp_path) == []  # what it held is freed
    assert store.full.path == tmp_path / "tmp" / "up.part" and store.full.reason == "No space left on device"
    assert not store.has_room() and store.full is not None
    assert tries == [(6, 4), (6, 4)]  # the probe writes as much, where the chunk would have gone
    monkeypatch.setattr(os, "pwrite", real_pwrite)  # space freed
    assert store.has_room() and store.full is None
    assert temporaries(tmp_path) == []
    assert upload(store, content, name="up") in store.keys()  # the upload sent again is stored


def test_a_read_without_a_file_descriptor_left_is_refused_not_raised(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)
    key = upload(store, b"weights")

    def no_descriptors(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "open", no_descriptors)
    with pytest.raises(CheckpointError, match="Too many open files"):
        store.read(key, 0, 7)
