"""Application keys and the request helpers every handler shares."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp_jinja2
from aiohttp import web

from ..config import Config
from ..desk import Desk
from ..errors import BadRequest, Forbidden, Unauthorized
from ..limits import RateLimiter
from ..models import Account

SESSION_COOKIE = "gofly_session"
CSRF_COOKIE = "gofly_csrf"
CSRF_HEADER = "X-CSRF-Token"
NO_STORE = {"Cache-Control": "no-store"}


@dataclass(slots=True)
class Limits:
    """Rate limiters of the running server."""

    visitor: RateLimiter
    ip: RateLimiter
    agent: RateLimiter
    typing: RateLimiter
    new_visitor: RateLimiter
    login: RateLimiter
    login_ip: RateLimiter
    connect: RateLimiter
    # Open sockets by client address.
    sockets_by_ip: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> Limits:
        per_min = config.visitor_rate_per_min
        ip_per_min = config.ip_rate_per_min
        new_visitors = config.new_visitors_per_ip_per_min
        connects = config.connects_per_ip_per_min
        return cls(
            visitor=RateLimiter(per_min, 60, burst=max(5, per_min // 3)),
            ip=RateLimiter(ip_per_min, 60, burst=max(20, ip_per_min // 3)),
            agent=RateLimiter(config.agent_rate_per_min, 60, burst=20),
            typing=RateLimiter(1, 1, burst=2),
            new_visitor=RateLimiter(new_visitors, 60, burst=max(5, new_visitors // 2)),
            # Failed passwords: per account and address, so one guesser
            # locks out neither colleagues behind the same address nor the
            # account everywhere; and per address, to cap guessing across
            # accounts.
            login=RateLimiter(10, 60, burst=5),
            login_ip=RateLimiter(30, 60, burst=30),
            connect=RateLimiter(connects, 60, burst=max(1, connects // 2)),
        )


APP_CONFIG = web.AppKey("config", Config)
APP_DESK = web.AppKey("desk", Desk)
APP_LIMITS = web.AppKey("limits", Limits)
NEW_CSRF = web.RequestKey("new_csrf", str)


def settings(request: web.Request) -> Config:
    return request.app[APP_CONFIG]


def client_ip(request: web.Request) -> str:
    return request.remote or "unknown"


def current_account(request: web.Request) -> Account | None:
    """The signed-in console account of this request, or None."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    store = request.app[APP_DESK].store
    session = store.get_session(token)
    if session is None:
        return None
    account = store.get_account(session["username"])
    if account is None or account.disabled:
        return None
    return account


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def is_allowed_origin(
    request: web.Request, *, allow_missing: bool, own_only: bool = False
) -> bool:
    """Whether the request's Origin may use this endpoint.

    Browsers always send Origin on WebSocket upgrades and cross-site POSTs;
    apps and mini-programs may send none, which only the visitor socket
    accepts.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return allow_missing
    origin = origin.lower()
    own = {f"{scheme}://{request.host}".lower() for scheme in ("http", "https")}
    config = settings(request)
    if config.public_url:
        own.add(_origin_of(config.public_url))
    if origin in own:
        return True
    if own_only:
        return False
    return origin in {_origin_of(o) for o in config.widget_origins}


# CSRF: a random cookie that every state-changing request repeats in a form
# field or header (double submit), plus the Origin check above.


def csrf_token(request: web.Request) -> str:
    """The CSRF token of this browser, made now if it has none."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token or len(token) > 100:
        token = request.get(NEW_CSRF) or secrets.token_urlsafe(24)
        request[NEW_CSRF] = token
    return token


def check_csrf(request: web.Request, submitted: str | None) -> None:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not submitted or not hmac.compare_digest(cookie, submitted):
        raise Forbidden("请求已过期，请刷新页面后重试", code="csrf")
    if not is_allowed_origin(request, allow_missing=True, own_only=True):
        raise Forbidden("请求来源不是本站，已拒绝（origin not allowed）", code="csrf")


# Access and JSON for the console API (/api/kb, /api/console)


def signed_in(request: web.Request) -> Account:
    """The signed-in console account, with its one-time password changed."""
    account = current_account(request)
    if account is None:
        raise Unauthorized("请先登录")
    if account.must_change_password:
        raise Forbidden("请先修改密码")
    return account


def require_admin(request: web.Request, *, changes: bool = False) -> Account:
    """The signed-in admin; ``changes`` also checks the CSRF header."""
    account = signed_in(request)
    if account.role != "admin":
        raise Forbidden("需要管理员权限")
    if changes:
        check_csrf(request, request.headers.get(CSRF_HEADER))
    return account


def admin_page(request: web.Request, template: str) -> web.Response:
    """Render an admins' console page, sending others where they belong.

    Signed out: to the sign-in page and back; a password still to change:
    to the password form; an agent: 403.
    """
    account = current_account(request)
    if account is None:
        raise web.HTTPFound(f"/console/login?next={request.path}")
    if account.must_change_password:
        raise web.HTTPFound("/console/password")
    if account.role != "admin":
        raise Forbidden("需要管理员权限")
    context = {
        "agent": {"username": account.username, "display_name": account.display_name},
        "csrf_token": csrf_token(request),
    }
    return aiohttp_jinja2.render_template(template, request, context)


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; BadRequest for anything else."""
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("请求内容不是有效的 JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("请求内容必须是 JSON 对象")
    return data


def json_reply(data: Any, status: int = 200) -> web.Response:
    """A JSON response that browsers and proxies do not cache."""
    return web.json_response(data, status=status, headers=NO_STORE)
