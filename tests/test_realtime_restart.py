"""A restart mid-conversation, with the real server in a subprocess:
SIGTERM closes every socket with 1001, what was acknowledged is kept, and
a client that reconnects and resends sees every message exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.realtime_support import StalledClient, free_port, masked_text_frame

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 30


async def start_server(data: Path, port: int) -> asyncio.subprocess.Process:
    env = dict(os.environ, GOFLY_LOG_LEVEL="warning")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "goflypy",
        "serve",
        "--data-dir",
        str(data),
        "--port",
        str(port),
        "--welcome-text",
        "您好",
        # Bursts of 20 per shopper: rate limits are tested elsewhere.
        "--visitor-rate-per-min",
        "1000",
        "--ip-rate-per-min",
        "10000",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(WAIT_S * 10):
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status == 200:
                        return proc
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start")


class Shopper:
    """A client as the protocol asks: dedupe by seq, resend what has no ack."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.token: str | None = None
        self.seen: list[int] = []
        self.texts: dict[int, str] = {}
        self.unacked: dict[str, str] = {}
        self.acked: dict[str, int] = {}
        self.close_code: int | None = None

    async def session(
        self, http: aiohttp.ClientSession, url: str, sends: int, settle: bool = False
    ) -> None:
        """One connection; with ``settle`` it ends once all is acked and quiet."""
        async with http.ws_connect(url) as ws:
            last = self.seen[-1] if self.seen else 0
            await ws.send_json(
                {"type": "hello", "visitor_token": self.token, "last_seq": last}
            )
            for client_id, text in self.unacked.items():
                await ws.send_json(
                    {"type": "message", "client_id": client_id, "text": text}
                )
            for i in range(sends):
                client_id = f"{self.name}-{len(self.acked) + len(self.unacked)}-{i}"
                self.unacked[client_id] = f"第{i}条"
                await ws.send_json(
                    {"type": "message", "client_id": client_id, "text": f"第{i}条"}
                )
            while True:
                try:
                    msg = await ws.receive(timeout=0.5 if settle else None)
                except TimeoutError:
                    if not self.unacked:
                        break
                    continue
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                self.take(msg.json())
            self.close_code = ws.close_code

    def take(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "welcome":
            self.token = frame["visitor_token"]
        elif frame["type"] == "ack":
            self.unacked.pop(frame["client_id"], None)
            self.acked[frame["client_id"]] = frame["seq"]
        elif frame["type"] == "message":
            assert frame["seq"] not in self.seen, "a message arrived twice"
            assert frame["seq"] == (self.seen[-1] if self.seen else 0) + 1, "gap"
            self.seen.append(frame["seq"])
            self.texts[frame["seq"]] = frame.get("client_id", "")


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_sigterm_closes_with_1001_and_nothing_acked_is_lost(
    tmp_path: Path,
) -> None:
    data, port = tmp_path / "data", free_port()
    url = f"http://127.0.0.1:{port}/ws/visitor"
    shoppers = [Shopper(f"s{i}") for i in range(5)]

    proc = await start_server(data, port)
    # A socket that never reads again, with replies piling up in front of
    # the close frame, must not hold up the others or the exit.
    stalled = StalledClient(port)
    await asyncio.to_thread(stalled.open, {"type": "hello", "visitor_token": None})
    await asyncio.to_thread(_flood, stalled)
    async with aiohttp.ClientSession() as http:
        sessions = [
            asyncio.ensure_future(shopper.session(http, url, sends=20))
            for shopper in shoppers
        ]
        while sum(len(s.acked) for s in shoppers) < 30:
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGTERM)  # mid-conversation
        await asyncio.wait_for(asyncio.gather(*sessions), WAIT_S)
        assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0
    stalled.close()
    assert {s.close_code for s in shoppers} == {1001}

    proc = await start_server(data, port)
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.wait_for(
                asyncio.gather(
                    *(s.session(http, url, sends=1, settle=True) for s in shoppers)
                ),
                WAIT_S,
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), WAIT_S)

    for shopper in shoppers:
        assert len(shopper.acked) == 21 and not shopper.unacked
        # Each acknowledged message was seen once, at the seq of its ack.
        for client_id, seq in shopper.acked.items():
            assert shopper.texts.get(seq) == client_id


def _flood(stalled: StalledClient) -> None:
    """Long messages whose echoes the stalled client will never read."""
    assert stalled.sock is not None
    for i in range(25):
        frame = {"type": "message", "client_id": f"f{i}", "text": "好" * 2000}
        stalled.sock.sendall(masked_text_frame(json.dumps(frame).encode()))
