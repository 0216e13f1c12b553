"""The aiohttp application: factory, middlewares, routes, start and stop."""

from __future__ import annotations

import asyncio
import gc
import inspect
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import ClientPayloadError, web
from aiohttp.typedefs import Middleware

from . import __version__
from .archiver import Archiver
from .config import Config
from .desk import Desk
from .errors import GoflyError
from .handlers import agent, canned, kb, ops, reports, visitor, ws
from .handlers.common import (
    APP_CONFIG,
    APP_DESK,
    APP_LIMITS,
    CSRF_COOKIE,
    NEW_CSRF,
    Limits,
    settings,
)
from .handlers.sockets import SocketPeer
from .hub import Hub
from .kb import KnowledgeBase
from .log import server as log
from .metrics import APP_METRICS, Metrics
from .nlp import Robot, Thresholds
from .proxy import TrustedProxies, real_ip_middleware
from .runlock import ServerLock
from .store import Store

PACKAGE_DIR = Path(__file__).resolve().parent
FAQ_POLL_S = 1.0
GIL_SWITCH_S = 0.0005
GC_THRESHOLDS = (50_000, 50, 1_000)
# How often open console sockets are checked against their sessions.
SESSION_CHECK_S = 3.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def static_dir() -> Path:
    """Installed wheels carry static/ inside the package; a checkout has it beside."""
    packaged = PACKAGE_DIR / "static"
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / "static"


async def _favicon(_request: web.Request) -> web.FileResponse:
    """Browsers ask for /favicon.ico on pages that name no icon."""
    return web.FileResponse(
        static_dir() / "favicon.svg", headers={"Content-Type": "image/svg+xml"}
    )


def make_robot(config: Config) -> Robot:
    return Robot(
        thresholds=Thresholds(
            answer=config.robot_answer_threshold,
            suggest=config.robot_suggest_threshold,
            margin=config.robot_margin,
        ),
        index_dir=config.data_path / "index",
    )


# Middlewares


_PAGE_ERRORS = {403: "没有权限访问此页面", 404: "页面不存在", 405: "不支持此请求方法"}


@web.middleware
async def error_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Render GoflyError and unexpected failures: JSON for /api, HTML otherwise."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status in _PAGE_ERRORS and not request.path.startswith("/ws/"):
            message = _PAGE_ERRORS[exc.status]
            return _error_response(request, exc.status, "error", message)
        raise
    except GoflyError as exc:
        return _error_response(request, exc.status, exc.code, exc.message)
    except asyncio.CancelledError:
        raise
    except (ConnectionError, ClientPayloadError) as exc:
        # The client went away in the middle of its request: nothing to fix.
        log.debug("client left during %s %s: %r", request.method, request.path, exc)
        return _error_response(request, 400, "bad_request", "请求未完整发送")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error_response(request, 500, "server_error", "服务器内部错误")


def _error_response(
    request: web.Request, status: int, code: str, message: str
) -> web.Response:
    if request.path.startswith("/api/"):
        return web.json_response({"error": code, "message": message}, status=status)
    context = {"status": status, "message": message}
    return aiohttp_jinja2.render_template(
        "errors/error.html", request, context, status=status
    )


# Pages that other sites may frame: the chat page lives inside app webviews.
_FRAMEABLE = ("/chat",)


