"""Realtime behaviour over real sockets on 127.0.0.1: back-pressure, pings,
presence with several devices, limits, hostile input, metrics."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aiohttp import ClientSession, WSMsgType
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from goflypy.auth import new_account
from goflypy.models import Message
from tests.conftest import AGENT_PASSWORD, add_agent, desk_of, sign_in
from tests.realtime_support import StalledClient, TcpProxy
from tests.test_ws_functional import TIMEOUT, hello, origin, recv, recv_message


async def until(predicate: Any, what: str) -> None:
    """Wait for ``predicate()`` to hold; fail after TIMEOUT (never a measurement)."""
    for _ in range(TIMEOUT * 50):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"gave up waiting: {what}")


async def agent_socket(client: TestClient, username: str = "amy") -> Any:
    await add_agent(client, username)
    await sign_in(client, username)
    ws = await client.ws_connect("/ws/agent", headers={"Origin": origin(client)})
    await recv(ws, "welcome")
    return ws


async def summary_of(agent: Any, conversation_id: str, **wanted: Any) -> dict[str, Any]:
    """The next ConversationSummary of a conversation with the wanted fields."""
    while True:
        summary = (await recv(agent, "conversation"))["conversation"]
        if summary["id"] == conversation_id and all(
            summary[k] == v for k, v in wanted.items()
        ):
            return summary


async def closed_code(ws: Any) -> int | None:
    while True:
        msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
            return ws.close_code


async def outcome(ws: Any) -> dict[str, Any]:
    """The next ack or error frame, skipping everything else."""
    frame = await recv(ws)
    while frame["type"] not in ("ack", "error"):
        frame = await recv(ws)
    return frame


def metric(client: TestClient, name: str, **labels: str) -> float:
    from goflypy.metrics import APP_METRICS

    registry = client.server.app[APP_METRICS].registry  # type: ignore[union-attr]
    return registry.get_sample_value(name, labels) or 0.0


# Back-pressure


async def test_a_client_that_stops_reading_is_dropped_and_delays_nobody(
    make_client: Any,
) -> None:
    client = await make_client(send_queue_frames=8)
    desk = desk_of(client)
    stalled = StalledClient(client.port)
    await asyncio.to_thread(stalled.open, {"type": "hello", "channel": "app"})
    await until(lambda: desk.hub.counts()["visitors"] == 1, "stalled visitor joined")
    stalled_conversation = desk.store.list_open_conversations()[0].id

    async with client.ws_connect("/ws/visitor") as other:
        welcome = await hello(other)
        # Replies pile up for the stalled socket only (group-committed).
        for batch in range(40):
            await asyncio.gather(
                *(
                    desk.post(
                        stalled_conversation, "system", f"{batch}.{i} " + "长" * 20_000
                    )
                    for i in range(20)
                )
            )
            if metric(client, "goflypy_sockets_dropped_total", reason="queue_full"):
                break
        assert metric(client, "goflypy_sockets_dropped_total", reason="queue_full") == 1

        await desk.post(welcome["conversation_id"], "system", "still served")
        assert (await recv_message(other, "system", seq_above=1))[
            "text"
        ] == "still served"
    await until(
        lambda: desk.hub.counts()["visitor_sockets"] == 0, "stalled socket gone"
    )
    stalled.close()
    # Everything sent to the stalled visitor stays stored for its reconnect.
    assert len(desk.store.list_messages(stalled_conversation)) >= 9


async def text_at(ws: Any, seq: int) -> str | None:
    """The text of message ``seq``, or None when the socket closes first."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
        if msg.type != WSMsgType.TEXT:
            return None
        frame = msg.json()
        if frame["type"] == "message" and frame["seq"] == seq:
            return str(frame["text"])


