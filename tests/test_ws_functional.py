"""Visitor protocol v1 and the agent socket, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import WSMsgType, WSServerHandshakeError
from aiohttp.test_utils import TestClient

from goflypy.models import FaqEntry
from tests.conftest import add_agent, csrf_from, desk_of, sign_in

TIMEOUT = 10


async def recv(ws: Any, kind: str | None = None) -> dict[str, Any]:
    """The next frame (of ``kind``, skipping others)."""
    while True:
        frame = await asyncio.wait_for(ws.receive_json(), TIMEOUT)
        if kind is None or frame["type"] == kind:
            return frame


async def recv_message(
    ws: Any, sender: str | None = None, seq_above: int = 0
) -> dict[str, Any]:
    while True:
        frame = await recv(ws, "message")
        if (sender is None or frame["sender"] == sender) and frame["seq"] > seq_above:
            return frame


async def hello(
    ws: Any, token: str | None = None, last_seq: int = 0, **extra: Any
) -> dict[str, Any]:
    frame = {
        "type": "hello",
        "visitor_token": token,
        "channel": "web",
        "last_seq": last_seq,
    }
    frame.update(extra)
    await ws.send_json(frame)
    return await recv(ws, "welcome")


def origin(client: TestClient) -> str:
    return str(client.make_url("/")).rstrip("/")


async def test_hello_welcome_then_greeting_and_status(client: TestClient) -> None:
    async with client.ws_connect("/ws/visitor") as ws:
        await ws.send_json(
            {
                "type": "hello",
                "visitor_token": None,
                "channel": "app",
                "last_seq": 0,
                "page": "/p/1",
            }
        )
        welcome = await recv(ws)
        assert welcome["type"] == "welcome"
        assert set(welcome) >= {
            "visitor_token",
            "visitor_id",
            "conversation_id",
            "last_seq",
            "heartbeat_s",
        }
        assert len(welcome["visitor_token"]) >= 32
        status = await recv(ws, "status")
        assert status["state"] == "robot"
        greeting = await recv_message(ws)
        assert greeting["sender"] == "robot" and greeting["seq"] == 1
        assert greeting["conversation_id"] == welcome["conversation_id"]


async def test_message_is_acked_echoed_and_answered(client: TestClient) -> None:
    async with client.ws_connect("/ws/visitor") as ws:
        await hello(ws)
        await recv_message(ws, "robot")  # greeting
        await ws.send_json(
            {"type": "message", "client_id": "c1", "text": "草莓怎么保存"}
        )
        echo = await recv_message(ws, "visitor")
        ack = await recv(ws, "ack")
        assert ack == {
            "type": "ack",
            "client_id": "c1",
            "seq": echo["seq"],
            "ts": echo["ts"],
        }
        assert echo["text"] == "草莓怎么保存" and echo["client_id"] == "c1"
        answer = await recv_message(ws, "robot", seq_above=echo["seq"])
        assert answer["kind"] == "answer"
        assert "冷藏" in answer["text"]


async def test_resent_client_id_gets_the_same_ack_and_is_stored_once(
    client: TestClient,
) -> None:
    async with client.ws_connect("/ws/visitor") as ws:
        welcome = await hello(ws)
        await ws.send_json({"type": "message", "client_id": "dup", "text": "转人工"})
        first = await recv(ws, "ack")
        await ws.send_json({"type": "message", "client_id": "dup", "text": "转人工"})
        second = await recv(ws, "ack")
        assert first == second
    messages = desk_of(client).store.list_messages(welcome["conversation_id"])
    assert [m.client_id for m in messages].count("dup") == 1


async def test_reconnect_with_last_seq_replays_only_what_was_missed(
    client: TestClient,
) -> None:
    async with client.ws_connect("/ws/visitor") as ws:
        welcome = await hello(ws)
        token = welcome["visitor_token"]
        await ws.send_json({"type": "message", "client_id": "a", "text": "运费怎么算"})
        answer = await recv_message(ws, "robot", seq_above=1)
        seen = answer["seq"]
    # Meanwhile more happens in the conversation.
    desk = desk_of(client)
    await desk.post(welcome["conversation_id"], "system", "离线时的消息")

    async with client.ws_connect("/ws/visitor") as ws:
        again = await hello(ws, token, last_seq=seen)
        assert again["visitor_id"] == welcome["visitor_id"]
        assert again["conversation_id"] == welcome["conversation_id"]
        replayed = await recv_message(ws)
        assert replayed["seq"] == seen + 1 and replayed["text"] == "离线时的消息"
        assert (await recv(ws))["type"] == "status"

    # A fresh device (last_seq 0) gets the whole history, in order, once.
    async with client.ws_connect("/ws/visitor") as ws:
        await hello(ws, token, last_seq=0)
        seqs = [(await recv_message(ws))["seq"] for _ in range(seen + 1)]
        assert seqs == list(range(1, seen + 2))


async def test_two_devices_of_one_visitor_both_get_every_message(
    client: TestClient,
) -> None:
    async with client.ws_connect("/ws/visitor") as phone:
        welcome = await hello(phone)
        async with client.ws_connect("/ws/visitor") as laptop:
            await hello(laptop, welcome["visitor_token"], last_seq=1)
            await laptop.send_json(
                {"type": "message", "client_id": "l1", "text": "退钱要多久"}
            )
            for ws in (phone, laptop):
                mine = await recv_message(ws, "visitor")
                assert mine["text"] == "退钱要多久"
                robot = await recv_message(ws, "robot", seq_above=mine["seq"])
                assert "工作日" in robot["text"]


async def test_hostile_frames_get_errors_and_the_socket_lives(
    client: TestClient,
) -> None:
    async with client.ws_connect("/ws/visitor") as ws:
        await ws.send_json({"type": "message", "client_id": "x", "text": "hi"})
        assert (await recv(ws, "error"))["code"] == "hello_required"
        await hello(ws)
        cases = [
            ("not json", "bad_json"),
            ("[1, 2]", "bad_frame"),
            ('{"type": null}', "bad_frame"),
            ('{"type": "launch"}', "unknown_type"),
            ('{"type": "message", "client_id": 5, "text": "x"}', "bad_frame"),
            ('{"type": "message", "client_id": "c", "text": ["x"]}', "bad_frame"),
            ('{"type": "message", "client_id": "c", "text": "   "}', "bad_text"),
            ('{"type": "message", "client_id": "c", "text": "\\ud800"}', "bad_text"),
            ('{"type": "rate", "score": 9}', "bad_frame"),
            ('{"type": "rate", "score": true}', "bad_frame"),
            ('{"type": "hello", "visitor_token": null}', "bad_frame"),
        ]
        for raw, code in cases:
            await ws.send_str(raw)
            error = await recv(ws, "error")
            assert error["code"] == code, raw
        await ws.send_bytes(b"\x00\x01")
        assert (await recv(ws, "error"))["code"] == "bad_frame"
        await ws.send_json({"type": "message", "client_id": "x", "text": "好" * 2001})
        assert (await recv(ws, "error"))["code"] == "too_long"

        await ws.send_json(
            {"type": "message", "client_id": "ok", "text": "草莓怎么保存"}
        )
        assert (await recv(ws, "ack"))["client_id"] == "ok"


async def test_oversized_frame_closes_with_1009(make_client: Any) -> None:
    client = await make_client(max_frame_bytes=4096)
    async with client.ws_connect("/ws/visitor") as ws:
        await hello(ws)
        await ws.send_str(
            '{"type":"message","client_id":"big","text":"' + "x" * 10_000 + '"}'
        )
        while True:
            msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                break
        # aiohttp closes the TCP socket right after its 1009 close frame; the
        # reset can overtake that frame, so the server's count is the proof.
        assert ws.close_code in (1009, 1006)
    metrics = await (await client.get("/metrics")).text()
    assert 'goflypy_sockets_closed_total{code="1009"} 1.0' in metrics


async def test_foreign_origin_is_refused_and_listed_origin_allowed(
    make_client: Any,
) -> None:
    client = await make_client(widget_origins="https://shop.example")
    with pytest.raises(WSServerHandshakeError) as refused:
        await client.ws_connect(
            "/ws/visitor", headers={"Origin": "https://evil.example"}
        )
    assert refused.value.status == 403
    async with client.ws_connect(
        "/ws/visitor", headers={"Origin": "https://shop.example"}
    ) as ws:
        assert (await hello(ws))["type"] == "welcome"


async def test_agent_socket_needs_sign_in_and_own_origin(client: TestClient) -> None:
    with pytest.raises(WSServerHandshakeError) as anonymous:
        await client.ws_connect("/ws/agent", headers={"Origin": origin(client)})
    assert anonymous.value.status == 401
    await add_agent(client)
    await sign_in(client)
    with pytest.raises(WSServerHandshakeError) as foreign:
        await client.ws_connect("/ws/agent", headers={"Origin": "https://evil.example"})
    assert foreign.value.status == 403


async def test_handoff_claim_reply_close_end_to_end(client: TestClient) -> None:
    await add_agent(client)
    assert (await sign_in(client)).status == 302
    async with client.ws_connect(
        "/ws/agent", headers={"Origin": origin(client)}
    ) as agent:
        welcome = await recv(agent, "welcome")
        assert welcome["agent"]["username"] == "amy"

        async with client.ws_connect("/ws/visitor") as visitor:
            hello_frame = await hello(visitor, page="https://shop.example/item/9")
            conversation_id = hello_frame["conversation_id"]
            await visitor.send_json(
                {"type": "message", "client_id": "h1", "text": "转人工"}
            )
            queued = await recv(visitor, "status")
            while queued["state"] != "queued":
                queued = await recv(visitor, "status")
            assert queued["position"] == 1

            # The agent sees it queued with an unread count, opens and claims it.
            while True:
                summary = (await recv(agent, "conversation"))["conversation"]
                if summary["id"] == conversation_id and summary["state"] == "queued":
                    break
            assert (
                summary["unread"] >= 1
                and summary["page"] == "https://shop.example/item/9"
            )
            await agent.send_json({"type": "open", "conversation_id": conversation_id})
            history = await recv(agent, "history")
            assert "转人工" in [m["text"] for m in history["messages"]]
            assert history["visitor"]["channel"] == "web"
            assert history["visitor"]["first_seen"] > 0

            await visitor.send_json({"type": "typing"})
            typing = await recv(agent, "typing")
            assert typing["conversation_id"] == conversation_id

            await agent.send_json({"type": "claim", "conversation_id": conversation_id})
            assigned = await recv(visitor, "status")
            while assigned["state"] != "assigned":
                assigned = await recv(visitor, "status")
            assert assigned["agent_name"] == "Amy"

            await agent.send_json(
                {"type": "typing", "conversation_id": conversation_id}
            )
            assert (await recv(visitor, "typing"))["sender"] == "agent"
            await agent.send_json(
                {
                    "type": "message",
                    "conversation_id": conversation_id,
                    "client_id": "r1",
                    "text": "<b>您好</b>",
                }
            )
            ack = await recv(agent, "ack")
            reply = await recv_message(visitor, "agent")
            assert reply["seq"] == ack["seq"] and reply["text"] == "<b>您好</b>"
            assert reply["agent_name"] == "Amy"

            # The visitor writes; no robot answers an assigned conversation.
            await visitor.send_json(
                {"type": "message", "client_id": "v2", "text": "草莓怎么保存"}
            )
            mine = await recv_message(visitor, "visitor", seq_above=reply["seq"])
            await agent.send_json({"type": "close", "conversation_id": conversation_id})
            closed = await recv(visitor, "status")
            while closed["state"] != "closed":
                closed = await recv(visitor, "status")
            stored = desk_of(client).store.list_messages(
                conversation_id, after_seq=mine["seq"]
            )
            assert [m.sender for m in stored] == ["system"]

            await visitor.send_json({"type": "rate", "score": 5})
            while True:
                summary = (await recv(agent, "conversation"))["conversation"]
                if summary["rating"] == 5:
                    break


async def test_agent_cannot_take_a_conversation_someone_else_has(
    client: TestClient,
) -> None:
    await add_agent(client, "amy")
    await add_agent(client, "bob")
    desk = desk_of(client)
    async with client.ws_connect("/ws/visitor") as visitor:
        conversation_id = (await hello(visitor))["conversation_id"]
    await desk.claim(conversation_id, desk.store.get_account("bob"))
    await sign_in(client, "amy")
    async with client.ws_connect(
        "/ws/agent", headers={"Origin": origin(client)}
    ) as agent:
        await recv(agent, "welcome")
        await agent.send_json({"type": "claim", "conversation_id": conversation_id})
        assert (await recv(agent, "error"))["code"] == "conflict"
        await agent.send_json({"type": "open", "conversation_id": "f" * 32})
        assert (await recv(agent, "error"))["code"] == "not_found"


async def test_visitor_rate_limit_says_when_to_retry(make_client: Any) -> None:
    client = await make_client(visitor_rate_per_min=6)
    async with client.ws_connect("/ws/visitor") as ws:
        await hello(ws)
        codes = []
        for i in range(8):
            await ws.send_json(
                {"type": "message", "client_id": f"m{i}", "text": "你好"}
            )
            frame = await recv(ws)
            while frame["type"] not in ("ack", "error"):
                frame = await recv(ws)
            codes.append(frame.get("code", "ack"))
            if frame["type"] == "error":
                assert frame["retry_after_ms"] > 0
        assert codes[0] == "ack" and "rate_limited" in codes


async def test_deep_nesting_and_nan_are_bad_json(client: TestClient) -> None:
    async with client.ws_connect("/ws/visitor") as ws:
        await hello(ws)
        await ws.send_str("[" * 20000 + "]" * 20000)
        assert (await recv(ws, "error"))["code"] == "bad_json"
        await ws.send_str('{"type": "rate", "score": NaN}')
        assert (await recv(ws, "error"))["code"] == "bad_json"
        await ws.send_json({"type": "ping"})
        assert (await recv(ws))["type"] == "pong"


async def test_message_to_a_closed_conversation_reopens_it(client: TestClient) -> None:
    desk = desk_of(client)
    async with client.ws_connect("/ws/visitor") as ws:
        conversation_id = (await hello(ws))["conversation_id"]
        await desk.close(conversation_id, None)
        while (await recv(ws, "status"))["state"] != "closed":
            pass
        await ws.send_json(
            {"type": "message", "client_id": "back", "text": "运费怎么算"}
        )
        status = await recv(ws, "status")
        assert status["state"] == "robot"


async def test_only_the_owner_or_an_admin_closes_and_closing_twice_is_quiet(
    client: TestClient,
) -> None:
    await add_agent(client, "amy")
    await add_agent(client, "bob")
    await add_agent(client, "root", "admin")
    desk = desk_of(client)
    store = desk.store
    async with client.ws_connect("/ws/visitor") as visitor:
        conversation_id = (await hello(visitor))["conversation_id"]
    await desk.claim(conversation_id, store.get_account("bob"))

    await sign_in(client, "amy")
    async with client.ws_connect(
        "/ws/agent", headers={"Origin": origin(client)}
    ) as amy:
        await recv(amy, "welcome")
        await amy.send_json({"type": "close", "conversation_id": conversation_id})
        assert (await recv(amy, "error"))["code"] == "conflict"
    assert store.get_conversation(conversation_id).state == "assigned"

    await desk.close(conversation_id, store.get_account("root"))
    count = store.get_conversation(conversation_id).last_seq
    await desk.close(conversation_id, store.get_account("root"))
    assert store.get_conversation(conversation_id).last_seq == count


async def test_agent_client_ids_are_per_conversation(client: TestClient) -> None:
    await add_agent(client, "amy")
    desk = desk_of(client)
    amy = desk.store.get_account("amy")
    conversations = []
    for _ in range(2):
        async with client.ws_connect("/ws/visitor") as visitor:
            conversations.append((await hello(visitor))["conversation_id"])
    first = await desk.agent_message(conversations[0], amy, "same-id", "一")
    second = await desk.agent_message(conversations[1], amy, "same-id", "二")
    assert not second.duplicate
    assert second.message.conversation_id == conversations[1]
    assert desk.store.list_messages(conversations[1])[-1].text == "二"
    assert first.message.text == "一"


async def test_repeated_handoff_and_rating_write_nothing_more(
    client: TestClient,
) -> None:
    desk = desk_of(client)
    async with client.ws_connect("/ws/visitor") as ws:
        await hello(ws)
        await ws.send_json({"type": "handoff"})
        while (await recv(ws, "status"))["state"] != "queued":
            pass
        await ws.send_json({"type": "rate", "score": 4})
        await ws.send_json({"type": "ping"})
        await recv(ws, "pong")
        commits = desk.store.env.commits
        for _ in range(3):
            await ws.send_json({"type": "handoff"})
            await ws.send_json({"type": "rate", "score": 4})
        await ws.send_json({"type": "ping"})
        await recv(ws, "pong")
        assert desk.store.env.commits == commits


async def closed_with(ws: Any) -> int | None:
    """Read until the socket closes; the code the server's close frame gave."""
    msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
    while msg.type == WSMsgType.TEXT:
        msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
    return msg.data if msg.type == WSMsgType.CLOSE else None


