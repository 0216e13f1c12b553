"""The admin reports page (报表) and its JSON.

Both need a signed-in admin. The JSON of each period is kept for a minute
(goflypy.reports.ReportCache), so reloading the page does not rescan.
"""

from __future__ import annotations

import asyncio
import weakref

from aiohttp import web

from ..desk import QUEUE_NOTICE, Desk
from ..errors import BadRequest
from ..reports import PERIODS, ReportCache, build_report
from .common import APP_DESK, admin_page, json_reply, require_admin

# One cache per running server (its desk), dropped with it.
_CACHES: weakref.WeakKeyDictionary[Desk, ReportCache] = weakref.WeakKeyDictionary()


def _cache(desk: Desk) -> ReportCache:
    cache = _CACHES.get(desk)
    if cache is None:
        cache = _CACHES[desk] = ReportCache()
    return cache


async def reports_page(request: web.Request) -> web.Response:
    """GET /console/reports: the reports page (admins only)."""
    return admin_page(request, "reports.html")


async def reports_api(request: web.Request) -> web.Response:
    """GET /api/reports?days=7|30: the figures of the period, per day."""
    require_admin(request)
    raw = request.query.get("days", str(PERIODS[0]))
    days = next((p for p in PERIODS if raw == str(p)), None)
    if days is None:
        raise BadRequest("统计周期只能是 7 天或 30 天")
    desk = request.app[APP_DESK]
    texts = tuple(t for t in (QUEUE_NOTICE, desk.config.offline_text) if t)
    report = await _cache(desk).get(
        days, lambda: asyncio.to_thread(build_report, desk.store, days, texts)
    )
    return json_reply(report)