async def test_a_write_error_on_one_socket_never_stops_a_fan_out(
    client: TestClient,
) -> None:
    desk = desk_of(client)
    agent = await agent_socket(client)
    devices = [await client.ws_connect("/ws/visitor") for _ in range(3)]
    welcome = await hello(devices[0])
    for device in devices[1:]:
        await hello(device, welcome["visitor_token"])
    conversation_id = welcome["conversation_id"]
    await until(lambda: desk.hub.counts()["visitor_sockets"] == 3, "three devices")
    victim = next(p for p in desk.hub.all_peers() if p.kind == "visitor")

    # One device's kernel socket refuses every write (EPIPE) while the hub
    # still lists it: the fan-out meets a real write error on the way.
    appended = await desk.store.append_message(
        conversation_id, Message(conversation_id, 0, 0, "system", "第一条")
    )
    victim._transport.get_extra_info("socket").shutdown(socket.SHUT_WR)
    desk.publish(appended.conversation, appended.message)

    seq = appended.message.seq
    texts = [await text_at(ws, seq) for ws in devices]
    assert sorted(texts, key=str) == [None, "第一条", "第一条"]
    assert await text_at(agent, seq) == "第一条"
    await until(lambda: desk.hub.counts()["visitor_sockets"] == 2, "broken one gone")

    # The next fan-out reaches everyone left.
    await desk.post(conversation_id, "system", "第二条")
    survivors = [ws for ws, text in zip(devices, texts, strict=True) if text]
    for ws in [*survivors, agent]:
        assert await text_at(ws, seq + 1) == "第二条"
    for ws in [*devices, agent]:
        await ws.close()


async def test_an_agent_reply_to_an_offline_shopper_arrives_once_on_reconnect(
    client: TestClient,
) -> None:
    desk = desk_of(client)
    agent = await agent_socket(client)
    async with client.ws_connect("/ws/visitor") as ws:
        welcome = await hello(ws)
        seen = (await recv_message(ws, "robot"))["seq"]
    visitor_id, conversation_id = welcome["visitor_id"], welcome["conversation_id"]
    await until(lambda: not desk.hub.is_visitor_online(visitor_id), "shopper gone")

    # The agent answers while the shopper is away (the first reply claims).
    for i in range(3):
        await agent.send_json(
            {
                "type": "message",
                "conversation_id": conversation_id,
                "client_id": f"r{i}",
                "text": f"回复{i}",
            }
        )
        assert (await outcome(agent))["type"] == "ack"
    last_seq = desk.store.get_conversation(conversation_id).last_seq

    # Back: what was missed arrives once, in order, before the state; a
    # reply after that arrives once too.
    async with client.ws_connect("/ws/visitor") as ws:
        again = await hello(ws, welcome["visitor_token"], last_seq=seen)
        assert again["last_seq"] == last_seq
        replayed = []
        while (frame := await recv(ws))["type"] != "status":
            if frame["type"] == "message":
                replayed.append(frame)
        assert [f["seq"] for f in replayed] == list(range(seen + 1, last_seq + 1))
        agent_texts = [f["text"] for f in replayed if f["sender"] == "agent"]
        assert agent_texts == ["回复0", "回复1", "回复2"]
        await agent.send_json(
            {
                "type": "message",
                "conversation_id": conversation_id,
                "client_id": "r3",
                "text": "回复3",
            }
        )
        live = await recv_message(ws)
        assert (live["seq"], live["text"]) == (last_seq + 1, "回复3")
    await agent.close()


# Pings and presence


async def test_a_silent_disconnect_is_found_by_pings_and_ends_presence(
    make_client: Any,
) -> None:
    client = await make_client(ping_interval_s=0.2, ping_timeout_s=0.4)
    desk = desk_of(client)
    agent = await agent_socket(client)
    async with TcpProxy(client.port) as proxy, ClientSession() as session:
        url = f"http://127.0.0.1:{proxy.port}/ws/visitor"
        async with session.ws_connect(url) as visitor:
            conversation_id = (await hello(visitor))["conversation_id"]
            await summary_of(agent, conversation_id, visitor_online=True)
            proxy.freeze()  # Wi-Fi off: no close frame, no FIN, nothing
            await summary_of(agent, conversation_id, visitor_online=False)
        assert desk.hub.counts()["visitor_sockets"] == 0
        assert metric(client, "goflypy_sockets_dropped_total", reason="dead") >= 1
    await agent.close()


