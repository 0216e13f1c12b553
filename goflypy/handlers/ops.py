"""Endpoints for the operator's tools: liveness and Prometheus metrics."""

from __future__ import annotations

import ipaddress
import json

from aiohttp import web

from .. import __version__
from ..metrics import APP_METRICS, CONTENT_TYPE
from .common import APP_DESK, client_ip


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: liveness plus a few counters, no secrets."""
    desk = request.app[APP_DESK]
    body = {
        "status": "ok",
        "version": __version__,
        "connections": desk.hub.counts(),
        "store": desk.store.env.info(),
        "faq_entries": len(desk.store.list_faq()),
    }
    return web.json_response(body, dumps=lambda v: json.dumps(v, ensure_ascii=False))


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format, for loopback scrapers only.

    Behind a proxy set ``trusted_proxies`` so the check sees the scraper's
    own address, and keep /metrics off the public site (docs/deploy/).
    """
    if not _is_loopback(client_ip(request)):
        raise web.HTTPForbidden(text="metrics are served to loopback only")
    body = await request.app[APP_METRICS].render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
