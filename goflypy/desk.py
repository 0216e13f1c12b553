"""The service desk: what happens to a conversation, whoever touches it.

Socket handlers call these methods after parsing a frame; the desk stores,
lets the robot answer, moves conversations between robot, queue, agent and
closed, and tells everyone concerned through the hub.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .config import Config
from .errors import Conflict, NotFound
from .hub import Hub, Peer
from .identity import IdentityVerifier
from .kb import record_unanswered
from .log import nlp as nlp_log
from .log import server as log
from .models import Account, Conversation, Message, Note, Visitor
from .nlp import Decision, Robot
from .nlp.intents import OrderQuery, detect_order
from .nlp.robot import HANDOFF_REPLY
from .orders import OrderClient, answer_order, bare_order_id
from .store import Appended, ConversationRef, NoteAdded, Store
from .store.keys import now_ms

HANDOFF_ACTIONS = ("handoff", "human")
# What the shopper is told when the conversation joins the agents' queue.
QUEUE_NOTICE = "正在为您转接人工客服，请稍候。"
# Internal notes one conversation may hold, in number and in characters;
# they travel inside the conversation record, so both stay modest.
MAX_NOTES = 100
MAX_NOTE_CHARS = 20_000


def message_frame(message: Message) -> dict[str, Any]:
    """A message as both socket protocols send it."""
    frame: dict[str, Any] = {
        "type": "message",
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "ts": message.ts,
        "sender": message.sender,
        "text": message.text,
    }
    if message.client_id is not None and message.sender == "visitor":
        frame["client_id"] = message.client_id
    if message.agent_name:
        frame["agent_name"] = message.agent_name
    frame.update(message.meta)
    return frame


def note_frame(conversation_id: str, note: Note) -> dict[str, Any]:
    """An internal note as the agent socket sends it. Only agents get it."""
    return note.frame(conversation_id)


def note_frames(conversation: Conversation) -> list[dict[str, Any]]:
    """Every internal note of a conversation, oldest first."""
    return [
        note_frame(conversation.id, Note.from_record(record))
        for record in conversation.notes
    ]


class Desk:
    """Conversation rules over the store, the hub and the robot."""

    def __init__(self, config: Config, store: Store, hub: Hub, robot: Robot) -> None:
        self.config = config
        self.store = store
        self.hub = hub
        self.robot = robot
        self._robot_tasks: set[asyncio.Task[None]] = set()
        self.robot_decisions: dict[str, int] = {}
        # Console sockets by the session token that opened them.
        self._console_sessions: dict[Peer, str] = {}
        # Verified shopper identity and order lookups are both optional.
        self.identity = IdentityVerifier.from_config(config)
        signer = self.identity.order_request_headers if self.identity else None
        self.orders = OrderClient.from_config(config, signer)

    # Summaries

    def summary(self, conversation: Conversation) -> dict[str, Any]:
        """The ConversationSummary of docs/protocol.md."""
        visitor = self.store.get_visitor(conversation.visitor_id)
        return {
            "id": conversation.id,
            "state": conversation.state,
            "agent": conversation.agent,
            "agent_name": conversation.agent_name,
            "visitor_id": conversation.visitor_id,
            "visitor_name": visitor.name if visitor else "",
            "shopper_id": visitor.shopper_id if visitor else "",
            "channel": conversation.channel,
            "page": conversation.page,
            "first_seen": visitor.first_seen if visitor else conversation.created,
            "created": conversation.created,
            "updated": conversation.updated,
            "last_seq": conversation.last_seq,
            "unread": conversation.unread,
            "preview": conversation.preview,
            "visitor_online": self.hub.is_visitor_online(conversation.visitor_id),
            "rating": conversation.rating,
        }

    def past_summary(self, ref: ConversationRef) -> dict[str, Any]:
        """A closed or archived conversation in the console's history list."""
        visitor = self.store.get_visitor(ref.visitor_id)
        return {
            "id": ref.id,
            "state": ref.state,
            "archived": ref.archived,
            "visitor_id": ref.visitor_id,
            "visitor_name": visitor.name if visitor else "",
            "created": ref.created,
            "updated": ref.updated,
            "messages": ref.messages,
        }

    def visitor_profile(self, visitor: Visitor) -> dict[str, Any]:
        return {
            "id": visitor.id,
            "name": visitor.name,
            "channel": visitor.channel,
            "page": visitor.page,
            "first_seen": visitor.first_seen,
            "last_seen": visitor.last_seen,
            "user_agent": visitor.user_agent,
            "conversations": visitor.conversations,
            "online": self.hub.is_visitor_online(visitor.id),
            "shopper_id": visitor.shopper_id,
        }

    def status_frame(self, conversation: Conversation) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "type": "status",
            "state": conversation.state,
            "agent_name": conversation.agent_name,
        }
        if conversation.state == "queued":
            frame["position"] = self.queue_position(conversation.id)
        return frame

    def queue_position(self, conversation_id: str) -> int:
        queued = sorted(
            (c.queued_at, c.id)
            for c in self.store.list_open_conversations()
            if c.state == "queued"
        )
        for position, (_stamp, cid) in enumerate(queued, start=1):
            if cid == conversation_id:
                return position
        return 0

    # Broadcasting

    def publish(
        self, conversation: Conversation, message: Message | None = None
    ) -> None:
        """Tell the visitor's devices and every agent what changed."""
        if message is not None:
            frame = message_frame(message)
            self.hub.to_visitor(conversation.visitor_id, frame)
            self.hub.to_agents(frame)
        self.hub.to_agents(
            {"type": "conversation", "conversation": self.summary(conversation)}
        )

    def publish_state(self, conversation: Conversation) -> None:
        self.hub.to_visitor(conversation.visitor_id, self.status_frame(conversation))
        self.publish(conversation)
        self._refresh_queue_positions(exclude=conversation.id)

    def _refresh_queue_positions(self, exclude: str) -> None:
        """Tell every waiting shopper their place, reading the queue once."""
        queued = sorted(
            (c.queued_at, c.id, c)
            for c in self.store.list_open_conversations()
            if c.state == "queued"
        )
        for position, (_stamp, conversation_id, conversation) in enumerate(
            queued, start=1
        ):
            if conversation_id == exclude:
                continue
            if self.hub.is_visitor_online(conversation.visitor_id):
                self.hub.to_visitor(
                    conversation.visitor_id,
                    {
                        "type": "status",
                        "state": "queued",
                        "agent_name": conversation.agent_name,
                        "position": position,
                    },
                )

    # Visitor side

    async def greet(self, conversation: Conversation) -> None:
        """Post the welcome message into a conversation that has none yet."""
        if conversation.last_seq == 0 and self.config.welcome_text:
            await self.post(
                conversation.id, "robot", self.config.welcome_text, {"kind": "greeting"}
            )

    async def visitor_message(
        self,
        visitor: Visitor,
        client_id: str,
        text: str,
        shopper_id: str | None = None,
    ) -> Appended:
        """Store a visitor's message (durable on return) and let the robot reply.

        ``shopper_id`` is the identity verified on the sending socket; only
        it ever reaches the shop's order endpoint.
        """
        message = Message(
            visitor.conversation_id, 0, 0, "visitor", text, client_id=client_id
        )
        appended = await self.store.append_message(
            visitor.conversation_id, message, dedupe_scope=visitor.id
        )
        if appended.duplicate:
            return appended

        self.publish(appended.conversation, appended.message)
        if appended.reopened:
            # A message to a closed conversation reopens it with the robot.
            self.hub.to_visitor(visitor.id, self.status_frame(appended.conversation))
        if appended.conversation.state == "robot":
            self._spawn(self._robot_reply(appended.conversation.id, text, shopper_id))
        return appended

    async def request_human(
        self, conversation_id: str, announce: bool = True
    ) -> Conversation:
        """Put a conversation in the agents' queue (no-op if already there)."""

        def change(conversation: Conversation) -> None:
            if conversation.state in ("robot", "closed"):
                conversation.state = "queued"
                conversation.queued_at = now_ms()
                conversation.agent = None
                conversation.agent_name = None

        before = self.store.get_conversation(conversation_id)
        if before is not None and before.state in ("queued", "assigned"):
            # Already with the humans: answer the state, write nothing.
            self.hub.to_visitor(before.visitor_id, self.status_frame(before))
            return before
        conversation = await self.store.update_conversation(conversation_id, change)
        if before is not None and before.state != conversation.state:
            if announce:
                await self.post(conversation_id, "system", QUEUE_NOTICE)
            if not self.hub.online_agents() and self.config.offline_text:
                # The queue doubles as a message box until someone signs in.
                await self.post(conversation_id, "system", self.config.offline_text)
            self.publish_state(
                self.store.get_conversation(conversation_id) or conversation
            )
        else:
            self.hub.to_visitor(
                conversation.visitor_id, self.status_frame(conversation)
            )
        return conversation

    async def rate(self, conversation_id: str, score: int) -> Conversation:
        current = self.store.get_conversation(conversation_id)
        if current is not None and current.rating == score:
            return current  # the same rating again changes nothing

        def change(conversation: Conversation) -> None:
            conversation.rating = score

        conversation = await self.store.update_conversation(conversation_id, change)
        self.publish(conversation)
        return conversation

    def typing_from_visitor(self, conversation: Conversation) -> None:
        self.hub.to_agents(
            {"type": "typing", "conversation_id": conversation.id, "sender": "visitor"}
        )

    # Robot

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._robot_tasks.add(task)
        task.add_done_callback(self._robot_tasks.discard)

    def _understand(self, conversation_id: str, text: str) -> OrderQuery | Decision:
        """Order questions first, then the robot (blocking CPU work and reads).

        Order questions never reach FAQ retrieval, so an order id is never a
        retrieval feature.
        """
        query = detect_order(text)
        if query is None:
            order_id = bare_order_id(text)
            if order_id is not None and self._asked_for_order_id(conversation_id):
                query = OrderQuery(order_id)
        return query if query is not None else self.robot.decide(text)

    def _asked_for_order_id(self, conversation_id: str) -> bool:
        """Whether the last reply to the visitor asked for an order number."""
        conversation = self.store.get_conversation(conversation_id)
        if conversation is None:
            return False
        recent = self.store.list_messages(
            conversation_id, max(0, conversation.last_seq - 4)
        )
        for message in reversed(recent):
            if message.sender != "visitor":
                return message.meta.get("order_outcome") == "ask_id"
        return False

    async def _order_reply(
        self, conversation_id: str, query: OrderQuery, shopper_id: str | None
    ) -> None:
        """Answer an order question from the shop's endpoint, or hand off."""
        reply = await answer_order(
            self.orders,
            query.order_id,
            shopper_id,
            can_sign_in=self.identity is not None,
        )
        self.robot_decisions["order"] = self.robot_decisions.get("order", 0) + 1
        nlp_log.debug("robot order %s for %s", reply.outcome, conversation_id)

        current = self.store.get_conversation(conversation_id)
        if current is None or current.state != "robot":
            return  # a human took over while the order system answered
        meta: dict[str, Any] = {"kind": "order", "order_outcome": reply.outcome}
        await self.post(conversation_id, "robot", reply.text, meta)
        if reply.handoff:
            await self.request_human(conversation_id, announce=False)

    async def _robot_reply(
        self, conversation_id: str, text: str, shopper_id: str | None = None
    ) -> None:
        try:
            understood = await asyncio.to_thread(
                self._understand, conversation_id, text
            )
            if isinstance(understood, OrderQuery):
                await self._order_reply(conversation_id, understood, shopper_id)
                return
            decision: Decision = understood
            if decision.action == "answer" and not decision.reply.strip():
                # The entry has no answer yet: a person answers instead.
                decision = replace(decision, action="handoff", reply=HANDOFF_REPLY)
            self.robot_decisions[decision.action] = (
                self.robot_decisions.get(decision.action, 0) + 1
            )
            nlp_log.debug(
                "robot %s score=%.3f faq=%s for %s",
                decision.action,
                decision.score,
                decision.faq_id,
                conversation_id,
            )
            current = self.store.get_conversation(conversation_id)
            if current is None or current.state != "robot":
                return  # a human took over while the robot was thinking
            meta: dict[str, Any] = {"kind": decision.action}
            if decision.action == "suggest":
                meta["suggestions"] = [
                    {"faq_id": c.faq_id, "question": c.question}
                    for c in decision.candidates
                ]
            if decision.faq_id:
                meta["faq_id"] = decision.faq_id
            await self.post(conversation_id, "robot", decision.reply, meta)
            if decision.action in HANDOFF_ACTIONS:
                await self.request_human(conversation_id, announce=False)
            if decision.action == "handoff":
                await record_unanswered(self.store, text, decision, conversation_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("robot reply failed for %s", conversation_id)

    async def drain_robot(self) -> None:
        """Wait for robot replies in flight, then close the order client
        (used at shutdown)."""
        if self._robot_tasks:
            await asyncio.gather(*self._robot_tasks, return_exceptions=True)
        if self.orders is not None:
            await self.orders.close()

    # Agent side

    async def post(
        self,
        conversation_id: str,
        sender: str,
        text: str,
        meta: dict[str, Any] | None = None,
        account: Account | None = None,
        client_id: str | None = None,
        change: Callable[[Conversation], None] | None = None,
    ) -> Appended:
        """Store a robot, system or agent message and publish it."""
        message = Message(
            conversation_id,
            0,
            0,
            sender,
            text,
            client_id=client_id,
            agent=account.username if account else None,
            agent_name=account.display_name if account else None,
            meta=meta or {},
        )
        scope = (
            f"agent:{account.username}:{conversation_id}"
            if account and client_id
            else None
        )
        appended = await self.store.append_message(
            conversation_id, message, scope, change
        )
        if not appended.duplicate:
            self.publish(appended.conversation, appended.message)
        return appended

    async def _hot(self, conversation_id: str) -> Conversation:
        """The conversation, restored first if it was archived. NotFound if
        there is none; StorageFull if the disk has no room to restore it."""
        conversation = None
        if await self.store.ensure_hot(conversation_id):
            conversation = self.store.get_conversation(conversation_id)
        if conversation is None:
            raise NotFound("no such conversation")
        return conversation

    async def claim(
        self, conversation_id: str, account: Account, force: bool = False
    ) -> Conversation:
        """Assign a conversation to ``account``; Conflict if someone else has it."""

        # Who held it, read inside the write: a racing claim or transfer
        # must not make both sides greet the shopper.
        held_by: list[str | None] = []

        def change(conversation: Conversation) -> None:
            held_by[:] = [conversation.agent]
            if conversation.agent not in (None, account.username) and not force:
                raise Conflict(f"已由 {conversation.agent_name} 接待")
            conversation.state = "assigned"
            conversation.agent = account.username
            conversation.agent_name = account.display_name

        await self._hot(conversation_id)
        conversation = await self.store.update_conversation(conversation_id, change)
        if held_by[0] != account.username:
            await self.post(
                conversation_id, "system", f"客服 {account.display_name} 为您服务"
            )
            conversation = self.store.get_conversation(conversation_id) or conversation
        self.publish_state(conversation)
        return conversation

    async def transfer(
        self, conversation_id: str, account: Account, to: str
    ) -> Conversation:
        """Hand a conversation to another agent who is online.

        As with ``claim``, the agent holding it may hand it on and anyone may
        hand on an unassigned one; as with ``close``, an admin may hand on
        any. The visitor is told who serves them now; the agents concerned
        get a ``transferred`` frame. Refusals are GoflyErrors with their own
        codes: ``unknown_agent``, ``agent_disabled``, ``agent_offline``,
        ``conversation_closed``, ``same_agent`` and ``conflict``.
        """
        target = self.store.get_account(to)
        if target is None:
            raise NotFound(f"没有名为 {to[:64]} 的客服", code="unknown_agent")
        if target.disabled:
            raise Conflict(
                f"客服 {target.display_name} 已被停用", code="agent_disabled"
            )
        if not self.hub.is_agent_online(target.username):
            raise Conflict(f"客服 {target.display_name} 不在线", code="agent_offline")
        await self._hot(conversation_id)
        force = account.role == "admin"
        # Who held it, read inside the write (see ``claim``).
        held_by: list[str | None] = []

        def change(conversation: Conversation) -> None:
            held_by[:] = [conversation.agent]
            if conversation.state == "closed":
                raise Conflict("会话已结束，无法转接", code="conversation_closed")
            if conversation.agent == target.username:
                raise Conflict(
                    f"会话已由 {target.display_name} 接待", code="same_agent"
                )
            if conversation.agent not in (None, account.username) and not force:
                raise Conflict(f"已由 {conversation.agent_name} 接待")
            conversation.state = "assigned"
            conversation.agent = target.username
            conversation.agent_name = target.display_name

        conversation = await self.store.update_conversation(conversation_id, change)
        await self.post(
            conversation_id, "system", f"客服 {target.display_name} 为您服务"
        )
        conversation = self.store.get_conversation(conversation_id) or conversation
        self.publish_state(conversation)
        log.info(
            "conversation %s handed from %s to %s by %s",
            conversation_id,
            held_by[0] or "-",
            target.username,
            account.username,
        )
        frame = {
            "type": "transferred",
            "conversation_id": conversation_id,
            "from": account.username,
            "from_name": account.display_name,
            "to": target.username,
            "to_name": target.display_name,
            "previous": held_by[0],
            "conversation": self.summary(conversation),
        }
        for username in {target.username, account.username, held_by[0]}:
            if username is not None:
                self.hub.to_agents(frame, only=username)
        return conversation

    async def add_note(
        self, conversation_id: str, account: Account, client_id: str, text: str
    ) -> NoteAdded:
        """An agent's internal note: stored beside the conversation's
        messages, sent to every agent and never to the visitor."""
        note = Note(0, 0, 0, account.username, account.display_name, text, client_id)
        added = await self.store.add_note(
            conversation_id, note, MAX_NOTES, MAX_NOTE_CHARS
        )
        if not added.duplicate:
            self.hub.to_agents(note_frame(conversation_id, added.note))
        return added

    async def agent_message(
        self, conversation_id: str, account: Account, client_id: str, text: str
    ) -> Appended:
        """An agent's reply; it claims an unassigned conversation on the way."""
        current = await self._hot(conversation_id)
        if current.agent != account.username:
            await self.claim(conversation_id, account)
        return await self.post(
            conversation_id, "agent", text, account=account, client_id=client_id
        )

    async def mark_read(self, conversation_id: str) -> Conversation:
        def change(conversation: Conversation) -> None:
            conversation.unread = 0

        conversation = await self.store.update_conversation(conversation_id, change)
        self.publish(conversation)
        return conversation

    async def close(
        self, conversation_id: str, account: Account | None
    ) -> Conversation:
        """Close a conversation; only its agent or an admin may close a
        conversation someone else has. Closing it again does nothing."""
        current = await self._hot(conversation_id)
        if current.state == "closed":
            return current
        if (
            account is not None
            and current.agent not in (None, account.username)
            and account.role != "admin"
        ):
            raise Conflict(f"已由 {current.agent_name} 接待")

        def change(conversation: Conversation) -> None:
            conversation.state = "closed"
            conversation.unread = 0

        who = account.display_name if account else "系统"
        await self.post(
            conversation_id, "system", f"会话已由{who}结束，欢迎随时再来咨询。"
        )
        conversation = await self.store.update_conversation(conversation_id, change)
        self.publish_state(conversation)
        return conversation

    async def close_idle_robot_conversations(self, idle_ms: int) -> int:
        """Close conversations the robot alone has served and nobody has
        touched for ``idle_ms``, so the console lists only live ones.

        A later message from the shopper reopens the conversation as usual.
        """
        cutoff = now_ms() - idle_ms

        def change(conversation: Conversation) -> None:
            if conversation.state != "robot" or conversation.updated > cutoff:
                raise Conflict("touched meanwhile")
            conversation.state = "closed"
            conversation.unread = 0

        closed = 0
        for candidate in self.store.list_open_conversations():
            if candidate.state != "robot" or candidate.updated > cutoff:
                continue
            try:
                conversation = await self.store.update_conversation(
                    candidate.id, change
                )
            except (Conflict, NotFound):
                continue
            self.publish_state(conversation)
            closed += 1
        if closed:
            log.info("closed %d idle robot conversations", closed)
        return closed

    def watch_session(self, peer: Peer, token: str) -> None:
        self._console_sessions[peer] = token

    def unwatch_session(self, peer: Peer) -> None:
        self._console_sessions.pop(peer, None)

    def drop_revoked_sessions(self) -> int:
        """Close console sockets whose session has ended: signed out, expired,
        password reset or account disabled, from this process or another."""
        dropped = 0
        for peer, token in list(self._console_sessions.items()):
            session = self.store.get_session(token)
            account = (
                None if session is None else self.store.get_account(session["username"])
            )
            if account is None or account.disabled or account.must_change_password:
                self._console_sessions.pop(peer, None)
                peer.drop(4401, "signed out")
                dropped += 1
        return dropped

    async def sign_out_agent(self, username: str) -> None:
        """Close every console socket of an agent whose sessions just ended."""
        for peer in self.hub.agent_peers(username):
            peer.drop(4401, "signed out")

    def typing_from_agent(self, conversation: Conversation, account: Account) -> None:
        self.hub.to_visitor(
            conversation.visitor_id,
            {"type": "typing", "sender": "agent", "agent_name": account.display_name},
        )