async def test_password_change_closes_the_agents_open_console(
    client: TestClient,
) -> None:
    await add_agent(client, "amy")
    desk = desk_of(client)
    await sign_in(client, "amy")
    async with client.ws_connect("/ws/agent", headers={"Origin": origin(client)}) as ws:
        await recv(ws, "welcome")
        await desk.store.delete_sessions_of("amy")
        await ws.send_json({"type": "ping"})
        assert await closed_with(ws) == 4401


async def test_idle_robot_conversations_close_and_reopen_on_the_next_message(
    client: TestClient,
) -> None:
    desk = desk_of(client)
    async with (
        client.ws_connect("/ws/visitor") as served,
        client.ws_connect("/ws/visitor") as waiting,
    ):
        robot_only = (await hello(served))["conversation_id"]
        queued = (await hello(waiting))["conversation_id"]
        await waiting.send_json({"type": "handoff"})
        while (await recv(waiting, "status"))["state"] != "queued":
            pass
        assert await desk.close_idle_robot_conversations(3_600_000) == 0
        await asyncio.sleep(0.01)
        assert await desk.close_idle_robot_conversations(1) == 1
        while (await recv(served, "status"))["state"] != "closed":
            pass
        open_ids = {c.id for c in desk.store.list_open_conversations()}
        assert robot_only not in open_ids and queued in open_ids
        await served.send_json({"type": "message", "client_id": "c1", "text": "在吗"})
        assert (await recv(served, "status"))["state"] == "robot"
        assert robot_only in {c.id for c in desk.store.list_open_conversations()}


