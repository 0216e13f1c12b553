"""Console pages: sign in, change password, sign out, the console itself."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDictProxy

from ..auth import (
    MIN_PASSWORD_CHARS,
    check_new_password,
    hash_password,
    verify_password,
)
from ..errors import BadRequest
from ..log import server as log
from ..models import Account
from .common import (
    APP_DESK,
    APP_LIMITS,
    SESSION_COOKIE,
    check_csrf,
    client_ip,
    csrf_token,
    current_account,
    settings,
)

HOUR_MS = 3_600_000


def _safe_next(target: str | None) -> str:
    """Only a plain path on this site; never an absolute or scheme-relative URL."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or any(_is_unsafe_url_char(ch) for ch in target)
    ):
        return "/console"
    return target


def _is_unsafe_url_char(ch: str) -> bool:
    # Browsers drop tabs and newlines from URLs: "/\t/evil" becomes "//evil".
    return ch == "\\" or ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F


def _login_page(
    request: web.Request, error: str | None, status: int = 200
) -> web.Response:
    context = {
        "error": error,
        "csrf_token": csrf_token(request),
        "next": _safe_next(request.query.get("next")),
    }
    return aiohttp_jinja2.render_template("login.html", request, context, status=status)


async def login_form(request: web.Request) -> web.Response:
    """GET /console/login."""
    return _login_page(request, None)


async def login_submit(request: web.Request) -> web.Response:
    """POST /console/login: check the password, start a session."""
    form = await _form(request)
    check_csrf(request, _text(form.get("csrf_token")))
    username = _text(form.get("username")).strip()
    password = _text(form.get("password"))
    if _too_many_failures(request, username):
        return _login_page(request, "尝试次数过多，请稍后再试", status=429)
    store = request.app[APP_DESK].store
    account = store.get_account(username) if username else None
    if not await _verify(account, password):
        _count_failure(request, username)
        log.warning("failed sign-in from %s", client_ip(request))
        return _login_page(request, "用户名或密码错误", status=401)
    assert account is not None

    log.info("agent %s signed in", account.username)
    target = (
        "/console/password"
        if account.must_change_password
        else _safe_next(_text(form.get("next")))
    )
    response = web.HTTPFound(target)
    await _start_session(request, account, response)
    raise response


def _too_many_failures(request: web.Request, username: str) -> bool:
    limits = request.app[APP_LIMITS]
    ip = client_ip(request)
    return bool(limits.login.peek(f"{ip} {username}") or limits.login_ip.peek(ip))


def _count_failure(request: web.Request, username: str) -> None:
    """Only failures count: a right password is never slowed down."""
    limits = request.app[APP_LIMITS]
    ip = client_ip(request)
    limits.login.check(f"{ip} {username}")
    limits.login_ip.check(ip)


async def _start_session(
    request: web.Request, account: Account, response: web.StreamResponse
) -> None:
    ttl = settings(request).session_hours * HOUR_MS
    token = await request.app[APP_DESK].store.create_session(account.username, ttl)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=ttl // 1000,
        httponly=True,
        samesite="Lax",
        secure=settings(request).secure_cookies,
        path="/",
    )


async def logout(request: web.Request) -> web.Response:
    """POST /console/logout."""
    form = await _form(request)
    check_csrf(request, _text(form.get("csrf_token")))
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        desk = request.app[APP_DESK]
        await desk.store.delete_session(token)
        desk.drop_revoked_sessions()
    response = web.HTTPFound("/console/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


def _require_account(request: web.Request) -> Account:
    account = current_account(request)
    if account is None:
        raise web.HTTPFound(f"/console/login?next={request.path}")
    return account


def _password_page(
    request: web.Request, account: Account, error: str | None, status: int = 200
) -> web.Response:
    context = {
        "error": error,
        "csrf_token": csrf_token(request),
        "username": account.username,
        "must_change": account.must_change_password,
        "min_chars": MIN_PASSWORD_CHARS,
    }
    return aiohttp_jinja2.render_template(
        "password.html", request, context, status=status
    )


async def password_form(request: web.Request) -> web.Response:
    """GET /console/password."""
    return _password_page(request, _require_account(request), None)


async def password_submit(request: web.Request) -> web.Response:
    """POST /console/password: a new password, required at first sign-in."""
    account = _require_account(request)
    form = await _form(request)
    check_csrf(request, _text(form.get("csrf_token")))
    new = _text(form.get("new_password"))
    if _too_many_failures(request, account.username):
        return _password_page(request, account, "尝试次数过多，请稍后再试", status=429)
    if not await _verify(account, _text(form.get("current_password"))):
        _count_failure(request, account.username)
        return _password_page(request, account, "当前密码不正确", status=400)
    if new != _text(form.get("confirm_password")):
        return _password_page(request, account, "两次输入的新密码不一致", status=400)
    if await _verify(account, new):
        return _password_page(request, account, "新密码不能与当前密码相同", status=400)
    try:
        check_new_password(new, account.username)
    except BadRequest as exc:
        return _password_page(request, account, exc.message, status=400)

    # Store the new hash, end every session of the account (other browsers
    # and open consoles included), then start a fresh one for this browser.
    async with _hash_slots():
        account.password_hash = await asyncio.to_thread(hash_password, new)
    account.must_change_password = False
    desk = request.app[APP_DESK]
    await desk.store.put_account(account, create=False)
    await desk.store.delete_sessions_of(account.username)
    await desk.sign_out_agent(account.username)
    log.info("agent %s changed password", account.username)
    response = web.HTTPFound("/console")
    await _start_session(request, account, response)
    raise response


async def console(request: web.Request) -> web.Response:
    """GET /console: the agent console (sign-in and a changed password first)."""
    account = _require_account(request)
    if account.must_change_password:
        raise web.HTTPFound("/console/password")
    context: dict[str, Any] = {
        "agent": {
            "username": account.username,
            "display_name": account.display_name,
            "role": account.role,
        },
        "csrf_token": csrf_token(request),
    }
    return aiohttp_jinja2.render_template("console.html", request, context)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


FORM_READ_S = 15.0


async def _form(request: web.Request) -> MultiDictProxy[Any]:
    """The posted form; a body that is not one is a 400, not a 500, and a
    body that trickles in slower than a person types is a 408."""
    try:
        async with asyncio.timeout(FORM_READ_S):
            return await request.post()
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="request body too slow") from None
    except (ValueError, AssertionError, LookupError):
        raise BadRequest("请求格式不正确") from None


# Argon2 takes ~64 MiB and a few hundred ms per check: run it off the event
# loop, at most two at a time, so sign-in floods cannot stall chat.
_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _hash_slots() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    if loop not in _SLOTS:
        _SLOTS[loop] = asyncio.Semaphore(2)
    return _SLOTS[loop]


async def _verify(account: Account | None, password: str) -> bool:
    async with _hash_slots():
        return await asyncio.to_thread(verify_password, account, password)
