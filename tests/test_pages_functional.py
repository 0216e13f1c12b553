"""Console sign-in, CSRF, first-password change and page escaping."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from goflypy.auth import hash_password
from goflypy.handlers import agent as agent_handlers
from goflypy.handlers.common import CSRF_COOKIE
from tests.conftest import AGENT_PASSWORD, add_agent, csrf_from, desk_of, sign_in


async def change_password(
    client: TestClient, new: str, current: str = AGENT_PASSWORD
) -> Any:
    """Post the password form as a browser does, with its CSRF token."""
    token = csrf_from(await (await client.get("/console/password")).text())
    return await client.post(
        "/console/password",
        data={
            "current_password": current,
            "new_password": new,
            "confirm_password": new,
            "csrf_token": token,
        },
        allow_redirects=False,
    )


async def test_console_needs_sign_in(client: TestClient) -> None:
    response = await client.get("/console", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"].startswith("/console/login")


async def test_sign_in_sets_a_safe_session_cookie(client: TestClient) -> None:
    await add_agent(client)
    response = await sign_in(client)
    assert response.status == 302 and response.headers["Location"] == "/console"
    cookie = response.cookies["gofly_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    page = await client.get("/console")
    assert page.status == 200
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


async def test_wrong_password_is_refused(client: TestClient) -> None:
    await add_agent(client)
    response = await sign_in(client, password="not-the-password")
    assert response.status == 401
    assert "用户名或密码错误" in await response.text()
    assert "gofly_session" not in response.cookies


async def test_post_without_csrf_token_is_forbidden(client: TestClient) -> None:
    await add_agent(client)
    await client.get("/console/login")  # sets the CSRF cookie
    response = await client.post(
        "/console/login",
        data={"username": "amy", "password": AGENT_PASSWORD, "csrf_token": "forged"},
        allow_redirects=False,
    )
    assert response.status == 403
    assert "gofly_session" not in response.cookies


async def test_cross_site_post_is_forbidden_even_with_token(client: TestClient) -> None:
    await add_agent(client)
    page = await client.get("/console/login")
    token = csrf_from(await page.text())
    response = await client.post(
        "/console/login",
        data={"username": "amy", "password": AGENT_PASSWORD, "csrf_token": token},
        headers={"Origin": "https://evil.example"},
        allow_redirects=False,
    )
    assert response.status == 403
    assert client.session.cookie_jar.filter_cookies(client.make_url("/")).get(
        CSRF_COOKIE
    )


async def test_first_admin_must_change_password(client: TestClient) -> None:
    await add_agent(client, "boss", "admin", must_change_password=True)
    response = await sign_in(client, "boss")
    assert response.headers["Location"] == "/console/password"
    console = await client.get("/console", allow_redirects=False)
    assert console.headers["Location"] == "/console/password"

    weak = await change_password(client, "short")
    assert weak.status == 400
    changed = await change_password(client, "Fresh-pass-2025")
    assert changed.headers["Location"] == "/console"
    account = desk_of(client).store.get_account("boss")
    assert not account.must_change_password
    assert account.password_hash.startswith("$argon2id$")
    assert (await client.get("/console", allow_redirects=False)).status == 200


async def test_login_next_never_leaves_the_site(client: TestClient) -> None:
    page = await client.get("/console/login?next=//evil.example/x")
    html = await page.text()
    assert "evil.example" not in html


async def test_names_are_escaped_in_the_console(client: TestClient) -> None:
    await add_agent(client)
    store = desk_of(client).store
    account = store.get_account("amy")
    account.display_name = "<script>alert(1)</script>"
    await store.put_account(account, create=False)
    await sign_in(client)
    html = await (await client.get("/console")).text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_password_hash_is_memory_hard() -> None:
    assert hash_password("Some-pass-123").startswith("$argon2id$v=19$m=65536")


async def test_demo_chat_and_health_pages(client: TestClient) -> None:
    demo = await client.get("/demo")
    assert demo.status == 200
    assert 'src="/static/widget/widget.js"' in await demo.text()
    assert (await client.get("/chat?channel=miniapp")).status == 200
    widget = await client.get("/static/widget/widget.js")
    assert widget.status == 200
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "ok" and health["faq_entries"] == 3


async def test_login_next_with_control_characters_stays_home(
    client: TestClient,
) -> None:
    await add_agent(client)
    for target in ("/\t/evil.example/x", "/\n/evil.example", "/ /evil.example"):
        page = await client.get("/console/login", params={"next": target})
        token = csrf_from(await page.text())
        response = await client.post(
            "/console/login",
            data={
                "username": "amy",
                "password": AGENT_PASSWORD,
                "csrf_token": token,
                "next": target,
            },
            allow_redirects=False,
        )
        assert response.headers["Location"] == "/console", target


async def test_password_change_signs_out_other_browsers(
    client: TestClient, aiohttp_client: object
) -> None:
    await add_agent(client)
    await sign_in(client)
    other = await aiohttp_client(client.server)  # type: ignore[operator]
    await sign_in(other)
    changed = await change_password(client, "Fresh-pass-2025")
    assert changed.headers["Location"] == "/console"
    assert (await client.get("/console", allow_redirects=False)).status == 200
    assert (await other.get("/console", allow_redirects=False)).status == 302


async def test_malformed_form_body_is_a_400(client: TestClient) -> None:
    response = await client.post(
        "/console/login",
        data=b"\xff=\xff",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 400


async def test_unknown_page_gets_the_styled_404(client: TestClient) -> None:
    response = await client.get("/no/such/page")
    assert response.status == 404
    assert "页面不存在" in await response.text()


async def test_failed_sign_ins_lock_that_account_from_that_address_only(
    client: TestClient,
) -> None:
    await add_agent(client, "amy")
    await add_agent(client, "bob")
    for _ in range(5):
        assert (await sign_in(client, "amy", "wrong-password")).status == 401
    assert (await sign_in(client, "amy", "wrong-password")).status == 429
    # Even the right password waits now; a colleague at the same address does not.
    assert (await sign_in(client, "amy")).status == 429
    bob = await sign_in(client, "bob")
    assert bob.status == 302 and bob.headers["Location"] == "/console"


async def test_guessing_the_current_password_is_limited(client: TestClient) -> None:
    await add_agent(client, "amy")
    await sign_in(client, "amy")
    statuses = []
    for _ in range(6):
        response = await change_password(client, "Fresh-pass-2025", current="not-it")
        statuses.append(response.status)
    assert statuses == [400] * 5 + [429]


async def test_the_icon_is_served(client: TestClient) -> None:
    for path in ("/favicon.ico", "/static/favicon.svg"):
        response = await client.get(path)
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("image/svg+xml")
        assert (await response.text()).startswith("<svg")


async def test_the_password_form_states_the_rule_the_server_applies(
    client: TestClient,
) -> None:
    await add_agent(client, "amy")
    await sign_in(client, "amy")
    html = await (await client.get("/console/password")).text()
    assert 'minlength="10"' in html and "至少 10 个字符" in html


async def test_a_trickling_body_times_out(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_handlers, "FORM_READ_S", 0.5)
    head = (
        b"POST /console/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 100\r\n\r\nu"
    )
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(head)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    assert b" 408 " in status_line
    writer.close()