async def test_a_slow_link_is_kept_and_its_pong_wait_follows_its_rtt(
    make_client: Any,
) -> None:
    # A fixed pong wait of half the interval (0.1 s) would drop this link,
    # whose round trip is at least 0.6 s.
    client = await make_client(ping_interval_s=0.2, ping_timeout_s=5)
    desk = desk_of(client)
    async with TcpProxy(client.port, delay=0.3) as proxy, ClientSession() as session:
        url = f"http://127.0.0.1:{proxy.port}/ws/visitor"
        async with session.ws_connect(url) as visitor:
            await hello(visitor)
            (peer,) = desk.hub.all_peers()
            # aiohttp's client answers pings only while something reads.
            frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            reader = asyncio.get_running_loop().create_task(_read_into(visitor, frames))
            await until(lambda: peer.pongs >= 4, "four pongs over the slow link")
            assert not peer.closing and desk.hub.counts()["visitors"] == 1
            assert peer.srtt >= 0.6 and peer.pong_timeout() > 2 * 0.1
            await visitor.send_json(
                {"type": "message", "client_id": "s1", "text": "在吗"}
            )
            while (frame := await asyncio.wait_for(frames.get(), TIMEOUT))[
                "type"
            ] != "ack":
                pass
            assert frame["client_id"] == "s1"
            reader.cancel()


async def _read_into(ws: Any, frames: asyncio.Queue[dict[str, Any]]) -> None:
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            frames.put_nowait(msg.json())


async def test_presence_counts_people_not_devices(client: TestClient) -> None:
    agent = await agent_socket(client, "amy")
    phone = await client.ws_connect("/ws/visitor")
    welcome = await hello(phone)
    conversation_id = welcome["conversation_id"]
    await summary_of(agent, conversation_id, visitor_online=True)
    laptop = await client.ws_connect("/ws/visitor")
    await hello(laptop, welcome["visitor_token"])

    await phone.close()
    await laptop.send_json({"type": "typing"})
    await recv(agent, "typing")
    assert desk_of(client).hub.is_visitor_online(welcome["visitor_id"])
    await laptop.close()
    await summary_of(agent, conversation_id, visitor_online=False)

    # Agents: two tabs of bob; amy learns when he comes and goes, once each.
    await add_agent(client, "bob")
    async with ClientSession(cookie_jar=client.session.cookie_jar) as bob_session:
        await sign_in(client, "bob")
        url = client.make_url("/ws/agent")
        tab1 = await bob_session.ws_connect(url, headers={"Origin": origin(client)})
        assert "bob" in (await recv(agent, "agents"))["online"]
        tab2 = await bob_session.ws_connect(url, headers={"Origin": origin(client)})
        assert (await recv(tab2, "welcome"))["agents_online"] == ["amy", "bob"]
        await tab1.close()
        await tab2.close()
    frame = await recv(agent, "agents")
    assert frame["online"] == ["amy"]
    await agent.close()


# Limits


