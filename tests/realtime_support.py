"""Network pieces for realtime tests: a TCP proxy that can stall or slow a
link, and a bare WebSocket client that stops reading. Loopback only."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
from typing import Any


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; can add delay or stop forwarding.

    ``freeze()`` is a silent disconnect as a phone sees it: no FIN, no RST,
    the bytes simply stop arriving in both directions.
    """

    def __init__(self, target_port: int, delay: float = 0.0) -> None:
        self.target_port = target_port
        self.delay = delay
        self.frozen = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def freeze(self) -> None:
        self.frozen = True

    async def _accept(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        server_r, server_w = await asyncio.open_connection(
            "127.0.0.1", self.target_port
        )
        self._writers += [client_w, server_w]
        for src, dst in ((client_r, server_w), (server_r, client_w)):
            task = asyncio.get_running_loop().create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        # Chunks leave in order, each ``delay`` after it arrived.
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                while self.frozen:
                    await asyncio.sleep(3600)
                dst.write(chunk)
                await dst.drain()

        sender = loop.create_task(deliver())
        try:
            while chunk := await src.read(65536):
                while self.frozen:  # bytes stop here, unread and unacknowledged
                    await asyncio.sleep(3600)
                queue.put_nowait((loop.time() + self.delay, chunk))
            while not queue.empty() and not self.frozen:
                await asyncio.sleep(0.01)
            if not self.frozen:
                dst.write_eof()
        except (ConnectionError, OSError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await sender


class StalledClient:
    """A visitor socket that says hello and then never reads again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None

    def open(self, hello: dict[str, Any]) -> None:
        """Connect (blocking, small receive buffer), upgrade, send ``hello``."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", self.port))
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                "GET /ws/visitor HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            response += sock.recv(1)
        assert response.startswith(b"HTTP/1.1 101"), response
        sock.sendall(masked_text_frame(json.dumps(hello).encode()))
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def masked_text_frame(payload: bytes) -> bytes:
    """One client-to-server text frame (clients must mask)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x81, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
