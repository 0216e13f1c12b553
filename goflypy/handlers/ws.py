"""The two WebSocket endpoints: parse frames, check rights, call the desk."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from ..desk import message_frame
from ..errors import GoflyError, NotFound, RateLimited, StorageFull
from ..hub import encode
from ..log import ws as log
from ..models import Account, Conversation, Visitor
from .common import (
    APP_DESK,
    APP_LIMITS,
    client_ip,
    current_account,
    is_allowed_origin,
    settings,
)

CHANNELS = ("web", "app", "miniapp", "h5")
MAX_CLIENT_ID = 64
MAX_PAGE = 1000


class FrameError(Exception):
    """A frame the socket answers with an error frame; the socket stays open."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


class SocketPeer:
    """One socket: a bounded send queue drained by its own writer task."""

    def __init__(self, ws: web.WebSocketResponse, limit: int, label: str) -> None:
        self.ws = ws
        self.label = label
        self.closing = False
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=limit)
        self._writer = asyncio.get_running_loop().create_task(self._drain())

    def send(self, text: str, seq: int | None = None) -> bool:
        if self.closing:
            return False
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("%s is not reading; closing it", self.label)
            self.closing = True
            asyncio.get_running_loop().create_task(
                self.ws.close(code=1013, message=b"send queue full")
            )
            return False
        return True

    def send_frame(self, frame: dict[str, Any]) -> bool:
        return self.send(encode(frame))

    async def _drain(self) -> None:
        try:
            while True:
                text = await self._queue.get()
                await self.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            self.closing = True  # the socket went away; the reader sees it too

    async def stop(self) -> None:
        self.closing = True
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer


