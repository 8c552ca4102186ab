"""The study journal: an append-only file of records, from which a restarted broker rebuilds its state.

Layout, every integer big-endian:

    header = magic b"RUNGJNL\\x00" | format version u16 (1) | study id length u16 | study id (UTF-8)
    record = payload length u32 | CRC-32 of the payload u32 | payload

A payload is the msgpack encoding of one plain-data value: None, bools, ints, floats, strings, bytes,
lists, and maps keyed by those scalars. msgpack writes tuples as lists, subclasses of these types as
their base type and other bytes-like values as bytes; `append` refuses what it cannot write and what
its reader would refuse (a tuple as a map key, nesting past the reader's limit), so a record that was
accepted is a record the next `open` reads. Nothing in a payload names a Python class, so a journal
never revives an object (msgpack's own ExtType and Timestamp values read back as themselves).

Theory of operation.

- Writing is a group commit. `append` encodes and buffers a record; `commit` writes every buffered
  record with one write and one fsync. The broker commits once per loop iteration, before any effect
  of that iteration leaves it, so whatever a worker or a user has seen is on disk.
- A write or fsync error is final. After a failed fsync the kernel may have dropped the dirty pages and
  marked them clean, so a second fsync can succeed with the data lost; the journal therefore refuses
  every later call, the broker stops, and a restart recovers from what the file really holds.
- Except a write that finds no space (ENOSPC, or EFBIG past a file size limit): nothing was fsynced,
  so the file is truncated back to its last whole record, the records stay buffered, and `commit`
  raises `JournalFull`; the next `commit` writes them again (the broker retries every few seconds and
  takes no step meanwhile, see broker.py). Should the truncation itself fail, the journal fails.
- Recovery on open reads records in order up to the first frame that is not valid: its length runs past
  the end of the file or past `max_record`, its checksum does not match, or its payload does not
  unpack. If no valid frame starts anywhere after it, the rest is a torn tail, a commit that a crash cut
  short and whose effects therefore never left the broker: it is copied aside to
  `<journal>.torn-<offset>` and the journal is truncated there. If a valid frame does follow, the
  damage is not a crash's; replaying around it would silently drop history, so the journal refuses to
  open and names the offset of the bad record.
"""

from __future__ import annotations

import errno
import os
import struct
import zlib
from pathlib import Path
from typing import Any, NoReturn

import msgpack
import numpy as np

MAGIC = b"RUNGJNL\x00"
VERSION = 1
MAX_RECORD = 64 * 1024 * 1024  # bytes of one payload; a longer length field is taken as garbage

_VERSION = struct.Struct(">H")
_FRAME = struct.Struct(">II")  # payload length, CRC-32 of the payload
# msgpack's reader takes lists and maps nested up to 1024 deep; each level costs a byte, so only a
# payload at least this long can nest deeper.
_READER_NESTING = 1024
_SCAN_BLOCK = 1 << 16  # offsets examined at once when looking for a valid frame past a bad one
NO_SPACE = frozenset({errno.ENOSPC, errno.EFBIG})  # a write that may succeed once space is freed


class JournalError(Exception):
    """The journal cannot be opened or written."""


class JournalCorrupt(JournalError):
    """A record is damaged and valid records follow it: the file was corrupted, not torn by a crash."""

    def __init__(self, message: str, path: Path, offset: int):
        super().__init__(message)
        self.path = path
        self.offset = offset


class JournalFailed(JournalError):
    """A write or an fsync failed; the journal refuses every later call."""


class JournalFull(JournalError):
    """A commit found no space: the file holds its records up to the last whole one, and the records
    of the commit stay buffered for the next `commit`."""

    def __init__(self, message: str, path: Path, reason: str):
        super().__init__(message)
        self.path = path
        self.reason = reason


