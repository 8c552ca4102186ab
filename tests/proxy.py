"""A fault-injecting TCP proxy on 127.0.0.1: partitions, one-way loss, slow links and resets between
workers and a broker, in the test's own process.

Workers connect to `Proxy.address` instead of the broker's; each connection the proxy accepts is
forwarded to the target, byte for byte and in order (ZeroMQ's framing spans TCP segments, so the
proxy never splits or reorders, and never drops a byte unless told to); an end of stream, a FIN or
an RST, reaches the other side behind the bytes sent before it, as on a wire. The faults change while
connections run, per direction: "up" (from the connecting side, the worker, to the target, the
broker) and "down" (back):

- `blackhole(up, down)`: from now on the bytes of those directions are read and thrown away, and an
  end of stream (the peer closed or reset its socket) is swallowed too. Connections stay open; new
  ones are accepted, connected to the target and dark the same way: a silent partition, which each
  side only notices by its own timers. `after` lets that many more bytes of each direction through
  first, to cut a stream at a chosen point (say, in the middle of an upload).
- `heal()`: both directions forward again. A connection that lost bytes (or an end) meanwhile carries
  a ZMTP stream with a hole in it, which neither peer can find its way through; `heal` resets it
  (as `reset` does), and ZeroMQ reconnects on a clean stream. Connections that lost nothing carry on.
- `delay(seconds)`: each byte read from then on is held that long before it is forwarded, in order:
  a slow link.
- `reset()`: every current connection is closed at both ends with an RST (SO_LINGER 0).
- `refuse(True)`: new connections are accepted and reset at once, as by a host where nothing listens;
  current ones carry on (add `reset()` for a broker that went away). `refuse(False)` lets them in again.

Counters: `forwarded` and `dropped` (bytes per direction) and `accepted` (connections so far). One
thread with a selector moves the bytes; each control runs in that thread and has taken effect when it
returns. `with Proxy(target) as proxy:` starts it, and stops it closing every socket it opened.
"""

from __future__ import annotations

import errno
import queue
import selectors
import socket
import struct
import threading
import time
import urllib.parse
from collections import deque

UP, DOWN = "up", "down"
READ_SIZE = 1 << 16
HELD_MAX = 4 << 20  # bytes a direction holds (delayed or unsent) before the proxy stops reading it


class _Flow:
    """One direction of a connection: bytes read from `source`, on their way to `sink`."""

    def __init__(self, direction: str, source: socket.socket, sink: socket.socket):
        self.direction = direction
        self.source = source
        self.sink = sink
        self.queue: deque[tuple[float, memoryview]] = deque()  # (when due, bytes), oldest first
        self.held = 0
        self.ended = False  # the source has ended its stream
        self.reset = False  # with an RST (else a FIN)
        self.end_passed = False  # and the sink was told, after every byte before the end
        self.blocked = False  # the sink's buffer is full: wait until it is writable


class _Link:
    """An accepted connection and the one the proxy opened to the target for it."""

    def __init__(self, client: socket.socket, server: socket.socket):
        self.client = client
        self.server = server
        self.up = _Flow(UP, client, server)
        self.down = _Flow(DOWN, server, client)
        self.connecting = True  # the connection to the target is not established yet
        self.damaged = False  # a byte or an end was thrown away: the stream has a hole
        self.closed = False

    def flows(self):
        return self.up, self.down


