"""Realtime behaviour over real sockets on 127.0.0.1: back-pressure, pings,
presence with several devices, limits, hostile input, metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import ClientSession, WSMsgType
from aiohttp.test_utils import TestClient

from tests.conftest import add_agent, desk_of, sign_in
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
    assert mine["text"] == seen["text"] == "退款123[31m\n好的"
    await agent.send_json(
        {"type": "open", "conversation_id": welcome["conversation_id"]}
    )
    history = await recv(agent, "history")
    assert history["visitor"]["page"] == "https://shop.example/exe.txt"
    stored = desk_of(client).store.list_messages(welcome["conversation_id"])
    assert stored[-1].text == raw or raw in [m.text for m in stored]
    await agent.close()


async def test_metrics_and_healthz(client: TestClient) -> None:
    async with client.ws_connect("/ws/visitor") as ws:
        await hello(ws)
        await ws.send_json({"type": "message", "client_id": "m1", "text": "运费怎么算"})
        await recv(ws, "ack")
        await recv_message(ws, "robot", seq_above=2)
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    for line in (
        'goflypy_connections{kind="visitor"} 1.0',
        'goflypy_messages_received_total{sender="visitor"} 1.0',
        'goflypy_message_commit_seconds_count{sender="visitor"} 1.0',
        "goflypy_robot_decisions_total{action=",
        "goflypy_store_commits_total",
        'goflypy_sockets_dropped_total{reason="dead"}',
        "goflypy_archive_backlog 0.0",
        "process_resident_memory_bytes",
    ):
        assert line in text or line.split("{")[0] in text, line
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "ok" and health["connections"]["visitor_sockets"] == 0


async def test_metrics_are_refused_to_remote_scrapers(make_client: Any) -> None:
    client = await make_client(trusted_proxies="127.0.0.1")
    response = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert response.status == 403
    assert (await client.get("/metrics")).status == 200
