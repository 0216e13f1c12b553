"""Archival and restore on a real LMDB and real segment files in a temp dir."""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from pathlib import Path

import pytest

from goflypy.errors import CorruptData
from goflypy.models import Message
from goflypy.store import Store
from goflypy.store.frames import HEADER, MAGIC, list_segments, scan_segment
from goflypy.store.keys import id_bytes, now_ms


def _msg(cid: str, text: str, client_id: str | None = None) -> Message:
    return Message(cid, 0, 0, "visitor", text, client_id=client_id)


async def _conversation(store: Store, count: int, text: str = "消息") -> str:
    visitor, _ = await store.create_visitor("web", "", "")
    cid = visitor.conversation_id
    await asyncio.gather(
        *(
            store.append_message(cid, _msg(cid, f"{text} {i}", f"c{i}"))
            for i in range(count)
        )
    )
    return cid


def _archive_all(store: Store) -> int:
    keys = store.find_idle(now_ms() + 1, 1000)
    return store.archive_blocking(keys).archived


async def test_archive_then_restore_20000_messages(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        cid = await _conversation(store, 20_000, "长会话 😀")
        before = store.list_messages(cid)
        conversation = store.get_conversation(cid)

        assert await asyncio.to_thread(_archive_all, store) == 1
        assert store.get_conversation(cid) is None
        assert store.list_messages(cid) == []
        entry = store.archive_entry(cid)
        assert entry is not None and entry.messages == 20_000

        started = time.perf_counter()
        assert await store.ensure_hot(cid)
        elapsed = time.perf_counter() - started
        assert store.archive_entry(cid) is None
        assert store.get_conversation(cid) == conversation
        after = store.list_messages(cid)
        assert after == before  # original order, original times, same text
        assert [m.seq for m in after] == list(range(1, 20_001))
        assert elapsed < 5, elapsed


async def test_restored_conversation_keeps_dedupe_and_takes_new_messages(
    tmp_path: Path,
) -> None:
    with Store(tmp_path) as store:
        visitor, _ = await store.create_visitor("web", "", "")
        cid = visitor.conversation_id
        first = await store.append_message(cid, _msg(cid, "你好", "k1"), visitor.id)
        await asyncio.to_thread(_archive_all, store)

        # Appending restores by itself; a resent client id gets the same ack.
        again = await store.append_message(cid, _msg(cid, "你好", "k1"), visitor.id)
        assert again.duplicate and again.message.seq == first.message.seq
        more = await store.append_message(cid, _msg(cid, "还在吗", "k2"), visitor.id)
        assert more.message.seq == 2
        assert [m.text for m in store.list_messages(cid)] == ["你好", "还在吗"]


async def test_recently_restored_conversation_is_not_archived_again(
    tmp_path: Path,
) -> None:
    with Store(tmp_path) as store:
        cid = await _conversation(store, 3)
        await asyncio.to_thread(_archive_all, store)
        await store.ensure_hot(cid)
        cutoff = now_ms() - 60_000  # idle for a minute, but restored just now
        assert store.find_idle(cutoff, 10) == []


async def test_message_racing_the_archiver_stays_hot_and_is_never_lost(
    tmp_path: Path,
) -> None:
    """Step 1 (frame written) happens, then a message lands, then step 2:
    step 2 sees the conversation changed and leaves it hot."""
    with Store(tmp_path) as store:
        cid = await _conversation(store, 5)
        keys = store.find_idle(now_ms() + 1, 10)
        snapshot = store._snapshot(keys[0])
        assert snapshot is not None
        from goflypy.store.frames import encode_frame

        frame = encode_frame(store.codec, keys[0], snapshot.contents)
        ((seg, off),) = store.segments.append([frame])

        await store.append_message(cid, _msg(cid, "抢在归档前"))
        archived = await store.env.write(
            store._archive_job(snapshot, seg, off, len(frame))
        )
        assert archived is False
        assert store.archive_entry(cid) is None
        assert [m.seq for m in store.list_messages(cid)] == list(range(1, 7))


async def test_concurrent_archiver_and_writers_lose_nothing(tmp_path: Path) -> None:
    """Many rounds of archive passes beside a steady writer: every message is
    found exactly once, hot or archived."""
    with Store(tmp_path) as store:
        cids = [await _conversation(store, 2) for _ in range(20)]
        stop = threading.Event()
        rounds = 0

        def archiver() -> None:
            nonlocal rounds
            while not stop.is_set():
                _archive_all(store)
                rounds += 1

        thread = threading.Thread(target=archiver)
        thread.start()
        try:
            for i in range(200):
                cid = cids[i % len(cids)]
                await store.append_message(cid, _msg(cid, f"m{i}", f"x{i}"), "v")
        finally:
            stop.set()
            await asyncio.to_thread(thread.join)
        assert rounds > 0
        for cid in cids:
            assert (
                store.get_conversation(cid) is None or store.archive_entry(cid) is None
            )
            await store.ensure_hot(cid)
            seqs = [m.seq for m in store.list_messages(cid)]
            assert seqs == list(range(1, len(seqs) + 1))
        total = sum(len(store.list_messages(c)) for c in cids)
        assert total == 20 * 2 + 200


async def test_corrupted_frame_is_refused_and_the_rest_stays_readable(
    tmp_path: Path,
) -> None:
    with Store(tmp_path) as store:
        cids = [await _conversation(store, 4, f"会话{i}") for i in range(3)]
        await asyncio.to_thread(_archive_all, store)
        entry = store.archive_entry(cids[1])
        assert entry is not None
        path = list_segments(store.archive_dir)[entry.seg]
        data = bytearray(path.read_bytes())
        data[entry.off + HEADER.size + 5] ^= 0xFF
        path.write_bytes(bytes(data))

        with pytest.raises(CorruptData, match="checksum"):
            store.read_archived(cids[1])
        with pytest.raises(CorruptData):
            await store.ensure_hot(cids[1])
        for cid in (cids[0], cids[2]):
            assert await store.ensure_hot(cid)
            assert len(store.list_messages(cid)) == 4
        items = list(scan_segment(path, store.max_frame_bytes))
        assert [item.frame is not None for item in items] == [True, False, True]


async def test_forged_oversized_header_is_refused_before_reading(
    tmp_path: Path,
) -> None:
    with Store(tmp_path, archive_max_frame_mb=1) as store:
        cids = [await _conversation(store, 2) for _ in range(2)]
        await asyncio.to_thread(_archive_all, store)
        entry = store.archive_entry(cids[0])
        assert entry is not None
        path = list_segments(store.archive_dir)[entry.seg]
        data = bytearray(path.read_bytes())
        length_at = entry.off + 4 + 1 + 1 + 2 + 16
        data[length_at : length_at + 4] = struct.pack(">I", 3_000_000_000)
        path.write_bytes(bytes(data))

        with pytest.raises(CorruptData, match="over the 1048576-byte maximum"):
            store.read_archived(cids[0])
        other = store.read_archived(cids[1])
        assert other is not None and len(other[1]) == 2
        items = list(scan_segment(path, store.max_frame_bytes))
        assert "maximum" in items[0].error and items[-1].frame is not None
        assert bytes(data).count(MAGIC) >= 2


async def test_compaction_drops_dead_frames_and_keeps_live_ones(
    tmp_path: Path,
) -> None:
    with Store(tmp_path) as store:
        cids = [await _conversation(store, 3) for _ in range(6)]
        await asyncio.to_thread(_archive_all, store)
        for cid in cids[:4]:  # 4 of 6 frames die
            await store.ensure_hot(cid)
        store.segments.current = None  # as after a restart
        removed = await asyncio.to_thread(store.compact_blocking, 0.5)
        assert removed == 1
        for cid in cids[4:]:
            archived = store.read_archived(cid)
            assert archived is not None and len(archived[1]) == 3
        sizes = [p.stat().st_size for p in list_segments(store.archive_dir).values()]
        assert len(sizes) == 1


async def test_retention_deletes_old_archives_and_their_visitor(
    tmp_path: Path,
) -> None:
    with Store(tmp_path) as store:
        visitor, token = await store.create_visitor("web", "", "")
        cid = visitor.conversation_id
        await store.append_message(cid, _msg(cid, "旧消息", "old"), visitor.id)
        keep = await _conversation(store, 1)
        await asyncio.to_thread(_archive_all, store)
        entry = store.archive_entry(keep)
        assert entry is not None
        cutoff = entry.updated  # only the first one is older than this
        assert await asyncio.to_thread(store.expire_blocking, cutoff) == 1
        assert store.archive_entry(cid) is None and store.archive_entry(keep)
        assert store.find_visitor(token) is None
        assert await store.ensure_hot(cid) is False


async def test_export_reads_archives_without_restoring(tmp_path: Path) -> None:
    import io

    from goflypy.export import select, write_jsonl, write_transcript

    with Store(tmp_path) as store:
        cid = await _conversation(store, 3, "导出\n第二行")
        await asyncio.to_thread(_archive_all, store)
        out, text = io.StringIO(), io.StringIO()
        for conversation, messages, archived in select(store, [cid], 0, None):
            assert archived
            write_jsonl(out, conversation, messages, archived)
            write_transcript(text, conversation, messages)
        assert store.archive_entry(cid) is not None  # still archived
        lines = out.getvalue().splitlines()
        assert len(lines) == 4 and '"导出\\n第二行 0"' in lines[1]
        assert "访客: 导出" in text.getvalue()
        assert id_bytes(cid)
