"""Map growth under a long read, and a full disk, on a real LMDB."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from goflypy.models import Message
from goflypy.store import Store
from tests.conftest import desk_of
from tests.test_ws_functional import hello, recv


def _msg(cid: str, text: str) -> Message:
    return Message(cid, 0, 0, "visitor", text)


async def test_map_grows_from_a_tiny_map_while_a_long_read_is_open(
    tmp_path: Path,
) -> None:
    """The resize waits for the reader (LMDB forbids resizing under an open
    read transaction in this process); the reader's snapshot stays whole."""
    with Store(tmp_path, map_size_mb=1) as store:
        visitor, _ = await store.create_visitor("web", "", "")
        cid = visitor.conversation_id
        await store.append_message(cid, _msg(cid, "first"))
        before = store.env.info()["map_size"]
        reading = threading.Event()
        seen: list[int] = []
        sizes: list[int] = []

        def long_reader() -> None:
            with store.env.read() as txn:
                cursor = txn.cursor(db=store.env.dbs["msg"])
                seen.append(sum(1 for _ in cursor))
                reading.set()
                threading.Event().wait(0.5)
                cursor = txn.cursor(db=store.env.dbs["msg"])
                seen.append(sum(1 for _ in cursor))
                # NOTE: no resize may happen under an open read transaction.
                sizes.append(store.env.info()["map_size"])

        reader = threading.Thread(target=long_reader)
        reader.start()
        await asyncio.to_thread(reading.wait)
        text = "长" * 1000
        await asyncio.gather(
            *(store.append_message(cid, _msg(cid, text)) for _ in range(2000))
        )
        await asyncio.to_thread(reader.join)

        assert seen == [1, 1] and sizes == [before]
        assert store.env.info()["map_size"] > before
        assert len(store.list_messages(cid)) == 2001


@contextlib.contextmanager
def small_disk(path: Path, size_mb: int) -> Iterator[bool]:
    """A tmpfs of ``size_mb`` at ``path``; yields False if mounting is denied."""
    path.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    try:
        yield result.returncode == 0
    finally:
        if result.returncode == 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def _fill_disk(path: Path) -> None:
    with path.open("wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()


async def _send(ws: Any, client_id: str, text: str) -> dict[str, Any]:
    await ws.send_json({"type": "message", "client_id": client_id, "text": text})
    while True:
        frame = await recv(ws)
        if frame["type"] in ("ack", "error"):
            return frame


async def test_full_disk_refuses_messages_keeps_reads_and_recovers(
    make_client: Any, tmp_path: Path
) -> None:
    """A real full disk: a 6 MiB tmpfs filled up by a filler file. Where
    mounting is not allowed, the map is capped at its initial 1 MiB instead
    (growth blocked), which fails the same way: MapFullError -> StorageFull."""
    disk = tmp_path / "disk"
    with small_disk(disk, 6) as mounted:
        data_dir = disk / "data" if mounted else tmp_path / "data"
        cap = 0 if mounted else 1
        client: TestClient = await make_client(
            data_dir=str(data_dir),
            map_size_mb=1,
            max_map_mb=cap,
            archive_after_hours=0,
        )
        store = desk_of(client).store
        async with client.ws_connect("/ws/visitor") as ws:
            welcome = await hello(ws)
            token = welcome["visitor_token"]
            assert (await _send(ws, "ok-1", "满盘之前"))["type"] == "ack"
            if mounted:
                await asyncio.to_thread(_fill_disk, disk / "filler")

            refused = None
            for i in range(400):
                frame = await _send(ws, f"fill-{i}", "填" * 1900)
                if frame["type"] == "error":
                    refused = frame
                    break
            assert refused is not None and refused["code"] == "storage_full"
            assert refused["client_id"] == f"fill-{i}"

        # Reads keep working: a returning device gets the whole history.
        async with client.ws_connect("/ws/visitor") as ws:
            again = await hello(ws, token, last_seq=0)
            assert again["visitor_id"] == welcome["visitor_id"]
            replayed = [await recv(ws, "message") for _ in range(again["last_seq"])]
            assert [m["seq"] for m in replayed] == list(range(1, again["last_seq"] + 1))
            assert "满盘之前" in [m["text"] for m in replayed]
            assert store.list_messages(welcome["conversation_id"])

            # Space comes back: the same socket stores again.
            if mounted:
                os.unlink(disk / "filler")
            else:
                store.env.max_map_size = 64 * 1024 * 1024
            ack = await _send(ws, "after", "恢复了")
            assert ack["type"] == "ack"
        await client.close()


@pytest.mark.parametrize("cap_mb", [1])
async def test_capped_map_gives_storage_full_not_a_crash(
    tmp_path: Path, cap_mb: int
) -> None:
    from goflypy.errors import StorageFull

    with Store(tmp_path, map_size_mb=1, max_map_mb=cap_mb) as store:
        visitor, _ = await store.create_visitor("web", "", "")
        cid = visitor.conversation_id
        with pytest.raises(StorageFull):
            for _ in range(2000):
                await store.append_message(cid, _msg(cid, "满" * 1000))
        assert store.list_messages(cid)  # reads still work
        store.env.max_map_size = 0
        await store.append_message(cid, _msg(cid, "ok"))


_HOLD = """
import sys
from pathlib import Path
from goflypy.store import Store
store = Store(Path(sys.argv[1]))
with store.env.read():
    print("reading", flush=True)
    sys.stdin.read()
"""


def test_stale_reader_slots_are_cleared_when_the_store_opens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A process killed inside a read transaction leaves its reader slot
    behind while another process keeps the environment open; the next open
    clears it (a stale slot pins old pages, so the file only grows)."""
    import signal
    import sys

    Store(tmp_path).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _HOLD, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    keeper, victim = procs
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == "reading\n"
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(30)
        with caplog.at_level("WARNING", logger="goflypy.store"):
            store = Store(tmp_path)
        try:
            table = store.env._env.readers().splitlines()[1:]
            readers = {int(line.split()[0]) for line in table if line.strip()}
        finally:
            store.close()
        assert "cleared 1 stale reader slots" in caplog.text
        assert victim.pid not in readers and keeper.pid in readers
    finally:
        for proc in procs:
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(30)
            proc.stdout.close()  # type: ignore[union-attr]
