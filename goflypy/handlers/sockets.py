"""One WebSocket as the hub sees it: a bounded send queue, its writer, pings.

A peer never blocks its caller: ``send`` appends to a queue that a writer
task drains, started when there is something to write and gone when there
is not (an idle socket holds no task). Frames that wait together leave in
one write. A socket that falls a whole queue behind is closed with 1013;
its writer never slows anyone else.

Pings are the server's own, not aiohttp's heartbeat, so each one measures a
round trip. The pong deadline follows the smoothed RTT (as TCP sizes its
retransmission timer): a fast link is found dead soon after a missed pong,
a slow mobile link gets the time its RTT shows it needs, up to the
``ping_timeout_s`` ceiling, and is pinged less often. A pong that is only
late because it queues behind our own frames does not kill a socket: while
the bytes waiting for the peer keep shrinking, the peer is reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import struct
import termios
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..hub import encode
from ..log import ws as log
from ..metrics import Metrics

# A close handshake that takes longer is cut off (the peer is not reading).
CLOSE_GRACE_S = 2.0
# A ping timer firing this late means our own loop is stalled: judge later.
LOOP_LAG_GRACE_S = 0.5
# Frames joined into one write when several wait for the same socket.
WRITE_BATCH = 64
# Over this many bytes in the transport's buffer the writer waits for the
# peer (asyncio's own high-water mark), checking every DRAIN_POLL_S.
WRITE_HIGH = 64 * 1024
DRAIN_POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class PingPolicy:
    interval: float
    timeout: float

    @property
    def floor(self) -> float:
        """Least pong wait: radio wake-up on a fast mobile link takes seconds."""
        return self.timeout / 4


class SocketPeer:
    """One open socket."""

    __slots__ = (
        "_metrics",
        "_backlog",
        "_delivered",
        "_due",
        "_ping_no",
        "_ping_sent",
        "_ping_task",
        "_policy",
        "_queue",
        "_sent",
        "_timer",
        "_transport",
        "_writer",
        "closing",
        "kind",
        "label",
        "last_rx",
        "limit",
        "pongs",
        "rttvar",
        "srtt",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        kind: str,
        label: str,
        limit: int,
        policy: PingPolicy,
        metrics: Metrics,
    ) -> None:
        self.ws = ws
        self.kind = kind
        self.label = label
        self.limit = limit
        self.closing = False
        self.last_rx = time.monotonic()
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.pongs = 0
        self._transport = transport
        self._policy = policy
        self._metrics = metrics
        self._sent = metrics.frames_out.labels(kind)
        self._delivered = metrics.messages_out.labels(kind)
        self._queue: deque[str] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._timer: asyncio.Handle | None = None
        self._ping_task: asyncio.Task[None] | None = None
        self._ping_sent = 0.0
        self._ping_no = 0
        self._backlog = 0
        self._due = 0.0

    # Sending

    def send(self, text: str, seq: int | None = None) -> bool:
        if self.closing:
            return False
        if len(self._queue) >= self.limit:
            log.warning("%s is not reading; closing it", self.label)
            self._metrics.dropped.labels("queue_full").inc()
            self.drop(1013, "send queue full")
            return False
        self._queue.append(text)
        if seq is not None:
            self._delivered.inc()
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._drain())
        return True

    def send_frame(self, frame: dict[str, Any]) -> bool:
        return self.send(encode(frame))

    async def _drain(self) -> None:
        queue = self._queue
        transport = self._transport
        sent = 0
        try:
            while queue:
                if len(queue) == 1 or transport is None:
                    await self.ws.send_str(queue.popleft())
                    sent += 1
                    continue
                # Several frames wait (a message and its summary, an echo and
                # its ack): one write, one system call, for all of them.
                count = min(len(queue), WRITE_BATCH)
                data = b"".join(_text_frame(queue.popleft()) for _ in range(count))
                if self.ws.closed or transport.is_closing():
                    raise ConnectionResetError("socket is closing")
                transport.write(data)
                sent += count
                while transport.get_write_buffer_size() > WRITE_HIGH:
                    await asyncio.sleep(DRAIN_POLL_S)
        except (ConnectionError, RuntimeError):
            self.closing = True  # the socket went away; the reader sees it too
            queue.clear()
        finally:
            self._writer = None
            self._sent.inc(sent)

    # Closing

    def drop(self, code: int, reason: str) -> None:
        """Close soon with ``code``; queued frames are discarded."""
        if self.closing:
            return
        self.closing = True
        self._queue.clear()
        asyncio.get_running_loop().create_task(self.close(code, reason))

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code``; a peer that does not answer in time is cut off."""
        self.closing = True
        self._cancel_timer()
        if self._writer is not None:
            self._writer.cancel()
        try:
            async with asyncio.timeout(CLOSE_GRACE_S):
                await self.ws.close(code=code, message=reason.encode())
        except (TimeoutError, ConnectionError, RuntimeError):
            self.abort()

    def abort(self) -> None:
        """Drop the connection at once, without a close handshake."""
        self.closing = True
        self._cancel_timer()
        if self._transport is not None:
            self._transport.abort()

    async def stop(self) -> None:
        """The socket has ended: stop the writer and the pings."""
        self.closing = True
        self._cancel_timer()
        writer = self._writer
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    # Pings

    def start_pings(self) -> None:
        self._arm(self._policy.interval)

    def ping_interval(self) -> float:
        if self.srtt is None:
            return self._policy.interval
        return max(self._policy.interval, 4 * self.srtt)

    def pong_timeout(self) -> float:
        policy = self._policy
        if self.srtt is None:
            return policy.timeout  # nothing measured yet: be generous
        wait = 2 * self.srtt + 4 * self.rttvar
        return min(policy.timeout, max(policy.floor, wait))

    def on_pong(self, payload: bytes) -> None:
        """A pong arrived; a reply to the outstanding ping gives an RTT sample."""
        if not self._ping_sent or payload != self._ping_no.to_bytes(4, "big"):
            return
        rtt = time.monotonic() - self._ping_sent
        self._ping_sent = 0.0
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.pongs += 1
        self._metrics.ping_rtt.observe(rtt)
        self._cancel_timer()
        self._arm(self.ping_interval())

    def _arm(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._due = loop.time() + delay
        self._timer = loop.call_at(self._due, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self.closing:
            return
        loop = asyncio.get_running_loop()
        if self._ping_sent:
            if loop.time() - self._due > LOOP_LAG_GRACE_S:
                self._arm(self.pong_timeout())  # we were stalled, not the peer
            else:
                # A pong read in this loop pass is handled by the socket's
                # task in the next one: decide after it has run.
                self._timer = loop.call_soon(self._judge)
            return
        self._ping_no = (self._ping_no + 1) % 2**32
        self._ping_sent = time.monotonic()
        self._backlog = self.unsent_bytes()
        self._ping_task = asyncio.get_running_loop().create_task(
            self._ping(self._ping_no.to_bytes(4, "big"))
        )
        self._arm(self.pong_timeout())

    def _judge(self) -> None:
        self._timer = None
        if self.closing or not self._ping_sent:
            return
        backlog = self.unsent_bytes()
        alive = (
            self.last_rx > self._ping_sent
            or 0 < backlog < self._backlog
            or self._unread_bytes() > 0
        )
        if alive:
            # Frames still arrive, or the peer is working through what we
            # sent before the ping: the path works, the pong is late.
            self._backlog = backlog
            self._arm(self.pong_timeout())
            return
        log.debug(
            "%s sent no pong in %.1f s; dropping it",
            self.label,
            time.monotonic() - self._ping_sent,
        )
        self._metrics.dropped.labels("dead").inc()
        self.abort()

    def _unread_bytes(self) -> int:
        """Bytes the peer sent that we have not read yet (kernel queue)."""
        return self._ioctl_int(termios.FIONREAD)

    def _ioctl_int(self, request: int) -> int:
        transport = self._transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return 0
        with contextlib.suppress(OSError, ValueError):
            raw = fcntl.ioctl(sock.fileno(), request, b"\0" * 4)
            return int(struct.unpack("i", raw)[0])
        return 0

    def unsent_bytes(self) -> int:
        """Bytes on their way to the peer: in our buffer and the kernel's."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return 0
        # TIOCOUTQ on a TCP socket: bytes the peer has not acknowledged (Linux).
        return transport.get_write_buffer_size() + self._ioctl_int(termios.TIOCOUTQ)

    async def _ping(self, payload: bytes) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.ping(payload)
        self._ping_task = None


def _text_frame(text: str) -> bytes:
    """One final, unmasked WebSocket text frame (RFC 6455 5.2), as servers send."""
    payload = text.encode("utf-8")
    length = len(payload)
    if length < 126:
        return struct.pack("!BB", 0x81, length) + payload
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length) + payload
    return struct.pack("!BBQ", 0x81, 127, length) + payload


class VisitorPeer(SocketPeer):
    """A visitor device; delivers its conversation's messages once, in order."""

    __slots__ = ("_fill", "last_seq")

    def __init__(
        self,
        *args: Any,
        fill: Callable[[int, int], list[tuple[int, str]]],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.last_seq = 0
        self._fill = fill

    def send(self, text: str, seq: int | None = None) -> bool:
        if seq is None:
            return super().send(text)
        if seq <= self.last_seq:
            return True  # already delivered by replay or an earlier catch-up
        # A later message may overtake an earlier one: send the gap first.
        return self.catch_up(seq - 1) and self._send_seq(text, seq)

    def catch_up(self, upto: int) -> bool:
        """Send every stored message after last_seq up to ``upto``."""
        for seq, missing in self._fill(self.last_seq, upto):
            if not self._send_seq(missing, seq):
                return False
        return True

    def _send_seq(self, text: str, seq: int) -> bool:
        self.last_seq = seq
        return super().send(text, seq)
