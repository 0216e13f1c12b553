"""A load-generator process, driven by run.py over stdin/stdout (JSON lines).

    python bench/load/worker.py visitors '{"base": ..., "count": ..., ...}'
    python bench/load/worker.py agents   '{"base": ..., "agents": [...], ...}'

Commands (one JSON object per line on stdin), answered with one line each:
``{"cmd": "open"}``, ``{"cmd": "claim", "ids": [...]}`` (agents),
``{"cmd": "traffic", "rate": R, "seconds": S, "drain": D}`` and
``{"cmd": "quit"}``. Every message text starts with the sender's
CLOCK_MONOTONIC stamp in ns, the same clock in every process, so the
receiver computes end-to-end latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import resource
import sys
import time
from typing import Any

import aiohttp

FILLER = "请问草莓今天下单明天能到吗？谢谢"
CONNECT_CONCURRENCY = 200
CLAIM_WAIT_S = 900
# client_id must stay unique across steps, or the server (rightly) dedupes.
COUNTER = itertools.count()


class Recorder:
    """Latencies (ms) of messages received while a traffic step runs."""

    def __init__(self) -> None:
        self.active = False
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}

    def error(self, frame: dict[str, Any]) -> None:
        code = str(frame.get("code"))
        self.errors[code] = self.errors.get(code, 0) + 1

    def take(self, text: str) -> None:
        if not self.active:
            return
        stamp, _, _rest = text.partition(" ")
        if stamp.isdigit():
            self.latencies.append((time.monotonic_ns() - int(stamp)) / 1e6)


async def read_frames(ws: aiohttp.ClientWebSocketResponse, on_frame: Any) -> None:
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            on_frame(json.loads(msg.data))


async def pace(rate: float, seconds: float, send: Any) -> int:
    """Call ``send()`` ``rate`` times a second for ``seconds``, in 10 ms ticks."""
    sent = 0
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate) - sent
        for _ in range(due):
            await send()
            sent += 1
        await asyncio.sleep(0.01)
    return sent


class Visitors:
    def __init__(self, opts: dict[str, Any]) -> None:
        self.opts = opts
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(None)
        )
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.conversations: list[str] = []
        self.readers: list[asyncio.Task[None]] = []
        self.recorder = Recorder()
        self.errors = 0
        self.closed = 0

    async def open(self) -> dict[str, Any]:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        await asyncio.gather(*(self._open_one(gate) for _ in range(self.opts["count"])))
        return {
            "open": len(self.sockets),
            "errors": self.errors,
            "conversations": self.conversations[: self.opts["active"]],
        }

    async def _open_one(self, gate: asyncio.Semaphore) -> None:
        async with gate:
            try:
                ws = await self.http.ws_connect(self.opts["base"] + "/ws/visitor")
                await ws.send_str(
                    json.dumps(
                        {"type": "hello", "visitor_token": None, "channel": "app"}
                    )
                )
                while True:
                    frame = await ws.receive_json(timeout=60)
                    if frame["type"] == "welcome":
                        break
            except Exception:
                self.errors += 1
                return
        self.sockets.append(ws)
        self.conversations.append(frame["conversation_id"])
        self.readers.append(asyncio.ensure_future(self._read(ws)))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        def on_frame(frame: dict[str, Any]) -> None:
            if frame.get("type") == "message" and frame.get("sender") == "agent":
                self.recorder.take(frame["text"])
            elif frame.get("type") == "error":
                self.recorder.error(frame)

        with contextlib.suppress(Exception):
            await read_frames(ws, on_frame)
        self.closed += 1

    async def close(self) -> None:
        for task in self.readers:
            task.cancel()
        await self.http.close()

    async def traffic(
        self, rate: float, seconds: float, drain: float
    ) -> dict[str, Any]:
        active = self.sockets[: self.opts["active"]]
        turn = itertools.cycle(active)
        counter = COUNTER

        async def send() -> None:
            text = f"{time.monotonic_ns()} {FILLER}"
            ws = next(turn)
            await ws.send_str(
                json.dumps(
                    {"type": "message", "client_id": f"c{next(counter)}", "text": text},
                    ensure_ascii=False,
                )
            )

        self.recorder.latencies = []
        self.recorder.active = True
        sent = await pace(rate, seconds, send)
        await asyncio.sleep(drain)
        self.recorder.active = False
        return {
            "sent": sent,
            "latencies": self.recorder.latencies,
            "closed": self.closed,
            "errors": self.recorder.errors,
        }


class Agents:
    def __init__(self, opts: dict[str, Any]) -> None:
        self.opts = opts
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.sessions: list[aiohttp.ClientSession] = []
        self.mine: list[set[str]] = []
        self.pending: set[str] = set()
        self.claimed = asyncio.Event()
        self.recorder = Recorder()
        self.closed = 0

    async def open(self) -> dict[str, Any]:
        base = self.opts["base"]
        for username in self.opts["agents"]:
            http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(None),
                cookie_jar=aiohttp.CookieJar(unsafe=True),  # cookies for 127.0.0.1
            )
            if self.opts.get("password"):
                async with http.get(base + "/console/login") as page:
                    html = await page.text()
                match = re.search(r'name="csrf_token" value="([^"]+)"', html)
                assert match, "no CSRF field on the sign-in page"
                form = {
                    "username": username,
                    "password": self.opts["password"],
                    "csrf_token": match.group(1),
                }
                async with http.post(
                    base + "/console/login", data=form, allow_redirects=False
                ) as r:
                    assert r.status == 302, f"sign-in failed: {r.status}"
            ws = await http.ws_connect(base + "/ws/agent", headers={"Origin": base})
            index = len(self.sockets)
            self.sessions.append(http)
            self.sockets.append(ws)
            self.mine.append(set())
            asyncio.ensure_future(self._read(ws, index, username))
        return {"open": len(self.sockets)}

    async def _read(
        self, ws: aiohttp.ClientWebSocketResponse, index: int, me: str
    ) -> None:
        mine = self.mine[index]

        def on_frame(frame: dict[str, Any]) -> None:
            kind = frame.get("type")
            if kind == "message" and frame.get("sender") == "visitor":
                if frame["conversation_id"] in mine:
                    self.recorder.take(frame["text"])
            elif kind == "error":
                self.recorder.error(frame)
            elif kind == "conversation":
                summary = frame["conversation"]
                if summary["id"] in mine and summary.get("agent", me) == me:
                    self.pending.discard(summary["id"])
                    if not self.pending:
                        self.claimed.set()

        with contextlib.suppress(Exception):
            await read_frames(ws, on_frame)
        self.closed += 1

    async def close(self) -> None:
        for http in self.sessions:
            await http.close()

    async def claim(self, ids: list[str]) -> dict[str, Any]:
        self.pending = set(ids)
        self.claimed.clear()
        for i, conversation_id in enumerate(ids):
            index = i % len(self.sockets)
            self.mine[index].add(conversation_id)
            await self.sockets[index].send_str(
                json.dumps({"type": "claim", "conversation_id": conversation_id})
            )
            if i % 50 == 49:
                await asyncio.sleep(0.05)
        # Each claim touches every open conversation's queue position: with
        # thousands open on a busy machine this takes minutes, not seconds.
        await asyncio.wait_for(self.claimed.wait(), CLAIM_WAIT_S)
        return {"claimed": len(ids)}

    async def traffic(
        self, rate: float, seconds: float, drain: float
    ) -> dict[str, Any]:
        pairs = [
            (ws, cid)
            for ws, ids in zip(self.sockets, self.mine, strict=True)
            for cid in ids
        ]
        turn = itertools.cycle(pairs)
        counter = COUNTER

        async def send() -> None:
            ws, conversation_id = next(turn)
            frame = {
                "type": "message",
                "conversation_id": conversation_id,
                "client_id": f"a{next(counter)}",
                "text": f"{time.monotonic_ns()} 您好，明天上午送达。",
            }
            await ws.send_str(json.dumps(frame, ensure_ascii=False))

        self.recorder.latencies = []
        self.recorder.active = True
        sent = await pace(rate, seconds, send)
        await asyncio.sleep(drain)
        self.recorder.active = False
        return {
            "sent": sent,
            "latencies": self.recorder.latencies,
            "closed": self.closed,
            "errors": self.recorder.errors,
        }


async def serve(role: str, opts: dict[str, Any]) -> None:
    worker: Any = Visitors(opts) if role == "visitors" else Agents(opts)
    try:
        await _serve_commands(worker)
    finally:
        await worker.close()


async def _serve_commands(worker: Any) -> None:
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        cmd = command["cmd"]
        if cmd == "quit":
            break
        if cmd == "open":
            answer = await worker.open()
        elif cmd == "claim":
            answer = await worker.claim(command["ids"])
        else:
            answer = await worker.traffic(
                command["rate"], command["seconds"], command["drain"]
            )
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def main() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    role, opts = sys.argv[1], json.loads(sys.argv[2])
    asyncio.run(asyncio.wait_for(serve(role, opts), opts.get("max_seconds", 1800)))


if __name__ == "__main__":
    main()
