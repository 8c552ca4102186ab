"""The checkpoint store: trial checkpoints as files under `<study dir>/checkpoints/`.

Theory of operation. A worker uploads a checkpoint in chunks. `begin` declares its trial, attempt,
step, size and SHA-256 digest and opens a temporary file under `tmp/`; `chunk` appends the chunks in
order; `finish` checks the size and the digest, fsyncs the file, renames it to its key and fsyncs the
directory. Only then does the broker journal the checkpoint, so a journaled key always names a whole,
verified, durable file; a crash before that leaves a temporary file (removed when the store is opened
again) or an unjournaled file (removed by the next `collect`).

A key is `<trial>-<attempt>-<step>-<first 16 hex digits of the digest>`: a file name made of
[0-9a-z.-] only, so keys coming back from the network are checked against that one pattern before
they touch the file system. Temporary files live in their own folder, so no temporary name can ever be
taken for a key. Equal keys mean equal content, which makes a repeated `finish` harmless.

Chunks are retransmitted safely: a chunk that lies wholly within the bytes already written and matches
them is a no-op. A gap or a mismatching overlap is refused and leaves the upload as it was, so the
sender may carry on from the right offset; a failed `finish` ends the upload and removes its file.

A chunk whose write finds no space (ENOSPC, or EFBIG past a file size limit) abandons its upload,
which frees what it held, and is kept in `full`; `has_room` then tries a write of the same size at
the same offset in a scratch file, so the broker can wait for space without holding the chunk.

`collect(keep)` removes every stored checkpoint whose key is not in `keep`. The broker computes `keep`
from a state that already holds every finished upload, so a checkpoint that a live, promotable or
retrying trial, or a pending clone, may still need is never removed.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import time
from pathlib import Path

from .journal import NO_SPACE, fsync_directory

DEFAULT_MAX_SIZE = 4 * 1024**3  # bytes of one checkpoint
DEFAULT_MAX_UPLOADS = 64  # uploads in progress at once; each holds an open file
UPLOAD_IDLE = 600.0  # seconds without a begin or a chunk after which an upload is abandoned
MAX_READ = 64 * 1024 * 1024  # bytes of one `read`

_KEY = re.compile(r"[0-9]{1,20}-[0-9]{1,20}-[0-9.e-]{1,24}-[0-9a-f]{16}")
_UPLOAD = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")  # no leading dot: never "." or ".."
_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_TEMPORARY = ".part"


class CheckpointError(Exception):
    """An upload or a download that the store refuses; the message says why."""


class CheckpointIncomplete(CheckpointError):
    """An upload finished without all its bytes (or without its begin): they were lost on the way, and
    sending the upload again can succeed."""


def checkpoint_key(trial: int, attempt: int, step: float, digest: str) -> str:
    """The key under which a checkpoint with these coordinates and this SHA-256 digest is stored."""
    for name, value in (("trial", trial), ("attempt", attempt)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
            raise CheckpointError(f"`{name}` is {value!r}, but must be an integer >= 0")
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step) or step < 0:
        raise CheckpointError(f"`step` is {step!r}, but must be a finite number >= 0")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise CheckpointError(f"`digest` is {digest!r:.80}, but must be 64 hexadecimal digits (SHA-256)")
    # "+" of a large exponent is not a file-name character; dropping it keeps the step readable.
    return f"{trial}-{attempt}-{format(step, 'g').replace('+', '')}-{digest[:16].lower()}"


class NoSpace:
    """A chunk write that found no space: where, how many bytes at which offset, and the error."""

    __slots__ = ("path", "offset", "size", "reason")

    def __init__(self, path: Path, offset: int, size: int, reason: str):
        self.path = path
        self.offset = offset
        self.size = size
        self.reason = reason


class _Upload:
    __slots__ = ("key", "size", "digest", "declared", "temporary", "fd", "written", "hasher", "touched")

    def __init__(self, key: str, size: int, digest: str, declared: tuple, temporary: Path, fd: int):
        self.key = key
        self.size = size
        self.digest = digest
        self.declared = declared  # what `begin` was called with, to recognise a repeated `begin`
        self.temporary = temporary
        self.fd = fd
        self.written = 0
        self.hasher = hashlib.sha256()
        self.touched = time.monotonic()  # the last begin or chunk: an upload left idle is abandoned


class CheckpointStore:
    """Checkpoints stored under `directory`, created if missing. Leftover temporary files of a crashed
    broker are removed on opening. Also a context manager; closing aborts the uploads in progress."""

    def __init__(self, directory: str | os.PathLike, *, max_size: int = DEFAULT_MAX_SIZE,
                 max_uploads: int = DEFAULT_MAX_UPLOADS):
        if max_size < 0:
            raise ValueError(f"`max_size` is {max_size}, but must be >= 0")
        if max_uploads < 1:
            raise ValueError(f"`max_uploads` is {max_uploads}, but must be >= 1")
        self.directory = Path(directory)
        self.max_size = max_size
        self.max_uploads = max_uploads
        self._temporaries = self.directory / "tmp"
        self._uploads: dict[str, _Upload] = {}
        self._finished: dict[str, str] = {}  # upload -> key, to answer a repeated `begin` or `finish`
        self._refused: dict[str, str] = {}  # uploads whose `begin` was refused for good -> why
        self.full: NoSpace | None = None  # the last chunk write that found no space, until `has_room`
        for folder in (self.directory, self._temporaries):
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                fsync_directory(folder.parent)
        for entry in os.scandir(self._temporaries):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)

    @property
    def uploads(self) -> frozenset[str]:
        """Uploads in progress."""
        return frozenset(self._uploads)

    def begin(self, upload: str, trial: int, attempt: int, step: float, size: int, digest: str) -> str:
        """Start an upload of `size` bytes whose SHA-256 is `digest`; return the key it will be stored
        under (the caller may find it stored already). A repeated `begin` with the same arguments is a
        no-op, and so is one of an upload already finished (a copy sent again)."""
        _check_upload(upload)
        try:
            key = checkpoint_key(trial, attempt, step, digest)
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise CheckpointError(f"upload {upload}: `size` is {size!r}, but must be an integer >= 0")
            if size > self.max_size:
                raise CheckpointError(f"upload {upload}: a checkpoint of {size} bytes exceeds the limit "
                                      f"of {self.max_size} bytes")
            declared = (trial, attempt, step, size, digest.lower())
            current = self._uploads.get(upload)
            if current is not None and current.declared != declared:
                raise CheckpointError(f"upload {upload} is already in progress with other arguments")
        except CheckpointError as error:
            # Refused for good: its `finish` must say so and why, not ask for the bytes again.
            self._refused[upload] = str(error)
            raise
        if current is not None:
            current.touched = time.monotonic()
            return key
        if upload in self._finished:
            return self._finished[upload]
        if len(self._uploads) >= self.max_uploads:
            raise CheckpointError(f"upload {upload}: {len(self._uploads)} uploads are in progress, the "
                                  "most this store takes at once")
        temporary = self._temporaries / (upload + _TEMPORARY)
        try:
            fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise CheckpointError(f"upload {upload}: cannot create {temporary}: {exc.strerror}") from exc
        self._uploads[upload] = _Upload(key, size, digest.lower(), declared, temporary, fd)
        return key

    def chunk(self, upload: str, offset: int, data: bytes) -> None:
        """Write `data` at `offset`, which must be where the bytes written so far end. A chunk lying
        wholly within the written bytes and equal to them is accepted as a retransmission."""
        current = self._current(upload)
        current.touched = time.monotonic()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CheckpointError(f"upload {upload}: a chunk is {type(data).__name__}, but must be bytes")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise CheckpointError(f"upload {upload}: chunk offset {offset!r}, but must be an integer >= 0")
        data = bytes(data)
        end = offset + len(data)
        if offset > current.written:
            raise CheckpointError(f"upload {upload}: chunk at byte {offset}, but {current.written} bytes "
                                  "are written so far (chunks must arrive in order)")
        if offset < current.written:
            if end > current.written:
                raise CheckpointError(f"upload {upload}: chunk at bytes {offset}..{end} overlaps the "
                                      f"{current.written} bytes written so far and runs past them")
            try:
                written = os.pread(current.fd, len(data), offset)
            except OSError as exc:
                self.abort(upload)
                raise CheckpointError(f"upload {upload}: cannot read back: {exc.strerror}") from exc
            if written != data:
                raise CheckpointError(f"upload {upload}: chunk at byte {offset} differs from the bytes "
                                      "already written there")
            return
        if end > current.size:
            raise CheckpointError(f"upload {upload}: chunk at bytes {offset}..{end} runs past the "
                                  f"declared size of {current.size} bytes")
        try:
            _write_all(current.fd, data, offset)
        except OSError as exc:
            self.abort(upload)
            if exc.errno in NO_SPACE:
                self.full = NoSpace(current.temporary, offset, len(data), exc.strerror)
            raise CheckpointError(f"upload {upload}: write failed ({exc.strerror}); the upload is "
                                  "abandoned") from exc
        current.hasher.update(data)
        current.written = end

    def finish(self, upload: str) -> str:
        """Check the size and the digest, make the checkpoint durable under its key and return the key.
        Finishing an upload that is already finished returns its key again."""
        _check_upload(upload)
        current = self._uploads.get(upload)
        if current is None:
            key = self._finished.get(upload)
            if key is not None and self.exists(key):
                return key
            if upload in self._refused:
                raise CheckpointError(f"refused at its begin: {self._refused[upload]}")
            raise CheckpointIncomplete(f"no upload {upload} in progress")
        try:
            if current.written != current.size:
                raise CheckpointIncomplete(f"upload {upload}: {current.written} bytes written, but the "
                                           f"declared size is {current.size}")
            if current.hasher.hexdigest() != current.digest:
                raise CheckpointError(f"upload {upload}: the content's SHA-256 is "
                                      f"{current.hasher.hexdigest()}, but {current.digest} was declared")
            try:
                os.fsync(current.fd)
            except OSError as exc:
                raise CheckpointError(f"upload {upload}: fsync failed ({exc.strerror})") from exc
        except CheckpointError:
            self.abort(upload)
            raise
        del self._uploads[upload]
        os.close(current.fd)
        final = self.directory / current.key
        try:
            stored = final.stat().st_size if final.is_file() else None
            if stored == current.size:
                os.unlink(current.temporary)
            else:
                os.replace(current.temporary, final)
                fsync_directory(self.directory)
        except OSError as exc:
            # A rename that may not be durable must not be journaled; the file goes, the next
            # upload of the checkpoint starts over.
            for leftover in (current.temporary, final):
                try:
                    os.unlink(leftover)
                except OSError:
                    pass
            raise CheckpointError(f"upload {upload}: cannot store {current.key}: {exc.strerror}") from exc
        self._finished[upload] = current.key
        return current.key

    def abort(self, upload: str) -> None:
        """Drop an upload in progress and its temporary file; nothing happens for an unknown upload."""
        current = self._uploads.pop(upload, None)
        if current is None:
            return
        os.close(current.fd)
        try:
            os.unlink(current.temporary)
        except FileNotFoundError:
            pass

    def exists(self, key: str) -> bool:
        _check_key(key)
        return (self.directory / key).is_file()

    def path(self, key: str) -> Path:
        """The file of a stored checkpoint."""
        path = self.directory / _check_key(key)
        if not path.is_file():
            raise CheckpointError(f"no checkpoint {key}")
        return path

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def read(self, key: str, offset: int, length: int) -> bytes:
        """Up to `length` bytes of a stored checkpoint from `offset`; fewer at its end."""
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise CheckpointError(f"read of {key}: offset {offset!r}, but must be an integer >= 0")
        if not isinstance(length, int) or isinstance(length, bool) or not 0 <= length <= MAX_READ:
            raise CheckpointError(f"read of {key}: length {length!r}, but must be an integer from 0 to "
                                  f"{MAX_READ}")
        path = self.directory / _check_key(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise CheckpointError(f"no checkpoint {key}") from None
        except OSError as exc:  # no file descriptor left: the worker asks again
            raise CheckpointError(f"cannot open checkpoint {key}: {exc.strerror}") from exc
        try:
            parts = []
            while length > 0:
                part = os.pread(fd, length, offset)
                if not part:
                    break
                parts.append(part)
                offset += len(part)
                length -= len(part)
            return b"".join(parts)
        finally:
            os.close(fd)

    def keys(self) -> list[str]:
        """Keys of every stored checkpoint, sorted."""
        return sorted(entry.name for entry in os.scandir(self.directory)
                      if _KEY.fullmatch(entry.name) and entry.is_file(follow_symlinks=False))

    def collect(self, keep: set[str], idle: float = UPLOAD_IDLE) -> list[str]:
        """Remove every stored checkpoint whose key is not in `keep`, uploads that have had no begin or
        chunk for `idle` seconds (their worker died, or sent them again under the same name) and
        temporary files that belong to no upload in progress; return the removed keys, sorted. Files
        that are not checkpoints are left alone."""
        now = time.monotonic()
        for upload in [u for u, current in self._uploads.items() if now - current.touched > idle]:
            self.abort(upload)
        removed = [key for key in self.keys() if key not in keep]
        for key in removed:
            os.unlink(self.directory / key)
        if removed:
            fsync_directory(self.directory)
        removed_set = set(removed)
        self._finished = {upload: key for upload, key in self._finished.items() if key not in removed_set}
        active = {current.temporary.name for current in self._uploads.values()}
        for entry in os.scandir(self._temporaries):
            if entry.name not in active and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
        return removed

    def has_room(self) -> bool:
        """Whether the chunk write that `full` names would succeed now (then `full` is cleared): tried
        with as many zeros at the same offset in a scratch file under `tmp/`, removed again, so a file
        size limit shows as well as a full file system. True when nothing found the store full."""
        if self.full is None:
            return True
        scratch = self._temporaries / ".room"  # a leading dot: no upload's name
        try:
            fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                _write_all(fd, bytes(self.full.size), self.full.offset)
            finally:
                os.close(fd)
                os.unlink(scratch)
        except OSError as exc:
            self.full.reason = exc.strerror
            return False
        self.full = None
        return True

    def close(self) -> None:
        for upload in list(self._uploads):
            self.abort(upload)

    def __enter__(self) -> "CheckpointStore":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _current(self, upload: str) -> _Upload:
        _check_upload(upload)
        current = self._uploads.get(upload)
        if current is None:
            raise CheckpointError(f"no upload {upload} in progress")
        return current


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        count = os.pwrite(fd, view, offset)
        view, offset = view[count:], offset + count


def _check_upload(upload: str) -> str:
    if not isinstance(upload, str) or not _UPLOAD.fullmatch(upload):
        raise CheckpointError(f"upload id {upload!r:.80} is not 1 to 128 characters of [A-Za-z0-9._-] "
                              "starting with no dot")
    return upload


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise CheckpointError(f"{key!r:.80} is not a checkpoint key")
    return key
