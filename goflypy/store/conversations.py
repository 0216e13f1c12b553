"""Visitors, conversations and their messages."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import lmdb

from ..errors import BadRequest, Conflict, NotFound
from ..models import Conversation, Message, Note, Visitor
from .crypto import Codec
from .env import Env
from .keys import (
    id_bytes,
    id_hex,
    message_key,
    new_id,
    now_ms,
    pack_record,
    token_key,
    unpack_record,
)

_PREVIEW_CHARS = 60
T = TypeVar("T")


@dataclass(slots=True)
class Appended:
    """What append_message did: the message, the conversation after it,
    whether the client id had been stored before (nothing new was written),
    and whether the message reopened a closed conversation."""

    message: Message
    conversation: Conversation
    duplicate: bool
    reopened: bool = False


@dataclass(slots=True)
class NoteAdded:
    """What add_note did: the note, the conversation after it, and whether
    the agent's client id had been stored before (nothing new was written)."""

    note: Note
    conversation: Conversation
    duplicate: bool


def _get(
    txn: lmdb.Transaction,
    db: lmdb._Database,
    cls: type,
    key: bytes,
    codec: Codec | None = None,
) -> object:
    """Decode one record; ``codec`` opens sealed conversations and messages."""
    raw = txn.get(key, db=db)
    if raw is None:
        return None
    return unpack_record(cls, raw if codec is None else codec.open(key, raw))


def shopper_name(shopper_id: str) -> str:
    """The name agents see for a verified shopper."""
    return f"会员 {shopper_id}"


def _new_visitor(
    channel: str, page: str, user_agent: str
) -> tuple[Visitor, Conversation]:
    """A new visitor and its first conversation (not yet stored)."""
    ts = now_ms()
    vid = id_hex(new_id(ts))
    visitor = Visitor(
        id=vid,
        name=f"访客 {vid[-4:]}",
        first_seen=ts,
        last_seen=ts,
        channel=channel,
        page=page,
        user_agent=user_agent,
    )
    conversation = Conversation(
        id=id_hex(new_id(ts)),
        visitor_id=vid,
        state="robot",
        created=ts,
        updated=ts,
        channel=channel,
        page=page,
    )
    visitor.conversation_id = conversation.id
    visitor.conversations = 1
    return visitor, conversation