async def test_a_silent_console_of_an_ended_session_stops_receiving(
    client: TestClient,
) -> None:
    """No frame from the console: the server itself notices the reset."""
    await add_agent(client, "amy")
    desk = desk_of(client)
    await sign_in(client, "amy")
    async with client.ws_connect("/ws/agent", headers={"Origin": origin(client)}) as ws:
        await recv(ws, "welcome")
        await desk.store.delete_sessions_of("amy")  # as `goflypy user passwd` does
        assert await closed_with(ws) == 4401


async def test_logout_closes_the_sessions_open_consoles_at_once(
    client: TestClient,
) -> None:
    await add_agent(client, "amy")
    await sign_in(client, "amy")
    async with client.ws_connect("/ws/agent", headers={"Origin": origin(client)}) as ws:
        await recv(ws, "welcome")
        page = await client.get("/console")
        token = csrf_from(await page.text())
        out = await client.post(
            "/console/logout", data={"csrf_token": token}, allow_redirects=False
        )
        assert out.status == 302
        # Dropped by the logout itself, not left to the periodic check.
        assert not desk_of(client)._console_sessions
        assert await closed_with(ws) == 4401


async def test_an_entry_without_an_answer_hands_off_instead_of_an_empty_bubble(
    client: TestClient,
) -> None:
    desk = desk_of(client)
    await desk.store.put_faq([FaqEntry("durian", "榴莲可以带上飞机吗", "")])
    desk.robot.rebuild(desk.store.list_faq())
    async with client.ws_connect("/ws/visitor") as ws:
        await hello(ws)
        await ws.send_json(
            {"type": "message", "client_id": "c1", "text": "榴莲可以带上飞机吗"}
        )
        reply = await recv_message(ws, "robot", seq_above=2)
        assert reply["text"].strip() and reply["kind"] == "handoff"
        while (await recv(ws, "status"))["state"] != "queued":
            pass