class Proxy:
    def __init__(self, target: str | tuple[str, int]):
        if isinstance(target, str):
            parsed = urllib.parse.urlsplit(target)
            target = (parsed.hostname, parsed.port)
        self.target = target
        self.forwarded = {UP: 0, DOWN: 0}
        self.dropped = {UP: 0, DOWN: 0}
        self.accepted = 0
        # Per direction: None while it forwards, else the bytes it still lets through before it is dark.
        self._dark: dict[str, int | None] = {UP: None, DOWN: None}
        self._delay = 0.0
        self._refusing = False
        self._links: list[_Link] = []
        self._masks: dict[socket.socket, int] = {}
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._selector = selectors.DefaultSelector()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._running = True
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)

    @property
    def address(self) -> str:
        """Where workers connect instead of the target."""
        return f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"

    @property
    def connections(self) -> int:
        return self._call(lambda: sum(not link.closed for link in self._links))

    def start(self) -> "Proxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._halt)
            self._thread.join(10)
        self._wake_write.close()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> "Proxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------------------------------------------------
    # Controls.

    def blackhole(self, up: bool = True, down: bool = True, after: int = 0) -> None:
        """Throw away the bytes of the directions given, after `after` more bytes of each; the others
        stay as they are."""
        def apply():
            for direction, dark in ((UP, up), (DOWN, down)):
                if dark:
                    self._dark[direction] = after
        self._call(apply)

    def heal(self) -> None:
        """Forward both directions again, and reset every connection that lost bytes meanwhile."""
        def apply():
            self._dark = {UP: None, DOWN: None}
            for link in self._links:
                if link.damaged:
                    self._abort(link)
        self._call(apply)

    def delay(self, seconds: float) -> None:
        def apply():
            self._delay = seconds
        self._call(apply)

    def reset(self) -> None:
        def apply():
            for link in self._links:
                self._abort(link)
        self._call(apply)

    def refuse(self, refusing: bool = True) -> None:
        def apply():
            self._refusing = refusing
        self._call(apply)

    def _call(self, function):
        """Run `function` in the proxy's thread, between two rounds of moving bytes; its result."""
        if not self._thread.is_alive():
            if self._error is not None:
                raise self._error
            return function()
        done: queue.SimpleQueue = queue.SimpleQueue()
        self._commands.put((function, done))
        self._wake_write.send(b"!")
        try:
            outcome, value = done.get(timeout=10)
        except queue.Empty:
            raise RuntimeError(f"the proxy's thread did not answer: {self._error!r}") from None
        if outcome == "raised":
            raise value
        return value

    # ----------------------------------------------------------------------------------------------
    # The thread.

    def _serve(self) -> None:
        try:
            while self._running:
                now = time.monotonic()
                for key, events in self._selector.select(self._timeout(now)):
                    self._ready(key, events)
                now = time.monotonic()
                for link in self._links:
                    self._pump(link, now)
                self._links = [link for link in self._links if not link.closed]
                self._watch()
        except BaseException as error:  # handed to the test's thread by stop() and _call()
            self._error = error
        finally:
            for link in self._links:
                self._close(link, abort=False)
            self._selector.close()
            self._listener.close()
            self._wake_read.close()
            while not self._commands.empty():  # answer a control that came too late
                _, done = self._commands.get()
                done.put(("returned", None))

    def _halt(self) -> None:
        self._running = False

    def _timeout(self, now: float) -> float | None:
        """Until the next delayed byte is due (None: only an event wakes the loop)."""
        due = [flow.queue[0][0] for link in self._links for flow in link.flows()
               if flow.queue and not flow.blocked and not link.connecting]
        return max(0.0, min(due) - now) if due else None

    def _ready(self, key: selectors.SelectorKey, events: int) -> None:
        sock = key.fileobj
        if sock is self._wake_read:
            self._run_commands()
        elif sock is self._listener:
            self._accept()
        else:
            link = key.data
            if link.closed:
                return
            if events & selectors.EVENT_WRITE:
                if link.connecting and sock is link.server:
                    self._connected(link)
                else:
                    (link.down if sock is link.client else link.up).blocked = False
            if events & selectors.EVENT_READ and not link.closed:
                self._read(link, link.up if sock is link.client else link.down)

    def _run_commands(self) -> None:
        try:
            while self._wake_read.recv(4096):
                pass
        except BlockingIOError:
            pass
        while not self._commands.empty():
            function, done = self._commands.get()
            try:
                done.put(("returned", function()))
            except Exception as error:
                done.put(("raised", error))

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except BlockingIOError:
                return
            self.accepted += 1
            if self._refusing:
                _rst(client)
                continue
            client.setblocking(False)
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.setblocking(False)
            for end in (client, server):
                end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, server)
            self._links.append(link)
            code = server.connect_ex(self.target)
            if code not in (0, errno.EINPROGRESS):
                self._abort(link)  # nothing listens there: the worker sees its connection reset
            elif code == 0:
                self._connected(link)

    def _connected(self, link: _Link) -> None:
        if link.server.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
            self._abort(link)
        else:
            link.connecting = False

    def _read(self, link: _Link, flow: _Flow) -> None:
        try:
            data = flow.source.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self._ended(link, flow, reset=True)
            return
        if not data:
            self._ended(link, flow, reset=False)
            return
        allowance = self._dark[flow.direction]
        if allowance is not None:
            passed = data[:allowance]
            self._dark[flow.direction] = allowance - len(passed)
            if len(passed) < len(data):
                self.dropped[flow.direction] += len(data) - len(passed)
                link.damaged = True
            data = passed
        if data:
            flow.queue.append((time.monotonic() + self._delay, memoryview(data)))
            flow.held += len(data)

    def _ended(self, link: _Link, flow: _Flow, reset: bool) -> None:
        """The source closed (or reset) its side: the sink learns once the bytes before the end are
        through, as on a wire. In the dark, it never learns."""
        flow.ended = True
        flow.reset = reset
        if self._dark[flow.direction] == 0:
            link.damaged = True
            flow.end_passed = True  # swallowed: nothing is left to pass on

    def _pump(self, link: _Link, now: float) -> None:
        """Send what is due, in order, until a sink would block."""
        if link.closed or link.connecting:
            return
        for flow in link.flows():
            while flow.queue and not flow.blocked and flow.queue[0][0] <= now:
                due, data = flow.queue[0]
                try:
                    sent = flow.sink.send(data)
                except BlockingIOError:
                    flow.blocked = True
                    break
                except OSError:
                    self._sink_gone(link, flow)
                    break
                self.forwarded[flow.direction] += sent
                flow.held -= sent
                if sent < len(data):
                    flow.queue[0] = (due, data[sent:])
                    flow.blocked = True
                else:
                    flow.queue.popleft()
            if flow.ended and not flow.end_passed and not flow.queue:
                flow.end_passed = True
                if flow.reset:
                    self._abort(link)
                    return
                try:
                    flow.sink.shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # already gone: it learns nothing more
        if all(flow.ended and flow.end_passed and not flow.queue for flow in link.flows()) \
                and not link.damaged:
            self._close(link, abort=False)

    def _sink_gone(self, link: _Link, flow: _Flow) -> None:
        """The sink's peer closed: what was on its way to it goes nowhere, and its kernel answers with
        an RST, which reaches the source behind the bytes already on their way there (as on a wire;
        in the dark too, where a real partition would keep it from the source until its own timers
        fire)."""
        flow.queue.clear()
        flow.held = 0
        flow.ended = flow.end_passed = True
        back = link.down if flow is link.up else link.up
        if not back.ended:
            back.ended = back.reset = True

    def _watch(self) -> None:
        """Register each socket for what its link waits for: reading while its direction has room,
        writing while a sink is blocked or a connection to the target is under way."""
        wanted: dict[socket.socket, tuple[int, _Link]] = {}
        for link in self._links:
            if link.connecting:
                wanted[link.server] = (selectors.EVENT_WRITE, link)
                wanted[link.client] = (_reading(link.up), link)
                continue
            for flow in link.flows():
                mask = _reading(flow) | wanted.get(flow.source, (0, link))[0]
                wanted[flow.source] = (mask, link)
                if flow.blocked:
                    wanted[flow.sink] = (wanted.get(flow.sink, (0, link))[0] | selectors.EVENT_WRITE, link)
        for sock in list(self._masks):
            if wanted.get(sock, (0, None))[0] == 0:
                self._selector.unregister(sock)
                del self._masks[sock]
        for sock, (mask, link) in wanted.items():
            if mask == 0 or self._masks.get(sock) == mask:
                continue
            if sock in self._masks:
                self._selector.modify(sock, mask, link)
            else:
                self._selector.register(sock, mask, link)
            self._masks[sock] = mask

    def _abort(self, link: _Link) -> None:
        self._close(link, abort=True)

    def _close(self, link: _Link, abort: bool) -> None:
        if link.closed:
            return
        link.closed = True
        for sock in (link.client, link.server):
            if sock in self._masks:
                self._selector.unregister(sock)
                del self._masks[sock]
            if abort:
                _rst(sock)
            else:
                sock.close()


def _reading(flow: _Flow) -> int:
    return selectors.EVENT_READ if not flow.ended and flow.held < HELD_MAX else 0


def _rst(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN: SO_LINGER on, with a timeout of 0."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
