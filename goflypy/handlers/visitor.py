"""Pages shoppers open: the demo shop and the full-page chat."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from .common import settings

CHANNELS = ("web", "app", "miniapp", "h5")


@aiohttp_jinja2.template("demo.html")
async def demo_shop(request: web.Request) -> dict[str, Any]:
    """GET /demo: a sample shop page embedding the widget with one tag."""
    return {"shop_name": settings(request).shop_name}


@aiohttp_jinja2.template("chat.html")
async def chat_page(request: web.Request) -> dict[str, Any]:
    """GET /chat: full-page chat for app and mini-program webviews."""
    channel = request.query.get("channel", "h5")
    return {
        "shop_name": settings(request).shop_name,
        "channel": channel if channel in CHANNELS else "h5",
    }


async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/demo")