@web.middleware
async def headers_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Security headers on every response, and the CSRF cookie when new."""
    response = await handler(request)
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    if not request.path.startswith("/static/"):
        headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; "
            "style-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:; "
            "object-src 'none'; base-uri 'none'"
            + ("" if request.path in _FRAMEABLE else "; frame-ancestors 'none'"),
        )
    if request.path.startswith("/console"):
        headers.setdefault("Cache-Control", "no-store")
    new_csrf = request.get(NEW_CSRF)
    if new_csrf and not response.prepared:
        response.set_cookie(
            CSRF_COOKIE,
            new_csrf,
            httponly=True,
            samesite="Strict",
            secure=settings(request).secure_cookies,
            path="/",
        )
    return response


# Lifecycle


async def _open_store(app: web.Application) -> AsyncIterator[None]:
    config = app[APP_CONFIG]
    lock = ServerLock(config.data_path)
    lock.acquire()
    try:
        store = await asyncio.to_thread(Store.from_config, config)
    except BaseException:
        lock.release()
        raise
    robot = make_robot(config)
    knowledge = KnowledgeBase(store, robot)
    count = await asyncio.to_thread(knowledge.prepare_blocking)
    log.info("FAQ index loaded: %d entries", count)
    app[APP_DESK] = desk = Desk(config, store, Hub(), robot)
    app[kb.APP_KB] = knowledge
    knowledge.start()
    upkeep = _background_jobs(store, knowledge, desk, config)
    archiver = Archiver(
        store, config, lambda c: desk.hub.is_visitor_online(c.visitor_id)
    ).start()
    yield
    for job in upkeep:
        job.cancel()
    await knowledge.stop()
    await archiver.stop()
    await app[APP_DESK].drain_robot()
    await asyncio.to_thread(store.close)
    lock.release()


async def _every(seconds: float, job: Callable[[], object], what: str) -> None:
    """Run ``job`` (plain or async) every ``seconds`` until cancelled; a
    failure is logged and the next round runs as usual."""
    while True:
        await asyncio.sleep(seconds)
        try:
            result = job()
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed", what)


def _background_jobs(
    store: Store, knowledge: KnowledgeBase, desk: Desk, config: Config
) -> list[asyncio.Task[None]]:
    """The server's periodic upkeep on the event loop (the archiver has its
    own thread)."""
    seen = store.get_meta("faq_changed")

    async def follow_faq_imports() -> None:
        # `goflypy faq import` in another process changed the FAQ meanwhile.
        nonlocal seen
        stamp = store.get_meta("faq_changed")
        if stamp != seen:
            seen = stamp
            await knowledge.request_rebuild()
            log.info("FAQ index rebuilt after import")

    loop = asyncio.get_running_loop()
    jobs = [
        (FAQ_POLL_S, follow_faq_imports, "FAQ index rebuild"),
        # A password reset or disabled account from the command line (another
        # process) ends that agent's open consoles within a few seconds.
        (SESSION_CHECK_S, desk.drop_revoked_sessions, "checking console sessions"),
    ]
    idle_ms = int(config.robot_idle_close_minutes * 60_000)
    if idle_ms > 0:
        # Checked a few times per idle period, at most once a minute.
        jobs.append(
            (
                min(60.0, idle_ms / 4000),
                partial(desk.close_idle_robot_conversations, idle_ms),
                "closing idle robot conversations",
            )
        )
    return [loop.create_task(_every(*job)) for job in jobs]


async def _close_sockets(app: web.Application) -> None:
    """Shutdown: every socket gets 1001 so clients reconnect by themselves."""
    desk = app.get(APP_DESK)
    if desk is None:
        return
    peers = desk.hub.all_peers()
    log.info("closing %d sockets", len(peers))
    # A peer that does not answer the close in a couple of seconds is cut off.
    await asyncio.gather(
        *(
            peer.close(1001, "server restarting")
            for peer in peers
            if isinstance(peer, SocketPeer)
        ),
        return_exceptions=True,
    )


async def _watch_metrics(app: web.Application) -> None:
    app[APP_METRICS].watch(app[APP_DESK])


def make_app(config: Config) -> web.Application:
    """Build the application; the store opens when the app starts."""
    proxies = TrustedProxies(config.trusted_proxies)
    middlewares: list[Middleware] = [headers_middleware, error_middleware]
    if proxies:
        middlewares.insert(0, real_ip_middleware(proxies))
    app = web.Application(middlewares=middlewares, client_max_size=256 * 1024)
    app[APP_CONFIG] = config
    app[APP_LIMITS] = Limits.from_config(config)
    app[APP_METRICS] = Metrics()
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(PACKAGE_DIR / "templates")),
        autoescape=True,
    )
    app.cleanup_ctx.append(_open_store)
    app.on_startup.append(_watch_metrics)
    app.on_shutdown.append(_close_sockets)

    app.router.add_get("/", visitor.index)
    app.router.add_get("/demo", visitor.demo_shop)
    app.router.add_get("/chat", visitor.chat_page)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/metrics", ops.metrics)
    app.router.add_get("/console", agent.console)
    app.router.add_get("/console/login", agent.login_form)
    app.router.add_post("/console/login", agent.login_submit)
    app.router.add_post("/console/logout", agent.logout)
    app.router.add_get("/console/password", agent.password_form)
    app.router.add_post("/console/password", agent.password_submit)
    _add_kb_routes(app)
    app.router.add_get("/ws/visitor", ws.visitor_ws)
    app.router.add_get("/ws/agent", ws.agent_ws)
    app.router.add_get("/favicon.ico", _favicon)
    app.router.add_static("/static/", static_dir(), append_version=False)
    return app


def _add_kb_routes(app: web.Application) -> None:
    """The knowledge-base admin pages and API, agents' suggestions and
    canned replies."""
    router = app.router
    router.add_get("/console/kb", kb.kb_page)
    router.add_get("/console/reports", reports.reports_page)
    router.add_get("/api/reports", reports.reports_api)
    router.add_get("/api/kb/entries", kb.list_entries)
    router.add_post("/api/kb/entries", kb.create_entry)
    router.add_get("/api/kb/entries/{faq_id}", kb.get_entry)
    router.add_put("/api/kb/entries/{faq_id}", kb.update_entry)
    router.add_delete("/api/kb/entries/{faq_id}", kb.delete_entry)
    router.add_post("/api/kb/try", kb.try_robot)
    router.add_get("/api/kb/status", kb.status)
    router.add_get("/api/kb/vocabulary", kb.list_vocabulary)
    router.add_post("/api/kb/synonyms", kb.put_synonyms)
    router.add_delete("/api/kb/synonyms/{canonical}", kb.delete_synonyms)
    router.add_post("/api/kb/categories", kb.put_categories)
    router.add_delete("/api/kb/categories/{topic}", kb.delete_categories)
    router.add_post("/api/kb/words", kb.put_word)
    router.add_delete("/api/kb/words/{word}", kb.delete_word)
    router.add_get("/api/kb/export", kb.export_entries)
    router.add_post("/api/kb/import", kb.import_entries)
    router.add_get("/api/kb/unanswered", kb.list_unanswered)
    router.add_post("/api/kb/unanswered/{key}/adopt", kb.adopt_unanswered)
    router.add_delete("/api/kb/unanswered/{key}", kb.dismiss_unanswered)
    router.add_get("/api/console/suggestions", kb.suggestions)
    router.add_get("/api/console/canned", canned.list_replies)
    router.add_post("/api/console/canned", canned.save_reply)
    router.add_delete("/api/console/canned/{reply_id}", canned.delete_reply)


def run(
    app: web.Application, config: Config, first_password: str | None = None
) -> None:
    """Serve until SIGINT or SIGTERM; print where to go first."""
    base = config.public_url.rstrip("/") or f"http://{config.host}:{config.port}"

    async def announce(_app: web.Application) -> None:
        log.info("effective settings: %s", config.masked())
        lines = [
            f"goflypy {__version__} listening on http://{config.host}:{config.port}",
            f"  shop demo (visitor): {base}/demo",
            f"  full-page chat:      {base}/chat",
            f"  agent console:       {base}/console",
        ]
        if first_password:
            lines.append(
                f"  first sign-in:       admin / {first_password}"
                "  (you must change it at first sign-in)"
            )
        print("\n".join(lines), flush=True)
        gc.freeze()  # the store, the robot's index and the app stay for good

    app.on_startup.append(announce)
    # The store's writer thread needs the GIL for a moment per commit; at the
    # default 5 ms switch interval it queues behind a busy event loop and
    # every acknowledgement waits (in bench/load: p99 at 1,000 msg/s fell from
    # about 375 ms to under 100 ms at 0.5 ms).
    sys.setswitchinterval(GIL_SWITCH_S)
    # Thousands of long-lived sockets make every full garbage collection
    # walk a large heap: collect less often (in bench/load at 1,000 msg/s
    # with 10,000 sockets, p99 fell from about 2 s to under 70 ms; memory
    # per idle socket stayed at 1.3 times a bare aiohttp server's) and keep
    # what start-up built out of the collector's way.
    gc.set_threshold(*GC_THRESHOLDS)
    web.run_app(
        app,
        host=config.host,
        port=config.port,
        print=None,
        access_log=None,
        shutdown_timeout=5.0,
        backlog=1024,
    )
