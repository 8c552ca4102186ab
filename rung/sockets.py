"""One message's frames in or out of a ZeroMQ socket, without waiting: the calls every rung process
makes per message.

pyzmq's `send_multipart` and `recv_multipart` combine their flags as Python enums on every frame and
ask the socket for RCVMORE after each one; for a small message that costs more than moving the
message (on the 2-core benchmark machine, about 2.5 and 3 us a message against 1.2 and 1.7 us here).
Both calls keep ZeroMQ's whole-message guarantee: a message is queued or received whole, or not at
all (the high-water mark is checked on a message's first frame only).
"""

from __future__ import annotations

from typing import Sequence

import zmq

_NOW = int(zmq.NOBLOCK)
_MORE_NOW = int(zmq.SNDMORE | zmq.NOBLOCK)


def receive(sock: zmq.Socket) -> tuple[bytes, ...]:
    """The frames of the next message; raises zmq.Again if none is waiting.

    A tuple, not a list: CPython's collector stops tracking a tuple of bytes at its first pass, so the
    broker's batch of messages, held through a loop iteration, never reaches the old generation,
    where each message would bring the next full collection nearer (with 1000 workers, full
    collections took 11% of the broker's time with lists, 5% with tuples)."""
    frame = sock.recv(_NOW, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = sock.recv(_NOW, copy=False)
        frames.append(frame.bytes)
    return tuple(frames)


def send(sock: zmq.Socket, frames: Sequence[bytes]) -> None:
    """Queue one message; raises zmq.Again if the socket's queue is full (and queues nothing then),
    or another zmq.ZMQError (such as EHOSTUNREACH from a ROUTER_MANDATORY socket)."""
    last = len(frames) - 1
    for index, frame in enumerate(frames):
        sock.send(frame, _MORE_NOW if index < last else _NOW)
