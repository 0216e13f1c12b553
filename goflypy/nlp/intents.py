"""Intents recognised before FAQ retrieval: greetings and asking for a human."""

from __future__ import annotations

import re

from .normalize import is_meaningful_char, normalize_text

GREETING = "greeting"
HUMAN = "human"

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
