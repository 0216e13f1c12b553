"""Intents recognised before FAQ retrieval: greetings, asking for a human, and
order status (answered from the shop's order system, never from the FAQ)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..orders import extract_order_id
from .normalize import is_meaningful_char, normalize_text

GREETING = "greeting"
HUMAN = "human"
ORDER = "order"

_GREETING_TEXT = """
    你好呀 你好啊 您好呀 您好啊 你们好 大家好 早上好 上午好 中午好 下午好 晚上好
    你好 您好 哈喽 嗨 在吗 在不在 在嘛 有人吗 有人在吗 客服在吗 老板在吗 店家在吗
    在 亲 亲亲 老板 店家 掌柜 早 早安 晚安 hello hi hey hallo 哈罗 嗨喽
    啊 呀 哈 哦 嗯 喂 诶 哎 吗 嘛 呢
"""
# Longest first, so "你好呀" is consumed whole before "你好".
_GREETING_WORDS = sorted(_GREETING_TEXT.split(), key=len, reverse=True)

# Lone particles are not greetings; they fall through to retrieval and hand off.
_FILLERS = frozenset("啊呀哈哦嗯诶哎嘛呢")

_HUMAN = re.compile(
    "转人工|人工客服|人工服务|人工坐席|找人工|要人工|接人工|转接人工|呼叫人工"
    "|人工$|^人工|真人|活人|找客服|联系客服|叫客服|要客服|转客服|客服电话"
    "|human|agent|real person"
)


def _strip_greetings(text: str) -> str:
    """Remove greeting words and punctuation; return what is left."""
    rest = "".join(char for char in text if is_meaningful_char(char))
    for word in _GREETING_WORDS:
        rest = rest.replace(word, "")
    return rest


def detect_intent(text: str) -> str | None:
    """Return ``"human"``, ``"greeting"`` or None for an ordinary question."""
    clean = normalize_text(text)
    compact = "".join(char for char in clean if is_meaningful_char(char) or char == " ")
    if _HUMAN.search(compact.replace(" ", "")) or _HUMAN.search(compact):
        return HUMAN

    bare = compact.replace(" ", "")
    if not bare or all(char in _FILLERS for char in bare):
        return None
    if not _strip_greetings(bare):
        return GREETING
    return None


# "My order / parcel ..." plus a progress word: the shopper asks about one of
# their own orders without naming it. General how-to questions ("快递到哪了",
# "怎么查物流") carry no "my" and stay with the FAQ.
_MINE = re.compile(
    "我(?:的|们的|买的|下的|订的|刚买的|昨天买的|前天买的|那个|这个|那单|这单)"
    ".{0,8}?(?:订单|单子|包裹|快递|物流|货|东西)"
)
_PROGRESS = re.compile(
    "发货|发了|发出|出库|到哪|到了|送到|送达|还没到|还没发|没收到|收不到|进度|状态"
    "|什么时候到|啥时候到|几时到|多久到|签收|派送|配送|物流信息"
)
_CHECK_MINE = re.compile(
    "(?:帮我|帮忙|给我|麻烦)查(?:一下|下|查|询)?(?:我的)?(?:订单|物流|快递|包裹)"
)


@dataclass(frozen=True, slots=True)
class OrderQuery:
    """An order-status question; ``order_id`` is None when none was named."""

    order_id: str | None


def detect_order(text: str) -> OrderQuery | None:
    """Return the order question in ``text``, or None (CPU only, microseconds).

    A message naming an order id is an order question; so is one about the
    shopper's own order ("我的快递到哪了"). Asking for a human wins.
    """
    if detect_intent(text) == HUMAN:
        return None
    clean = normalize_text(text)
    order_id = extract_order_id(clean)
    if order_id is not None:
        return OrderQuery(order_id)
    compact = clean.replace(" ", "")
    if (_MINE.search(compact) and _PROGRESS.search(compact)) or _CHECK_MINE.search(
        compact
    ):
        return OrderQuery(None)
    return None
