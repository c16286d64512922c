"""A TCP latency relay in its own process: a server's round-trip time without root or netem.

``tc netem`` needs root and a kernel qdisc this kernel lacks, and no toxiproxy binary can be
installed, so :mod:`sessionbench.bench.harness.compare` puts one of these relays in front of each server
it should place "across a network".  A relay is a separate process (``python -m
sessionbench.bench.harness.relay``, on uvloop when it is installed), so its CPU is its own, not the load
generator's, and it reports that CPU.

What it does to the bytes:

* **Delay, not accumulated.**  Each chunk read from either side is written to the other
  side half the RTT after it was *received*: ``due = received + rtt/2``.  A burst leaves as
  the same burst, rtt/2 later; a queue never adds its own delay on top.  With jitter ``j``
  each chunk's delay is drawn uniformly from ``rtt/2 × [1 - j, 1 + j]`` (a seeded
  ``random.Random``) and raised, when needed, to the previous chunk's due time, so the
  order of a connection's bytes is kept.
* **Connection set-up.**  A TCP handshake costs one round trip before the first byte can
  leave; the kernel completes the client's ``connect`` at once, so the relay holds what a
  client sends before ``accept + rtt`` until then (and delays it like any chunk).  The
  first request of a connection therefore takes two RTTs, as over a network.  When the
  server refuses the relay's own connection, the client's connection is reset at
  ``accept + rtt``; a server that closes or resets is passed on after the delay.
* **Bounded buffers.**  At most ``buffer_bytes`` wait per direction and connection; past
  that the relay stops reading from the sender (TCP flow control pushes back on it) until
  half has drained, and it also stops reading while the receiver's socket buffer is full.
* **Precise timers.**  Event-loop timers have millisecond resolution (libuv's; asyncio's
  epoll selector rounds up to the next millisecond), too coarse for a 0.1 ms one-way
  delay, so the relay arms one Linux ``timerfd`` (CLOCK_MONOTONIC, absolute nanoseconds)
  for the earliest due chunk and lets the loop watch its descriptor, armed early by the
  running median of its own wake-up latency so chunks leave on time, not one wake-up late.
  Where ``timerfd`` is missing it falls back to the loop's timers and says so
  (``"timer": "loop"``).  It asks for ``SCHED_FIFO`` priority 1 where allowed (else
  ``nice -10``): a network is not late because the client's CPU is busy.
* **Half-closes** are passed on in order (``write_eof`` after the data before it).

Control, one line each way on the relay's standard input and output: the relay first
prints ``{"port": N, "loop": ..., "timer": ...}``; ``stats`` answers one JSON object of
cumulative counters (its CPU seconds, chunks and bytes each way, connections, how late
chunks left against their due time as a bucketed histogram, the most bytes ever queued);
``set RTT_US JITTER`` changes the delay for chunks received from then on; end of input
ends the relay, so it never outlives the process that started it.

:class:`Relay` starts and talks to one from the parent; :func:`self_test` proves the
injected RTT with a ping-pong through it (``sessionbench compare --relay-check``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import heapq
import json
import os
import random
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

__all__ = [
    "DEFAULT_BUFFER",
    "EchoServer",
    "Relay",
    "RelayError",
    "RelayFigures",
    "RelayStats",
    "SelfTestRow",
    "SpinEcho",
    "late_bucket",
    "ping_pong",
    "render_self_test",
    "self_test",
    "target_of",
]

#: Bytes that may wait in one direction of one connection before the relay stops reading.
DEFAULT_BUFFER = 1 << 20
#: A timer that fires this close to a chunk's due time releases it (a re-arm costs more).
_EARLY_NS = 2_000
#: The most the timer is armed ahead of a due time to make up for late wake-ups.
_MAX_LEAD_NS = 300_000
_LEAD_STEP_NS = 1_000
_START_TIMEOUT = 15.0
_REPLY_TIMEOUT = 10.0


class RelayError(RuntimeError):
    """The relay could not be started, or stopped answering."""


# ----------------------------------------------------------------------------- lateness histogram


def late_bucket(us: int) -> int:
    """Bucket of a lateness in microseconds: 10 µs wide below 1 ms, 100 µs below 10 ms, then 1 ms."""
    if us < 1000:
        return max(0, us) // 10
    if us < 10_000:
        return 100 + (us - 1000) // 100
    return 190 + min((us - 10_000) // 1000, 9_999)


def bucket_upper_us(index: int) -> int:
    """The upper edge of bucket ``index`` (percentiles are reported at it: never optimistic)."""
    if index < 100:
        return (index + 1) * 10
    if index < 190:
        return 1000 + (index - 99) * 100
    return 10_000 + (index - 189) * 1000


# ----------------------------------------------------------------------------- the relay process


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _TimerFd:
    """One Linux timerfd armed at absolute CLOCK_MONOTONIC nanoseconds (``time.monotonic_ns``)."""

    CLOCK_MONOTONIC = 1
    TFD_NONBLOCK = os.O_NONBLOCK
    TFD_CLOEXEC = os.O_CLOEXEC
    TFD_TIMER_ABSTIME = 1

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        self._create = libc.timerfd_create
        self._settime = libc.timerfd_settime
        fd = self._create(self.CLOCK_MONOTONIC, self.TFD_NONBLOCK | self.TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd: int = fd
        self._spec = _Itimerspec()

    def arm(self, when_ns: int) -> None:
        self._spec.it_value.tv_sec, self._spec.it_value.tv_nsec = divmod(max(1, when_ns), 1_000_000_000)
        if self._settime(self.fd, self.TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.read(self.fd, 8)


class _Counters:
    """What ``stats`` reports (cumulative)."""

    def __init__(self) -> None:
        self.connections = 0
        self.open = 0
        self.refused = 0
        self.chunks = [0, 0]  # [client -> server, server -> client]
        self.bytes = [0, 0]
        self.late: dict[int, int] = {}
        self.max_queued = 0
        self.pauses = 0

    def to_json(self, loop_name: str, timer: str, lead_ns: int) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "t": time.monotonic(),
            "lead_us": lead_ns / 1000,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "connections": self.connections,
            "open": self.open,
            "refused": self.refused,
            "up_chunks": self.chunks[0],
            "up_bytes": self.bytes[0],
            "down_chunks": self.chunks[1],
            "down_bytes": self.bytes[1],
            "late_us": {str(k): v for k, v in sorted(self.late.items())},
            "max_queued": self.max_queued,
            "pauses": self.pauses,
            "loop": loop_name,
            "timer": timer,
        }


_EOF = 1
_CLOSE = 2


class _Pipe:
    """One direction of one connection: chunks waiting for their due time, oldest first."""

    __slots__ = (
        "blocked",
        "conn",
        "dead",
        "direction",
        "dst",
        "last_due",
        "queue",
        "queued",
        "scheduled",
        "src",
        "src_paused",
    )

    def __init__(self, conn: _Conn, direction: int) -> None:
        self.conn = conn
        self.direction = direction
        self.src: asyncio.Transport | None = None
        self.dst: asyncio.Transport | None = None
        self.queue: deque[tuple[int, bytes | int]] = deque()
        self.queued = 0
        self.last_due = 0
        self.scheduled = False
        self.blocked = False  # the receiver's socket buffer is full
        self.src_paused = False
        self.dead = False

    def _due(self, now: int) -> int:
        relay = self.conn.relay
        start = max(now, self.conn.hold) if self.direction == 0 else now
        due = max(start + relay.delay(), self.last_due)
        self.last_due = due
        return due

    def feed(self, data: bytes) -> None:
        relay = self.conn.relay
        counters = relay.counters
        counters.chunks[self.direction] += 1
        counters.bytes[self.direction] += len(data)
        if self.dead:
            return
        now = time.monotonic_ns()
        if relay.half_ns == 0 and not self.queue and self.dst is not None and now >= self.conn.hold:
            self.dst.write(data)
            return
        self._push(self._due(now), data)
        self.queued += len(data)
        counters.max_queued = max(counters.max_queued, self.queued)
        self._flow()

    def feed_marker(self, marker: int) -> None:
        if not self.dead:
            self._push(self._due(time.monotonic_ns()), marker)

    def _push(self, due: int, item: bytes | int) -> None:
        self.queue.append((due, item))
        if not self.scheduled:
            self.conn.relay.schedule(due, self)

    def _flow(self) -> None:
        """Pause the sender while too much waits or the receiver is full; resume below half."""
        limit = self.conn.relay.buffer_bytes
        want_paused = self.blocked or self.queued > limit or (self.src_paused and self.queued > limit // 2)
        if self.src is None or want_paused == self.src_paused:
            return
        self.src_paused = want_paused
        if want_paused:
            self.conn.relay.counters.pauses += 1
            self.src.pause_reading()
        elif not self.src.is_closing():
            self.src.resume_reading()

    def release(self, now: int, window: int) -> int | None:
        """Write what is due by ``now + window``; the next due time, or None (empty, or no server yet)."""
        if self.dead:
            self.queue.clear()
            return None
        if self.dst is None:
            return None  # the server connection is not up yet: upstream_ready() reschedules
        late = self.conn.relay.counters.late
        dst = self.dst
        queue = self.queue
        while queue and queue[0][0] <= now + window:
            due, item = queue.popleft()
            bucket = late_bucket((now - due) // 1000)
            late[bucket] = late.get(bucket, 0) + 1
            if isinstance(item, bytes):
                self.queued -= len(item)
                if not dst.is_closing():
                    dst.write(item)
            elif item == _EOF:
                self.conn.eof_delivered(self, dst)
            else:
                dst.close()
        self._flow()
        return queue[0][0] if queue else None


class _Side(asyncio.Protocol):
    """One end of a relayed connection: 0 is the client's, 1 the server's."""

    def __init__(self, conn: _Conn, which: int) -> None:
        self.conn = conn
        self.which = which

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.conn.attach(self.which, cast(asyncio.Transport, transport))  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.conn.pipes[self.which].feed(data)

    def eof_received(self) -> bool:
        self.conn.pipes[self.which].feed_marker(_EOF)
        return True  # keep the other direction open: a half-close is passed on, not a close

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.lost(self.which)

    def pause_writing(self) -> None:
        pipe = self.conn.pipes[1 - self.which]  # the pipe that writes into this side
        pipe.blocked = True
        pipe._flow()

    def resume_writing(self) -> None:
        pipe = self.conn.pipes[1 - self.which]
        pipe.blocked = False
        pipe._flow()


class _Conn:
    """A client connection and the relay's connection to the server for it."""

    def __init__(self, relay: _RelayServer) -> None:
        self.relay = relay
        self.pipes = (_Pipe(self, 0), _Pipe(self, 1))
        self.transports: list[asyncio.Transport | None] = [None, None]
        self.hold = time.monotonic_ns() + 2 * relay.half_ns  # the emulated handshake's round trip
        self.gone = [False, False]
        self.eofs = 0

    def attach(self, which: int, transport: asyncio.Transport) -> None:
        self.transports[which] = transport
        self.pipes[which].src = transport
        self.pipes[1 - which].dst = transport
        if which == 0:
            self.relay.counters.connections += 1
            self.relay.counters.open += 1
            task = asyncio.get_running_loop().create_task(self._connect_upstream())
            self.relay.tasks.add(task)
            task.add_done_callback(self.relay.tasks.discard)
        else:
            up = self.pipes[0]
            if up.queue and not up.scheduled:
                self.relay.schedule(up.queue[0][0], up)

    async def _connect_upstream(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: _Side(self, 1), *self.relay.target)
        except OSError:
            self.relay.counters.refused += 1
            client = self.transports[0]
            if client is not None:
                delay = max(0.0, (self.hold - time.monotonic_ns()) / 1e9)
                loop.call_later(delay, client.abort)

    def eof_delivered(self, pipe: _Pipe, dst: asyncio.Transport) -> None:
        self.eofs += 1
        if self.eofs >= 2 or not dst.can_write_eof():
            for t in self.transports:
                if t is not None:
                    t.close()
        else:
            dst.write_eof()

    def lost(self, which: int) -> None:
        if self.gone[which]:
            return
        self.gone[which] = True
        self.pipes[1 - which].dead = True  # nothing can be written to this side any more
        self.pipes[1 - which].queue.clear()
        if not self.gone[1 - which]:
            self.pipes[which].feed_marker(_CLOSE)  # pass the close on after the data before it
        if which == 0:
            self.relay.counters.open -= 1


