"""Order status: finding an order id in a message and asking the shop's system.

The shop's order system is reached over HTTP with a URL template such as
``https://shop.example/api/orders/{order_id}?shopper={shopper_id}``; both
fields are URL-quoted. The endpoint answers JSON with at least ``status``; the
reply shown to the shopper is rendered from a template with the JSON fields.
Only a verified shopper id is ever sent, so no one sees another's order.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from .log import nlp as log

# An id: letters, digits and inner dashes, with at least three digits.
_ID = r"[A-Za-z0-9](?:[A-Za-z0-9-]{1,38}[A-Za-z0-9])"
_KEY = r"(?:订单号码|订单编号|订单号|订单|单号|单子|order(?:\s*(?:no\.?|id|#))?)"
_BEFORE = re.compile(_KEY + r"\s*[:：#＃是为]?\s*(" + _ID + ")", re.IGNORECASE)
_AFTER = re.compile(r"(?<![A-Za-z0-9-])(" + _ID + r")\s*(?:这个|这笔|的)?" + _KEY)
_STATUS_WORDS = re.compile(
    "发货|到哪|物流|快递|状态|进度|送到|到了|签收|配送|派送|没发|没到|查一下|查询"
)

SIGN_IN_REPLY = "查询订单需要先登录账号，请登录后再问我，或稍候由人工客服为您处理。"
NOT_FOUND_REPLY = "没有找到订单 {order_id}，请核对订单号，或稍候由人工客服为您处理。"
UNAVAILABLE_REPLY = "订单系统暂时无法查询，已为您转接人工客服，请稍候。"
DEFAULT_TEMPLATE = "订单 {order_id} 的状态：{status}。"


def extract_order_id(text: str) -> str | None:
    """Return the order id named in ``text`` exactly as written, or None."""
    clean = unicodedata.normalize("NFKC", text)
    for pattern in (_BEFORE, _AFTER):
        for match in pattern.finditer(clean):
            candidate = match.group(1)
            if sum(char.isdigit() for char in candidate) >= 3:
                return candidate.upper()
    return None


def is_order_question(text: str) -> bool:
    """Tell whether ``text`` names an order id (status words are optional)."""
    return extract_order_id(text) is not None


def asks_status(text: str) -> bool:
    """Tell whether ``text`` uses words about delivery or order progress."""
    return bool(_STATUS_WORDS.search(unicodedata.normalize("NFKC", text)))


@dataclass(slots=True)
class OrderReply:
    """What to tell the shopper; ``handoff`` asks for a human as well."""

    text: str
    handoff: bool
    outcome: str


class OrderLookupError(Exception):
    """The order system did not give a usable answer."""


class CircuitBreaker:
    """Opens after ``threshold`` failures in a row; half-opens after ``cooldown_s``."""

    def __init__(self, threshold: int, cooldown_s: float) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.opened_at: float | None = None

    def is_open(self) -> bool:
        """Tell whether calls should be refused right now."""
        if self.opened_at is None:
            return False
        # After the cool-down the breaker half-opens and lets one call try.
        return time.monotonic() - self.opened_at < self.cooldown_s

    def record(self, ok: bool) -> None:
        """Count the outcome of one call."""
        if ok:
            self.failures = 0
            self.opened_at = None
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = time.monotonic()


class OrderClient:
    """Asks the shop's order endpoint; retries, times out and trips a breaker."""

    def __init__(
        self,
        url_template: str,
        timeout_s: float = 3.0,
        retries: int = 1,
        template: str = DEFAULT_TEMPLATE,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.url_template = url_template
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.retries = retries
        self.template = template
        self.breaker = breaker or CircuitBreaker(threshold=5, cooldown_s=30.0)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def reply(self, order_id: str, shopper_id: str | None) -> OrderReply:
        """Return the shopper-facing answer for ``order_id``; never raises."""
        if not shopper_id:
            return OrderReply(SIGN_IN_REPLY, True, "unverified")
        if self.breaker.is_open():
            return OrderReply(UNAVAILABLE_REPLY, True, "breaker_open")

        try:
            record = await self._fetch(order_id, shopper_id)
        except OrderLookupError as error:
            log.warning("order lookup failed for %s: %s", order_id, error)
            return OrderReply(UNAVAILABLE_REPLY, True, "unavailable")

        owner = record.get("shopper_id") if record else None
        if record is None or (owner is not None and str(owner) != shopper_id):
            return OrderReply(NOT_FOUND_REPLY.format(order_id=order_id), True, "none")
        return OrderReply(self._render(order_id, record), False, "found")

    async def _fetch(self, order_id: str, shopper_id: str) -> dict[str, Any] | None:
        """GET the order; None when the shop says it is not this shopper's."""
        url = self.url_template.format(
            order_id=quote(order_id, safe=""), shopper_id=quote(shopper_id, safe="")
        )
        last = "no attempt"
        for attempt in range(self.retries + 1):
            try:
                record = await self._get_once(url)
            except OrderLookupError as error:
                last = str(error)
                self.breaker.record(False)
                if attempt < self.retries:
                    await asyncio.sleep(0.05 * (attempt + 1))
                continue
            self.breaker.record(True)
            return record
        raise OrderLookupError(last)

    async def _get_once(self, url: str) -> dict[str, Any] | None:
        """One request; 404 and 403 mean "not found for this shopper"."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        try:
            async with self._session.get(url) as response:
                if response.status in (403, 404):
                    return None
                if response.status != 200:
                    raise OrderLookupError(f"HTTP {response.status}")
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise OrderLookupError(type(error).__name__) from None

        try:
            record = json.loads(body)
        except ValueError:
            raise OrderLookupError("not JSON") from None
        if not isinstance(record, dict) or "status" not in record:
            raise OrderLookupError("no status field")
        return record

    def _render(self, order_id: str, record: dict[str, Any]) -> str:
        """Fill the reply template; unknown fields render empty."""
        fields = {key: str(value) for key, value in record.items()}
        fields["order_id"] = order_id
        try:
            return self.template.format_map(_Blank(fields))
        except (ValueError, IndexError):
            return DEFAULT_TEMPLATE.format_map(_Blank(fields))


class _Blank(dict[str, str]):
    """A mapping that renders missing template fields as empty text."""

    def __missing__(self, key: str) -> str:
        return ""
