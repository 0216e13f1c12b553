"""Helpers for the knowledge-base tests: an admin session over real HTTP."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import add_agent, sign_in

TIMEOUT_S = 30.0


class Admin:
    """A signed-in console account that calls the /api/kb routes."""

    def __init__(self, client: TestClient, csrf: str) -> None:
        self.client = client
        self.csrf = csrf

    async def call(
        self, method: str, path: str, body: Any = None, *, status: int | None = None
    ) -> Any:
        headers = {"X-CSRF-Token": self.csrf}
        response = await self.client.request(method, path, json=body, headers=headers)
        data = await response.json()
        if status is not None:
            assert response.status == status, (response.status, data)
        elif response.status >= 400:
            raise AssertionError(f"{method} {path}: {response.status} {data}")
        return data

    async def decide(self, text: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("POST", "/api/kb/try", {"text": text})
        return result

    async def settled(self) -> None:
        """Wait until the index has caught up with every change."""
        await wait_for(self._idle, "the index to catch up")

    async def _idle(self) -> bool:
        status = await self.call("GET", "/api/kb/status")
        return not status["indexing"]


async def sign_in_admin(
    client: TestClient, username: str = "root", role: str = "admin"
) -> Admin:
    await add_agent(client, username, role)
    response = await sign_in(client, username)
    assert response.status == 302, await response.text()
    csrf = await page_csrf(client)
    return Admin(client, csrf)


async def page_csrf(client: TestClient) -> str:
    """The CSRF token the console pages hand to their scripts."""
    page = await client.get("/console")
    match = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
    assert match, "no CSRF token on the console page"
    return match.group(1)


async def wait_for(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = TIMEOUT_S
) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