class VisitorPeer(SocketPeer):
    """A visitor device; delivers its conversation's messages once, in order."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        limit: int,
        fill: Callable[[int, int], list[tuple[int, str]]],
    ) -> None:
        super().__init__(ws, limit, "visitor socket")
        self.last_seq = 0
        self._fill = fill

    def send(self, text: str, seq: int | None = None) -> bool:
        if seq is None:
            return super().send(text)
        if seq <= self.last_seq:
            return True  # already delivered by replay or an earlier catch-up
        # A later message may overtake an earlier one: send the gap first.
        return self.catch_up(seq - 1) and self._send_seq(text, seq)

    def catch_up(self, upto: int) -> bool:
        """Send every stored message after last_seq up to ``upto``."""
        for seq, missing in self._fill(self.last_seq, upto):
            if not self._send_seq(missing, seq):
                return False
        return True

    def _send_seq(self, text: str, seq: int) -> bool:
        self.last_seq = seq
        return super().send(text)


# Frame parsing


def parse_frame(raw: str) -> dict[str, Any]:
    try:
        frame = json.loads(raw)
    except ValueError:
        raise FrameError("bad_json", "frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise FrameError("bad_frame", "frame is not a JSON object")
    if not isinstance(frame.get("type"), str):
        raise FrameError("bad_frame", "frame has no string 'type'")
    return frame


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
    text = field(frame, "text", str)
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
    client_id = field(frame, "client_id", str)
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
    return frame


async def _serve_frames(
    ws: web.WebSocketResponse,
    peer: SocketPeer,
    on_frame: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """Read frames until the socket closes; errors become error frames."""
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            peer.send_frame(
                {
                    "type": "error",
                    "code": "bad_frame",
                    "message": "binary frames are not accepted",
                }
            )
            continue
        if msg.type != WSMsgType.TEXT:
            break
        try:
            await on_frame(parse_frame(msg.data))
        except FrameError as exc:
            peer.send_frame(error_frame(exc))
        except GoflyError as exc:
            peer.send_frame(error_frame(exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("frame handling failed")
            peer.send_frame(
                {"type": "error", "code": "server_error", "message": "internal error"}
            )


def _prepare_socket(request: web.Request) -> web.WebSocketResponse:
    config = settings(request)
    hub = request.app[APP_DESK].hub
    if (
        sum(hub.counts()[k] for k in ("visitor_sockets", "agent_sockets"))
        >= config.max_connections
    ):
        raise web.HTTPServiceUnavailable(text="too many connections")
    return web.WebSocketResponse(
        heartbeat=config.heartbeat_s,
        max_msg_size=config.max_frame_bytes,
        compress=False,
    )


# Visitor socket


async def visitor_ws(request: web.Request) -> web.WebSocketResponse:
    """GET /ws/visitor: the visitor protocol v1 (docs/protocol.md)."""
    if not is_allowed_origin(request, allow_missing=True):
        log.warning("visitor socket refused: origin not allowed")
        raise web.HTTPForbidden(text="origin not allowed")
    ws = _prepare_socket(request)
    await ws.prepare(request)
    session = VisitorSession(request, ws)
    try:
        await _serve_frames(ws, session.peer, session.handle)
    finally:
        await session.end()
    return ws


class VisitorSession:
    """State of one visitor socket between hello and close."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.request = request
        self.desk = request.app[APP_DESK]
        self.config = settings(request)
        self.limits = request.app[APP_LIMITS]
        self.ip = client_ip(request)
        self.visitor: Visitor | None = None
        self.peer = VisitorPeer(ws, self.config.send_queue_frames, self._fill)

    def _fill(self, after: int, upto: int) -> list[tuple[int, str]]:
        """Encoded stored messages with after < seq <= upto."""
        assert self.visitor is not None
        if upto <= after:
            return []
        messages = self.desk.store.list_messages(
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
        conversation = self.desk.store.get_conversation(self.visitor.conversation_id)
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

        # Identify the visitor; an unknown token simply starts a new one.
        store = self.desk.store
        visitor = store.find_visitor(token) if token else None
        if visitor is None:
            retry = self.limits.new_visitor.check(self.ip)
            if retry:
                raise RateLimited("too many new visitors", retry_after_ms=retry)
            visitor, token = await store.create_visitor(channel, page, user_agent)
        else:
            visitor = await store.touch_visitor(visitor.id, channel, page, user_agent)
        self.visitor = visitor
        if self.desk.hub.join_visitor(visitor.id, self.peer):
            conversation = self._conversation()
            self.desk.publish(conversation)

        # Welcome, then everything after last_seq, then the state.
        conversation = self._conversation()
        self.peer.send_frame(
            {
                "type": "welcome",
                "visitor_token": token,
                "visitor_id": visitor.id,
                "conversation_id": conversation.id,
                "last_seq": conversation.last_seq,
                "heartbeat_s": self.config.heartbeat_s,
            }
        )
        self.peer.last_seq = min(last_seq, conversation.last_seq)
        self.peer.catch_up(conversation.last_seq)
        self.peer.send_frame(self.desk.status_frame(conversation))
        await self.desk.greet(conversation)

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
        try:
            appended = await self.desk.visitor_message(self.visitor, client_id, text)
        except StorageFull as exc:
            raise FrameError("storage_full", exc.message, client_id=client_id) from None
        message = appended.message
        self.peer.send_frame(
            {
                "type": "ack",
                "client_id": client_id,
                "seq": message.seq,
                "ts": message.ts,
            }
        )

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
    ws = _prepare_socket(request)
    await ws.prepare(request)
    session = AgentSession(request, ws, account)
    log.info("agent %s connected", account.username)
    try:
        await _serve_frames(ws, session.peer, session.handle)
    finally:
        await session.peer.stop()
        session.desk.hub.leave_agent(account.username, session.peer)
        log.info("agent %s disconnected", account.username)
    return ws


class AgentSession:
    """One console socket of one signed-in agent."""

    def __init__(
        self, request: web.Request, ws: web.WebSocketResponse, account: Account
    ) -> None:
        self.desk = request.app[APP_DESK]
        self.config = settings(request)
        self.limits = request.app[APP_LIMITS]
        self.account = account
        self.peer = SocketPeer(
            ws, max(self.config.send_queue_frames, 1024), f"agent {account.username}"
        )
        self.desk.hub.join_agent(account.username, self.peer)
        self.peer.send_frame(
            {
                "type": "welcome",
                "agent": {
                    "username": account.username,
                    "display_name": account.display_name,
                    "role": account.role,
                },
                "conversations": [
                    self.desk.summary(c)
                    for c in self.desk.store.list_open_conversations()
                ],
            }
        )

    def _conversation(self, frame: dict[str, Any]) -> Conversation:
        conversation_id = field(frame, "conversation_id", str)
        conversation = self.desk.store.get_conversation(conversation_id)
        if conversation is None:
            raise NotFound("no such conversation")
        return conversation

    async def handle(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        desk = self.desk
        if kind == "ping":
            self.peer.send_frame({"type": "pong"})
            return
        if kind not in ("open", "claim", "message", "typing", "read", "close"):
            raise FrameError("unknown_type", f"unknown frame type {kind[:32]!r}")

        conversation = self._conversation(frame)
        if kind == "open":
            self._send_history(conversation)
        elif kind == "claim":
            await desk.claim(conversation.id, self.account)
        elif kind == "message":
            await self._message(conversation, frame)
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
                    for m in self.desk.store.list_messages(conversation.id)
                ],
            }
        )

    async def _message(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        client_id = client_id_of(frame)
        text = message_text(frame, self.config.max_message_chars)
        retry = self.limits.agent.check(self.account.username)
        if retry:
            raise RateLimited("too many messages", retry_after_ms=retry)
        try:
            appended = await self.desk.agent_message(
                conversation.id, self.account, client_id, text
            )
        except StorageFull as exc:
            raise FrameError("storage_full", exc.message, client_id=client_id) from None
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
