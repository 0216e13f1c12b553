"""Transfer between agents and internal notes, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from goflypy import desk as desk_module
from tests.conftest import add_agent, desk_of, sign_in
from tests.test_realtime_functional import agent_socket, outcome
from tests.test_ws_functional import TIMEOUT, hello, origin, recv, recv_message

SECRET = "内部备注：老客户，上次投诉过物流 <b>勿提</b>"


async def queued_conversation(visitor: Any) -> str:
    """Say hello, ask for a human, wait until queued; the conversation id."""
    conversation_id: str = (await hello(visitor))["conversation_id"]
    await visitor.send_json({"type": "message", "client_id": "h1", "text": "转人工"})
    while (await recv(visitor, "status"))["state"] != "queued":
        pass
    return conversation_id


async def summary_of(ws: Any, conversation_id: str, **wanted: Any) -> dict[str, Any]:
    """The next ConversationSummary of a conversation with the wanted fields."""
    while True:
        summary: dict[str, Any] = (await recv(ws, "conversation"))["conversation"]
        if summary["id"] == conversation_id and all(
            summary[k] == v for k, v in wanted.items()
        ):
            return summary


async def claimed_by(agent: Any, conversation_id: str, username: str) -> None:
    await agent.send_json({"type": "claim", "conversation_id": conversation_id})
    await summary_of(agent, conversation_id, agent=username)


async def refused(agent: Any, frame: dict[str, Any]) -> dict[str, Any]:
    await agent.send_json(frame)
    return await recv(agent, "error")


async def frames_until(ws: Any, last: Any) -> list[dict[str, Any]]:
    """Every frame up to and including the first one ``last`` accepts."""
    seen = []
    while True:
        frame = await asyncio.wait_for(ws.receive_json(), TIMEOUT)
        seen.append(frame)
        if last(frame):
            return seen


def note(conversation_id: str, client_id: str, text: str = SECRET) -> dict[str, Any]:
    return {
        "type": "note",
        "conversation_id": conversation_id,
        "client_id": client_id,
        "text": text,
    }


# Transfer


async def test_transfer_hands_a_conversation_to_an_online_agent(
    client: TestClient,
) -> None:
    amy = await agent_socket(client, "amy")
    bob = await agent_socket(client, "bob")
    async with client.ws_connect("/ws/visitor") as visitor:
        conversation_id = await queued_conversation(visitor)
        await claimed_by(amy, conversation_id, "amy")
        served = await recv_message(visitor, "system")
        while served["text"] != "客服 Amy 为您服务":
            served = await recv_message(visitor, "system")

        await amy.send_json(
            {"type": "transfer", "conversation_id": conversation_id, "to": "bob"}
        )
        told = await recv_message(visitor, "system", seq_above=served["seq"])
        assert told["text"] == "客服 Bob 为您服务"
        assert told["seq"] == served["seq"] + 1
        status = await recv(visitor, "status")
        assert status == {"type": "status", "state": "assigned", "agent_name": "Bob"}

        # Both lists update; the receiver and the sender are told who and why.
        for agent in (amy, bob):
            summary = await summary_of(agent, conversation_id, agent="bob")
            assert summary["agent_name"] == "Bob" and summary["state"] == "assigned"
        for agent in (amy, bob):
            handed = await recv(agent, "transferred")
            assert handed["conversation_id"] == conversation_id
            assert (handed["from"], handed["from_name"]) == ("amy", "Amy")
            assert (handed["to"], handed["to_name"]) == ("bob", "Bob")
            assert handed["conversation"]["agent"] == "bob"

        # Bob now serves the shopper; Amy no longer holds it.
        await bob.send_json(
            {
                "type": "message",
                "conversation_id": conversation_id,
                "client_id": "b1",
                "text": "您好，我是 Bob",
            }
        )
        reply = await recv_message(visitor, "agent", seq_above=told["seq"])
        assert reply["agent_name"] == "Bob" and reply["seq"] == told["seq"] + 1
        answer = await refused(
            amy, {"type": "transfer", "conversation_id": conversation_id, "to": "amy"}
        )
        assert answer["code"] == "conflict"
    conversation = desk_of(client).store.get_conversation(conversation_id)
    assert conversation is not None
    assert (conversation.agent, conversation.agent_name) == ("bob", "Bob")
    await amy.close()
    await bob.close()


async def test_an_unassigned_conversation_may_be_handed_on_by_anyone(
    client: TestClient,
) -> None:
    amy = await agent_socket(client, "amy")
    bob = await agent_socket(client, "bob")
    async with client.ws_connect("/ws/visitor") as visitor:
        conversation_id = await queued_conversation(visitor)
        await amy.send_json(
            {"type": "transfer", "conversation_id": conversation_id, "to": "bob"}
        )
        handed = await recv(bob, "transferred")
        assert handed["from"] == "amy" and handed["previous"] is None
        while (status := await recv(visitor, "status"))["state"] != "assigned":
            pass
        assert status["agent_name"] == "Bob"
    await amy.close()
    await bob.close()


async def test_an_admin_may_hand_on_someone_elses_conversation(
    client: TestClient,
) -> None:
    bob = await agent_socket(client, "bob")
    carol = await agent_socket(client, "carol")
    await add_agent(client, "root", role="admin")
    await sign_in(client, "root")
    root = await client.ws_connect("/ws/agent", headers={"Origin": origin(client)})
    await recv(root, "welcome")
    async with client.ws_connect("/ws/visitor") as visitor:
        conversation_id = await queued_conversation(visitor)
        await claimed_by(bob, conversation_id, "bob")
        await root.send_json(
            {"type": "transfer", "conversation_id": conversation_id, "to": "carol"}
        )
        for agent in (bob, carol, root):
            handed = await recv(agent, "transferred")
            assert handed["previous"] == "bob" and handed["to"] == "carol"
    for agent in (bob, carol, root):
        await agent.close()


async def test_transfer_refusals_say_why_and_change_nothing(
    client: TestClient,
) -> None:
    desk = desk_of(client)
    amy = await agent_socket(client, "amy")
    bob = await agent_socket(client, "bob")
    await add_agent(client, "carol")  # exists, never signs in
    await add_agent(client, "dave")
    dave = desk.store.get_account("dave")
    await desk.store.put_account(dataclasses.replace(dave, disabled=True), create=False)
    async with client.ws_connect("/ws/visitor") as visitor:
        conversation_id = await queued_conversation(visitor)
        await claimed_by(amy, conversation_id, "amy")
        before = desk.store.get_conversation(conversation_id)
        assert before is not None

        def transfer(to: Any) -> dict[str, Any]:
            return {"type": "transfer", "conversation_id": conversation_id, "to": to}

        for frame, code in (
            (transfer("ghost"), "unknown_agent"),
            (transfer("dave"), "agent_disabled"),
            (transfer("carol"), "agent_offline"),
            (transfer("amy"), "same_agent"),
            (transfer(""), "bad_frame"),
            (transfer(7), "bad_frame"),
            ({"type": "transfer", "conversation_id": conversation_id}, "bad_frame"),
            ({"type": "transfer", "conversation_id": "f" * 32, "to": "bob"}, None),
        ):
            answer = await refused(amy, frame)
            assert answer["code"] == (code or "not_found"), frame
            assert answer["message"], frame
        # Bob does not hold it, so Bob cannot hand it on.
        answer = await refused(bob, transfer("bob"))
        assert answer["code"] == "conflict"
        after = desk.store.get_conversation(conversation_id)
        assert after is not None
        assert (after.agent, after.last_seq) == ("amy", before.last_seq)

        await amy.send_json({"type": "close", "conversation_id": conversation_id})
        await summary_of(amy, conversation_id, state="closed")
        answer = await refused(amy, transfer("bob"))
        assert answer["code"] == "conversation_closed"
    closed = desk.store.get_conversation(conversation_id)
    assert closed is not None and closed.state == "closed" and closed.agent == "amy"
    await amy.close()
    await bob.close()


# Internal notes


async def test_notes_reach_agents_live_and_in_history_and_never_the_visitor(
    client: TestClient,
) -> None:
    desk = desk_of(client)
    amy = await agent_socket(client, "amy")
    bob = await agent_socket(client, "bob")
    visitor = await client.ws_connect("/ws/visitor")
    welcome = await hello(visitor)
    conversation_id = welcome["conversation_id"]
    heard = await frames_until(visitor, lambda f: f["type"] == "message")

    # A note: acked with its id, sent to every agent.
    await amy.send_json(note(conversation_id, "n1"))
    mine = await frames_until(amy, lambda f: f["type"] in ("ack", "error"))
    ack = mine[-1]
    assert ack["type"] == "ack" and ack["note_id"] == 1 and "seq" not in ack
    for live in (
        next(f for f in mine if f["type"] == "note"),
        await recv(bob, "note"),
    ):
        assert live["text"] == SECRET and live["id"] == 1
        assert (live["agent"], live["agent_name"]) == ("amy", "Amy")
        assert live["after_seq"] == 1 and live["client_id"] == "n1"
    # Sent again (a reconnecting console): the same ack, stored once.
    await amy.send_json(note(conversation_id, "n1"))
    assert await outcome(amy) == ack

    # The shopper and the agent talk; sequence numbers carry on from 1.
    await visitor.send_json({"type": "message", "client_id": "v1", "text": "在吗"})
    await amy.send_json(
        {
            "type": "message",
            "conversation_id": conversation_id,
            "client_id": "r1",
            "text": "在的",
        }
    )
    heard += await frames_until(
        visitor, lambda f: f["type"] == "message" and f["sender"] == "agent"
    )
    await amy.send_json(note(conversation_id, "n2", "第二条备注"))
    acked = await frames_until(
        amy, lambda f: f["type"] == "ack" and f["client_id"] == "n2"
    )
    assert acked[-1]["note_id"] == 2
    await visitor.send_json({"type": "message", "client_id": "v2", "text": "好的"})
    heard += await frames_until(
        visitor, lambda f: f["type"] == "ack" and f["client_id"] == "v2"
    )
    await visitor.close()

    # A visitor resuming, from scratch or from the middle, never gets a note.
    for resume_from in (0, 2):
        async with client.ws_connect("/ws/visitor") as again:
            last_seq = (
                await hello(again, welcome["visitor_token"], last_seq=resume_from)
            )["last_seq"]
            replay = await frames_until(again, lambda f: f["type"] == "status")
            seqs = [f["seq"] for f in replay if f["type"] == "message"]
            assert seqs == list(range(resume_from + 1, last_seq + 1))
            heard += replay
    for frame in heard:
        assert frame["type"] != "note", frame
        assert "备注" not in str(frame) and "勿提" not in str(frame), frame
    # Notes took no sequence numbers: the messages stored run 1, 2, 3, …
    stored = desk.store.list_messages(conversation_id)
    assert [m.seq for m in stored] == list(range(1, last_seq + 1))
    assert all(SECRET not in m.text and m.text != "第二条备注" for m in stored)

    # Another agent opening it sees the notes beside the messages.
    await bob.send_json({"type": "open", "conversation_id": conversation_id})
    history = await recv(bob, "history")
    assert [m["seq"] for m in history["messages"]] == list(range(1, last_seq + 1))
    notes = history["notes"]
    assert [(n["id"], n["text"], n["agent_name"]) for n in notes] == [
        (1, SECRET, "Amy"),
        (2, "第二条备注", "Amy"),
    ]
    assert notes[0]["after_seq"] == 1 and 1 < notes[1]["after_seq"] <= last_seq
    await amy.close()
    await bob.close()


async def test_notes_are_limited_like_replies(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client(max_message_chars=10)
    monkeypatch.setattr(desk_module, "MAX_NOTES", 2)
    amy = await agent_socket(client, "amy")
    async with client.ws_connect("/ws/visitor") as visitor:
        conversation_id = (await hello(visitor))["conversation_id"]
    for frame, expected in (
        (note(conversation_id, "e11", "好" * 10 + "👍"), "too_long"),
        (note(conversation_id, "e0", " \n "), "bad_text"),
        (note(conversation_id, "x" * 65), "bad_frame"),
        (note("f" * 32, "nf"), "not_found"),
        (note(conversation_id, "e10", "好" * 9 + "👍"), "ack"),
        (note(conversation_id, "e2", "第二条"), "ack"),
        (note(conversation_id, "e3", "第三条"), "notes_full"),
    ):
        await amy.send_json(frame)
        answer = await outcome(amy)
        assert answer.get("code", answer["type"]) == expected, frame["client_id"]
        if expected not in ("ack", "bad_frame", "not_found"):
            assert answer["client_id"] == frame["client_id"]
    conversation = desk_of(client).store.get_conversation(conversation_id)
    assert conversation is not None
    assert [n["text"] for n in conversation.notes] == ["好" * 9 + "👍", "第二条"]
    await amy.close()


async def test_notes_share_the_agents_message_rate(make_client: Any) -> None:
    client = await make_client(agent_rate_per_min=1)  # a burst of 20
    amy = await agent_socket(client, "amy")
    async with client.ws_connect("/ws/visitor") as visitor:
        conversation_id = (await hello(visitor))["conversation_id"]
    kinds = []
    for i in range(21):
        frame = note(conversation_id, f"n{i}", "稍等")
        if i % 2:
            frame["type"] = "message"
        await amy.send_json(frame)
        answer = await outcome(amy)
        kinds.append(answer.get("code", answer["type"]))
    assert kinds == ["ack"] * 20 + ["rate_limited"]
    # The refusal names the note, so the console can mark it failed.
    assert answer["client_id"] == "n20" and answer["retry_after_ms"] > 0
    await amy.close()
