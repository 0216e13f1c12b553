"""Console pages: sign in, change password, sign out, the console itself."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from ..auth import check_new_password, hash_password, verify_password
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
    """Only same-site paths; never an absolute or scheme-relative URL."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
    ):
        return "/console"
    return target


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
    form = await request.post()
    check_csrf(request, _text(form.get("csrf_token")))
    if request.app[APP_LIMITS].login.check(client_ip(request)):
        return _login_page(request, "尝试次数过多，请稍后再试", status=429)

    username = _text(form.get("username")).strip()
    password = _text(form.get("password"))
    store = request.app[APP_DESK].store
    account = store.get_account(username) if username else None
    if not verify_password(account, password):
        log.warning("failed sign-in from %s", client_ip(request))
        return _login_page(request, "用户名或密码错误", status=401)
    assert account is not None

    ttl = settings(request).session_hours * HOUR_MS
    token = await store.create_session(account.username, ttl)
    log.info("agent %s signed in", account.username)
    target = (
        "/console/password"
        if account.must_change_password
        else _safe_next(_text(form.get("next")))
    )
    response = web.HTTPFound(target)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=ttl // 1000,
        httponly=True,
        samesite="Lax",
        secure=settings(request).secure_cookies,
        path="/",
    )
    raise response


async def logout(request: web.Request) -> web.Response:
    """POST /console/logout."""
    form = await request.post()
    check_csrf(request, _text(form.get("csrf_token")))
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await request.app[APP_DESK].store.delete_session(token)
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
    form = await request.post()
    check_csrf(request, _text(form.get("csrf_token")))
    new = _text(form.get("new_password"))
    if not verify_password(account, _text(form.get("current_password"))):
        return _password_page(request, account, "当前密码不正确", status=400)
    if new != _text(form.get("confirm_password")):
        return _password_page(request, account, "两次输入的新密码不一致", status=400)
    if verify_password(account, new):
        return _password_page(request, account, "新密码不能与当前密码相同", status=400)
    try:
        check_new_password(new, account.username)
    except BadRequest as exc:
        return _password_page(request, account, exc.message, status=400)

    account.password_hash = hash_password(new)
    account.must_change_password = False
    store = request.app[APP_DESK].store
    await store.put_account(account, create=False)
    log.info("agent %s changed password", account.username)
    raise web.HTTPFound("/console")


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
