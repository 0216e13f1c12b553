"""Conversations out of the store: JSONL for programs, a transcript for people.

Archived conversations are read straight from their frames, never restored,
so an export changes nothing. Times stay UTC epoch milliseconds in JSONL;
the transcript shows them as UTC dates.

Agents' internal notes go only to the JSONL export, as rows of type
``"note"`` marked ``"internal": true``; the transcript, which may be handed
to the shopper, never holds them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any

from .errors import NotFound
from .models import Conversation, Message, Note
from .store import Store

SENDER_LABELS = {
    "visitor": "访客",
    "robot": "机器人",
    "agent": "客服",
    "system": "系统",
}


def utc_text(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def parse_day(text: str) -> int:
    """YYYY-MM-DD (UTC midnight) or epoch milliseconds, as epoch milliseconds."""
    if text.isdigit():
        return int(text)
    day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    return int(day.timestamp() * 1000)


def load_conversation(
    store: Store, conversation_id: str
) -> tuple[Conversation, list[Message]]:
    """A conversation and its messages, from the hot store or the archive."""
    conversation = store.get_conversation(conversation_id)
    if conversation is not None:
        return conversation, store.list_messages(conversation_id)
    archived = store.read_archived(conversation_id)
    if archived is None:
        raise NotFound(f"no conversation {conversation_id}")
    return archived


def select(
    store: Store, ids: list[str], since_ms: int, until_ms: int | None
) -> Iterator[tuple[Conversation, list[Message], bool]]:
    """The named conversations, or those active within [since, until)."""
    if ids:
        for cid in ids:
            archived = store.get_conversation(cid) is None
            yield (*load_conversation(store, cid), archived)
        return
    for cid, created, updated, archived in store.conversation_times():
        if updated < since_ms or (until_ms is not None and created >= until_ms):
            continue
        try:
            yield (*load_conversation(store, cid), archived)
        except NotFound:
            continue  # restored or expired since the listing


def conversation_row(conversation: Conversation, archived: bool) -> dict[str, Any]:
    return {
        "type": "conversation",
        "id": conversation.id,
        "visitor_id": conversation.visitor_id,
        "state": conversation.state,
        "channel": conversation.channel,
        "created": conversation.created,
        "updated": conversation.updated,
        "last_seq": conversation.last_seq,
        "rating": conversation.rating,
        "archived": archived,
    }


def message_row(message: Message) -> dict[str, Any]:
    return {
        "type": "message",
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "ts": message.ts,
        "sender": message.sender,
        "text": message.text,
        "agent": message.agent,
        "agent_name": message.agent_name,
        "client_id": message.client_id,
    }


def note_row(conversation_id: str, note: Note) -> dict[str, Any]:
    """An internal note; marked so no tool mistakes it for a message."""
    row = note.frame(conversation_id)
    row.pop("client_id", None)
    return {**row, "internal": True}


def write_jsonl(
    out: IO[str], conversation: Conversation, messages: list[Message], archived: bool
) -> None:
    rows = [conversation_row(conversation, archived)] + [
        message_row(m) for m in messages
    ]
    rows += [
        note_row(conversation.id, Note.from_record(record))
        for record in conversation.notes
    ]
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_transcript(
    out: IO[str], conversation: Conversation, messages: list[Message]
) -> None:
    """A printable transcript of what the shopper saw: no internal notes."""
    out.write(
        f"=== 会话 {conversation.id}  渠道 {conversation.channel}  "
        f"开始 {utc_text(conversation.created)} UTC ===\n"
    )
    for message in messages:
        who = SENDER_LABELS.get(message.sender, message.sender)
        if message.sender == "agent" and message.agent_name:
            who = f"{who} {message.agent_name}"
        text = message.text.replace("\n", "\n    ")
        out.write(f"[{utc_text(message.ts)}] {who}: {text}\n")
    out.write("\n")