async def test_hostile_frames_then_a_valid_message_still_goes_through(
    make_client: Any,
) -> None:
    client = await make_client(max_frame_bytes=4096)
    async with client.ws_connect("/ws/visitor") as ws:
        welcome = await hello(ws)
        cases = [
            ("not json", "bad_json"),
            ("[1, 2]", "bad_frame"),
            ('{"type": null}', "bad_frame"),
            ('{"type": "launch"}', "unknown_type"),
            ('{"type": "message", "client_id": 5, "text": "x"}', "bad_frame"),
            ('{"type": "message", "client_id": "c", "text": {"a": 1}}', "bad_frame"),
            ('{"type": "message", "client_id": "\\udc00", "text": "x"}', "bad_text"),
            ('{"type": "hello", "visitor_token": "\\ud800"}', "bad_text"),
            ('{"type": "read", "seq": "9"}', "bad_frame"),
        ]
        for raw, code in cases:
            await ws.send_str(raw)
            assert (await recv(ws, "error"))["code"] == code, raw
        await ws.send_bytes(b"\x00\x01")
        assert (await recv(ws, "error"))["code"] == "bad_frame"
        await ws.send_json({"type": "message", "client_id": "ok1", "text": "😀好"})
        assert (await recv(ws, "ack"))["client_id"] == "ok1"

    async with client.ws_connect("/ws/visitor") as ws:
        await hello(ws, welcome["visitor_token"])
        await ws.send_str('{"type":"message","text":"' + "x" * 5000 + '"}')
        # The client may see 1006 instead: its close reply can race the
        # server's reset. The server's own count below is the proof.
        assert await closed_code(ws) in (1009, 1006)
    async with client.ws_connect("/ws/visitor") as ws:
        await hello(ws, welcome["visitor_token"])
        await ws.send_frame(b'{"type":"ping","x":"\xff\xfe"}', WSMsgType.TEXT)
        assert await closed_code(ws) in (1007, 1006)
    await until(lambda: desk_of(client).hub.open_sockets() == 0, "sockets closed")
    assert metric(client, "goflypy_sockets_closed_total", code="1009") == 1
    assert metric(client, "goflypy_sockets_closed_total", code="1007") == 1

    async with client.ws_connect("/ws/visitor") as ws:
        await hello(ws, welcome["visitor_token"])
        await ws.send_json({"type": "message", "client_id": "ok2", "text": "还在吗"})
        ack = await recv(ws, "ack")
        assert ack["client_id"] == "ok2"
    stored = desk_of(client).store.list_messages(welcome["conversation_id"])
    assert [m.client_id for m in stored if m.sender == "visitor"] == ["ok1", "ok2"]


async def test_frames_per_connection_are_limited_with_retry_after(
    make_client: Any,
) -> None:
    client = await make_client(frames_per_s=2)
    async with client.ws_connect("/ws/visitor") as ws:
        await hello(ws)
        for _ in range(12):
            await ws.send_json({"type": "ping"})
        error = await recv(ws, "error")
        assert error["code"] == "rate_limited" and error["retry_after_ms"] > 0
    assert metric(client, "goflypy_refused_total", limit="frame_rate") >= 1


async def test_messages_per_visitor_count_every_device(make_client: Any) -> None:
    client = await make_client(visitor_rate_per_min=6)  # a burst of 5
    async with client.ws_connect("/ws/visitor") as one:
        welcome = await hello(one)
        async with client.ws_connect("/ws/visitor") as two:
            await hello(two, welcome["visitor_token"])
            outcomes = []
            for i in range(8):
                ws = (one, two)[i % 2]
                await ws.send_json(
                    {"type": "message", "client_id": f"d{i}", "text": "嗨"}
                )
                frame = await recv(ws)
                while frame["type"] not in ("ack", "error"):
                    frame = await recv(ws)
                outcomes.append(frame["type"])
    assert outcomes.count("ack") == 5 and outcomes[-1] == "error"


async def test_messages_per_ip_count_every_visitor(make_client: Any) -> None:
    client = await make_client(ip_rate_per_min=60)  # a burst of 20
    codes = []
    for n in range(3):
        async with client.ws_connect("/ws/visitor") as ws:
            await hello(ws)
            for i in range(8):
                await ws.send_json(
                    {"type": "message", "client_id": f"{n}-{i}", "text": "嗨"}
                )
                frame = await recv(ws)
                while frame["type"] not in ("ack", "error"):
                    frame = await recv(ws)
                codes.append(frame.get("code", "ack"))
    assert codes.count("ack") == 20 and codes[-1] == "rate_limited"