class Journal:
    """An open study journal. Use `Journal.open`; a journal is also a context manager that closes it."""

    def __init__(self, path: Path, study_id: str, fd: int, records: list, size: int, torn: Path | None,
                 max_record: int):
        self.path = path
        self.study_id = study_id
        self.records = records  # payloads found when the journal was opened, in order, for replay
        self.torn = torn  # where a torn tail was kept aside on open, if there was one
        self.max_record = max_record
        self._fd: int | None = fd
        self._size = size
        self._pending: list[bytes] = []
        self._failure: str | None = None
        # Reused: one record per result goes through `_exact`, which takes only the plain types
        # themselves, checked in C as it packs; `_plain` also takes tuples and subclasses.
        self._exact = msgpack.Packer(use_bin_type=True, strict_types=True)
        self._plain = msgpack.Packer(use_bin_type=True)

    @classmethod
    def open(cls, path: str | os.PathLike, study_id: str, *, max_record: int = MAX_RECORD) -> "Journal":
        """Open the journal at `path` for `study_id`, creating it if there is no file there yet.

        Raises `JournalError` for a file that is not a journal of this study in this format version,
        `JournalCorrupt` for damage followed by valid records; recovers a torn tail (see `torn`).
        """
        if not isinstance(study_id, str):
            raise ValueError(f"`study_id` is {study_id!r}, but must be a string")
        if len(study_id.encode("utf-8")) > 0xFFFF:
            raise ValueError(f"`study_id` is {len(study_id.encode('utf-8'))} bytes, but must be <= 65535")
        if not 1 <= max_record <= 0xFFFFFFFF:
            raise ValueError(f"`max_record` is {max_record}, but must be >= 1 and < 2**32")
        path = Path(path)
        if path.exists():
            # Left by a crash between linking a new journal into place and removing its first name.
            _creating(path).unlink(missing_ok=True)
        else:
            _create(path, study_id)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        try:
            data = _read_all(fd)
            start = _check_header(path, data, study_id)
            records, end = _whole_records(path, data, start, max_record, "refusing to start")
            torn = None
            if end < len(data):
                torn = _keep_aside(path, data[end:], end)
                os.ftruncate(fd, end)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, study_id, fd, records, end, torn, max_record)

    @property
    def size(self) -> int:
        """Bytes in the file: the header and every committed record."""
        return self._size

    @property
    def pending(self) -> int:
        """Records appended and not committed yet."""
        return len(self._pending)

    def append(self, record: Any) -> None:
        """Encode `record` and buffer it for the next `commit`. Raises `ValueError` if it is not plain
        data, would not read back, or encodes to more than `max_record` bytes; the journal is
        unchanged then. Tuples are written as lists, and read back as lists."""
        self._check_usable()
        try:
            payload = _encode(self._exact, record)
            read_back = len(payload) >= _READER_NESTING
        except TypeError:
            # A tuple, a subclass of a plain type (a numpy float, an IntEnum) or no data at all; a
            # tuple as a map key is written as a list, which no reader takes as a key.
            try:
                payload = _encode(self._plain, record)
            except TypeError as exc:
                raise ValueError(f"record holds no plain data: {exc}") from None
            read_back = True
        if len(payload) > self.max_record:
            raise ValueError(f"record encodes to {len(payload)} bytes, but must be <= {self.max_record}")
        if read_back:
            try:
                _decode(payload)
            except ValueError as exc:
                raise ValueError(f"record would not read back: {exc}") from None
        self._pending.append(_FRAME.pack(len(payload), zlib.crc32(payload)) + payload)

    def commit(self) -> None:
        """Write every buffered record with one write and make it durable with one fsync. Raises
        `JournalFull` if the write finds no space (the records stay buffered, to commit again), else
        `JournalFailed` for any error."""
        self._check_usable()
        if not self._pending:
            return
        data = b"".join(self._pending)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            if exc.errno not in NO_SPACE:
                self._fail(exc)
            try:
                os.ftruncate(self._fd, self._size)
            except OSError as truncating:
                self._fail(truncating)
            raise JournalFull(f"journal {self.path}: cannot write {len(data)} bytes ({exc.strerror}); "
                              "they wait to be written", self.path, exc.strerror) from exc
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._fail(exc)
        self._pending.clear()
        self._size += len(data)

    def _fail(self, exc: OSError) -> NoReturn:
        self._pending.clear()
        self._failure = f"{exc.strerror or exc}"
        raise JournalFailed(
            f"journal {self.path}: commit failed ({self._failure}); the journal refuses every later "
            "call: stop the broker and restart it to recover from what is on disk") from exc

    def close(self) -> None:
        """Close the file. Records appended since the last commit are dropped: none of their effects
        has left the broker."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._pending.clear()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise JournalFailed(f"journal {self.path} failed earlier ({self._failure}) and refuses every "
                                "later call: stop the broker and restart it")
        if self._fd is None:
            raise JournalError(f"journal {self.path} is closed")


def read_records(path: str | os.PathLike, *, max_record: int = MAX_RECORD) -> list:
    """The valid records of a journal, read without a lock and without changing the file (a torn
    tail is left for the broker to deal with): for `rung status` and `rung results`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise JournalError(f"cannot read {path}: {error.strerror}") from None
    if data[:len(MAGIC)] != MAGIC or len(data) < len(MAGIC) + 4:
        raise JournalError(f"{path} is not a rung journal")
    (length,) = _VERSION.unpack_from(data, len(MAGIC) + 2)
    study_id = data[len(MAGIC) + 4:len(MAGIC) + 4 + length].decode("utf-8", "replace")
    start = _check_header(path, data, study_id)
    return _whole_records(path, data, start, max_record, "showing none of it")[0]


def _whole_records(path: Path, data: bytes, start: int, max_record: int, action: str) -> tuple[list, int]:
    """The records and where they end; raises JournalCorrupt if a damaged record has valid records
    after it (bytes after the last whole record and no valid frame are a torn tail)."""
    records, end = _read_records(data, start, max_record)
    if end < len(data):
        follower = _next_valid_frame(data, end + 1, max_record)
        if follower is not None:
            raise JournalCorrupt(
                f"journal {path}: record at byte {end} is corrupt and valid records follow it (the "
                f"next at byte {follower}); {action} (move the file aside to start over)", path, end)
    return records, end


