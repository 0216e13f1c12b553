"""SIGKILL a real server again and again while clients write and the archiver
archives; afterwards every acknowledged message is there exactly once, in order.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from goflypy.models import Message
from goflypy.store import Store
from goflypy.store.backup import check_store

KILLS = 55
CLIENTS = 8
TTL_S = 0.4
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Shopper:
    """One visitor device that remembers every ack it received."""

    name: str
    token: str | None = None
    acked: dict[str, int] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    pending: str | None = None
    sent: int = 0
    naps: int = 0

    def next_id(self) -> str:
        if self.pending is None:
            self.sent += 1
            self.pending = f"{self.name}-{self.sent}"
        return self.pending

    async def run(
        self, session: aiohttp.ClientSession, url: str, stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            try:
                await self._session(session, url, stop)
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                await asyncio.sleep(0.03)

    async def _session(
        self, session: aiohttp.ClientSession, url: str, stop: asyncio.Event
    ) -> None:
        async with session.ws_connect(
            url, timeout=aiohttp.ClientWSTimeout(ws_close=1)
        ) as ws:
            await ws.send_json(
                {
                    "type": "hello",
                    "visitor_token": self.token,
                    "channel": "app",
                    "last_seq": 1 << 40,
                }
            )
            welcome = await self._until(ws, "welcome")
            self.token = welcome["visitor_token"]
            while not stop.is_set():
                client_id = self.next_id()
                await ws.send_json(
                    {
                        "type": "message",
                        "client_id": client_id,
                        "text": f"第{client_id}条 ✓",
                    }
                )
                reply = await self._until(ws, "ack", "error")
                if reply["type"] == "ack":
                    assert (
                        self.acked.setdefault(client_id, reply["seq"]) == reply["seq"]
                    )
                    if client_id not in self.order:
                        self.order.append(client_id)
                    self.pending = None
                else:
                    await asyncio.sleep(0.05)
                if random.random() < 0.08:
                    self.naps += 1
                    break  # go quiet past the TTL so the archiver takes us
        await asyncio.sleep(TTL_S * random.uniform(1.5, 3))

    async def _until(self, ws: Any, *kinds: str) -> dict[str, Any]:
        while True:
            msg = await asyncio.wait_for(ws.receive(), 5)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise ConnectionError("socket closed")
            frame = json.loads(msg.data)
            if frame["type"] in kinds:
                return frame


class ForkServer:
    """tests/crash_server.py: a warmed parent forking one server per start."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ask(self, line: str) -> str:
        assert self.proc.stdin
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.answer()

    async def answer(self) -> str:
        assert self.proc.stdout
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        return line.decode().strip()


async def wait_healthy(session: aiohttp.ClientSession, base: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            async with session.get(base + "/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.02)
    raise AssertionError("server did not come up")


def visitor_messages(store: Store, token: str) -> list[Message]:
    visitor = store.find_visitor(token)
    assert visitor is not None
    cid = visitor.conversation_id
    if store.get_conversation(cid) is not None:
        return store.list_messages(cid)
    archived = store.read_archived(cid)
    assert archived is not None, f"conversation {cid} is neither hot nor archived"
    return archived[1]


async def _kill_loop(fork: ForkServer, shoppers: list[Shopper], base: str) -> None:
    """Start, let the shoppers write for a random while, SIGKILL; KILLS times."""
    assert await fork.answer() == "ready"
    stop = asyncio.Event()
    rng = random.Random(4)
    async with aiohttp.ClientSession() as session:
        url = base + "/ws/visitor"
        tasks = [asyncio.ensure_future(s.run(session, url, stop)) for s in shoppers]
        try:
            for _kill in range(KILLS):
                pid = int(await fork.ask("start"))
                try:
                    await wait_healthy(session, base)
                    await asyncio.sleep(rng.uniform(0.15, 0.9))
                finally:
                    os.kill(pid, signal.SIGKILL)
                    await fork.ask(f"reap {pid}")
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_sigkill_loses_no_acknowledged_message(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    flags = {
        "data_dir": str(data),
        "port": port,
        "log_level": "info",
        "archive_after_hours": TTL_S / 3600,
        "archive_interval_s": 0.1,
        "visitor_rate_per_min": 1_000_000,
        "welcome_text": "",
    }
    with (tmp_path / "server.log").open("w") as server_log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.crash_server",
            json.dumps(flags),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=server_log,
        )
    shoppers = [Shopper(f"s{i}") for i in range(CLIENTS)]
    try:
        await _kill_loop(ForkServer(proc), shoppers, f"http://127.0.0.1:{port}")
    finally:
        # Closing stdin makes the fork server SIGKILL any server still up.
        proc.stdin.close()  # type: ignore[union-attr]
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    # The store opens cleanly after the last kill (stale readers cleared).
    with Store(data) as store:
        for shopper in shoppers:
            assert shopper.token is not None and shopper.acked
            messages = visitor_messages(store, shopper.token)
            assert [m.seq for m in messages] == list(range(1, len(messages) + 1))
            mine = [m for m in messages if m.sender == "visitor"]
            ids = [m.client_id for m in mine]
            assert len(ids) == len(set(ids)), "a message is stored twice"
            stored = {m.client_id: m.seq for m in mine}
            for client_id, seq in shopper.acked.items():
                assert stored.get(client_id) == seq, f"acked {client_id} lost"
            assert [c for c in ids if c in shopper.acked] == shopper.order
        report = check_store(store)
    log_text = (tmp_path / "server.log").read_text("utf-8", "replace")
    archived = sum(int(n) for n in re.findall(r"PassReport\(archived=(\d+)", log_text))
    total = sum(len(s.acked) for s in shoppers)
    naps = sum(s.naps for s in shoppers)
    print(f"\n{KILLS} kills, {total} acked, {naps} naps, {archived} archived")
    assert total > 200 and archived > 20
    assert report["ok"], report["problems"]
