"""An attempt's log, read as it grows, in the pieces the broker keeps (see broker/logs.py).

The attempt's output goes to a file in the worker's folder (worker/attempt.py); the worker reads what
is new about once a second and ships it as `log` messages, which ride the attempt's outbox like its
results: acknowledged once stored, sent again after a reconnect, so a log outlives the worker's
folder and needs no shared file system. Only the first LOG_HEAD bytes go while the attempt runs;
past that, its last LOG_TAIL bytes go when it ends.
"""

from __future__ import annotations

import os
from pathlib import Path

from rung.protocol.messages import LOG_HEAD, LOG_TAIL

PIECE = 64 << 10  # bytes of one log message
TAIL_LINES = 15  # lines of the log that a failure's reason carries
TAIL_CHARS = 1500
NOTE = "[rung] "  # how the attempt runner's own lines in a log begin (worker/attempt.py)


class LogTail:
    def __init__(self, path: Path):
        self.path = path
        self.sent = 0  # bytes of the log shipped, from its start

    def new(self, final: bool = False) -> list[tuple[int, bytes]]:
        """(offset, bytes) pieces not shipped yet: of the head, and once `final`, the tail."""
        pieces = []
        try:
            with open(self.path, "rb") as log:
                size = os.fstat(log.fileno()).st_size
                while self.sent < min(size, LOG_HEAD):
                    log.seek(self.sent)
                    data = log.read(min(PIECE, LOG_HEAD - self.sent))
                    if not data:
                        break
                    pieces.append((self.sent, data))
                    self.sent += len(data)
                if final and size > max(self.sent, LOG_HEAD):
                    start = max(LOG_HEAD, size - LOG_TAIL)
                    log.seek(start)
                    pieces.append((start, log.read(size - start)))
                    self.sent = size
        except FileNotFoundError:
            pass  # nothing printed yet
        return pieces

    def last_lines(self) -> str:
        """The log's last lines, for a failure's reason; '' if it is empty."""
        try:
            with open(self.path, "rb") as log:
                size = os.fstat(log.fileno()).st_size
                log.seek(max(0, size - 4 * TAIL_CHARS))
                text = log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
        # rung's own notes in the log say what the reason says already.
        lines = [line for line in text.rstrip().splitlines() if not line.startswith(NOTE)]
        return "\n".join(lines[-TAIL_LINES:])[-TAIL_CHARS:]
