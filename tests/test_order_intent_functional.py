"""Order questions end to end: a real server, real visitor sockets, and a real
local HTTP server standing in for the shop's order system."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from goflypy.identity import sign_order_request
from goflypy.models import FaqEntry
from goflypy.orders import (
    ASK_ID_REPLY,
    NO_ENDPOINT_REPLY,
    SIGN_IN_REPLY,
    UNAVAILABLE_REPLY,
    VERIFY_BY_HUMAN_REPLY,
)
from goflypy.store.keys import now_ms
from tests.conftest import ClientFactory, desk_of
from tests.test_identity_functional import SECRET, hello, secret_file, signed
from tests.test_ws_functional import recv, recv_message

TEMPLATE = "订单 {order_id}：{status}，{carrier} 承运"


class ShopOrders:
    """The shop's order system: alice owns every order; modes misbehave."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        self.signatures: list[bool] = []
        self.mode = "ok"
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append({"id": request.match_info["id"], **request.query})
        self.signatures.append(is_signed_by_goflypy(request))
        if self.mode == "hold":
            await asyncio.wait_for(self.release.wait(), 30)
        if self.mode == "fail":
            return web.Response(status=500, text="boom")
        if request.query.get("shopper") != "alice":
            return web.json_response({"error": "not this shopper's"}, status=404)
        return web.json_response({"status": "已发货", "carrier": "顺丰"})


def is_signed_by_goflypy(request: web.Request) -> bool:
    """What a shop's endpoint checks: the request signature and its age."""
    ts = request.headers.get("X-Goflypy-Timestamp", "0")
    expected = sign_order_request(
        SECRET,
        request.match_info["id"],
        request.query.get("shopper", ""),
        int(ts),
    )
    fresh = abs(now_ms() - int(ts)) < 300_000
    given = request.headers.get("X-Goflypy-Signature", "")
    return fresh and hmac.compare_digest(expected, given)


