"""Order ids, and the order client against a real local HTTP server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from goflypy.orders import (
    ASK_ID_REPLY,
    NO_ENDPOINT_REPLY,
    SIGN_IN_REPLY,
    UNAVAILABLE_REPLY,
    VERIFY_BY_HUMAN_REPLY,
    CircuitBreaker,
    OrderClient,
    answer_order,
    bare_order_id,
    extract_order_id,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("订单1234发货没", "1234"),
        ("1234订单发货没", "1234"),
        ("订单号：ＡＢ２０２４０１０１００１到哪了", "AB20240101001"),
        ("我的单子SO-20240101-001还没发", "SO-20240101-001"),
        ("订单号 778899 到哪了", "778899"),
        ("order no. AB123456 status", "AB123456"),
    ],
)
def test_order_ids_are_extracted_exactly(text: str, expected: str) -> None:
    assert extract_order_id(text) == expected


@pytest.mark.parametrize(
    "text", ["草莓怎么保存", "订单怎么取消", "买3斤草莓", "", "订单12发货没", "！！！"]
)
def test_no_order_id(text: str) -> None:
    assert extract_order_id(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SO-20240101-001", "SO-20240101-001"),
        (" ab123456。", "AB123456"),
        ("１２３４", "1234"),
        ("12", None),
        ("订单1234", None),
        ("SO 1234", None),
        ("草莓", None),
    ],
)
def test_bare_order_ids(text: str, expected: str | None) -> None:
    assert bare_order_id(text) == expected


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_half_opens_for_one_trial() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(2, 30.0, clock=clock)
    breaker.record(False)
    assert breaker.allow()
    breaker.record(False)
    assert not breaker.allow() and breaker.is_open()

    clock.now += 30.0
    assert breaker.allow()  # the one trial
    assert not breaker.allow()  # others wait for its outcome
    breaker.record(False)
    assert not breaker.allow()

    clock.now += 30.0
    assert breaker.allow()
    breaker.record(True)
    assert breaker.allow() and breaker.allow() and not breaker.is_open()


class ShopOrders:
    """A stand-in for a shop's order system, with switchable misbehaviour."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        self.mode = "ok"

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append(dict(request.query) | {"id": request.match_info["id"]})
        if self.mode == "slow":
            await asyncio.sleep(2.0)
        if self.mode == "fail":
            return web.Response(status=500)
        if self.mode == "other_owner":
            return web.json_response({"status": "已发货", "shopper_id": "alice"})
        if self.mode == "huge":
            return web.json_response({"status": "已发货", "note": "x" * 70_000})
        if self.mode == "no_status":
            return web.json_response({"state": "已发货"})
        if request.query.get("shopper") != "alice":
            return web.Response(status=404)
        body: dict[str, Any] = {"status": "已发货", "carrier": "顺丰", "eta": None}
        return web.json_response(body)


@pytest.fixture
async def shop(aiohttp_server: Any) -> tuple[ShopOrders, str]:
    orders = ShopOrders()
    app = web.Application()
    app.router.add_get("/orders/{id}", orders.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    return (
        orders,
        f"http://127.0.0.1:{server.port}/orders/{{order_id}}?shopper={{shopper_id}}",
    )


async def test_verified_shopper_sees_own_order(shop: tuple[ShopOrders, str]) -> None:
    orders, url = shop
    client = OrderClient(url, template="订单{order_id}：{status}（{carrier}）")
    try:
        reply = await client.reply("SO-1", "alice")
    finally:
        await client.close()
    assert reply.text == "订单SO-1：已发货（顺丰）"
    assert not reply.handoff
    assert orders.calls == [{"shopper": "alice", "id": "SO-1"}]


async def test_unverified_shopper_is_never_looked_up(
    shop: tuple[ShopOrders, str],
) -> None:
    orders, url = shop
    client = OrderClient(url)
    reply = await answer_order(client, "SO-1", None, can_sign_in=True)
    assert reply.text == SIGN_IN_REPLY and not reply.handoff
    reply = await answer_order(client, "SO-1", None, can_sign_in=False)
    assert reply.text == VERIFY_BY_HUMAN_REPLY and reply.handoff
    reply = await answer_order(client, None, "alice", can_sign_in=True)
    assert reply.text == ASK_ID_REPLY and not reply.handoff
    await client.close()
    assert orders.calls == []


async def test_no_endpoint_hands_off() -> None:
    reply = await answer_order(None, "SO-1", "alice", can_sign_in=True)
    assert reply.text == NO_ENDPOINT_REPLY and reply.handoff
    assert reply.outcome == "no_endpoint"


async def test_wrong_shopper_gets_no_order(shop: tuple[ShopOrders, str]) -> None:
    _orders, url = shop
    client = OrderClient(url)
    reply = await client.reply("SO-1", "mallory")
    await client.close()
    assert "已发货" not in reply.text and reply.handoff
    assert reply.outcome == "not_found"


async def test_answer_naming_another_owner_is_not_shown(
    shop: tuple[ShopOrders, str],
) -> None:
    orders, url = shop
    orders.mode = "other_owner"
    client = OrderClient(url)
    reply = await client.reply("SO-1", "mallory")
    await client.close()
    assert "已发货" not in reply.text and reply.outcome == "not_found"


@pytest.mark.parametrize("mode", ["huge", "no_status"])
async def test_unusable_answers_are_failures(
    shop: tuple[ShopOrders, str], mode: str
) -> None:
    orders, url = shop
    orders.mode = mode
    client = OrderClient(url, retries=0)
    reply = await client.reply("SO-1", "alice")
    await client.close()
    assert reply.outcome == "unavailable" and reply.handoff
    assert "已发货" not in reply.text


async def test_template_renders_missing_and_null_fields_empty(
    shop: tuple[ShopOrders, str],
) -> None:
    _orders, url = shop
    client = OrderClient(url, template="{order_id}|{status}|{eta}|{nothing}")
    reply = await client.reply("SO-1", "alice")
    await client.close()
    assert reply.text == "SO-1|已发货||"


async def test_slow_endpoint_times_out(shop: tuple[ShopOrders, str]) -> None:
    orders, url = shop
    orders.mode = "slow"
    client = OrderClient(url, timeout_s=0.2, retries=1)
    reply = await client.reply("SO-1", "alice")
    await client.close()
    # Had the client waited, the endpoint would have answered with the order.
    assert reply.text == UNAVAILABLE_REPLY and reply.handoff
    assert reply.outcome == "unavailable"
    assert len(orders.calls) == 2


async def test_failing_endpoint_opens_the_breaker(
    shop: tuple[ShopOrders, str],
) -> None:
    orders, url = shop
    orders.mode = "fail"
    client = OrderClient(url, retries=0, breaker=CircuitBreaker(2, 60.0))
    for _ in range(2):
        assert (await client.reply("SO-1", "alice")).outcome == "unavailable"
    reply = await client.reply("SO-1", "alice")
    await client.close()
    assert reply.outcome == "breaker_open"
    assert reply.text == UNAVAILABLE_REPLY and reply.handoff
    assert len(orders.calls) == 2
