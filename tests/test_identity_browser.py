"""The widget passes a verified identity: from its tag, from /chat's address
and from goflypy.identify(). Real Chromium, a real goflypy server, and a
local HTTP server standing in for the shop (its page and its order system).

Run with `pytest -m browser tests/test_identity_browser.py`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from goflypy.identity import sign

try:
    from tests.browser_support import CHROMIUM_ARGS, require_chromium, running_server
except ImportError:  # tests/ on sys.path rather than the repository root
    from browser_support import CHROMIUM_ARGS, require_chromium, running_server

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
Page = playwright_api.Page

SECRET = b"browser-test-secret-0123456789"
ANSWER = "订单 1234：已发货"
expect.set_options(timeout=20_000)


def signed(shopper_id: str) -> dict[str, Any]:
    ts = time.time_ns() // 1_000_000
    return {"shopper_id": shopper_id, "ts": ts, "sig": sign(SECRET, shopper_id, ts)}


class Shop:
    """The shop's site: a product page embedding the widget, and its orders."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.widget_src = ""
        self.identity: dict[str, Any] = {}
        shop = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                url = urlsplit(self.path)
                if url.path.startswith("/orders/"):
                    shopper = parse_qs(url.query).get("shopper", [""])[0]
                    shop.calls.append((url.path.rsplit("/", 1)[1], shopper))
                    status = 200 if shopper == "alice" else 404
                    self.reply(status, "application/json", {"status": "已发货"})
                elif url.path == "/item":
                    self.reply(200, "text/html; charset=utf-8", shop.page())
                else:
                    self.reply(404, "text/plain", "no")

            def reply(self, status: int, kind: str, body: Any) -> None:
                text = body if isinstance(body, str) else json.dumps(body)
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def page(self) -> str:
        who = self.identity
        return (
            "<!doctype html><meta charset=utf-8><title>shop</title><h1>草莓</h1>"
            f'<script src="{self.widget_src}" data-shopper-id="{who["shopper_id"]}"'
            f' data-shopper-ts="{who["ts"]}" data-shopper-sig="{who["sig"]}"'
            " async></script>"
        )


@pytest.fixture
def shop() -> Iterator[Shop]:
    shop = Shop()
    shop.thread.start()
    yield shop
    shop.server.shutdown()
    shop.server.server_close()


@pytest.fixture
def server(tmp_path: Path, shop: Shop) -> Iterator[str]:
    secret = tmp_path / "identity.secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    order_url = shop.url + "/orders/{order_id}?shopper={shopper_id}"
    with running_server(
        tmp_path / "data",
        "--demo",
        "--identity-secret-file", str(secret),
        "--order-url", order_url,
        "--order-reply-template", "订单 {order_id}：{status}",
        "--widget-origins", shop.url,
    ) as base_url:  # fmt: skip
        shop.widget_src = base_url + "/static/widget/widget.js"
        yield base_url


@pytest.fixture
def new_page() -> Iterator[Any]:
    executable = require_chromium()
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield lambda: browser.new_context(locale="zh-CN").new_page()
        browser.close()


def ask(page: Page, text: str) -> None:
    page.locator("#goflypy-input").fill(text)
    page.locator("#goflypy-input").press("Enter")


def robot_says(page: Page, text: str) -> Any:
    return page.locator('.goflypy-msg[data-sender="robot"]').filter(has_text=text)


def test_chat_page_identity_from_the_address_answers_orders_and_links_devices(
    server: str, shop: Shop, new_page: Any
) -> None:
    who = signed("alice")
    phone = new_page()
    fragment = f"shopper_id={who['shopper_id']}&ts={who['ts']}&sig={who['sig']}"
    phone.goto(f"{server}/chat?channel=h5#{fragment}")
    ask(phone, "订单1234发货没")
    expect(robot_says(phone, ANSWER)).to_be_visible()
    assert shop.calls == [("1234", "alice")]
    assert "sig" not in phone.url

    # Another device: anonymous first, then the page tells the widget who it is.
    laptop = new_page()
    laptop.goto(f"{server}/chat")
    expect(laptop.locator("#goflypy-input")).to_be_enabled()
    laptop.evaluate("who => window.goflypy.identify(who)", signed("alice"))
    expect(robot_says(laptop, ANSWER)).to_be_visible()

    # Signing out leaves nothing of the shopper's conversation on screen.
    laptop.evaluate("() => window.goflypy.signOut()")
    expect(robot_says(laptop, ANSWER)).to_have_count(0)
    ask(laptop, "订单1234发货没")
    expect(robot_says(laptop, "请登录")).to_be_visible()
    assert shop.calls == [("1234", "alice")]


def test_widget_tag_identity_on_the_shop_page(
    server: str, shop: Shop, new_page: Any
) -> None:
    shop.identity = signed("alice")
    page = new_page()
    page.goto(shop.url + "/item")
    page.locator("#goflypy-launcher").click()
    ask(page, "订单1234发货没")
    expect(robot_says(page, ANSWER)).to_be_visible()

    # A forged tag: the widget goes on anonymous and is asked to sign in.
    shop.identity = {**signed("alice"), "sig": "0" * 64}
    other = new_page()
    other.goto(shop.url + "/item")
    other.locator("#goflypy-launcher").click()
    ask(other, "订单1234发货没")
    expect(robot_says(other, "请登录")).to_be_visible()
    assert shop.calls == [("1234", "alice")]