@pytest.fixture
async def shop(aiohttp_server: Any) -> AsyncIterator[tuple[ShopOrders, str]]:
    orders = ShopOrders()
    app = web.Application()
    app.router.add_get("/orders/{id}", orders.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    url = f"http://127.0.0.1:{server.port}/orders/{{order_id}}?shopper={{shopper_id}}"
    yield orders, url
    orders.release.set()


@pytest.fixture
def start(
    make_client: ClientFactory, tmp_path: Path, shop: tuple[ShopOrders, str]
) -> Any:
    """Start goflypy with identity and the order endpoint; overrides apply."""

    async def factory(**overrides: Any) -> TestClient:
        settings: dict[str, Any] = {
            "identity_secret_file": secret_file(tmp_path),
            "order_url": shop[1],
            "order_reply_template": TEMPLATE,
            "order_timeout_s": 5.0,
        }
        settings.update(overrides)
        return await make_client(**settings)

    return factory


async def ask(
    client: TestClient, text: str, identity: Any = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Say ``text`` as a new visitor; return the robot's reply and the state."""
    async with client.ws_connect("/ws/visitor") as ws:
        await hello(ws, identity)
        return await say(client, ws, text)


async def say(
    client: TestClient, ws: Any, text: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send ``text``; return the robot's reply and the conversation's state
    once the robot has finished with it (a hand-off included)."""
    await ws.send_json({"type": "message", "client_id": text[:60], "text": text})
    ack = await recv(ws, "ack")
    reply = await recv_message(ws, "robot", seq_above=ack["seq"])
    desk = desk_of(client)
    await asyncio.gather(*list(desk._robot_tasks))
    conversation = desk.store.get_conversation(reply["conversation_id"])
    return reply, {"state": conversation.state}


async def test_verified_shopper_gets_the_rendered_answer(
    start: Any, shop: tuple[ShopOrders, str]
) -> None:
    orders, _url = shop
    client = await start()
    reply, status = await ask(client, "订单1234发货没", signed("alice"))
    assert reply["text"] == "订单 1234：已发货，顺丰 承运"
    assert reply["kind"] == "order" and reply["order_outcome"] == "found"
    assert "faq_id" not in reply
    assert status["state"] == "robot"
    assert orders.calls == [{"id": "1234", "shopper": "alice"}]
    assert orders.signatures == [True]


@pytest.mark.parametrize(
    ("text", "order_id"),
    [
        ("1234订单发货没", "1234"),
        ("订单号：ＡＢ２０２４０１０１００１到哪了", "AB20240101001"),
        ("我的单子SO-20240101-001还没发", "SO-20240101-001"),
    ],
)
async def test_every_order_id_form_reaches_the_endpoint(
    start: Any, shop: tuple[ShopOrders, str], text: str, order_id: str
) -> None:
    orders, _url = shop
    client = await start()
    reply, _status = await ask(client, text, signed("alice"))
    assert reply["order_outcome"] == "found"
    assert orders.calls == [{"id": order_id, "shopper": "alice"}]


async def test_the_order_id_is_never_a_retrieval_feature(
    start: Any, shop: tuple[ShopOrders, str]
) -> None:
    client = await start()
    desk = desk_of(client)
    trap = FaqEntry("trap", "订单1234发货没", "FAQ 里的答案", ["1234发货没"])
    await desk.store.put_faq([trap])
    desk.robot.rebuild(desk.store.list_faq())

    reply, _status = await ask(client, "订单1234发货没", signed("alice"))
    assert reply["text"] == "订单 1234：已发货，顺丰 承运"
    reply, _status = await ask(client, "订单1234发货没")
    assert reply["text"] == SIGN_IN_REPLY


async def test_wrong_shopper_sees_no_order_and_is_handed_off(
    start: Any, shop: tuple[ShopOrders, str]
) -> None:
    orders, _url = shop
    client = await start()
    reply, status = await ask(client, "订单1234发货没", signed("mallory"))
    assert reply["order_outcome"] == "not_found"
    assert "已发货" not in reply["text"] and "顺丰" not in reply["text"]
    assert status["state"] == "queued"
    assert orders.calls == [{"id": "1234", "shopper": "mallory"}]


async def test_the_endpoint_gets_the_verified_id_not_what_the_text_says(
    start: Any, shop: tuple[ShopOrders, str]
) -> None:
    orders, _url = shop
    client = await start()
    reply, _status = await ask(client, "我是alice，订单1234发货没", signed("bob"))
    assert reply["order_outcome"] == "not_found"
    assert orders.calls[0]["shopper"] == "bob"


async def test_unverified_shopper_is_asked_to_sign_in(
    start: Any, shop: tuple[ShopOrders, str]
) -> None:
    orders, _url = shop
    client = await start()
    reply, status = await ask(client, "订单1234发货没")
    assert reply["text"] == SIGN_IN_REPLY and reply["order_outcome"] == "unverified"
    assert status["state"] == "robot"

    # A forged identity is no better than none.
    forged = {**signed("alice"), "sig": "0" * 64}
    reply, _status = await ask(client, "订单1234发货没", forged)
    assert reply["text"] == SIGN_IN_REPLY
    assert orders.calls == []


async def test_without_identity_set_up_order_questions_go_to_a_human(
    start: Any, shop: tuple[ShopOrders, str]
) -> None:
    orders, _url = shop
    client = await start(identity_secret_file="")
    reply, status = await ask(client, "订单1234发货没")
    assert reply["text"] == VERIFY_BY_HUMAN_REPLY
    assert status["state"] == "queued"
    assert orders.calls == []


async def test_without_an_endpoint_order_questions_go_to_a_human(
    start: Any, shop: tuple[ShopOrders, str]
) -> None:
    orders, _url = shop
    client = await start(order_url="")
    reply, status = await ask(client, "订单1234发货没", signed("alice"))
    assert reply["text"] == NO_ENDPOINT_REPLY
    assert reply["order_outcome"] == "no_endpoint"
    assert status["state"] == "queued"
    assert orders.calls == []


async def test_slow_endpoint_times_out_into_a_hand_off(
    start: Any, shop: tuple[ShopOrders, str]
) -> None:
    orders, _url = shop
    orders.mode = "hold"  # answers only when released, which never happens here
    client = await start(order_timeout_s=0.2, order_retries=1)
    reply, status = await ask(client, "订单1234发货没", signed("alice"))
    assert reply["text"] == UNAVAILABLE_REPLY
    assert reply["order_outcome"] == "unavailable"
    assert status["state"] == "queued"
    assert len(orders.calls) == 2


async def test_failing_endpoint_hands_off(
    start: Any, shop: tuple[ShopOrders, str]
) -> None:
    orders, _url = shop
    orders.mode = "fail"
    client = await start(order_retries=2)
    reply, status = await ask(client, "订单1234发货没", signed("alice"))
    assert reply["text"] == UNAVAILABLE_REPLY
    assert status["state"] == "queued"
    assert len(orders.calls) == 3


async def test_breaker_opens_after_repeated_failures(
    start: Any, shop: tuple[ShopOrders, str]
) -> None:
    orders, _url = shop
    orders.mode = "fail"
    client = await start(order_retries=0, order_breaker_failures=2)
    outcomes = []
    for number in range(4):
        reply, _status = await ask(client, "订单1234发货没", signed(f"s-{number}"))
        outcomes.append(reply["order_outcome"])
    assert outcomes == ["unavailable", "unavailable", "breaker_open", "breaker_open"]
    assert len(orders.calls) == 2
    assert desk_of(client).robot_decisions["order"] == 4


async def test_a_pending_lookup_does_not_hold_up_other_shoppers(
    start: Any, shop: tuple[ShopOrders, str]
) -> None:
    orders, _url = shop
    orders.mode = "hold"
    client = await start()
    async with client.ws_connect("/ws/visitor") as waiting:
        await hello(waiting, signed("alice"))
        await waiting.send_json(
            {"type": "message", "client_id": "w-1", "text": "订单1234发货没"}
        )
        asked = await recv(waiting, "ack")

        # While the shop's system sits on that question, others are served.
        async with client.ws_connect("/ws/visitor") as other:
            await hello(other)
            await other.send_json(
                {"type": "message", "client_id": "o-1", "text": "草莓怎么保存"}
            )
            said = await recv(other, "ack")
            reply = await recv_message(other, "robot", seq_above=said["seq"])
        assert reply["kind"] == "answer"
        assert len(orders.calls) == 1

        orders.release.set()
        answer = await recv_message(waiting, "robot", seq_above=asked["seq"])
        assert answer["text"] == "订单 1234：已发货，顺丰 承运"


async def test_order_question_without_an_id_asks_for_it(
    start: Any, shop: tuple[ShopOrders, str]
) -> None:
    orders, _url = shop
    client = await start()
    async with client.ws_connect("/ws/visitor") as ws:
        await hello(ws, signed("alice"))
        reply, _status = await say(client, ws, "我的快递到哪了")
        assert reply["text"] == ASK_ID_REPLY
        assert orders.calls == []
        reply, _status = await say(client, ws, "SO-20240101-001")
        assert reply["order_outcome"] == "found"
    assert orders.calls == [{"id": "SO-20240101-001", "shopper": "alice"}]


async def test_a_bare_number_without_being_asked_is_not_an_order(
    start: Any, shop: tuple[ShopOrders, str]
) -> None:
    orders, _url = shop
    client = await start()
    reply, _status = await ask(client, "20240101001", signed("alice"))
    assert reply["kind"] != "order"
    assert orders.calls == []


async def test_asking_for_a_human_wins_over_an_order_id(
    start: Any, shop: tuple[ShopOrders, str]
) -> None:
    orders, _url = shop
    client = await start()
    reply, status = await ask(client, "订单1234转人工", signed("alice"))
    assert reply["kind"] == "human" and status["state"] == "queued"
    assert orders.calls == []
