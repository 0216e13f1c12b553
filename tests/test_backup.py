"""Hot backup, restore and check, in-process and through the command line."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from goflypy.errors import CorruptData, GoflyError
from goflypy.models import Message
from goflypy.store import Store
from goflypy.store.backup import backup, check_store, restore
from goflypy.store.frames import HEADER, list_segments
from goflypy.store.keys import now_ms


def goflypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "goflypy", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _msg(cid: str, text: str) -> Message:
    return Message(cid, 0, 0, "visitor", text)


async def _fill(store: Store, conversations: int, messages: int) -> list[str]:
    cids = []
    for _ in range(conversations):
        visitor, _ = await store.create_visitor("web", "", "")
        cids.append(visitor.conversation_id)
        for i in range(messages):
            await store.append_message(cids[-1], _msg(cids[-1], f"消息{i}"))
    return cids


def _assert_consistent(store: Store, cids: list[str]) -> int:
    """Every conversation's messages run 1..last_seq, hot or archived."""
    total = 0
    for cid in cids:
        conversation = store.get_conversation(cid)
        if conversation is None:
            archived = store.read_archived(cid)
            assert archived is not None, cid
            conversation, messages = archived
        else:
            messages = store.list_messages(cid)
        assert [m.seq for m in messages] == list(range(1, conversation.last_seq + 1))
        total += len(messages)
    return total


async def test_backup_under_write_load_restores_consistent(tmp_path: Path) -> None:
    with Store(tmp_path / "live") as store:
        cids = await _fill(store, 10, 20)
        keys = store.find_idle(now_ms() + 1, 5)
        await asyncio.to_thread(store.archive_blocking, keys)
        hot = [c for c in cids if store.archive_entry(c) is None]

        async def writer() -> int:
            sent = 0
            for i in range(400):
                cid = hot[i % len(hot)]
                await store.append_message(cid, _msg(cid, f"备份中{i}"))
                sent += 1
            return sent

        task = asyncio.ensure_future(writer())
        await asyncio.sleep(0.01)
        manifest = await asyncio.to_thread(backup, store, tmp_path / "bk")
        sent = await task
        assert sent == 400 and "lmdb/data.mdb" in manifest["files"]

    restore(tmp_path / "bk", tmp_path / "restored")
    with Store(tmp_path / "restored") as copy:
        total = _assert_consistent(copy, cids)
        assert 200 <= total <= 600
        report = check_store(copy)
        assert report["ok"], report["problems"]
        assert report["archived_conversations"] == 5


async def test_restore_refuses_a_damaged_backup_or_an_existing_store(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "live") as store:
        await _fill(store, 2, 3)
        await asyncio.to_thread(backup, store, tmp_path / "bk")
        with pytest.raises(GoflyError, match="not empty"):
            backup(store, tmp_path / "bk")
    with pytest.raises(GoflyError, match="already holds a store"):
        restore(tmp_path / "bk", tmp_path / "live")
    moved = restore(tmp_path / "bk", tmp_path / "live", force=True)
    assert moved is not None and (moved / "lmdb" / "data.mdb").exists()

    data = tmp_path / "bk" / "lmdb" / "data.mdb"
    raw = bytearray(data.read_bytes())
    raw[-100] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(CorruptData, match="checksum"):
        restore(tmp_path / "bk", tmp_path / "other")