async def test_message_length_is_counted_in_characters_at_both_entry_points(
    make_client: Any,
) -> None:
    client = await make_client(max_message_chars=10)
    agent = await agent_socket(client)
    async with client.ws_connect("/ws/visitor") as ws:
        conversation_id = (await hello(ws))["conversation_id"]
        # Ten characters of four UTF-8 bytes (two UTF-16 units) each fit.
        for client_id, text, expected in (
            ("e10", "😀" * 10, "ack"),
            ("e11", "😀" * 11, "too_long"),
        ):
            await ws.send_json(
                {"type": "message", "client_id": client_id, "text": text}
            )
            frame = await outcome(ws)
            assert frame.get("code", frame["type"]) == expected, client_id
        for client_id, text, expected in (
            ("h10", "好" * 9 + "👍", "ack"),
            ("h11", "好" * 10 + "👍", "too_long"),
        ):
            await agent.send_json(
                {
                    "type": "message",
                    "conversation_id": conversation_id,
                    "client_id": client_id,
                    "text": text,
                }
            )
            frame = await outcome(agent)
            assert frame.get("code", frame["type"]) == expected, client_id
    # Stored whole or not at all: nothing was cut to fit.
    stored = desk_of(client).store.list_messages(conversation_id)
    sent = [m.text for m in stored if m.sender in ("visitor", "agent")]
    assert sent == ["😀" * 10, "好" * 9 + "👍"]
    await agent.close()


async def test_agent_messages_are_limited_per_agent_across_tabs(
    make_client: Any,
) -> None:
    client = await make_client(agent_rate_per_min=1)  # a burst of 20
    tabs = [await agent_socket(client)]
    tabs.append(
        await client.ws_connect("/ws/agent", headers={"Origin": origin(client)})
    )
    async with client.ws_connect("/ws/visitor") as ws:
        conversation_id = (await hello(ws))["conversation_id"]
    outcomes = []
    for i in range(24):
        tab = tabs[i % 2]
        await tab.send_json(
            {
                "type": "message",
                "conversation_id": conversation_id,
                "client_id": f"r{i}",
                "text": "稍等",
            }
        )
        outcomes.append(await outcome(tab))
    assert [f["type"] for f in outcomes] == ["ack"] * 20 + ["error"] * 4
    assert outcomes[-1]["code"] == "rate_limited"
    assert outcomes[-1]["retry_after_ms"] > 0
    assert metric(client, "goflypy_refused_total", limit="message_rate") == 4
    for tab in tabs:
        await tab.close()


async def test_new_connections_per_ip_and_in_total_are_refused_with_a_reason(
    make_client: Any,
) -> None:
    client = await make_client(connects_per_ip_per_min=6, max_connections=3)
    first = await client.ws_connect("/ws/visitor")
    second = await client.ws_connect("/ws/visitor")
    third = await client.ws_connect("/ws/visitor")
    async with client.ws_connect("/ws/visitor") as full:
        error = await recv(full, "error")
        assert error["code"] == "busy" and error["retry_after_ms"] >= 1000
        assert await closed_code(full) == 1013
    for ws in (first, second, third):
        await ws.close()
    await until(lambda: desk_of(client).hub.open_sockets() == 0, "sockets closed")
    async with client.ws_connect("/ws/visitor") as limited:
        error = await recv(limited, "error")
        assert error["code"] == "rate_limited" and error["retry_after_ms"] > 0
        assert await closed_code(limited) == 1013


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    make_client: Any,
) -> None:
    # A burst of one connection per IP: the second from one address is refused.
    for trusted, refused in (("", True), ("127.0.0.1", False)):
        client = await make_client(connects_per_ip_per_min=2, trusted_proxies=trusted)
        for address in ("203.0.113.5", "198.51.100.7"):
            headers = {"X-Forwarded-For": f"10.9.9.9, {address}"}
            async with client.ws_connect("/ws/visitor", headers=headers) as ws:
                await ws.send_json({"type": "hello", "visitor_token": None})
                frame = await recv(ws)
        assert (frame["type"] == "error") is refused, trusted
        await client.close()


# Display, metrics


