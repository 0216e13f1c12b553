"""Hot backup, restore and check, in-process and through the command line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

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