async def test_check_reports_a_damaged_frame(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        cids = await _fill(store, 3, 2)
        await asyncio.to_thread(
            store.archive_blocking, store.find_idle(now_ms() + 1, 10)
        )
        entry = store.archive_entry(cids[2])
        assert entry is not None
        path = list_segments(store.archive_dir)[entry.seg]
        raw = bytearray(path.read_bytes())
        raw[entry.off + HEADER.size] ^= 0xFF
        path.write_bytes(bytes(raw))
        report = check_store(store)
    assert not report["ok"]
    assert any(cids[2] in p and "checksum" in p for p in report["problems"])
    assert report["segments"][0]["live"] == 2


def test_command_line_backup_check_export_restore(tmp_path: Path) -> None:
    data, bk = str(tmp_path / "data"), str(tmp_path / "bk")

    async def fill() -> str:
        with Store(Path(data)) as store:
            cids = await _fill(store, 2, 3)
            await asyncio.to_thread(
                store.archive_blocking, store.find_idle(now_ms() + 1, 1)
            )
            return cids[0]

    cid = asyncio.run(fill())
    assert goflypy("backup", bk, "--data-dir", data).returncode == 0
    checked = goflypy("check", "--data-dir", data)
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] and report["archived_conversations"] == 1

    out, text = tmp_path / "out.jsonl", tmp_path / "out.txt"
    exported = goflypy(
        "export",
        "--since",
        "2000-01-01",
        "--out",
        str(out),
        "--transcript",
        str(text),
        "--data-dir",
        data,
    )
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert sum(r["type"] == "conversation" for r in rows) == 2
    assert sum(r["type"] == "message" for r in rows) == 6
    assert "访客: 消息0" in text.read_text("utf-8")
    one = goflypy("export", "--conversation", cid, "--data-dir", data)
    assert one.returncode == 0 and one.stdout.count("\n") == 4

    assert goflypy("restore", bk, "--data-dir", data).returncode == 1
    restored = goflypy("restore", bk, "--data-dir", str(tmp_path / "new"))
    assert restored.returncode == 0, restored.stderr


def test_command_line_keys_init_rotate_and_archive_run(tmp_path: Path) -> None:
    data, key_file = str(tmp_path / "data"), str(tmp_path / "keys")
    common = ["--data-dir", data]
    init = goflypy("keys", "init", "--key-file", key_file, *common)
    assert init.returncode == 0, init.stderr
    assert Path(key_file).stat().st_mode & 0o077 == 0
    env_args = ["--config", str(tmp_path / "c.toml")]
    (tmp_path / "c.toml").write_text(f'encryption_key_file = "{key_file}"\n', "utf-8")
    assert goflypy("check", *common).returncode == 1  # no key given: refused
    assert "encrypted" in goflypy("check", *common).stderr
    rotated = goflypy("keys", "rotate", *common, *env_args)
    assert rotated.returncode == 0, rotated.stderr
    assert Path(key_file).read_text().count(":") == 2
    ran = goflypy("archive", "run", "--idle-hours", "0.0001", *common, *env_args)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["archived"] == 0
    checked = goflypy("check", *common, *env_args)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["key_versions"] == [1, 2]


# Backup of a real server taking writes


TTL_S = 0.5
STYLES = ("steady", "steady", "napper", "napper", "napper", "leaver")


async def _shop(
    session: Any,
    url: str,
    name: str,
    acks: dict[str, int],
    stop: asyncio.Event,
    style: str,
    left: asyncio.Future[str],
) -> str:
    """Send until stopped, recording every ack; returns the visitor token.

    A "steady" shopper writes all along; a "napper" goes quiet past the TTL
    now and then, so the archiver takes its conversation and its return
    restores it; a "leaver" writes one burst and stays away (archived)."""
    token = None
    sent = 0
    while not stop.is_set():
        async with session.ws_connect(url) as ws:
            await ws.send_json({"type": "hello", "visitor_token": token, "last_seq": 0})
            while True:
                frame = await ws.receive_json(timeout=10)
                if frame["type"] == "welcome":
                    token = frame["visitor_token"]
                    break
            burst = random.randint(10, 30)
            while not stop.is_set() and (style == "steady" or burst > 0):
                burst -= 1
                sent += 1
                client_id = f"{name}-{sent}"
                await ws.send_json(
                    {"type": "message", "client_id": client_id, "text": f"备份{sent}"}
                )
                while True:
                    frame = await ws.receive_json(timeout=10)
                    if frame["type"] == "ack":
                        acks[client_id] = frame["seq"]
                        break
                    assert frame["type"] != "error", frame
                await asyncio.sleep(0.005)
        if style == "leaver":
            assert token is not None
            left.set_result(token)
            await stop.wait()
        elif style == "napper" and not stop.is_set():
            await asyncio.sleep(TTL_S * random.uniform(2.5, 4))
    assert token is not None
    return token