async def test_asking_for_a_human_with_nobody_online_invites_a_message(
    client: TestClient,
) -> None:
    offline = desk_of(client).config.offline_text
    async with client.ws_connect("/ws/visitor") as ws:
        await hello(ws)
        await ws.send_json({"type": "handoff"})
        notice = await recv_message(ws, "system", seq_above=1)
        while notice["text"] != offline:
            notice = await recv_message(ws, "system", seq_above=notice["seq"])
    await add_agent(client, "amy")
    await sign_in(client, "amy")
    async with (
        client.ws_connect("/ws/agent", headers={"Origin": origin(client)}) as amy,
        client.ws_connect("/ws/visitor") as ws,
    ):
        await recv(amy, "welcome")
        conversation_id = (await hello(ws))["conversation_id"]
        await ws.send_json({"type": "handoff"})
        while (await recv(ws, "status"))["state"] != "queued":
            pass
        await ws.send_json({"type": "ping"})
        await recv(ws, "pong")
        messages = desk_of(client).store.list_messages(conversation_id)
        assert "正在为您转接人工客服，请稍候。" in [m.text for m in messages]
        assert offline not in [m.text for m in messages]


async def test_waiting_shoppers_move_up_when_the_one_ahead_is_claimed(
    client: TestClient,
) -> None:
    await add_agent(client, "amy")
    desk = desk_of(client)
    amy = desk.store.get_account("amy")
    async with (
        client.ws_connect("/ws/visitor") as first,
        client.ws_connect("/ws/visitor") as second,
    ):
        first_id = (await hello(first))["conversation_id"]
        await hello(second)
        for ws, place in ((first, 1), (second, 2)):
            await ws.send_json({"type": "handoff"})
            status = await recv(ws, "status")
            while status["state"] != "queued":
                status = await recv(ws, "status")
            assert status["position"] == place
        await desk.claim(first_id, amy)
        moved = await recv(second, "status")
        assert moved["state"] == "queued" and moved["position"] == 1


