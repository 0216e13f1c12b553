"""Records passed between layers. Dicts are for JSON at the edges only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class FaqEntry:
    """One knowledge-base entry: a standard question and its answer."""

    faq_id: str
    question: str
    answer: str = ""
    alternatives: list[str] = field(default_factory=list)
    category: str = ""
    updated: int = 0


@dataclass(slots=True)
class Visitor:
    """A shopper, known by a token that any of their devices may present."""

    id: str
    name: str
    first_seen: int
    last_seen: int
    channel: str = "web"
    page: str = ""
    user_agent: str = ""
    conversation_id: str = ""
    conversations: int = 0
    # Set once the shop's backend vouched for this shopper (goflypy/identity.py).
    shopper_id: str = ""


@dataclass(slots=True)
class Conversation:
    """One visitor's thread; closed ones reopen with the robot on a new message."""

    id: str
    visitor_id: str
    state: str
    created: int
    updated: int
    last_seq: int = 0
    agent: str | None = None
    agent_name: str | None = None
    channel: str = "web"
    page: str = ""
    unread: int = 0
    preview: str = ""
    rating: int | None = None
    queued_at: int = 0
    # Agents' internal notes (Note.record() dicts, oldest first). They live
    # on the conversation record, outside the message sequence, so no
    # visitor path (live, resume, history) ever reads them.
    notes: list[dict[str, object]] = field(default_factory=list)


@dataclass(slots=True)
class Message:
    """One stored message; ``seq`` orders it inside its conversation."""

    conversation_id: str
    seq: int
    ts: int
    sender: str
    text: str
    client_id: str | None = None
    agent: str | None = None
    agent_name: str | None = None
    meta: dict[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class Note:
    """An agent's internal note on a conversation; only agents ever see it.

    ``id`` counts the conversation's notes from 1; ``after_seq`` is the
    conversation's last message when the note was written, so a console can
    place it in the thread.
    """

    id: int
    ts: int
    after_seq: int
    agent: str
    agent_name: str
    text: str
    client_id: str | None = None

    def record(self) -> dict[str, object]:
        """The note as stored inside its conversation record."""
        return {name: getattr(self, name) for name in self.__slots__}

    def frame(self, conversation_id: str) -> dict[str, Any]:
        """The note as agents receive it (docs/protocol.md, "note")."""
        frame: dict[str, Any] = {
            "type": "note",
            "conversation_id": conversation_id,
            "id": self.id,
            "ts": self.ts,
            "after_seq": self.after_seq,
            "agent": self.agent,
            "agent_name": self.agent_name,
            "text": self.text,
        }
        if self.client_id is not None:
            frame["client_id"] = self.client_id
        return frame

    @classmethod
    def from_record(cls, record: dict[str, object]) -> Note:
        """A stored note, ignoring fields this version does not know."""
        known = cls.__slots__
        return cls(**{k: v for k, v in record.items() if k in known})  # type: ignore[arg-type]


@dataclass(slots=True)
class Account:
    """A console user: an agent or an admin."""

    username: str
    display_name: str
    role: str
    password_hash: str
    created: int
    must_change_password: bool = False
    disabled: bool = False


CONVERSATION_STATES = ("robot", "queued", "assigned", "closed")
SENDERS = ("visitor", "robot", "agent", "system")
ROLES = ("agent", "admin")