async def _until_archived(data: Path, token: str) -> None:
    """Wait until the running server has archived this visitor's conversation
    (read from this process: LMDB serves several processes at once)."""
    with Store(data) as live:
        for _ in range(300):
            visitor = live.find_visitor(token)
            if visitor and live.archive_entry(visitor.conversation_id):
                return
            await asyncio.sleep(0.1)
    raise AssertionError("the server archived nothing")


@pytest.mark.timeout(180)
async def test_backup_of_a_running_server_under_writes_restores_consistent(
    tmp_path: Path,
) -> None:
    """`goflypy backup` while a real server (a subprocess) stores messages
    and archives: the restored copy passes the check, every conversation
    runs 1..last_seq with no message twice, and every message acknowledged
    before the backup began is in it with its acknowledged seq."""
    import aiohttp

    from tests.test_crash import free_port, wait_healthy

    data, dest, back = tmp_path / "data", tmp_path / "bk", tmp_path / "back"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [
        "serve",
        "--data-dir",
        str(data),
        "--port",
        str(port),
        "--welcome-text",
        "",
        "--archive-after-hours",
        str(TTL_S / 3600),
        "--archive-interval-s",
        "0.1",
        "--visitor-rate-per-min",
        "1000000",
        "--ip-rate-per-min",
        "1000000",
        "--frames-per-s",
        "1000",
        "--log-level",
        "warning",
    ]
    log_file = (tmp_path / "server.log").open("w")
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "goflypy",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log_file,
    )
    acks: dict[str, int] = {}
    stop = asyncio.Event()
    left: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, base)
            url = base.replace("http", "ws") + "/ws/visitor"
            shoppers = [
                asyncio.ensure_future(
                    _shop(session, url, f"s{i}", acks, stop, style, left)
                )
                for i, style in enumerate(STYLES)
            ]
            # Let conversations be written, then archived and written again.
            while len(acks) < 300:
                await asyncio.wait(shoppers, timeout=0.05)
                for task in shoppers:
                    if task.done():
                        task.result()  # a shopper failed: say why
            await _until_archived(data, await asyncio.wait_for(left, 30))
            before_backup = dict(acks)
            made = await asyncio.to_thread(
                goflypy, "backup", str(dest), "--data-dir", str(data)
            )
            during = len(acks) - len(before_backup)
            await asyncio.sleep(0.3)
            stop.set()
            tokens = await asyncio.gather(*shoppers)
        assert made.returncode == 0, made.stderr
    finally:
        stop.set()
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)
        log_file.close()
    assert during > 0, "the backup ran while no message was stored"

    restored = await asyncio.to_thread(
        goflypy, "restore", str(dest), "--data-dir", str(back)
    )
    assert restored.returncode == 0, restored.stdout + restored.stderr
    with Store(back) as copy:
        report = check_store(copy)
        assert report["ok"], report["problems"]
        assert report["archived_conversations"] > 0
        everything: dict[str | None, int] = {}
        for token in tokens:
            visitor = copy.find_visitor(token)
            assert visitor is not None
            cid = visitor.conversation_id
            conversation = copy.read_conversation(cid)
            assert conversation is not None
            messages = copy.read_messages(cid)
            assert [m.seq for m in messages] == list(
                range(1, conversation.last_seq + 1)
            )
            ids = [m.client_id for m in messages if m.sender == "visitor"]
            assert len(ids) == len(set(ids)), "a message is in the backup twice"
            everything.update({m.client_id: m.seq for m in messages})
        for client_id, seq in before_backup.items():
            assert everything.get(client_id) == seq, f"acked {client_id} not in it"
