"""Verified shopper identity over real visitor sockets on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from goflypy.config import ConfigError
from goflypy.identity import sign
from goflypy.server import make_app
from goflypy.store.keys import now_ms
from tests.conftest import ClientFactory, desk_of, make_config
from tests.test_ws_functional import recv, recv_message

SECRET = b"functional-test-secret-0123456789"
DAY_MS = 86_400_000


def signed(shopper_id: str, ts: int | None = None) -> dict[str, Any]:
    """An identity as the shop's backend would sign it."""
    ts = now_ms() if ts is None else ts
    return {"shopper_id": shopper_id, "ts": ts, "sig": sign(SECRET, shopper_id, ts)}


def secret_file(tmp_path: Path) -> str:
    path = tmp_path / "identity.secret"
    path.write_bytes(SECRET + b"\n")
    path.chmod(0o600)
    return str(path)


@pytest.fixture
async def shop_client(make_client: ClientFactory, tmp_path: Path) -> TestClient:
    return await make_client(identity_secret_file=secret_file(tmp_path))


async def hello(
    ws: Any,
    identity: Any = None,
    token: str | None = None,
    last_seq: int = 0,
) -> dict[str, Any]:
    """Send hello; return the frames up to and including ``welcome``."""
    frame: dict[str, Any] = {
        "type": "hello",
        "visitor_token": token,
        "channel": "web",
        "last_seq": last_seq,
    }
    if identity is not None:
        frame["identity"] = identity
    await ws.send_json(frame)
    before: list[dict[str, Any]] = []
    while True:
        got = await recv(ws)
        if got["type"] == "welcome":
            return {"welcome": got, "before": before}
        before.append(got)


async def test_verified_hello_is_stored_and_shown_to_agents(
    shop_client: TestClient,
) -> None:
    async with shop_client.ws_connect("/ws/visitor") as ws:
        got = await hello(ws, signed("u-1001"))
        welcome = got["welcome"]
        assert got["before"] == []
        assert welcome["shopper_id"] == "u-1001"

    desk = desk_of(shop_client)
    visitor = desk.store.get_visitor(welcome["visitor_id"])
    assert visitor.shopper_id == "u-1001"
    profile = desk.visitor_profile(visitor)
    assert profile["shopper_id"] == "u-1001" and "u-1001" in profile["name"]
    summary = desk.summary(desk.store.get_conversation(welcome["conversation_id"]))
    assert summary["shopper_id"] == "u-1001"


async def test_identity_links_two_devices(shop_client: TestClient) -> None:
    async with shop_client.ws_connect("/ws/visitor") as phone:
        first = (await hello(phone, signed("u-1001")))["welcome"]
        await phone.send_json({"type": "message", "client_id": "p-1", "text": "在吗"})
        await recv(phone, "ack")

        # A second device knows nothing but the shopper's signed identity.
        async with shop_client.ws_connect("/ws/visitor") as laptop:
            second = (await hello(laptop, signed("u-1001")))["welcome"]
            assert second["visitor_id"] == first["visitor_id"]
            assert second["conversation_id"] == first["conversation_id"]
            assert second["visitor_token"] != first["visitor_token"]
            texts = []
            while "在吗" not in texts:
                texts.append((await recv_message(laptop))["text"])

            # Both devices get what either one sends.
            await laptop.send_json(
                {"type": "message", "client_id": "l-1", "text": "草莓怎么保存"}
            )
            echoed = await recv_message(phone, "visitor")
            while echoed["text"] != "草莓怎么保存":
                echoed = await recv_message(phone, "visitor")
            assert echoed["client_id"] == "l-1"

        # The laptop's own token resumes the same shopper later on.
        visitor = desk_of(shop_client).store.find_visitor(second["visitor_token"])
        assert visitor.id == first["visitor_id"]


async def test_anonymous_visitor_who_signs_in_keeps_the_conversation(
    shop_client: TestClient,
) -> None:
    async with shop_client.ws_connect("/ws/visitor") as ws:
        anonymous = (await hello(ws))["welcome"]
    async with shop_client.ws_connect("/ws/visitor") as ws:
        got = await hello(ws, signed("u-2002"), token=anonymous["visitor_token"])
        welcome = got["welcome"]
    assert welcome["visitor_id"] == anonymous["visitor_id"]
    assert welcome["visitor_token"] == anonymous["visitor_token"]
    visitor = desk_of(shop_client).store.find_shopper("u-2002")
    assert visitor.id == anonymous["visitor_id"]


async def test_another_shopper_on_the_same_device_gets_their_own_visitor(
    shop_client: TestClient,
) -> None:
    async with shop_client.ws_connect("/ws/visitor") as ws:
        alice = (await hello(ws, signed("alice")))["welcome"]
    async with shop_client.ws_connect("/ws/visitor") as ws:
        bob = (await hello(ws, signed("bob"), token=alice["visitor_token"]))["welcome"]
    assert bob["visitor_id"] != alice["visitor_id"]
    assert bob["conversation_id"] != alice["conversation_id"]
    assert bob["visitor_token"] != alice["visitor_token"]
    store = desk_of(shop_client).store
    assert store.get_visitor(alice["visitor_id"]).shopper_id == "alice"
    assert store.find_shopper("bob").id == bob["visitor_id"]


@pytest.mark.parametrize(
    ("make_identity", "reason"),
    [
        (lambda: {**signed("u-1001"), "shopper_id": "u-9999"}, "signature"),
        (lambda: {**signed("u-1001"), "sig": "0" * 64}, "signature"),
        (lambda: signed("u-1001", now_ms() - 2 * DAY_MS), "expired"),
        (lambda: {"shopper_id": "u-1001"}, "malformed"),
        (lambda: "u-1001", "malformed"),
    ],
)
async def test_bad_identity_is_refused_and_the_socket_goes_on_anonymous(
    shop_client: TestClient, make_identity: Any, reason: str
) -> None:
    async with shop_client.ws_connect("/ws/visitor") as ws:
        got = await hello(ws, make_identity())
        assert [f["code"] for f in got["before"]] == ["bad_identity"]
        assert got["before"][0]["reason"] == reason
        welcome = got["welcome"]
        assert "shopper_id" not in welcome

        # The socket still works, as an anonymous visitor.
        await ws.send_json({"type": "message", "client_id": "c-1", "text": "你好"})
        await recv(ws, "ack")

    store = desk_of(shop_client).store
    assert store.get_visitor(welcome["visitor_id"]).shopper_id == ""
    assert store.find_shopper("u-1001") is None


async def test_identity_on_a_server_without_a_secret_is_refused(
    client: TestClient,
) -> None:
    async with client.ws_connect("/ws/visitor") as ws:
        got = await hello(ws, signed("u-1001"))
    assert got["before"][0]["code"] == "bad_identity"
    assert got["before"][0]["reason"] == "disabled"
    assert "shopper_id" not in got["welcome"]


async def test_missing_secret_file_stops_start_up(tmp_path: Path) -> None:
    config = make_config(tmp_path, identity_secret_file=str(tmp_path / "absent"))
    server = TestServer(make_app(config), host="127.0.0.1")
    try:
        with pytest.raises(ConfigError, match="identity_secret_file"):
            await server.start_server()
    finally:
        await server.close()
