"""Order status: finding an order id in a message and asking the shop's system.

The shop's order system is reached with a GET to a URL template such as
``https://shop.example/api/orders/{order_id}?shopper={shopper_id}``; both
fields are URL-quoted, and ``shopper_id`` is always the identity verified on
the asking socket, so no one sees another's order. The endpoint answers:

- 200 with a JSON object holding at least ``status``: the order; if it also
  holds ``shopper_id``, that must be the one asked for. The reply is rendered
  from a template with the object's fields and ``order_id``.
- 403 or 404: not this shopper's order (or no such order).
- anything else, a timeout, a body over 64 KiB or one that is not such an
  object: a failure. Failures are retried and counted by a circuit breaker.

With a ``signer`` (the identity verifier), every request also carries
``X-Goflypy-Timestamp`` and ``X-Goflypy-Signature`` so the endpoint can
check that goflypy, and no one else, is asking.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import unicodedata
from collections.abc import Callable
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

# NOTE: no reply below shows order data; only a "found" answer does.
SIGN_IN_REPLY = (
    "查询订单需要先登录账号：请登录后再问我一次；也可以点「转人工」由人工客服为您处理。"
)
VERIFY_BY_HUMAN_REPLY = "查询订单需要核实您的身份，已为您转接人工客服，请稍候。"
ASK_ID_REPLY = "请告诉我您要查询的订单号，例如：订单1234发货没？"
NOT_FOUND_REPLY = (
    "在您的账号下没有找到订单 {order_id}，已为您转接人工客服核实，请稍候。"
)
UNAVAILABLE_REPLY = "订单系统暂时无法查询，已为您转接人工客服，请稍候。"
NO_ENDPOINT_REPLY = "订单查询由人工客服为您处理，已为您转接，请稍候。"
DEFAULT_TEMPLATE = "订单 {order_id} 的状态：{status}。"
# The longest answer shown, and the largest body read from the endpoint.
MAX_REPLY_CHARS = 1000
MAX_BODY_BYTES = 64 * 1024
# An order id with only letters, digits and dashes and at least three digits.
_BARE_ID = re.compile(_ID)


def extract_order_id(text: str) -> str | None:
    """Return the order id named in ``text`` exactly as written, or None."""
    clean = unicodedata.normalize("NFKC", text)
    for pattern in (_BEFORE, _AFTER):
        for match in pattern.finditer(clean):
            candidate = match.group(1)
            if sum(char.isdigit() for char in candidate) >= 3:
                return candidate.upper()
    return None


def bare_order_id(text: str) -> str | None:
    """Return ``text`` as an order id when it is nothing but one ("SO-1234")."""
    clean = unicodedata.normalize("NFKC", text).strip().strip("。.！!？?，,")
    if _BARE_ID.fullmatch(clean) and sum(char.isdigit() for char in clean) >= 3:
        return clean.upper()
    return None


@dataclass(slots=True)
class OrderReply:
    """What to tell the shopper; ``handoff`` asks for a human as well.

    ``outcome`` is one of "found", "not_found", "unavailable",
    "breaker_open", "unverified", "ask_id", "no_endpoint".
    """

    text: str
    handoff: bool
    outcome: str


# (order_id, shopper_id, epoch ms) -> request headers proving goflypy asks.
Signer = Callable[[str, str, int], dict[str, str]]


class OrderLookupError(Exception):
    """The order system did not give a usable answer."""


class CircuitBreaker:
    """Opens after ``threshold`` failures in a row.

    After ``cooldown_s`` it half-opens: one call may try, and its outcome
    closes the breaker or opens it for another cool-down. ``clock`` returns
    seconds (monotonic); tests may pass their own.
    """

    def __init__(
        self,
        threshold: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self._trial_at: float | None = None

    def is_open(self) -> bool:
        """Tell whether the breaker is refusing calls (no trial is taken)."""
        return self.opened_at is not None and not self._may_try()

    def allow(self) -> bool:
        """Tell whether a call may go ahead now; takes the half-open trial."""
        if self.opened_at is None:
            return True
        if not self._may_try():
            return False
        self._trial_at = self.clock()
        return True

    def record(self, ok: bool) -> None:
        """Count the outcome of one call."""
        self._trial_at = None
        if ok:
            self.failures = 0
            self.opened_at = None
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = self.clock()

    def _may_try(self) -> bool:
        """Past the cool-down, with no trial in flight (a lost one expires)."""
        now = self.clock()
        assert self.opened_at is not None
        if now - self.opened_at < self.cooldown_s:
            return False
        return self._trial_at is None or now - self._trial_at >= self.cooldown_s


class OrderClient:
    """Asks the shop's order endpoint; retries, times out and trips a breaker.

    Every call is a coroutine on the event loop; nothing here blocks it.
    """

    def __init__(
        self,
        url_template: str,
        timeout_s: float = 3.0,
        retries: int = 1,
        template: str = DEFAULT_TEMPLATE,
        breaker: CircuitBreaker | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.url_template = url_template
        self.signer = signer
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.retries = retries
        self.template = template
        self.breaker = breaker or CircuitBreaker(threshold=5, cooldown_s=30.0)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_config(
        cls, config: Any, signer: Signer | None = None
    ) -> OrderClient | None:
        """The client the ``order_*`` settings describe; None without a URL."""
        if not config.order_url:
            return None
        return cls(
            config.order_url,
            timeout_s=config.order_timeout_s,
            retries=config.order_retries,
            template=config.order_reply_template,
            breaker=CircuitBreaker(
                config.order_breaker_failures, config.order_breaker_cooldown_s
            ),
            signer=signer,
        )

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def reply(self, order_id: str, shopper_id: str) -> OrderReply:
        """Return the answer for a verified shopper's ``order_id``; never raises."""
        if not self.breaker.allow():
            return OrderReply(UNAVAILABLE_REPLY, True, "breaker_open")

        try:
            record = await self._fetch(order_id, shopper_id)
        except OrderLookupError as error:
            log.warning("order lookup failed: %s", error)
            return OrderReply(UNAVAILABLE_REPLY, True, "unavailable")

        owner = record.get("shopper_id") if record else None
        if record is None or (owner is not None and str(owner) != shopper_id):
            text = NOT_FOUND_REPLY.format(order_id=order_id)
            return OrderReply(text, True, "not_found")
        return OrderReply(self._render(order_id, record), False, "found")

    async def _fetch(self, order_id: str, shopper_id: str) -> dict[str, Any] | None:
        """GET the order; None when the shop says it is not this shopper's."""
        url = self.url_template.format(
            order_id=quote(order_id, safe=""), shopper_id=quote(shopper_id, safe="")
        )
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                # The breaker may have opened on the failure just counted.
                if not self.breaker.allow():
                    break
                await asyncio.sleep(0.05 * attempt)
            headers = {}
            if self.signer is not None:
                headers = self.signer(order_id, shopper_id, time.time_ns() // 1_000_000)
            try:
                record = await self._get_once(url, headers)
            except OrderLookupError as error:
                last = str(error)
                self.breaker.record(False)
                continue
            self.breaker.record(True)
            return record
        raise OrderLookupError(last)

    async def _get_once(
        self, url: str, headers: dict[str, str]
    ) -> dict[str, Any] | None:
        """One request; 404 and 403 mean "not found for this shopper"."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        try:
            request = self._session.get(url, headers=headers, allow_redirects=False)
            async with request as response:
                if response.status in (403, 404):
                    return None
                if response.status != 200:
                    raise OrderLookupError(f"HTTP {response.status}")
                body = await response.content.read(MAX_BODY_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise OrderLookupError(type(error).__name__) from None

        if len(body) > MAX_BODY_BYTES:
            raise OrderLookupError("answer too large")
        try:
            record = json.loads(body)
        except ValueError:
            raise OrderLookupError("not JSON") from None
        if not isinstance(record, dict) or "status" not in record:
            raise OrderLookupError("no status field")
        return record

    def _render(self, order_id: str, record: dict[str, Any]) -> str:
        """Fill the reply template; unknown fields render empty."""
        fields = {key: _as_text(value) for key, value in record.items()}
        fields["order_id"] = order_id
        try:
            text = self.template.format_map(_Blank(fields))
        except (ValueError, IndexError, AttributeError, KeyError):
            text = DEFAULT_TEMPLATE.format_map(_Blank(fields))
        return text[:MAX_REPLY_CHARS]


async def answer_order(
    client: OrderClient | None,
    order_id: str | None,
    shopper_id: str | None,
    *,
    can_sign_in: bool,
) -> OrderReply:
    """Decide what an order question gets; never raises, never shows a stranger's order.

    ``client`` is None when no endpoint is configured (a human answers);
    ``shopper_id`` is the identity verified on the asking socket, or None;
    ``can_sign_in`` tells whether the shop has identity set up at all.
    """
    if client is None:
        return OrderReply(NO_ENDPOINT_REPLY, True, "no_endpoint")
    if shopper_id is None:
        if can_sign_in:
            return OrderReply(SIGN_IN_REPLY, False, "unverified")
        return OrderReply(VERIFY_BY_HUMAN_REPLY, True, "unverified")
    if order_id is None:
        return OrderReply(ASK_ID_REPLY, False, "ask_id")
    return await client.reply(order_id, shopper_id)


def _as_text(value: Any) -> str:
    """A JSON value as it reads in a reply."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


class _Blank(dict[str, str]):
    """A mapping that renders missing template fields as empty text."""

    def __missing__(self, key: str) -> str:
        return ""