class _RelayServer:
    """The relay's state in its own process: settings, the timer, the heap of due pipes."""

    def __init__(self, target: tuple[str, int], *, rtt_us: int, jitter: float, buffer_bytes: int, seed: int) -> None:
        self.target = target
        self.buffer_bytes = buffer_bytes
        self.counters = _Counters()
        self.rng = random.Random(seed)
        self.half_ns = 0
        self.jitter = 0.0
        self.configure(rtt_us, jitter)
        self.heap: list[tuple[int, int, _Pipe]] = []
        self.seq = 0
        self.armed = 0
        self._target = 0
        self._timed = False
        #: How late the timer's wake-ups are (a running median): the timer is armed that much
        #: before the due time, so chunks leave on time instead of one wake-up late.
        self.lead_ns = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.timer_kind = "timerfd"
        self._timerfd: _TimerFd | None = None
        self._handle: asyncio.TimerHandle | None = None

    def configure(self, rtt_us: int, jitter: float) -> None:
        self.half_ns = max(0, rtt_us) * 500
        self.jitter = min(max(jitter, 0.0), 1.0)

    def delay(self) -> int:
        if not self.jitter:
            return self.half_ns
        return int(self.half_ns * (1.0 + self.jitter * (2.0 * self.rng.random() - 1.0)))

    def start_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self._timerfd = _TimerFd()
        except (OSError, AttributeError):
            self.timer_kind = "loop"
            return
        loop.add_reader(self._timerfd.fd, self._fired)

    def schedule(self, due: int, pipe: _Pipe) -> None:
        pipe.scheduled = True
        self.seq += 1
        heapq.heappush(self.heap, (due, self.seq, pipe))
        if not self.armed or due < self.armed:
            self._arm(due)

    def _arm(self, due: int) -> None:
        self.armed = due
        self._target = due - self.lead_ns
        now = time.monotonic_ns()
        self._timed = self._target > now  # a wake-up for a time already past says nothing about latency
        if self._timerfd is not None:
            self._timerfd.arm(self._target)
            return
        if self._handle is not None:
            self._handle.cancel()
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(max(0.0, (self._target - now) / 1e9), self._fired)

    def _fired(self) -> None:
        if self._timerfd is not None:
            self._timerfd.drain()
        now = time.monotonic_ns()
        if self._timed:  # track the median wake-up latency: a step toward each sample, never its whole size
            diff = now - self._target - self.lead_ns
            step = max(_LEAD_STEP_NS, min(abs(diff) // 8, 20 * _LEAD_STEP_NS))
            self.lead_ns += step if diff > 0 else -step
            self.lead_ns = max(0, min(self.lead_ns, self.half_ns // 2, _MAX_LEAD_NS))
        self.armed = 0
        heap = self.heap
        window = self.lead_ns + _EARLY_NS
        while heap and heap[0][0] <= now + window:
            _, _, pipe = heapq.heappop(heap)
            pipe.scheduled = False
            following = pipe.release(now, window)
            if following is not None:
                pipe.scheduled = True
                self.seq += 1
                heapq.heappush(heap, (following, self.seq, pipe))
            now = time.monotonic_ns()
        if heap:
            self._arm(heap[0][0])


async def _serve(target: tuple[str, int], args: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    relay = _RelayServer(
        target, rtt_us=args["rtt_us"], jitter=args["jitter"], buffer_bytes=args["buffer"], seed=args["seed"]
    )
    relay.start_timer(loop)
    server = await loop.create_server(
        lambda: _Side(_Conn(relay), 0), "127.0.0.1", args["port"], backlog=512, reuse_address=True
    )
    port = server.sockets[0].getsockname()[1]
    loop_name = type(loop).__module__.split(".")[0]
    _reply(
        {"port": port, "loop": loop_name, "timer": relay.timer_kind, "pid": os.getpid(), "priority": args["priority"]}
    )
    done = loop.create_future()

    class Control(asyncio.Protocol):
        def __init__(self) -> None:
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                words = line.decode().split()
                if words[:1] == ["stats"]:
                    _reply(relay.counters.to_json(loop_name, relay.timer_kind, relay.lead_ns))
                elif words[:1] == ["set"] and len(words) == 3:
                    relay.configure(int(words[1]), float(words[2]))
                    _reply({"ok": True})
                else:
                    _reply({"error": f"unknown command {line!r}"})

        def connection_lost(self, exc: Exception | None) -> None:
            if not done.done():
                done.set_result(None)

    await loop.connect_read_pipe(Control, sys.stdin)
    await done
    server.close()


def _reply(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def _set_timer_slack() -> None:
    """1 ns of timer slack for this process (Linux prctl), so wake-ups are not batched by 50 µs."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK


def _raise_priority() -> str:
    """Run ahead of the processes it serves when allowed: a network is not late because a CPU is busy.

    ``SCHED_FIFO`` priority 1 where permitted (root or CAP_SYS_NICE; the kernel still caps
    real-time tasks at 95% of a CPU), else ``nice -10``, else as it is.  Returns which.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        return "fifo"
    except (OSError, AttributeError):
        pass
    try:
        os.nice(-10)
        return "nice"
    except OSError:
        return "normal"


def main(argv: Sequence[str] | None = None) -> int:
    """The relay process that :class:`Relay` starts.

    ``python -m sessionbench.bench.harness.relay --target HOST:PORT --rtt-us N [--jitter F] [--buffer B] [--seed S]``
    """
    import argparse

    p = argparse.ArgumentParser(prog="python -m sessionbench.bench.harness.relay", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", metavar="HOST:PORT", help="the server to relay to")
    p.add_argument("--spin-echo", action="store_true", help="be the self-test's polling echo server instead")
    p.add_argument("--port", type=int, default=0, metavar="PORT", help="port to listen on, 127.0.0.1 (default: free)")
    p.add_argument("--rtt-us", type=int, default=0, metavar="US", help="round-trip time to add, microseconds")
    p.add_argument("--jitter", type=float, default=0.0, metavar="FRACTION", help="uniform jitter of each delay")
    p.add_argument("--buffer", type=int, default=DEFAULT_BUFFER, metavar="BYTES", help="bytes queued per direction")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the jitter (default: 0)")
    p.add_argument("--asyncio", action="store_true", help="use asyncio's own loop even when uvloop is installed")
    p.add_argument("--no-priority", action="store_true", help="do not ask for real-time (or nice -10) scheduling")
    args = p.parse_args(argv)
    if args.spin_echo:
        return _spin_echo()
    if not args.target:
        p.error("--target HOST:PORT is required")
    host, _, port = args.target.rpartition(":")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it (end of input), never Ctrl-C
    _set_timer_slack()
    priority = "normal" if args.no_priority else _raise_priority()
    settings = {"rtt_us": args.rtt_us, "jitter": args.jitter, "buffer": args.buffer, "seed": args.seed}
    settings["port"] = args.port
    settings["priority"] = priority
    runner: Callable[..., Any] = asyncio.run
    if not args.asyncio:
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
    runner(_serve((host or "127.0.0.1", int(port)), settings))
    return 0


# ----------------------------------------------------------------------------- the parent's side


@dataclass(frozen=True, slots=True)
class RelayStats:
    """A relay's cumulative counters at one moment (what ``stats`` answered)."""

    t: float
    cpu_s: float
    connections: int
    refused: int
    up_chunks: int
    up_bytes: int
    down_chunks: int
    down_bytes: int
    late_us: dict[int, int]
    max_queued: int
    pauses: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RelayStats:
        return cls(
            t=float(d["t"]),
            cpu_s=float(d["cpu_s"]),
            connections=int(d["connections"]),
            refused=int(d["refused"]),
            up_chunks=int(d["up_chunks"]),
            up_bytes=int(d["up_bytes"]),
            down_chunks=int(d["down_chunks"]),
            down_bytes=int(d["down_bytes"]),
            late_us={int(k): int(v) for k, v in d["late_us"].items()},
            max_queued=int(d["max_queued"]),
            pauses=int(d["pauses"]),
        )

    def since(self, before: RelayStats) -> RelayFigures:
        """What happened between ``before`` and this moment."""
        late = {k: v - before.late_us.get(k, 0) for k, v in self.late_us.items()}
        return RelayFigures(
            wall_s=self.t - before.t,
            cpu_s=self.cpu_s - before.cpu_s,
            connections=self.connections - before.connections,
            refused=self.refused - before.refused,
            requests=self.up_chunks - before.up_chunks,
            responses=self.down_chunks - before.down_chunks,
            bytes=self.up_bytes + self.down_bytes - before.up_bytes - before.down_bytes,
            late_us={k: v for k, v in late.items() if v > 0},
            max_queued=self.max_queued,
            pauses=self.pauses - before.pauses,
        )


@dataclass(slots=True)
class RelayFigures:
    """What one relay did during a run: its CPU, traffic and how punctually it released chunks.

    ``requests`` counts chunks read from clients (about one per request a driver sent),
    ``responses`` chunks read from the server.  ``late_us`` is the histogram of how late
    chunks were written against their due time (bucket index → count, :func:`late_bucket`).
    """

    wall_s: float
    cpu_s: float
    connections: int = 0
    refused: int = 0
    requests: int = 0
    responses: int = 0
    bytes: int = 0
    late_us: dict[int, int] = field(default_factory=dict)
    max_queued: int = 0
    pauses: int = 0
    rtt_ms: float = 0.0
    jitter: float = 0.0
    target: str = ""

    @property
    def cpu_cores(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_per_request_us(self) -> float | None:
        """Relay CPU per client request, both directions included (its request and its reply)."""
        return self.cpu_s / self.requests * 1e6 if self.requests else None

    def late_percentile_us(self, q: float) -> float | None:
        total = sum(self.late_us.values())
        if not total:
            return None
        rank = q / 100 * total
        seen = 0
        for index in sorted(self.late_us):
            seen += self.late_us[index]
            if seen >= rank:
                return float(bucket_upper_us(index))
        return float(bucket_upper_us(max(self.late_us)))

    def saturated(self, *, max_cores: float = 0.9, max_late_us: float | None = None) -> str | None:
        """Why this relay's figures cannot be trusted (CPU-bound, or chunks left late), else None.

        Saturated: more than ``max_cores`` of CPU over the run (as a saturated generator).
        Behind: the median chunk left more than ``max_late_us`` after its due time (default:
        a quarter of the one-way delay, at least 100 µs), so the typical round trip was
        slower than asked.  A late tail alone (a busy machine's scheduling) is reported, not judged.
        """
        if self.cpu_cores > max_cores:
            return f"saturated ({self.cpu_cores:.2f} cores)"
        limit = max_late_us if max_late_us is not None else max(100.0, self.rtt_ms * 1000 / 2 / 4)
        p50 = self.late_percentile_us(50)
        if p50 is not None and p50 > limit:
            return f"behind its schedule (half its chunks more than {p50:.0f} µs late, over {limit:.0f} µs)"
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "rtt_ms": self.rtt_ms,
            "jitter": self.jitter,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "cpu_cores": self.cpu_cores,  # derived
            "cpu_per_request_us": self.cpu_per_request_us,  # derived
            "connections": self.connections,
            "refused": self.refused,
            "requests": self.requests,
            "responses": self.responses,
            "bytes": self.bytes,
            "late_us": {str(k): v for k, v in sorted(self.late_us.items())},
            "late_p50_us": self.late_percentile_us(50),  # derived
            "late_p99_us": self.late_percentile_us(99),  # derived
            "max_queued": self.max_queued,
            "pauses": self.pauses,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RelayFigures:
        return cls(
            wall_s=float(d["wall_s"]),
            cpu_s=float(d["cpu_s"]),
            connections=int(d.get("connections") or 0),
            refused=int(d.get("refused") or 0),
            requests=int(d.get("requests") or 0),
            responses=int(d.get("responses") or 0),
            bytes=int(d.get("bytes") or 0),
            late_us={int(k): int(v) for k, v in (d.get("late_us") or {}).items()},
            max_queued=int(d.get("max_queued") or 0),
            pauses=int(d.get("pauses") or 0),
            rtt_ms=float(d.get("rtt_ms") or 0.0),
            jitter=float(d.get("jitter") or 0.0),
            target=str(d.get("target") or ""),
        )


class Relay:
    """A relay process in front of ``target`` (host, port), adding ``rtt_ms`` (± ``jitter``).

    ``start()`` spawns ``python -m sessionbench.bench.harness.relay`` and waits for its port;
    ``stats()`` reads its counters; ``set(rtt_ms, jitter)`` changes the delay;
    ``kill()`` sends SIGKILL to its PID (its connections drop as a dead server's do);
    ``stop()`` closes its input (it exits) and kills it if it lingers.  Also a context manager.
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        rtt_ms: float,
        jitter: float = 0.0,
        buffer_bytes: int = DEFAULT_BUFFER,
        seed: int = 0,
        port: int = 0,
        use_uvloop: bool = True,
    ) -> None:
        if rtt_ms < 0 or not 0 <= jitter <= 1 or buffer_bytes < 1:
            raise ValueError(f"relay: rtt {rtt_ms} ms, jitter {jitter}, buffer {buffer_bytes} B out of range")
        self.target = target
        self.rtt_ms = rtt_ms
        self.jitter = jitter
        self.buffer_bytes = buffer_bytes
        self.seed = seed
        self.port = port
        self.use_uvloop = use_uvloop
        self.info: dict[str, Any] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._buffer = b""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Relay:
        root = Path(__file__).resolve().parents[3]
        cmd = [sys.executable, "-m", "sessionbench.bench.harness.relay",
               "--target", f"{self.target[0]}:{self.target[1]}", "--port", str(self.port),
               "--rtt-us", str(round(self.rtt_ms * 1000)), "--jitter", str(self.jitter),
               "--buffer", str(self.buffer_bytes), "--seed", str(self.seed)]  # fmt: skip
        if not self.use_uvloop:
            cmd.append("--asyncio")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        # A file, not a pipe: the relay never blocks on writing to it; closed in stop()/kill().
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env, start_new_session=True
        )
        try:
            self.info = self._read(_START_TIMEOUT)
        except RelayError:
            self.stop()
            raise
        self.port = int(self.info["port"])
        return self

    def _read(self, timeout: float) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.stdout is None:
            raise RelayError("the relay is not running")
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise RelayError(f"the relay (pid {proc.pid}) did not answer within {timeout:g} s")
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    proc.wait(timeout=5)
                    raise RelayError(f"the relay (pid {proc.pid}) exited: {self.errors() or 'no message'}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        data: dict[str, Any] = json.loads(line)
        return data

    def errors(self) -> str:
        """The end of what the relay wrote to its standard error."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-2000:].strip()

    def _ask(self, command: str) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            raise RelayError("the relay is not running")
        try:
            proc.stdin.write(command.encode() + b"\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise RelayError(f"the relay (pid {proc.pid}) is gone: {exc}") from None
        return self._read(_REPLY_TIMEOUT)

    def stats(self) -> RelayStats:
        return RelayStats.from_json(self._ask("stats"))

    def set(self, rtt_ms: float, jitter: float = 0.0) -> None:
        """Delay chunks received from now on by ``rtt_ms`` / 2 each way (± ``jitter``)."""
        self._ask(f"set {round(rtt_ms * 1000)} {jitter}")
        self.rtt_ms, self.jitter = rtt_ms, jitter

    def figures(self, before: RelayStats) -> RelayFigures:
        """What the relay did since ``before``, labelled with its settings."""
        out = self.stats().since(before)
        out.rtt_ms, out.jitter, out.target = self.rtt_ms, self.jitter, f"{self.target[0]}:{self.target[1]}"
        return out

    def url(self, url: str) -> str:
        """``url`` (postgresql:// or redis://) with its host and port replaced by this relay's."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(url)
        auth = parts.netloc.rpartition("@")[0]
        return urlunsplit(parts._replace(netloc=(auth + "@" if auth else "") + f"127.0.0.1:{self.port}"))

    def kill(self) -> None:
        """SIGKILL the relay (its own PID): open connections drop, new ones are refused."""
        from sessionbench.bench.servers import kill_child  # here: the relay's own process need not import it

        if self._proc is None:
            return
        kill_child(self._proc)
        self._close_pipes()

    def stop(self) -> None:
        """End the relay: close its input (it exits), SIGKILL after 5 s."""
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_pipes()
        self._proc = None

    def _close_pipes(self) -> None:
        if self._proc is None:
            return
        for stream in (self._proc.stdin, self._proc.stdout, self._stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._stderr = None

    def __enter__(self) -> Relay:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def target_of(url: str) -> tuple[str, int]:
    """(host, port) of a postgresql:// or redis:// URL (default ports 5432 and 6379)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    default = 6379 if parts.scheme.startswith("redis") or parts.scheme == "valkey" else 5432
    return parts.hostname or "127.0.0.1", parts.port or default


# ----------------------------------------------------------------------------- self-test


class EchoServer:
    """A blocking echo server on 127.0.0.1 in a background thread (one thread per connection)."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="echo-accept", daemon=True)

    def _accept(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), name="echo", daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(1 << 16)
                except OSError:
                    return
                if not data:
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_WR)
                    return
                try:
                    conn.sendall(data)
                except OSError:
                    return

    def __enter__(self) -> EchoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=5)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    parts: list[bytes] = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("connection closed mid-message")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _recv_spinning(sock: socket.socket, n: int, deadline: float) -> bytes:
    """``n`` bytes from a non-blocking socket, polling it without sleeping (bounded by ``deadline``)."""
    parts: list[bytes] = []
    while n:
        try:
            chunk = sock.recv(n)
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError("no echo before the deadline") from None
            continue
        if not chunk:
            raise ConnectionError("connection closed mid-message")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def ping_pong(port: int, count: int, *, size: int = 64, timeout: float = 10.0, spin: bool = False) -> list[float]:
    """Round-trip times in milliseconds of ``count`` pings of ``size`` bytes to an echo on ``port``.

    The connection is made (and its set-up round trip paid) before the first timed ping.
    ``spin``: wait for each echo by polling the socket instead of sleeping in the kernel, so the
    client's own wake-up (tens of µs on an idle virtual machine) is not part of the figure.
    """
    payload = bytes(range(256)) * (size // 256 + 2)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(payload[:size])
        _recv_exactly(sock, size)
        if spin:
            sock.setblocking(False)
        deadline = time.monotonic() + timeout
        out: list[float] = []
        for i in range(count):
            message = payload[i % 256 : i % 256 + size]
            t0 = time.perf_counter_ns()
            sock.send(message)  # 64 B always fit in an empty socket buffer
            got = _recv_spinning(sock, size, deadline) if spin else _recv_exactly(sock, size)
            if got != message:
                raise ConnectionError("the echo came back different")
            out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def _spin_echo(limit_s: float = 300.0) -> int:
    """``--spin-echo``: an echo server that polls its sockets instead of sleeping (the self-test's far end).

    Prints ``{"port": N}``, serves one connection at a time, and ends when its input closes
    or after ``limit_s`` seconds, whichever comes first.
    """
    import select

    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    _reply({"port": server.getsockname()[1], "pid": os.getpid()})
    deadline = time.monotonic() + limit_s
    conns: list[socket.socket] = []
    spins = 0
    while time.monotonic() < deadline:
        spins += 1
        if spins % 2000 == 0 and select.select([sys.stdin], [], [], 0)[0] and not os.read(sys.stdin.fileno(), 1):
            break  # the parent closed our input: done
        with contextlib.suppress(BlockingIOError):
            conn, _ = server.accept()
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conns.append(conn)
        for conn in list(conns):
            try:
                data = conn.recv(1 << 16)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                conn.close()
                conns.remove(conn)
                continue
            conn.setblocking(True)
            conn.sendall(data)
            conn.setblocking(False)
    return 0


class SpinEcho:
    """A ``--spin-echo`` process (its own PID, stopped by closing its input, killed if it lingers)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> SpinEcho:
        root = Path(__file__).resolve().parents[3]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "sessionbench.bench.harness.relay", "--spin-echo"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._proc.stdout, selectors.EVENT_READ)
            if not sel.select(_START_TIMEOUT):
                self.__exit__()
                raise RelayError("the spinning echo server did not start")
        self.port = int(json.loads(self._proc.stdout.readline())["port"])
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        self._proc = None


@dataclass(frozen=True, slots=True)
class SelfTestRow:
    """One line of the self-test: the RTT asked for and what a ping-pong through the relay added.

    ``injected_ms`` is what the delay adds: the p50 through the relay at this RTT minus the p50
    through the same relay at 0 ms (its forwarding hop, ``hop_ms`` over a direct ping-pong,
    is a cost of having a relay at all and is reported apart).  ``end_to_end_ms`` is the p50
    through the relay minus the direct p50: the hop and the delay together.
    """

    asked_ms: float
    injected_ms: float
    end_to_end_ms: float
    direct_ms: float
    hop_ms: float
    pings: int
    relay_cpu_per_ping_us: float | None

    @property
    def error_ms(self) -> float:
        return self.injected_ms - self.asked_ms

    @property
    def tolerance_ms(self) -> float:
        """10% of the RTT asked for, or 50 µs, whichever is larger."""
        return max(0.1 * self.asked_ms, 0.05)

    @property
    def ok(self) -> bool:
        return abs(self.error_ms) <= self.tolerance_ms


SELF_TEST_RTTS: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)


def _floor_p50(port: int, runs: int = 3, pings: int = 200) -> float:
    """The lowest of ``runs`` ping-pong medians: a disturbance only ever adds to a median."""
    return min(statistics.median(ping_pong(port, pings, spin=True)) for _ in range(runs))


def self_test(
    rtts_ms: Sequence[float] = SELF_TEST_RTTS, *, seconds_each: float = 0.5, use_uvloop: bool = True
) -> tuple[list[SelfTestRow], dict[str, Any]]:
    """Ping-pong straight to an echo server, through one relay at 0 ms, and through it at each RTT.

    Each RTT gets about ``seconds_each`` of pings (20 to 1000 of them); the relay is told
    the new RTT between rows (``set``), so one relay process serves them all.  Both ends of
    the ping-pong poll their sockets instead of sleeping (the echo server is a process of its
    own, :class:`SpinEcho`), so the figure is the relay's, not the wake-ups of an idle client
    and server.  Returns the rows and what the relay said about itself.
    """
    rows: list[SelfTestRow] = []
    info: dict[str, Any] = {}
    with SpinEcho() as echo:
        direct = _floor_p50(echo.port)
        with Relay(("127.0.0.1", echo.port), rtt_ms=0.0, use_uvloop=use_uvloop) as relay:
            hop = _floor_p50(relay.port)
            for rtt in rtts_ms:
                relay.set(rtt)
                count = int(min(1000, max(20, seconds_each / (rtt / 1000 + 1e-4))))
                before = relay.stats()
                through = statistics.median(ping_pong(relay.port, count, spin=True))
                figures = relay.figures(before)
                per_ping = figures.cpu_s / count * 1e6 if count else None
                rows.append(SelfTestRow(rtt, through - hop, through - direct, direct, hop - direct, count, per_ping))
            info = dict(relay.info)
    return rows, info


def render_self_test(rows: Sequence[SelfTestRow], info: dict[str, Any] | None = None) -> str:
    lines = [
        "relay self-test: ping-pong of 64 B, both ends polling; injected = p50 through the relay at the RTT"
        " minus p50 through it at 0 ms",
        f"{'asked (ms)':>11}{'injected (ms)':>15}{'error (µs)':>12}{'allowed (µs)':>14}{'end to end (ms)':>17}"
        f"{'pings':>7}{'relay CPU/ping (µs)':>21}  verdict",
    ]
    for r in rows:
        cpu = f"{r.relay_cpu_per_ping_us:.1f}" if r.relay_cpu_per_ping_us is not None else "—"
        lines.append(
            f"{r.asked_ms:>11g}{r.injected_ms:>15.3f}{r.error_ms * 1000:>12.0f}{r.tolerance_ms * 1000:>14.0f}"
            f"{r.end_to_end_ms:>17.3f}{r.pings:>7}{cpu:>21}  {'ok' if r.ok else 'OFF'}"
        )
    if rows:
        lines.append(
            f"direct ping-pong p50 (no relay): {rows[0].direct_ms * 1000:.0f} µs; the relay's own hop at 0 ms adds"
            f" {rows[0].hop_ms * 1000:.0f} µs (end to end = hop + injected)"
        )
    if info:
        lines.append(
            f"relay: {info.get('loop')} event loop, {info.get('timer')} timer, {info.get('priority')} scheduling"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
