"""The two WebSocket endpoints: parse frames, check rights, call the desk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from ..desk import Desk, message_frame, note_frames
from ..errors import BadRequest, GoflyError, NotFound, RateLimited, StorageFull
from ..hub import encode
from ..identity import IdentityError
from ..limits import TokenBucket
from ..log import ws as log
from ..metrics import APP_METRICS, Metrics
from ..models import Account, Conversation, Visitor
from ..store.keys import now_ms
from .common import (
    APP_DESK,
    APP_LIMITS,
    SESSION_COOKIE,
    client_ip,
    current_account,
    is_allowed_origin,
    settings,
)
from .sockets import CLOSE_GRACE_S, PingPolicy, SocketPeer, VisitorPeer

CHANNELS = ("web", "app", "miniapp", "h5")
MAX_CLIENT_ID = 64
MAX_PAGE = 1000
# Longest username a transfer frame may name.
MAX_USERNAME = 64
# Conversations one agent socket may have frames in progress for.
MAX_CONVERSATIONS_IN_FLIGHT = 64
# Closed and archived conversations sent per "past" frame.
PAST_PAGE = 50
# A full server tells clients to come back after a spread-out pause.
BUSY_RETRY_MS = (5_000, 15_000)
# JSON escapes that may decode to half of a surrogate pair.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class FrameError(Exception):
    """A frame the socket answers with an error frame; the socket stays open."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


# Frame parsing


def _refuse_constant(name: str) -> Any:
    """NaN and Infinity are not JSON, whatever Python's parser allows."""
    raise ValueError(name)