class ConversationStore:
    """Mixin of Store; see store/__init__.py for the contract."""

    env: Env
    codec: Codec
    # Provided by ArchiveStore (archive.py).
    ensure_hot: Callable[[str], Awaitable[bool]]

    async def _write_hot(
        self, conversation_id: str, job: Callable[[lmdb.Transaction], T]
    ) -> T:
        """Run a job on a conversation, bringing it back from the archive
        first if the archiver took it meanwhile (again, if it took it again
        between the restore and the retry)."""
        for _attempt in range(3):
            try:
                return await self.env.write(job)
            except NotFound:
                if not await self.ensure_hot(conversation_id):
                    raise
        return await self.env.write(job)

    # Visitors

    async def create_visitor(
        self, channel: str, page: str, user_agent: str
    ) -> tuple[Visitor, str]:
        """Create a visitor and its first conversation; returns it and its token."""
        token = secrets.token_urlsafe(32)
        visitor, conversation = _new_visitor(channel, page, user_agent)
        vid = visitor.id
        dbs = self.env.dbs
        codec = self.codec

        def job(txn: lmdb.Transaction) -> None:
            _put_visitor(txn, dbs, visitor, codec)
            txn.put(token_key(token), id_bytes(vid), db=dbs["vtoken"])
            _put_conversation(txn, dbs, conversation, codec)

        await self.env.write(job)
        return visitor, token

    def find_visitor(self, token: str) -> Visitor | None:
        """The visitor a token belongs to, or None."""
        with self.env.read() as txn:
            raw = txn.get(token_key(token), db=self.env.dbs["vtoken"])
            if raw is None:
                return None
            return _get(txn, self.env.dbs["visitor"], Visitor, bytes(raw), self.codec)  # type: ignore[return-value]

    def get_visitor(self, visitor_id: str) -> Visitor | None:
        key = id_bytes(visitor_id)
        with self.env.read() as txn:
            return _get(txn, self.env.dbs["visitor"], Visitor, key, self.codec)  # type: ignore[return-value]

    async def touch_visitor(
        self, visitor_id: str, channel: str, page: str, user_agent: str
    ) -> Visitor:
        """Record where and when a visitor was last seen."""
        dbs = self.env.dbs
        codec = self.codec

        def job(txn: lmdb.Transaction) -> Visitor:
            visitor = _get(txn, dbs["visitor"], Visitor, id_bytes(visitor_id), codec)
            if visitor is None:
                raise NotFound("no such visitor")
            assert isinstance(visitor, Visitor)
            visitor.last_seen = now_ms()
            visitor.channel = channel
            visitor.page = page or visitor.page
            visitor.user_agent = user_agent or visitor.user_agent
            _put_visitor(txn, dbs, visitor, codec)
            return visitor

        return await self.env.write(job)

    def find_shopper(self, shopper_id: str) -> Visitor | None:
        """The visitor linked to a verified shopper id, or None."""
        with self.env.read() as txn:
            raw = txn.get(token_key(shopper_id), db=self.env.dbs["shopper"])
            if raw is None:
                return None
            return _get(txn, self.env.dbs["visitor"], Visitor, bytes(raw), self.codec)  # type: ignore[return-value]

    async def link_shopper(
        self,
        shopper_id: str,
        current: Visitor | None,
        channel: str,
        page: str,
        user_agent: str,
    ) -> tuple[Visitor, str | None]:
        """The visitor of a verified shopper, found, adopted or created in one write.

        The shopper's linked visitor wins; else ``current`` (this device's
        visitor) is adopted if no other shopper has it; else a new visitor is
        made. Returns the visitor and a new token for this device, or None
        when ``current`` is the answer and its token still applies.
        """
        dbs = self.env.dbs
        codec = self.codec
        link = token_key(shopper_id)

        def job(txn: lmdb.Transaction) -> tuple[Visitor, str | None]:
            raw = txn.get(link, db=dbs["shopper"])
            found = (
                _get(txn, dbs["visitor"], Visitor, bytes(raw), codec) if raw else None
            )
            adopt = current is not None and found is None
            if adopt:
                assert current is not None
                found = _get(txn, dbs["visitor"], Visitor, id_bytes(current.id), codec)
                if isinstance(found, Visitor) and found.shopper_id not in (
                    "",
                    shopper_id,
                ):
                    found = None
            token: str | None = None
            if isinstance(found, Visitor):
                visitor = found
                visitor.last_seen = now_ms()
                visitor.channel = channel
                visitor.page = page or visitor.page
                visitor.user_agent = user_agent or visitor.user_agent
            else:
                visitor, conversation = _new_visitor(channel, page, user_agent)
                _put_conversation(txn, dbs, conversation, codec)
            visitor.shopper_id = shopper_id
            visitor.name = shopper_name(shopper_id)
            if current is None or current.id != visitor.id:
                token = secrets.token_urlsafe(32)
                txn.put(token_key(token), id_bytes(visitor.id), db=dbs["vtoken"])
            _put_visitor(txn, dbs, visitor, codec)
            txn.put(link, id_bytes(visitor.id), db=dbs["shopper"])
            return visitor, token

        return await self.env.write(job)

    # Conversations

    def get_conversation(self, conversation_id: str) -> Conversation | None:
        try:
            key = id_bytes(conversation_id)
        except ValueError:
            return None
        with self.env.read() as txn:
            return _get(txn, self.env.dbs["conv"], Conversation, key, self.codec)  # type: ignore[return-value]

    def list_open_conversations(self) -> list[Conversation]:
        """Every conversation not closed, oldest first."""
        dbs = self.env.dbs
        found = []
        with self.env.read() as txn:
            for key in txn.cursor(db=dbs["open"]).iternext(keys=True, values=False):
                conversation = _get(
                    txn, dbs["conv"], Conversation, bytes(key), self.codec
                )
                if conversation is not None:
                    found.append(conversation)
        return found  # type: ignore[return-value]

    async def update_conversation(
        self,
        conversation_id: str,
        change: Callable[[Conversation], None],
    ) -> Conversation:
        """Apply ``change`` to the stored conversation inside one write.

        ``change`` runs on the writer thread and may raise GoflyError
        (Conflict, say) to refuse; nothing is written then.
        """
        dbs = self.env.dbs
        codec = self.codec
        key = id_bytes(conversation_id)

        def job(txn: lmdb.Transaction) -> Conversation:
            conversation = _get(txn, dbs["conv"], Conversation, key, codec)
            if conversation is None:
                raise NotFound("no such conversation")
            assert isinstance(conversation, Conversation)
            change(conversation)
            conversation.updated = now_ms()
            _put_conversation(txn, dbs, conversation, codec)
            return conversation

        return await self._write_hot(conversation_id, job)

    # Messages

    async def append_message(
        self,
        conversation_id: str,
        message: Message,
        dedupe_scope: str | None = None,
        change: Callable[[Conversation], None] | None = None,
    ) -> Appended:
        """Store ``message`` as the next of its conversation; durable on return.

        With ``dedupe_scope`` and a client id, a second message with the same
        pair returns the first one stored and writes nothing. ``change`` may
        adjust the conversation in the same transaction.
        """
        dbs = self.env.dbs
        codec = self.codec
        conv_key = id_bytes(conversation_id)
        dedupe = None
        if dedupe_scope and message.client_id:
            dedupe = f"{dedupe_scope}\x00{message.client_id}".encode()

        def job(txn: lmdb.Transaction) -> Appended:
            conversation = _get(txn, dbs["conv"], Conversation, conv_key, codec)
            if conversation is None:
                raise NotFound("no such conversation")
            assert isinstance(conversation, Conversation)
            if dedupe is not None:
                earlier = txn.get(dedupe, db=dbs["cid"])
                if earlier is not None:
                    stored = _get(txn, dbs["msg"], Message, bytes(earlier), codec)
                    if stored is None:
                        raise Conflict("client id refers to a missing message")
                    return Appended(stored, conversation, True)  # type: ignore[arg-type]

            was_closed = conversation.state == "closed"
            conversation.last_seq += 1
            message.conversation_id = conversation.id
            message.seq = conversation.last_seq
            message.ts = max(message.ts, now_ms())
            _note_message(conversation, message)
            if change is not None:
                change(conversation)
            conversation.updated = message.ts

            key = message_key(conv_key, message.seq)
            value = codec.seal(key, pack_record(message))
            txn.put(key, value, db=dbs["msg"], overwrite=False)
            if dedupe is not None:
                txn.put(dedupe, key, db=dbs["cid"])
            _put_conversation(txn, dbs, conversation, codec)
            reopened = was_closed and conversation.state != "closed"
            return Appended(message, conversation, False, reopened)

        return await self._write_hot(conversation_id, job)

    # Internal notes

    async def add_note(
        self,
        conversation_id: str,
        note: Note,
        max_notes: int,
        max_chars: int,
    ) -> NoteAdded:
        """Store an agent's internal note on a conversation; durable on return.

        The note goes into the conversation record, never into the message
        sequence: ``last_seq`` and every visitor read are untouched. A note
        whose (agent, client id) was stored before returns that note and
        writes nothing. BadRequest ``notes_full`` past ``max_notes`` notes or
        ``max_chars`` characters of notes in one conversation.
        """
        dbs = self.env.dbs
        codec = self.codec
        key = id_bytes(conversation_id)

        def job(txn: lmdb.Transaction) -> NoteAdded:
            conversation = _get(txn, dbs["conv"], Conversation, key, codec)
            if conversation is None:
                raise NotFound("no such conversation")
            assert isinstance(conversation, Conversation)
            stored = [Note.from_record(record) for record in conversation.notes]
            if note.client_id is not None:
                for earlier in stored:
                    if (earlier.agent, earlier.client_id) == (
                        note.agent,
                        note.client_id,
                    ):
                        return NoteAdded(earlier, conversation, True)
            used = sum(len(earlier.text) for earlier in stored)
            if len(stored) >= max_notes or used + len(note.text) > max_chars:
                raise BadRequest("这个会话的备注已达上限", code="notes_full")
            note.id = len(stored) + 1
            note.ts = max(note.ts, now_ms())
            note.after_seq = conversation.last_seq
            conversation.notes.append(note.record())
            conversation.updated = note.ts
            _put_conversation(txn, dbs, conversation, codec)
            return NoteAdded(note, conversation, False)

        return await self._write_hot(conversation_id, job)

    def list_messages(
        self, conversation_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[Message]:
        """Messages with seq above ``after_seq``, in order."""
        conv_key = id_bytes(conversation_id)
        found: list[Message] = []
        with self.env.read() as txn:
            cursor = txn.cursor(db=self.env.dbs["msg"])
            if not cursor.set_range(message_key(conv_key, after_seq + 1)):
                return found
            for key, value in cursor:
                if bytes(key[:16]) != conv_key:
                    break
                found.append(unpack_record(Message, self.codec.open(key, value)))
                if limit is not None and len(found) >= limit:
                    break
        return found


def _note_message(conversation: Conversation, message: Message) -> None:
    """Counters and preview a new message changes."""
    conversation.preview = message.text[:_PREVIEW_CHARS]
    if message.sender == "visitor":
        conversation.unread += 1
        if conversation.state == "closed":
            conversation.state = "robot"
            conversation.agent = None
            conversation.agent_name = None
            conversation.rating = None


def _put_visitor(
    txn: lmdb.Transaction,
    dbs: dict[str, lmdb._Database],
    visitor: Visitor,
    codec: Codec,
) -> None:
    """Visitor records are sealed too: they may hold a shopper id."""
    key = id_bytes(visitor.id)
    txn.put(key, codec.seal(key, pack_record(visitor)), db=dbs["visitor"])


def _put_conversation(
    txn: lmdb.Transaction,
    dbs: dict[str, lmdb._Database],
    conversation: Conversation,
    codec: Codec,
) -> None:
    key = id_bytes(conversation.id)
    txn.put(key, codec.seal(key, pack_record(conversation)), db=dbs["conv"])
    if conversation.state == "closed":
        txn.delete(key, db=dbs["open"])
    else:
        txn.put(key, b"", db=dbs["open"])
