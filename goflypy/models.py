"""Records passed between layers. Dicts are for JSON at the edges only."""

from __future__ import annotations

from dataclasses import dataclass, field


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
