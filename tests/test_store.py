"""The store on a real LMDB in a temp dir."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from goflypy.errors import Conflict, NotFound
from goflypy.models import Message
from goflypy.store import Store


def _msg(cid: str, text: str, client_id: str | None = None) -> Message:
    return Message(cid, 0, 0, "visitor", text, client_id=client_id)


async def test_records_survive_close_and_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path)
    visitor, token = await store.create_visitor("app", "/item/1", "ua")
    cid = visitor.conversation_id
    for i in range(5):
        await store.append_message(cid, _msg(cid, f"消息 {i}"))
    store.close()

    reopened = Store(tmp_path)
    try:
        assert reopened.find_visitor(token) == visitor
        assert [m.text for m in reopened.list_messages(cid)] == [
            f"消息 {i}" for i in range(5)
        ]
        conversation = reopened.get_conversation(cid)
        assert conversation is not None and conversation.last_seq == 5
        assert conversation.channel == "app"
    finally:
        reopened.close()


async def test_messages_come_back_in_sequence_order(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        visitor, _ = await store.create_visitor("web", "", "")
        other, _ = await store.create_visitor("web", "", "")
        cid = visitor.conversation_id
        # Interleave two conversations in concurrent batches.
        await asyncio.gather(
            *(store.append_message(cid, _msg(cid, str(i))) for i in range(300)),
            *(
                store.append_message(
                    other.conversation_id, _msg(other.conversation_id, "x")
                )
                for _ in range(50)
            ),
        )
        messages = store.list_messages(cid)
        assert [m.seq for m in messages] == list(range(1, 301))
        assert {m.conversation_id for m in messages} == {cid}
        assert [m.seq for m in store.list_messages(cid, after_seq=297)] == [
            298,
            299,
            300,
        ]
        assert [m.seq for m in store.list_messages(cid, after_seq=10, limit=2)] == [
            11,
            12,
        ]


async def test_resent_client_id_is_stored_once(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        visitor, _ = await store.create_visitor("web", "", "")
        cid = visitor.conversation_id
        first = await store.append_message(
            cid, _msg(cid, "你好", "c-1"), dedupe_scope=visitor.id
        )
        again = await store.append_message(
            cid, _msg(cid, "你好", "c-1"), dedupe_scope=visitor.id
        )
        other = await store.append_message(
            cid, _msg(cid, "再见", "c-2"), dedupe_scope=visitor.id
        )

        assert not first.duplicate and again.duplicate
        assert again.message.seq == first.message.seq == 1
        assert again.message.ts == first.message.ts
        assert other.message.seq == 2
        assert [m.text for m in store.list_messages(cid)] == ["你好", "再见"]


async def test_a_failing_job_does_not_sink_its_batch(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        visitor, _ = await store.create_visitor("web", "", "")
        cid = visitor.conversation_id
        results = await asyncio.gather(
            store.append_message(cid, _msg(cid, "a")),
            store.append_message("00" * 16, _msg("00" * 16, "lost")),
            store.append_message(cid, _msg(cid, "b")),
            return_exceptions=True,
        )
        assert isinstance(results[1], NotFound)
        assert [m.text for m in store.list_messages(cid)] == ["a", "b"]


async def test_refused_update_writes_nothing(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        visitor, _ = await store.create_visitor("web", "", "")
        cid = visitor.conversation_id

        def refuse(conversation: object) -> None:
            conversation.state = "assigned"
            raise Conflict("taken")

        with pytest.raises(Conflict):
            await store.update_conversation(cid, refuse)
        conversation = store.get_conversation(cid)
        assert conversation is not None and conversation.state == "robot"


async def test_map_grows_from_a_tiny_map(tmp_path: Path) -> None:
    with Store(tmp_path, map_size_mb=1) as store:
        visitor, _ = await store.create_visitor("web", "", "")
        cid = visitor.conversation_id
        before = store.env.info()["map_size"]
        text = "长" * 1000
        await asyncio.gather(
            *(store.append_message(cid, _msg(cid, text)) for i in range(3000))
        )
        assert store.env.info()["map_size"] > before
        assert len(store.list_messages(cid)) == 3000


async def test_closed_conversation_leaves_the_open_list_and_reopens(
    tmp_path: Path,
) -> None:
    with Store(tmp_path) as store:
        visitor, _ = await store.create_visitor("web", "", "")
        cid = visitor.conversation_id

        def close(conversation: object) -> None:
            conversation.state = "closed"

        await store.update_conversation(cid, close)
        assert store.list_open_conversations() == []
        appended = await store.append_message(cid, _msg(cid, "又来了"))
        assert appended.conversation.state == "robot"
        assert [c.id for c in store.list_open_conversations()] == [cid]


async def test_sessions_expire_and_end(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        live = await store.create_session("amy", ttl_ms=60_000)
        dead = await store.create_session("amy", ttl_ms=-1)
        assert store.get_session(live)["username"] == "amy"
        assert store.get_session(dead) is None
        assert store.get_session("not-a-token") is None
        assert await store.delete_sessions_of("amy") == 2
        assert store.get_session(live) is None