async def test_a_socket_that_never_says_hello_is_closed(make_client: Any) -> None:
    client = await make_client(hello_timeout_s=0.5)
    async with client.ws_connect("/ws/visitor") as silent:
        assert await closed_with(silent) == 1008
    async with client.ws_connect("/ws/visitor") as talking:
        await hello(talking)
        await asyncio.sleep(1.0)  # well past the timeout
        await talking.send_json({"type": "ping"})
        assert (await recv(talking, "pong"))["type"] == "pong"


async def test_one_address_holds_a_bounded_number_of_sockets(
    make_client: Any,
) -> None:
    client = await make_client(sockets_per_ip=2)
    async with (
        client.ws_connect("/ws/visitor") as first,
        client.ws_connect("/ws/visitor") as second,
    ):
        await hello(first)
        await hello(second)
        async with client.ws_connect("/ws/visitor") as third:
            refused = await recv(third, "error")
            assert refused["code"] == "rate_limited" and refused["retry_after_ms"] > 0
            assert await closed_with(third) == 1013
    # Both closed: the address may connect again (once the server has
    # finished with them, which may take it a moment after the client).
    for _attempt in range(100):
        async with client.ws_connect("/ws/visitor") as again:
            await again.send_json({"type": "hello", "visitor_token": None})
            if (await recv(again))["type"] == "welcome":
                break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the address stayed refused")