async def test_control_and_bidi_characters_never_reach_a_screen(
    client: TestClient,
) -> None:
    agent = await agent_socket(client)
    raw = "退款\u202e\u2066123\u0007\u009b\x1b[31m\n好的"
    async with client.ws_connect("/ws/visitor") as ws:
        welcome = await hello(ws, page="https://shop.example/\u202eexe.txt")
        await ws.send_json({"type": "message", "client_id": "b1", "text": raw})
        mine = await recv_message(ws, "visitor")
        seen = await recv_message(agent, "visitor")
        # Names too: an agent's display name reaches the shopper clean.
        eve = new_account("eve", AGENT_PASSWORD, "agent", "Eve\u202egnp.exe\u0007")
        await desk_of(client).claim(welcome["conversation_id"], eve)
        # The robot's reply to the message above may still be on its way, so
        # the greeting and the new state may arrive in either order.
        texts: list[str | None] = []
        status: dict[str, Any] | None = None
        while status is None or "客服 Evegnp.exe 为您服务" not in texts:
            frame = await recv(ws)
            if frame["type"] == "status" and frame["state"] == "assigned":
                status = frame
            else:
                texts.append(frame.get("text"))
        assert status["agent_name"] == "Evegnp.exe"
    assert mine["text"] == seen["text"] == "退款123[31m\n好的"
    await agent.send_json(
        {"type": "open", "conversation_id": welcome["conversation_id"]}
    )
    history = await recv(agent, "history")
    assert history["visitor"]["page"] == "https://shop.example/exe.txt"
    stored = desk_of(client).store.list_messages(welcome["conversation_id"])
    assert raw in [m.text for m in stored]  # stored verbatim
    await agent.close()


async def scrape(client: TestClient) -> dict[tuple[str, str], float]:
    """/metrics parsed by the client library: (name, labels) -> value."""
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[(sample.name, labels)] = sample.value
    return samples


async def test_metrics_and_healthz(client: TestClient) -> None:
    agent = await agent_socket(client)
    async with client.ws_connect("/ws/visitor") as ws:
        await hello(ws)
        await ws.send_json({"type": "message", "client_id": "m1", "text": "运费怎么算"})
        await recv(ws, "ack")
        answer = await recv_message(ws, "robot", seq_above=2)
        samples = await scrape(client)
    assert answer["kind"] == "answer"
    expected = {
        ("goflypy_connections", "kind=visitor"): 1,
        ("goflypy_connections", "kind=agent"): 1,
        ("goflypy_online", "kind=visitor"): 1,
        ("goflypy_messages_received_total", "sender=visitor"): 1,
        ("goflypy_messages_received_total", "sender=agent"): 0,
        # Greeting, the shopper's own message and the answer, to each side.
        ("goflypy_messages_sent_total", "kind=visitor"): 3,
        ("goflypy_messages_sent_total", "kind=agent"): 3,
        ("goflypy_sockets_dropped_total", "reason=queue_full"): 0,
        ("goflypy_sockets_dropped_total", "reason=dead"): 0,
        ("goflypy_robot_decisions_total", "action=answer"): 1,
        ("goflypy_message_commit_seconds_count", "sender=visitor"): 1,
    }
    for key, value in expected.items():
        assert samples.get(key) == value, key
    assert samples[("goflypy_store_commits_total", "")] > 0
    assert ("goflypy_store_last_commit_seconds", "") in samples
    assert samples[("goflypy_frames_sent_total", "kind=visitor")] >= 5
    assert samples[("process_resident_memory_bytes", "")] > 0

    health = await (await client.get("/healthz")).json()
    assert health["status"] == "ok"
    assert health["connections"]["agent_sockets"] == 1
    await until(
        lambda: desk_of(client).hub.counts()["visitor_sockets"] == 0, "visitor gone"
    )
    health = await (await client.get("/healthz")).json()
    assert health["connections"]["visitor_sockets"] == 0
    await agent.close()


async def test_metrics_count_the_archive_backlog(make_client: Any) -> None:
    # Idle after about 0.4 s; no archiver pass runs during the test.
    client = await make_client(archive_after_hours=0.0001, archive_interval_s=3600)
    for _ in range(2):
        async with client.ws_connect("/ws/visitor") as ws:
            await hello(ws)
            await recv_message(ws, "robot")
    await asyncio.sleep(0.5)
    samples = await scrape(client)
    assert samples[("goflypy_archive_backlog", "")] == 2


async def test_metrics_are_refused_to_remote_scrapers(make_client: Any) -> None:
    client = await make_client(trusted_proxies="127.0.0.1")
    response = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert response.status == 403
    assert (await client.get("/metrics")).status == 200
