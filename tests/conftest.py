"""Shared fixtures: real LMDB in tmp_path, real aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from goflypy.auth import new_account
from goflypy.config import Config, load
from goflypy.handlers.common import APP_DESK
from goflypy.models import FaqEntry
from goflypy.nlp.segment import Lexicon
from goflypy.server import make_app

AGENT_PASSWORD = "Agent-pass-2024"

SMALL_FAQ = [
    FaqEntry(
        "strawberry",
        "草莓怎么保存",
        "草莓请冷藏保存，不要清洗，尽快食用。",
        ["草莓放冰箱可以吗", "草莓怎么存放"],
        "storage",
    ),
    FaqEntry(
        "shipping-fee",
        "运费怎么算",
        "满 99 元包邮，不满收 8 元运费。",
        ["邮费多少", "包邮吗"],
        "shipping",
    ),
    FaqEntry(
        "refund-time",
        "退款多久到账",
        "退款审核通过后 1 到 3 个工作日原路退回。",
        ["退钱要多久", "钱什么时候退回来"],
        "refund",
    ),
]


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    flags = {"data_dir": str(tmp_path / "data"), "log_level": "debug"}
    flags.update(overrides)
    return load(None, flags, environ={})


@pytest.fixture(scope="session")
def lexicon() -> Lexicon:
    """One warmed-up jieba dictionary for every robot test."""
    lexicon = Lexicon()
    lexicon.warm_up()
    return lexicon


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright, one per test module."""
    from tests.browser_support import CHROMIUM_ARGS, require_chromium

    sync_api = pytest.importorskip("playwright.sync_api")
    executable = require_chromium()
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[[], Any]]:
    """Pages in separate contexts (own storage and cookies). Any dialog
    fails the test: only text run as HTML would open one."""
    contexts = []
    dialogs: list[str] = []

    def make() -> Any:
        context = browser.new_context(locale="zh-CN")
        contexts.append(context)
        page = context.new_page()
        page.on(
            "dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss())
        )
        return page

    yield make
    for context in contexts:
        context.close()
    assert dialogs == [], "a text was run as HTML"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


ClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def make_client(
    aiohttp_client: Callable[..., Awaitable[TestClient]], tmp_path: Path
) -> ClientFactory:
    """Start a real server on 127.0.0.1 with the small FAQ; returns its client."""

    async def factory(**overrides: Any) -> TestClient:
        config = make_config(tmp_path, **overrides)
        app = make_app(config)
        client = await aiohttp_client(app)
        desk = app[APP_DESK]
        await desk.store.put_faq(SMALL_FAQ)
        desk.robot.rebuild(desk.store.list_faq())
        return client

    return factory


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient:
    return await make_client()


def desk_of(client: TestClient) -> Any:
    app: web.Application = client.server.app  # type: ignore[assignment]
    return app[APP_DESK]


async def add_agent(
    client: TestClient, username: str = "amy", role: str = "agent", **kw: Any
) -> None:
    account = new_account(username, AGENT_PASSWORD, role, username.title(), **kw)
    await desk_of(client).store.put_account(account, create=True)


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field in the page"
    return match.group(1)


async def sign_in(
    client: TestClient, username: str = "amy", password: str = AGENT_PASSWORD
) -> Any:
    page = await client.get("/console/login")
    token = csrf_from(await page.text())
    return await client.post(
        "/console/login",
        data={"username": username, "password": password, "csrf_token": token},
        allow_redirects=False,
    )