def parse_frame(raw: str) -> dict[str, Any]:
    try:
        frame = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise FrameError("bad_json", "frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise FrameError("bad_frame", "frame is not a JSON object")
    if not isinstance(frame.get("type"), str):
        raise FrameError("bad_frame", "frame has no string 'type'")
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(frame):
        raise FrameError("bad_text", "frame holds lone surrogates")
    return frame


def _has_lone_surrogate(value: Any) -> bool:
    """Whether any string in a decoded frame cannot be encoded as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(
            _has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items()
        )
    if isinstance(value, list):
        return any(_has_lone_surrogate(item) for item in value)
    return False


def field(frame: dict[str, Any], name: str, kind: type, required: bool = True) -> Any:
    value = frame.get(name)
    if value is None and not required:
        return None
    if kind is int and isinstance(value, bool):
        value = None
    if not isinstance(value, kind):
        raise FrameError("bad_frame", f"'{name}' must be a {kind.__name__}")
    return value


def message_text(frame: dict[str, Any], max_chars: int) -> str:
    text: str = field(frame, "text", str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FrameError("bad_text", "text holds lone surrogates") from None
    if not text.strip():
        raise FrameError("bad_text", "text is empty")
    if len(text) > max_chars:
        raise FrameError("too_long", f"text is longer than {max_chars} characters")
    return text


def client_id_of(frame: dict[str, Any]) -> str:
    client_id: str = field(frame, "client_id", str)
    if not 1 <= len(client_id) <= MAX_CLIENT_ID:
        raise FrameError(
            "bad_frame", f"'client_id' must be 1 to {MAX_CLIENT_ID} characters"
        )
    return client_id


def error_frame(exc: FrameError | GoflyError) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message}
    if isinstance(exc, FrameError):
        frame.update(exc.extra)
    if isinstance(exc, RateLimited):
        frame["retry_after_ms"] = exc.retry_after_ms
        if exc.client_id is not None:
            frame["client_id"] = exc.client_id
    return frame


async def _serve_frames(
    ws: web.WebSocketResponse,
    peer: SocketPeer,
    on_frame: Callable[[dict[str, Any]], Awaitable[None]],
    metrics: Metrics,
    frames_per_s: int,
) -> int | None:
    """Read frames until the socket closes; errors become error frames.

    Returns the close code of a protocol error (1007, 1009), else None.
    """
    bucket = TokenBucket(frames_per_s, 1.0, burst=3 * frames_per_s)
    received = metrics.frames_in.labels(peer.kind)
    async for msg in ws:
        peer.last_rx = time.monotonic()
        if msg.type == WSMsgType.PONG:
            peer.on_pong(msg.data)
            continue
        if msg.type == WSMsgType.PING:
            await ws.pong(msg.data)
            continue
        if msg.type == WSMsgType.ERROR:
            # aiohttp has closed with the error's code (1007, 1009) already.
            log.warning("socket closed: %s", msg.data)
            return getattr(msg.data, "code", None)
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            break
        received.inc()

        retry = bucket.take()
        if retry:
            metrics.refused.labels("frame_rate").inc()
            peer.send_frame(
                error_frame(RateLimited("too many frames", retry_after_ms=retry))
            )
            continue
        if msg.type == WSMsgType.BINARY:
            peer.send_frame(
                {
                    "type": "error",
                    "code": "bad_frame",
                    "message": "binary frames are not accepted",
                }
            )
            continue

        await answer_errors(peer, metrics, _parse_then(msg.data, on_frame))
    return None


async def _parse_then(
    raw: str, on_frame: Callable[[dict[str, Any]], Awaitable[None]]
) -> None:
    await on_frame(parse_frame(raw))


async def answer_errors(
    peer: SocketPeer, metrics: Metrics, work: Awaitable[None]
) -> None:
    """Run a frame's work; what it raises becomes an error frame."""
    try:
        await work
    except (FrameError, GoflyError) as exc:
        if isinstance(exc, RateLimited):
            metrics.refused.labels("message_rate").inc()
        peer.send_frame(error_frame(exc))
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("frame handling failed")
        peer.send_frame(
            {"type": "error", "code": "server_error", "message": "internal error"}
        )


async def _open_socket(
    request: web.Request, kind: str
) -> tuple[web.WebSocketResponse, bool]:
    """Upgrade; False when a limit refuses it (the client has been told)."""
    config = settings(request)
    hub = request.app[APP_DESK].hub
    metrics = request.app[APP_METRICS]
    refusal: GoflyError | None = None
    if hub.open_sockets() >= config.max_connections:
        metrics.refused.labels("connections").inc()
        refusal = RateLimited(
            "server is full", retry_after_ms=random.randint(*BUSY_RETRY_MS)
        )
        refusal.code = "busy"
    elif (
        request.app[APP_LIMITS].sockets_by_ip.get(client_ip(request), 0)
        >= config.sockets_per_ip
    ):
        metrics.refused.labels("ip_sockets").inc()
        refusal = RateLimited(
            "too many open sockets from this address",
            retry_after_ms=random.randint(*BUSY_RETRY_MS),
        )
    else:
        retry = request.app[APP_LIMITS].connect.check(client_ip(request))
        if retry:
            metrics.refused.labels("connect_rate").inc()
            refusal = RateLimited("too many new connections", retry_after_ms=retry)

    # Refuse over the socket: a browser never sees an upgrade's HTTP status.
    ws = web.WebSocketResponse(
        autoping=False,
        max_msg_size=config.max_frame_bytes,
        compress=False,
        timeout=CLOSE_GRACE_S,
    )
    await ws.prepare(request)
    if refusal is None:
        _held_by_ip(request, +1)
        return ws, True
    try:
        async with asyncio.timeout(CLOSE_GRACE_S):
            await ws.send_str(encode(error_frame(refusal)))
            await ws.close(code=1013, message=refusal.message.encode())
    except (TimeoutError, ConnectionError, RuntimeError):
        if request.transport is not None:
            request.transport.abort()
    return ws, False


def _held_by_ip(request: web.Request, change: int) -> None:
    """Count an accepted socket in (+1) or out (-1) for its address."""
    held = request.app[APP_LIMITS].sockets_by_ip
    ip = client_ip(request)
    count = held.get(ip, 0) + change
    if count > 0:
        held[ip] = count
    else:
        held.pop(ip, None)


def _peer_args(
    request: web.Request, ws: web.WebSocketResponse, kind: str, label: str, limit: int
) -> dict[str, Any]:
    config = settings(request)
    return {
        "ws": ws,
        "transport": request.transport,
        "kind": kind,
        "label": label,
        "limit": limit,
        "policy": PingPolicy(config.ping_interval_s, config.ping_timeout_s),
        "metrics": request.app[APP_METRICS],
    }


# Visitor socket


async def visitor_ws(request: web.Request) -> web.WebSocketResponse:
    """GET /ws/visitor: the visitor protocol v1 (docs/protocol.md)."""
    if not is_allowed_origin(request, allow_missing=True):
        log.warning("visitor socket refused: origin not allowed")
        raise web.HTTPForbidden(text="origin not allowed")
    ws, accepted = await _open_socket(request, "visitor")
    if not accepted:
        return ws
    session = VisitorSession(request, ws)
    hub = session.desk.hub
    hub.socket_opened("visitor", session.peer)
    session.peer.start_pings()
    # A socket that never says hello holds a slot for nothing.
    silent = asyncio.get_running_loop().call_later(
        session.config.hello_timeout_s, session.drop_if_silent
    )
    error_code = None
    try:
        error_code = await _serve_frames(
            ws,
            session.peer,
            session.handle,
            request.app[APP_METRICS],
            session.config.frames_per_s,
        )
    finally:
        silent.cancel()
        _held_by_ip(request, -1)
        hub.socket_closed("visitor", session.peer)
        await session.end()
        _count_close(request, ws, error_code)
    return ws


def _count_close(
    request: web.Request, ws: web.WebSocketResponse, error_code: int | None
) -> None:
    code = error_code or ws.close_code or 1006
    request.app[APP_METRICS].closed.labels(str(int(code))).inc()


class VisitorSession:
    """State of one visitor socket between hello and close."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.request = request
        self.desk = request.app[APP_DESK]
        self.config = settings(request)
        self.limits = request.app[APP_LIMITS]
        self.ip = client_ip(request)
        self.metrics = request.app[APP_METRICS]
        self.visitor: Visitor | None = None
        # The shopper id verified on this socket; None for an anonymous one.
        self.shopper_id: str | None = None
        self.peer = VisitorPeer(
            **_peer_args(
                request, ws, "visitor", "visitor socket", self.config.send_queue_frames
            ),
            fill=self._fill,
        )

    def _fill(self, after: int, upto: int) -> list[tuple[int, str]]:
        """Encoded stored messages with after < seq <= upto."""
        assert self.visitor is not None
        if upto <= after:
            return []
        messages = self.desk.store.read_messages(
            self.visitor.conversation_id, after, upto - after
        )
        return [(m.seq, encode(message_frame(m))) for m in messages if m.seq <= upto]

    async def handle(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "hello":
            await self._hello(frame)
            return
        if self.visitor is None:
            raise FrameError("hello_required", "send hello first")
        if kind == "message":
            await self._message(frame)
        elif kind == "handoff":
            await self.desk.request_human(self.visitor.conversation_id)
        elif kind == "typing":
            conversation = self._conversation()
            if not self.limits.typing.check(self.visitor.id):
                self.desk.typing_from_visitor(conversation)
        elif kind == "read":
            field(frame, "seq", int)
        elif kind == "rate":
            score = field(frame, "score", int)
            if not 1 <= score <= 5:
                raise FrameError("bad_frame", "'score' must be 1 to 5")
            await self.desk.rate(self.visitor.conversation_id, score)
        elif kind == "ping":
            self.peer.send_frame({"type": "pong"})
        else:
            raise FrameError("unknown_type", f"unknown frame type {kind[:32]!r}")

    def _conversation(self) -> Conversation:
        assert self.visitor is not None
        conversation = self.desk.store.read_conversation(self.visitor.conversation_id)
        if conversation is None:
            raise NotFound("conversation is gone")
        return conversation

    async def _hello(self, frame: dict[str, Any]) -> None:
        if self.visitor is not None:
            raise FrameError("bad_frame", "hello was already sent")
        token = field(frame, "visitor_token", str, required=False)
        channel = field(frame, "channel", str, required=False) or "web"
        if channel not in CHANNELS:
            raise FrameError(
                "bad_frame", f"'channel' must be one of {', '.join(CHANNELS)}"
            )
        last_seq = field(frame, "last_seq", int, required=False) or 0
        if last_seq < 0:
            raise FrameError("bad_frame", "'last_seq' must not be negative")
        page = (field(frame, "page", str, required=False) or "")[:MAX_PAGE]
        user_agent = self.request.headers.get("User-Agent", "")[:300]

        # Identify the visitor; an unknown token simply starts a new one, and
        # a verified shopper gets their own visitor on every device.
        store = self.desk.store
        visitor = store.find_visitor(token) if token else None
        shopper_id = self._verified_shopper(frame.get("identity"))
        if shopper_id is not None:
            before = visitor.id if visitor is not None else None
            visitor, token = await self._shopper_visitor(
                shopper_id, visitor, token, (channel, page, user_agent)
            )
            if visitor.id != before:
                last_seq = 0  # this device's seq was of another conversation
        elif visitor is None:
            retry = self.limits.new_visitor.check(self.ip)
            if retry:
                raise RateLimited("too many new visitors", retry_after_ms=retry)
            visitor, token = await store.create_visitor(channel, page, user_agent)
        else:
            await store.ensure_readable(visitor.conversation_id)
            with contextlib.suppress(StorageFull):  # reads work on a full disk
                visitor = await store.touch_visitor(
                    visitor.id, channel, page, user_agent
                )
        self.visitor = visitor
        self.shopper_id = shopper_id
        if self.desk.hub.join_visitor(visitor.id, self.peer):
            conversation = self._conversation()
            self.desk.publish(conversation)

        # Welcome, then everything after last_seq, then the state.
        conversation = self._conversation()
        welcome = {
            "type": "welcome",
            "visitor_token": token,
            "visitor_id": visitor.id,
            "conversation_id": conversation.id,
            "last_seq": conversation.last_seq,
            "heartbeat_s": self.config.heartbeat_s,
        }
        if shopper_id is not None:
            welcome["shopper_id"] = shopper_id
        self.peer.send_frame(welcome)
        self.peer.last_seq = min(last_seq, conversation.last_seq)
        self.peer.catch_up(conversation.last_seq)
        self.peer.send_frame(self.desk.status_frame(conversation))
        await self.desk.greet(conversation)

    def _verified_shopper(self, raw: Any) -> str | None:
        """The shopper id of a good ``identity``; a bad one is answered with an
        error frame and the socket goes on as an anonymous visitor."""
        if raw is None:
            return None
        verifier = self.desk.identity
        try:
            if verifier is None:
                raise IdentityError("disabled", "this server does not verify identity")
            return verifier.verify(raw, now_ms()).shopper_id
        except IdentityError as error:
            log.warning("visitor identity refused: %s", error.reason)
            self.peer.send_frame(
                {
                    "type": "error",
                    "code": "bad_identity",
                    "reason": error.reason,
                    "message": f"{error.message}; continuing without identity",
                }
            )
            return None

    async def _shopper_visitor(
        self,
        shopper_id: str,
        visitor: Visitor | None,
        token: str | None,
        where: tuple[str, str, str],
    ) -> tuple[Visitor, str | None]:
        """The verified shopper's visitor and this device's token for it."""
        store = self.desk.store
        linked = store.find_shopper(shopper_id)
        adoptable = visitor is not None and visitor.shopper_id in ("", shopper_id)
        if linked is None and not adoptable:
            retry = self.limits.new_visitor.check(self.ip)
            if retry:
                raise RateLimited("too many new visitors", retry_after_ms=retry)
        shopper_visitor, new_token = await store.link_shopper(
            shopper_id, visitor, *where
        )
        await store.ensure_readable(shopper_visitor.conversation_id)
        return shopper_visitor, new_token or token

    async def _message(self, frame: dict[str, Any]) -> None:
        assert self.visitor is not None
        client_id = client_id_of(frame)
        text = message_text(frame, self.config.max_message_chars)
        for limiter, key in (
            (self.limits.visitor, self.visitor.id),
            (self.limits.ip, self.ip),
        ):
            retry = limiter.check(key)
            if retry:
                raise RateLimited("too many messages", retry_after_ms=retry)
        started = time.perf_counter()
        try:
            appended = await self.desk.visitor_message(
                self.visitor, client_id, text, self.shopper_id
            )
        except StorageFull as exc:
            raise FrameError("storage_full", exc.message, client_id=client_id) from None
        self.metrics.store_wait.labels("visitor").observe(time.perf_counter() - started)
        self.metrics.messages_in.labels("visitor").inc()
        message = appended.message
        self.peer.send_frame(
            {
                "type": "ack",
                "client_id": client_id,
                "seq": message.seq,
                "ts": message.ts,
            }
        )

    def drop_if_silent(self) -> None:
        if self.visitor is None:
            self.metrics.refused.labels("hello_timeout").inc()
            self.peer.drop(1008, "hello required")

    async def end(self) -> None:
        await self.peer.stop()
        if self.visitor is not None and self.desk.hub.leave_visitor(
            self.visitor.id, self.peer
        ):
            conversation = self.desk.store.get_conversation(
                self.visitor.conversation_id
            )
            if conversation is not None:
                self.desk.publish(conversation)


# Agent socket


async def agent_ws(request: web.Request) -> web.WebSocketResponse:
    """GET /ws/agent: the console's socket; needs a signed-in session."""
    account = current_account(request)
    if account is None or account.must_change_password:
        raise web.HTTPUnauthorized(text="sign in first")
    if not is_allowed_origin(request, allow_missing=False, own_only=True):
        log.warning("agent socket refused: origin not allowed")
        raise web.HTTPForbidden(text="origin not allowed")
    ws, accepted = await _open_socket(request, "agent")
    if not accepted:
        return ws
    session = AgentSession(request, ws, account)
    hub = session.desk.hub
    hub.socket_opened("agent", session.peer)
    session.desk.watch_session(session.peer, session.session_token)
    session.peer.start_pings()
    log.info("agent %s connected", account.username)
    error_code = None
    try:
        error_code = await _serve_frames(
            ws,
            session.peer,
            session.dispatch,
            request.app[APP_METRICS],
            session.config.frames_per_s,
        )
    finally:
        await session.finish()
        _held_by_ip(request, -1)
        session.desk.unwatch_session(session.peer)
        hub.socket_closed("agent", session.peer)
        await session.peer.stop()
        if hub.leave_agent(account.username, session.peer):
            _announce_agents(session.desk)
        _count_close(request, ws, error_code)
        log.info("agent %s disconnected", account.username)
    return ws


def _agent_names(desk: Desk) -> dict[str, str]:
    """Display names of the agents online, by username."""
    names = {}
    for username in desk.hub.online_agents():
        account = desk.store.get_account(username)
        names[username] = account.display_name if account else username
    return names


def _announce_agents(desk: Desk) -> None:
    """Agent presence changed: every console learns who is online."""
    hub = desk.hub
    hub.to_agents(
        {"type": "agents", "online": hub.online_agents(), "names": _agent_names(desk)}
    )


class AgentSession:
    """One console socket of one signed-in agent."""

    def __init__(
        self, request: web.Request, ws: web.WebSocketResponse, account: Account
    ) -> None:
        self.desk = request.app[APP_DESK]
        self.config = settings(request)
        self.limits = request.app[APP_LIMITS]
        self.account = account
        self.session_token = request.cookies.get(SESSION_COOKIE, "")
        self.metrics = request.app[APP_METRICS]
        self._chains: dict[str, asyncio.Task[None]] = {}
        limit = max(self.config.send_queue_frames, 1024)
        self.peer = SocketPeer(
            **_peer_args(request, ws, "agent", f"agent {account.username}", limit)
        )
        hub = self.desk.hub
        came_online = hub.join_agent(account.username, self.peer)
        self.peer.send_frame(
            {
                "type": "welcome",
                "agent": {
                    "username": account.username,
                    "display_name": account.display_name,
                    "role": account.role,
                },
                "agents_online": hub.online_agents(),
                "agent_names": _agent_names(self.desk),
                "conversations": [
                    self.desk.summary(c)
                    for c in self.desk.store.list_open_conversations()
                ],
            }
        )
        if came_online:
            _announce_agents(self.desk)

    async def dispatch(self, frame: dict[str, Any]) -> None:
        """Run a frame; frames about one conversation run in order.

        Different conversations overlap, so an agent's replies to many
        shoppers do not each wait for the previous one's durable commit.
        """
        conversation_id = frame.get("conversation_id")
        if frame["type"] == "ping" or not isinstance(conversation_id, str):
            await self.handle(frame)
            return
        previous = self._chains.get(conversation_id)
        task = asyncio.get_running_loop().create_task(self._after(previous, frame))
        self._chains[conversation_id] = task
        task.add_done_callback(lambda done: self._unchain(conversation_id, done))
        if len(self._chains) > MAX_CONVERSATIONS_IN_FLIGHT:
            await asyncio.wait(
                set(self._chains.values()), return_when=asyncio.FIRST_COMPLETED
            )

    async def _after(
        self, previous: asyncio.Task[None] | None, frame: dict[str, Any]
    ) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        await answer_errors(self.peer, self.metrics, self.handle(frame))

    def _unchain(self, conversation_id: str, done: asyncio.Task[None]) -> None:
        if self._chains.get(conversation_id) is done:
            del self._chains[conversation_id]

    async def finish(self) -> None:
        """The socket closed: let frames already read complete."""
        if self._chains:
            await asyncio.wait(set(self._chains.values()))

    def _conversation(self, frame: dict[str, Any]) -> Conversation:
        conversation_id = field(frame, "conversation_id", str)
        conversation = self.desk.store.read_conversation(conversation_id)
        if conversation is None:
            raise NotFound("no such conversation")
        return conversation

    async def handle(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        desk = self.desk
        # A password change or reset elsewhere (the command line included)
        # ends the session: this socket acts for nobody after that.
        if desk.store.get_session(self.session_token) is None:
            self.peer.drop(4401, "signed out")
            return
        if kind == "ping":
            self.peer.send_frame({"type": "pong"})
            return
        if kind == "past":
            self._send_past(frame)
            return
        if kind not in (
            "open",
            "claim",
            "message",
            "note",
            "transfer",
            "typing",
            "read",
            "close",
        ):
            raise FrameError("unknown_type", f"unknown frame type {kind[:32]!r}")

        # An archived conversation comes back first; on a full disk it stays
        # archived and is served read-only (actions then get storage_full).
        await desk.store.ensure_readable(field(frame, "conversation_id", str))
        conversation = self._conversation(frame)
        if kind == "open":
            self._send_history(conversation)
        elif kind == "claim":
            await desk.claim(conversation.id, self.account)
        elif kind == "message":
            await self._message(conversation, frame)
        elif kind == "note":
            await self._note(conversation, frame)
        elif kind == "transfer":
            to = field(frame, "to", str)
            if not 1 <= len(to) <= MAX_USERNAME:
                raise FrameError(
                    "bad_frame", f"'to' must be 1 to {MAX_USERNAME} characters"
                )
            await desk.transfer(conversation.id, self.account, to)
        elif kind == "typing":
            desk.typing_from_agent(conversation, self.account)
        elif kind == "read":
            field(frame, "seq", int)
            await desk.mark_read(conversation.id)
        elif kind == "close":
            await desk.close(conversation.id, self.account)

    def _send_history(self, conversation: Conversation) -> None:
        visitor = self.desk.store.get_visitor(conversation.visitor_id)
        self.peer.send_frame(
            {
                "type": "history",
                "conversation_id": conversation.id,
                "conversation": self.desk.summary(conversation),
                "visitor": self.desk.visitor_profile(visitor) if visitor else None,
                "messages": [
                    message_frame(m)
                    for m in self.desk.store.read_messages(conversation.id)
                ],
                "notes": note_frames(conversation),
                "archived": self.desk.store.get_conversation(conversation.id) is None,
            }
        )

    def _send_past(self, frame: dict[str, Any]) -> None:
        """Closed and archived conversations, newest first, a page at a time."""
        before = field(frame, "before", str, required=False)
        try:
            refs = self.desk.store.list_history(PAST_PAGE + 1, before)
        except ValueError:
            raise FrameError("bad_frame", "'before' is not a conversation id") from None
        self.peer.send_frame(
            {
                "type": "past",
                "before": before,
                "conversations": [self.desk.past_summary(r) for r in refs[:PAST_PAGE]],
                "more": len(refs) > PAST_PAGE,
            }
        )

    async def _message(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        client_id = client_id_of(frame)
        try:
            text = message_text(frame, self.config.max_message_chars)
        except FrameError as exc:
            exc.extra["client_id"] = client_id
            raise
        self._check_rate(client_id)
        started = time.perf_counter()
        try:
            appended = await self.desk.agent_message(
                conversation.id, self.account, client_id, text
            )
        except StorageFull as exc:
            raise FrameError("storage_full", exc.message, client_id=client_id) from None
        self.metrics.store_wait.labels("agent").observe(time.perf_counter() - started)
        self.metrics.messages_in.labels("agent").inc()
        message = appended.message
        self.peer.send_frame(
            {
                "type": "ack",
                "client_id": client_id,
                "conversation_id": conversation.id,
                "seq": message.seq,
                "ts": message.ts,
            }
        )

    def _check_rate(self, client_id: str) -> None:
        """Refuse a reply or note past the agent's rate, naming its client id."""
        retry = self.limits.agent.check(self.account.username)
        if retry:
            raise RateLimited(
                "too many messages", retry_after_ms=retry, client_id=client_id
            )

    async def _note(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        """An internal note: checked and limited like a reply, acked with
        its ``note_id``; it never reaches the visitor."""
        client_id = client_id_of(frame)
        try:
            text = message_text(frame, self.config.max_message_chars)
        except FrameError as exc:
            exc.extra["client_id"] = client_id
            raise
        self._check_rate(client_id)
        try:
            added = await self.desk.add_note(
                conversation.id, self.account, client_id, text
            )
        except (StorageFull, BadRequest) as exc:
            raise FrameError(exc.code, exc.message, client_id=client_id) from None
        note = added.note
        self.peer.send_frame(
            {
                "type": "ack",
                "client_id": client_id,
                "conversation_id": conversation.id,
                "note_id": note.id,
                "ts": note.ts,
            }
        )
