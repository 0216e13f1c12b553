"""The service desk: what happens to a conversation, whoever touches it.

Socket handlers call these methods after parsing a frame; the desk stores,
lets the robot answer, moves conversations between robot, queue, agent and
closed, and tells everyone concerned through the hub.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .config import Config
from .errors import Conflict, NotFound
from .hub import Hub
from .log import nlp as nlp_log
from .log import server as log
from .models import Account, Conversation, Message, Visitor
from .nlp import Decision, Robot
from .store import Appended, Store
from .store.keys import now_ms

HANDOFF_ACTIONS = ("handoff", "human")


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


class Desk:
    """Conversation rules over the store, the hub and the robot."""

    def __init__(self, config: Config, store: Store, hub: Hub, robot: Robot) -> None:
        self.config = config
        self.store = store
        self.hub = hub
        self.robot = robot
        self._robot_tasks: set[asyncio.Task[None]] = set()
        self.robot_decisions: dict[str, int] = {}

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
        for conversation in self.store.list_open_conversations():
            if conversation.state == "queued" and conversation.id != exclude:
                self.hub.to_visitor(
                    conversation.visitor_id, self.status_frame(conversation)
                )

    # Visitor side

    async def greet(self, conversation: Conversation) -> None:
        """Post the welcome message into a conversation that has none yet."""
        if conversation.last_seq == 0 and self.config.welcome_text:
            await self.post(
                conversation.id, "robot", self.config.welcome_text, {"kind": "greeting"}
            )

    async def visitor_message(
        self, visitor: Visitor, client_id: str, text: str
    ) -> Appended:
        """Store a visitor's message (durable on return) and let the robot reply."""
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
            self._spawn(self._robot_reply(appended.conversation.id, text))
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
                await self.post(
                    conversation_id, "system", "正在为您转接人工客服，请稍候。"
                )
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

    async def _robot_reply(self, conversation_id: str, text: str) -> None:
        try:
            decision: Decision = await asyncio.to_thread(self.robot.decide, text)
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
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("robot reply failed for %s", conversation_id)

    async def drain_robot(self) -> None:
        """Wait for robot replies in flight (used at shutdown)."""
        if self._robot_tasks:
            await asyncio.gather(*self._robot_tasks, return_exceptions=True)

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

    async def claim(
        self, conversation_id: str, account: Account, force: bool = False
    ) -> Conversation:
        """Assign a conversation to ``account``; Conflict if someone else has it."""

        def change(conversation: Conversation) -> None:
            if conversation.agent not in (None, account.username) and not force:
                raise Conflict(f"已由 {conversation.agent_name} 接待")
            conversation.state = "assigned"
            conversation.agent = account.username
            conversation.agent_name = account.display_name

        before = self.store.get_conversation(conversation_id)
        if before is None:
            raise NotFound("no such conversation")
        conversation = await self.store.update_conversation(conversation_id, change)
        if before.agent != account.username:
            await self.post(
                conversation_id, "system", f"客服 {account.display_name} 为您服务"
            )
            conversation = self.store.get_conversation(conversation_id) or conversation
        self.publish_state(conversation)
        return conversation

    async def agent_message(
        self, conversation_id: str, account: Account, client_id: str, text: str
    ) -> Appended:
        """An agent's reply; it claims an unassigned conversation on the way."""
        current = self.store.get_conversation(conversation_id)
        if current is None:
            raise NotFound("no such conversation")
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
        current = self.store.get_conversation(conversation_id)
        if current is None:
            raise NotFound("no such conversation")
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

    async def sign_out_agent(self, username: str) -> None:
        """Close every console socket of an agent whose sessions just ended."""
        for peer in self.hub.agent_peers(username):
            peer.drop(4401, "signed out")

    def typing_from_agent(self, conversation: Conversation, account: Account) -> None:
        self.hub.to_visitor(
            conversation.visitor_id,
            {"type": "typing", "sender": "agent", "agent_name": account.display_name},
        )
