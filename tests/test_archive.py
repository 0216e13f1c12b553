"""Archival and restore on a real LMDB and real segment files in a temp dir."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from goflypy.errors import CorruptData
from goflypy.models import Message, Note
from goflypy.store import Store
from goflypy.store.frames import HEADER, MAGIC, list_segments, scan_segment
from goflypy.store.keys import id_bytes, now_ms
from tests.conftest import add_agent, desk_of, sign_in


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


async def test_notes_archive_restore_and_export_only_as_internal(
    tmp_path: Path,
) -> None:
    import io
    import json

    from goflypy.export import write_jsonl, write_transcript

    secret = "内部备注：勿告诉顾客"
    with Store(tmp_path) as store:
        cid = await _conversation(store, 3)
        added = await store.add_note(
            cid, Note(0, 0, 0, "amy", "Amy", secret, "n1"), 10, 1000
        )
        assert (added.note.id, added.note.after_seq) == (1, 3)
        hot = store.get_conversation(cid)
        assert hot is not None and hot.last_seq == 3 and len(hot.notes) == 1

        assert await asyncio.to_thread(_archive_all, store) == 1
        archived = store.read_archived(cid)
        assert archived is not None
        assert [n["text"] for n in archived[0].notes] == [secret]
        assert secret not in [m.text for m in archived[1]]

        out, transcript = io.StringIO(), io.StringIO()
        write_jsonl(out, archived[0], archived[1], True)
        write_transcript(transcript, archived[0], archived[1])
        rows = [json.loads(line) for line in out.getvalue().splitlines()]
        notes = [row for row in rows if row.get("text") == secret]
        assert len(notes) == 1
        assert notes[0]["type"] == "note" and notes[0]["internal"] is True
        assert notes[0]["agent"] == "amy" and notes[0]["after_seq"] == 3
        assert [row["type"] for row in rows].count("message") == 3
        assert secret not in transcript.getvalue()

        # Restored with the conversation; numbering carries on.
        assert await store.ensure_hot(cid)
        back = store.get_conversation(cid)
        assert back is not None and back.notes == hot.notes
        again = await store.add_note(
            cid, Note(0, 0, 0, "bob", "Bob", "第二条", "n1"), 10, 1000
        )
        assert again.note.id == 2 and not again.duplicate
        assert [m.seq for m in store.list_messages(cid)] == [1, 2, 3]


async def test_text_bytes_and_utc_ms_survive_every_path(tmp_path: Path) -> None:
    """Live, history, archive, restore and export keep str as str, bytes as
    bytes, and times as integer UTC epoch milliseconds."""
    import io
    import json

    from goflypy.export import message_row, utc_text, write_jsonl, write_transcript

    text = "草莓🍓\u200b\n\tend\x00 <b>&amp;</b> ‮"
    meta = {"blob": b"\x00\xff\xc1", "note": "备注", "n": 7}
    with Store(tmp_path) as store:
        visitor, _ = await store.create_visitor("web", "", "")
        cid = visitor.conversation_id
        before_ms = now_ms()
        stored = await store.append_message(
            cid, Message(cid, 0, 0, "visitor", text, client_id="t1", meta=meta)
        )
        assert before_ms <= stored.message.ts <= now_ms()

        def check(message: Message) -> None:
            assert type(message.text) is str and message.text == text
            assert type(message.meta["blob"]) is bytes
            assert message.meta == meta
            assert type(message.ts) is int and message.ts == stored.message.ts

        check(store.list_messages(cid)[0])
        await asyncio.to_thread(_archive_all, store)
        archived = store.read_archived(cid)
        assert archived is not None
        check(archived[1][0])
        assert archived[0].created == visitor.first_seen
        check(store.read_messages(cid)[0])  # read-only from the archive

        out, transcript = io.StringIO(), io.StringIO()
        write_jsonl(out, archived[0], archived[1], True)
        write_transcript(transcript, archived[0], archived[1])
        row = json.loads(out.getvalue().splitlines()[1])
        assert row == json.loads(json.dumps(message_row(archived[1][0])))
        assert row["text"] == text and row["ts"] == stored.message.ts
        assert f"[{utc_text(stored.message.ts)}] 访客: 草莓🍓" in transcript.getvalue()

        assert await store.ensure_hot(cid)
        check(store.list_messages(cid)[0])
        assert store.get_conversation(cid).created == visitor.first_seen  # type: ignore[union-attr]


async def test_history_list_names_closed_and_archived_conversations(
    tmp_path: Path,
) -> None:
    with Store(tmp_path) as store:
        cids = [await _conversation(store, 2) for _ in range(5)]

        def close(conversation: Any) -> None:
            conversation.state = "closed"

        await store.update_conversation(cids[1], close)
        keys = [bytes.fromhex(c) for c in (cids[2], cids[3])]
        assert (await asyncio.to_thread(store.archive_blocking, keys)).archived == 2

        refs = store.list_history(10)
        assert [r.id for r in refs] == [cids[3], cids[2], cids[1]]
        assert [r.archived for r in refs] == [True, True, False]
        assert refs[0].messages == 2 and refs[2].state == "closed"
        assert [r.id for r in store.list_history(10, before=cids[3])] == [
            cids[2],
            cids[1],
        ]
        assert [r.id for r in store.list_history(1)] == [cids[3]]


# Through a real server: agents and returning visitors meet archived
# conversations.


async def _visitor_with_history(client: Any, count: int, text: str) -> tuple[str, str]:
    """A visitor (token, conversation id) with ``count`` stored messages."""
    from tests.test_ws_functional import hello

    async with client.ws_connect("/ws/visitor") as ws:
        welcome = await hello(ws)
    store = desk_of(client).store
    cid = welcome["conversation_id"]
    for i in range(count):
        await store.append_message(
            cid, _msg(cid, f"{text}{i}", f"h{i}"), welcome["visitor_id"]
        )
    return welcome["visitor_token"], cid


async def _agent(client: Any) -> Any:
    from tests.test_ws_functional import origin, recv

    await add_agent(client)
    assert (await sign_in(client)).status == 302
    ws = await client.ws_connect("/ws/agent", headers={"Origin": origin(client)})
    await recv(ws, "welcome")
    return ws


async def _reply(ws: Any, *kinds: str) -> dict[str, Any]:
    from tests.test_ws_functional import recv

    while True:
        frame = await recv(ws)
        if frame["type"] in kinds:
            return frame


async def test_agent_actions_restore_an_archived_conversation_first(
    make_client: Any,
) -> None:
    client = await make_client(archive_after_hours=0, welcome_text="")
    store = desk_of(client).store
    _token, cid = await _visitor_with_history(client, 3, "早先的话")
    expected = {
        "claim": lambda f: f.get("conversation", {}).get("state") == "assigned",
        "message": lambda f: f["type"] == "ack",
        "note": lambda f: f["type"] == "ack",
        "close": lambda f: f.get("conversation", {}).get("state") == "closed",
        "open": lambda f: f["type"] == "history",
    }
    agent = await _agent(client)
    try:
        for kind, wanted in expected.items():
            assert await asyncio.to_thread(_archive_all, store) >= 1
            assert store.get_conversation(cid) is None
            frame: dict[str, Any] = {"type": kind, "conversation_id": cid}
            if kind == "message":
                frame.update(client_id="a1", text="您好，还在吗")
            if kind == "note":
                frame.update(client_id="n1", text="归档前后都在的备注")
            await agent.send_json(frame)
            while True:
                answer = await _reply(agent, "history", "ack", "error", "conversation")
                assert answer["type"] != "error", (kind, answer)
                if wanted(answer):
                    break
            conversation = store.get_conversation(cid)
            assert conversation is not None and store.archive_entry(cid) is None
            texts = [m.text for m in store.list_messages(cid)]
            assert texts[:3] == ["早先的话0", "早先的话1", "早先的话2"], kind
        assert answer["type"] == "history" and answer["archived"] is False
        assert [m["seq"] for m in answer["messages"]] == list(
            range(1, conversation.last_seq + 1)
        )
        assert "您好，还在吗" in [m["text"] for m in answer["messages"]]
        assert [n["text"] for n in answer["notes"]] == ["归档前后都在的备注"]
        assert conversation.state == "closed"
    finally:
        await agent.close()


async def test_console_past_list_shows_archived_conversations(
    make_client: Any,
) -> None:
    client = await make_client(archive_after_hours=0, welcome_text="")
    store = desk_of(client).store
    _token, old = await _visitor_with_history(client, 2, "归档的")
    await asyncio.to_thread(_archive_all, store)
    _token, live = await _visitor_with_history(client, 1, "还开着")
    agent = await _agent(client)
    try:
        await agent.send_json({"type": "past"})
        past = await _reply(agent, "past")
        assert [c["id"] for c in past["conversations"]] == [old]
        item = past["conversations"][0]
        assert item["archived"] is True and item["messages"] == 2
        assert item["visitor_name"].startswith("访客") and not past["more"]
        assert store.get_conversation(live) is not None

        await agent.send_json({"type": "past", "before": "zz"})
        assert (await _reply(agent, "error"))["code"] == "bad_frame"
        await agent.send_json({"type": "open", "conversation_id": old})
        history = await _reply(agent, "history")
        assert [m["text"] for m in history["messages"]] == ["归档的0", "归档的1"]
        assert store.archive_entry(old) is None  # restored on demand
    finally:
        await agent.close()


def _fill_until_full(store: Store, cid: str) -> None:
    """Append ever smaller messages until even a small one is refused."""
    from goflypy.errors import StorageFull

    for size in (3000, 600, 60):
        with contextlib.suppress(StorageFull):
            for i in range(100_000):
                store.env.write_blocking(
                    _append_job(store, cid, i, "满" * size)  # one per commit
                )


def _append_job(store: Store, cid: str, i: int, text: str) -> Any:
    from goflypy.store.keys import message_key, pack_record

    key = message_key(bytes.fromhex(cid), 1_000_000 + i)
    value = pack_record(Message(cid, 1_000_000 + i, now_ms(), "robot", text))

    def job(txn: Any) -> None:
        if txn.get(key, db=store.env.dbs["msg"]) is None:
            txn.put(key, value, db=store.env.dbs["msg"])
        else:
            txn.put(key + b"x", value, db=store.env.dbs["msg"])

    return job


async def test_full_disk_serves_archived_history_read_only(make_client: Any) -> None:
    """No room to restore: the returning visitor and the agent still read
    the whole conversation from its frame; writes get storage_full with
    nothing lost; when room returns the next message restores and lands."""
    from tests.test_ws_functional import hello, recv

    client = await make_client(
        archive_after_hours=0, welcome_text="", map_size_mb=1, max_map_mb=1
    )
    store = desk_of(client).store
    token, cid = await _visitor_with_history(client, 60, "很长的一段历史" * 20)
    _other, filler = await _visitor_with_history(client, 0, "")
    keys = [bytes.fromhex(cid)]
    assert (await asyncio.to_thread(store.archive_blocking, keys)).archived == 1
    await asyncio.to_thread(_fill_until_full, store, filler)

    async with client.ws_connect("/ws/visitor") as ws:
        welcome = await hello(ws, token, last_seq=0)
        assert welcome["conversation_id"] == cid and welcome["last_seq"] == 60
        replay = [await recv(ws, "message") for _ in range(60)]
        assert [m["seq"] for m in replay] == list(range(1, 61))
        assert replay[0]["text"].startswith("很长的一段历史")
        assert (await recv(ws, "status"))["state"] == "robot"
        await ws.send_json({"type": "message", "client_id": "late", "text": "在吗"})
        refused = await recv(ws, "error")
        assert refused["code"] == "storage_full" and refused["client_id"] == "late"

        agent = await _agent(client)
        try:
            await agent.send_json({"type": "open", "conversation_id": cid})
            history = await _reply(agent, "history", "error")
            assert history["type"] == "history" and history["archived"] is True
            assert len(history["messages"]) == 60
            await agent.send_json({"type": "claim", "conversation_id": cid})
            assert (await _reply(agent, "error"))["code"] == "storage_full"
        finally:
            await agent.close()
        assert store.get_conversation(cid) is None and store.archive_entry(cid)

        store.env.max_map_size = 0  # room again
        await ws.send_json({"type": "message", "client_id": "late", "text": "在吗"})
        ack = await recv(ws, "ack")
        assert ack["seq"] == 61
    assert store.archive_entry(cid) is None
    stored = store.list_messages(cid)
    assert [m.seq for m in stored] == list(range(1, len(stored) + 1))
    assert [m.seq for m in stored if m.client_id == "late"] == [61]


async def test_retention_spares_what_came_back_and_drops_shopper_links(
    tmp_path: Path,
) -> None:
    from goflypy.store.keys import token_key

    with Store(tmp_path) as store:
        kept, kept_token = await store.create_visitor("web", "", "")
        gone, _ = await store.create_visitor("web", "", "")
        gone, _ = await store.link_shopper("member-7", gone, "web", "", "")
        for visitor in (kept, gone):
            cid = visitor.conversation_id
            await store.append_message(cid, _msg(cid, "老话", "k1"), visitor.id)
        await asyncio.to_thread(_archive_all, store)

        # The visitor comes back between retention's scan and its write.
        scan = store._expiry_extras

        def scan_then_return(old: dict[bytes, bytes]) -> Any:
            extras = scan(old)
            store.restore_blocking(kept.conversation_id)
            return extras

        store._expiry_extras = scan_then_return  # type: ignore[method-assign]
        assert await asyncio.to_thread(store.expire_blocking, now_ms() + 1) == 1

        assert store.find_visitor(kept_token) is not None
        cid = kept.conversation_id
        again = await store.append_message(cid, _msg(cid, "老话", "k1"), kept.id)
        assert again.duplicate and again.message.seq == 1
        assert store.get_visitor(gone.id) is None
        with store.env.read() as txn:
            link = txn.get(token_key("member-7"), db=store.env.dbs["shopper"])
        assert link is None and store.find_shopper("member-7") is None


@pytest.mark.browser
def test_console_history_tab_opens_an_archived_conversation(tmp_path: Path) -> None:
    """In a real Chromium: the 历史 tab lists an archived conversation;
    clicking it restores it and shows every message in order."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    expect = playwright_api.expect
    from tests.browser_support import (
        CHROMIUM_ARGS,
        require_chromium,
        run_cli,
        running_server,
    )

    data = tmp_path / "data"
    password = "S3cure-pass-1"

    async def archived_conversation() -> str:
        with Store(data) as store:
            cid = await _conversation(store, 3, "<b>归档</b>的话")
            await asyncio.to_thread(_archive_all, store)
            return cid

    cid = asyncio.run(archived_conversation())
    run_cli(
        "user", "add", "ann", "--role", "agent", "--password", password, data_dir=data
    )
    executable = require_chromium()
    with (
        running_server(data, "--archive-after-hours", "0") as base,
        playwright_api.sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(locale="zh-CN")
        page.goto(f"{base}/console/login")
        page.locator("#username").fill("ann")
        page.locator("#password").fill(password)
        page.locator("#login-submit").click()
        page.wait_for_load_state()
        if "/console/password" in page.url:
            page.locator("#current_password").fill(password)
            page.locator("#new_password").fill(password + "-2")
            page.locator("#confirm_password").fill(password + "-2")
            page.locator("#password-submit").click()
        expect(page.locator("#conn-state")).to_have_attribute(
            "data-state", "online", timeout=20_000
        )

        page.locator("#past-tab").click()
        item = page.locator(f'.conv-item.past[data-id="{cid}"]')
        expect(item).to_contain_text("已归档")
        expect(item).to_contain_text("3 条消息")
        item.click()
        bubbles = page.locator("#messages .msg .bubble")
        expect(bubbles).to_have_count(3)
        assert bubbles.all_text_contents() == [f"<b>归档</b>的话 {i}" for i in range(3)]
        expect(page.locator("#conv-state")).to_have_text("机器人接待")

        page.locator("#all-tab").click()
        page.locator("#past-tab").click()
        expect(page.locator(".conv-item.past")).to_have_count(0)
        browser.close()

    with Store(data) as store:
        assert store.archive_entry(cid) is None
        assert [m.seq for m in store.list_messages(cid)] == [1, 2, 3]