def _create(path: Path, study_id: str) -> None:
    # The header is written under a temporary name and linked into place, so a crash during creation
    # never leaves a journal without a whole header, and an existing journal is never replaced.
    encoded = study_id.encode("utf-8")
    header = MAGIC + _VERSION.pack(VERSION) + _VERSION.pack(len(encoded)) + encoded
    temporary = _creating(path)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, header)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)
    fsync_directory(path.parent)


def _creating(path: Path) -> Path:
    return path.with_name(path.name + ".creating")


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _check_header(path: Path, data: bytes, study_id: str) -> int:
    if data[:len(MAGIC)] != MAGIC:
        raise JournalError(f"{path} is not a rung journal: it does not start with {MAGIC!r}")
    at = len(MAGIC)
    if len(data) < at + 4:
        raise JournalError(f"journal {path}: the header is cut short ({len(data)} bytes)")
    (version,) = _VERSION.unpack_from(data, at)
    if version != VERSION:
        raise JournalError(f"journal {path} has format version {version}, but this rung reads only "
                           f"version {VERSION}")
    (length,) = _VERSION.unpack_from(data, at + 2)
    start = at + 4 + length
    if len(data) < start:
        raise JournalError(f"journal {path}: the header is cut short ({len(data)} bytes)")
    try:
        found = data[at + 4:start].decode("utf-8")
    except UnicodeDecodeError:
        raise JournalError(f"journal {path}: the study id in the header is not UTF-8") from None
    if found != study_id:
        raise JournalError(f"journal {path} belongs to study {found!r}, not {study_id!r}")
    return start


def _read_records(data: bytes, start: int, max_record: int) -> tuple[list, int]:
    """Decode records from `start` up to the first invalid frame; return them and where they end."""
    records = []
    view = memoryview(data)
    offset = start
    while offset < len(data):
        frame = _frame_at(view, offset, max_record)
        if frame is None:
            break
        record, offset = frame
        records.append(record)
    return records, offset


def _frame_at(view: memoryview, offset: int, max_record: int) -> tuple[Any, int] | None:
    if offset + _FRAME.size > len(view):
        return None
    length, checksum = _FRAME.unpack_from(view, offset)
    start = offset + _FRAME.size
    end = start + length
    if length > max_record or end > len(view):
        return None
    payload = view[start:end]
    if zlib.crc32(payload) != checksum:
        return None
    try:
        return _decode(payload), end
    except ValueError:
        return None


def _next_valid_frame(data: bytes, start: int, max_record: int) -> int | None:
    """The first offset at or after `start` where a valid frame begins, or None."""
    view = memoryview(data)
    everything = np.frombuffer(data, dtype=np.uint8)
    last = len(data) - _FRAME.size  # the last offset where a frame header fits
    for block in range(start, last + 1, _SCAN_BLOCK):
        offsets = np.arange(block, min(block + _SCAN_BLOCK, last + 1), dtype=np.int64)
        # The length field at every offset of the block at once; only lengths that fit the rest of
        # the file are worth a checksum, which leaves few candidates in garbage. A zero length holds
        # no payload, and zeros are what a crash most often leaves behind.
        lengths = np.zeros(len(offsets), dtype=np.int64)
        for shift, byte in zip((24, 16, 8, 0), range(4)):
            lengths |= everything[offsets + byte].astype(np.int64) << shift
        plausible = (lengths >= 1) & (lengths <= max_record) & (offsets + _FRAME.size + lengths <= len(data))
        for offset in offsets[plausible]:
            if _frame_at(view, int(offset), max_record) is not None:
                return int(offset)
    return None


def _keep_aside(path: Path, torn: bytes, offset: int) -> Path:
    # The torn bytes are made durable under their own name before the journal is truncated, so no
    # crash in between loses them.
    suffix = 0
    while True:
        aside = path.with_name(f"{path.name}.torn-{offset}" + (f".{suffix}" if suffix else ""))
        try:
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            break
        except FileExistsError:
            suffix += 1
    try:
        view = memoryview(torn)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_directory(path.parent)
    return aside


def _encode(packer: msgpack.Packer, record: Any) -> bytes:
    """The payload; raises TypeError for a type `packer` does not take."""
    try:
        return packer.pack(record)
    except OverflowError:
        raise ValueError("record holds an integer out of range: integers must fit 64 bits") from None
    except TypeError:
        raise
    except Exception as exc:  # a lone surrogate, nesting past msgpack's limit, an odd buffer or mapping
        raise ValueError(f"record cannot be encoded: {type(exc).__name__}: {exc}") from None


def _decode(payload) -> Any:
    try:
        return msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=False)
    except Exception as exc:  # msgpack raises several types on garbage; all mean "not a record"
        raise ValueError(f"payload is not msgpack: {type(exc).__name__}: {exc}") from None


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
