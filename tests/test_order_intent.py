"""Which messages are order questions (and which stay with the FAQ)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from goflypy.config import ConfigError, load
from goflypy.nlp.intents import OrderQuery, detect_order

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "order_id"),
    [
        ("订单1234发货没", "1234"),
        ("1234订单发货没", "1234"),
        ("订单号：ＡＢ２０２４０１０１００１到哪了", "AB20240101001"),
        ("我的单子SO-20240101-001还没发", "SO-20240101-001"),
        ("訂單1234發貨沒", "1234"),
        ("你好，订单5678到哪了", "5678"),
        ("订单\u200b1234发货没", "1234"),
    ],
)
def test_messages_naming_an_order(text: str, order_id: str) -> None:
    assert detect_order(text) == OrderQuery(order_id)


@pytest.mark.parametrize(
    "text",
    ["我的快递到哪了", "我的订单发货了吗", "帮我查一下订单", "我买的东西还没到"],
)
def test_questions_about_my_order_without_an_id(text: str) -> None:
    assert detect_order(text) == OrderQuery(None)


@pytest.mark.parametrize(
    "text",
    [
        "快递到哪了",
        "怎么查物流",
        "下单后多久能送到",
        "订单怎么取消",
        "订单12发货没",
        "订单1234转人工",
        "",
        "！！！",
        "草莓怎么保存",
    ],
)
def test_not_order_questions(text: str) -> None:
    assert detect_order(text) is None


def test_no_demo_faq_wording_is_taken_for_an_order_question() -> None:
    texts = []
    for line in (ROOT / "goflypy/data/demo_faq.jsonl").read_text("utf-8").splitlines():
        entry = json.loads(line)
        texts += [entry["question"], *entry["alternatives"]]
    orders = []
    for line in (ROOT / "tests/data/retail_queries.jsonl").read_text().splitlines():
        query = json.loads(line)
        (orders if query.get("intent") == "order" else texts).append(query["query"])
    assert texts and orders
    assert [text for text in texts if detect_order(text)] == []
    assert [text for text in orders if not detect_order(text)] == []


# The order settings


@pytest.mark.parametrize(
    "url",
    [
        "ftp://shop.example/{order_id}?s={shopper_id}",
        "https://shop.example/orders/{order_id}",
        "https://shop.example/{order_id}?s={shopper_id}&x={other}",
        "https://shop.example/{order_id.__class__}?s={shopper_id}",
        "https://shop.example/{order_id?s={shopper_id}",
    ],
)
def test_bad_order_urls_fail_at_start_up(url: str) -> None:
    with pytest.raises(ConfigError, match="order_url"):
        load(None, {"order_url": url}, environ={})


def test_order_settings_from_the_environment() -> None:
    environ = {
        "GOFLY_ORDER_URL": "https://shop.example/o/{order_id}?who={shopper_id}",
        "GOFLY_ORDER_RETRIES": "0",
        "GOFLY_ORDER_REPLY_TEMPLATE": "{order_id}: {status}",
    }
    config = load(None, {}, environ=environ)
    assert config.order_url.endswith("?who={shopper_id}")
    assert config.order_retries == 0
    assert config.order_reply_template == "{order_id}: {status}"


@pytest.mark.parametrize("template", ["{status!r}", "{status:>9}", "{a[0]}", "{"])
def test_reply_template_takes_plain_fields_only(template: str) -> None:
    with pytest.raises(ConfigError, match="order_reply_template"):
        load(None, {"order_reply_template": template}, environ={})
