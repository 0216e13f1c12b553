"""TTL archival: idle conversations move to segment files and come back on demand.

Archiving is two steps. (1) Off the writer thread, a read snapshot of the
conversation and all its messages becomes one frame, appended to the current
segment and fsync'd. (2) One writer job checks the conversation is unchanged
(same last_seq and updated), commits the archive-index entry and deletes the
hot records, in one transaction. If anything touched the conversation in
between, step 2 does nothing: the conversation stays hot and the frame is
dead space for compaction. A message racing the archiver therefore always
ends up hot; it is never lost and never in both places.

Restore is one writer job: put the records back, delete the index entry.
Visitor records, visitor tokens and client-id dedupe entries stay hot.
When the disk has no room for that write, reads are served from the frame
instead (read_conversation, read_messages) and the conversation stays
archived until a write can restore it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import lmdb

from ..errors import CorruptData, StorageFull
from ..log import store as log
from ..models import Conversation, Message
from .crypto import Codec
from .env import Env
from .frames import (
    Contents,
    SegmentWriter,
    archive_lock,
    decode_frame,
    encode_frame,
    read_frame,
    segment_path,
)
from .keys import id_bytes, id_hex, now_ms, pack, pack_record, unpack, unpack_record


@dataclass(slots=True)
class ArchiveEntry:
    """Where an archived conversation's frame is, and what it summarises."""

    seg: int
    off: int
    len: int
    updated: int
    created: int
    visitor: str
    messages: int
    key_version: int
    archived: int


@dataclass(slots=True)
class _Snapshot:
    key: bytes
    conversation: Conversation
    contents: Contents


@dataclass(slots=True)
class ConversationRef:
    """A line of the conversation history list: hot or archived."""

    id: str
    visitor_id: str
    state: str
    created: int
    updated: int
    messages: int
    archived: bool


@dataclass(slots=True)
class Activity:
    """What one read snapshot holds of a period, for reports.

    ``conversations``: every hot conversation touched since the start, with
    its messages sent since then (oldest first). ``archived``: index entries
    of archived conversations started since then (their frames are not read).
    """

    conversations: list[tuple[Conversation, list[Message]]]
    archived: list[tuple[str, ArchiveEntry]]


# Archived conversations kept decoded for read-only use (a full disk).
_VIEW_CACHE_SIZE = 4


class _ViewCache:
    """The last few archived conversations read without restoring them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[bytes, Conversation, list[Message]]] = (
            OrderedDict()
        )

    def get(self, cid: str, where: bytes) -> tuple[Conversation, list[Message]] | None:
        with self._lock:
            item = self._items.get(cid)
            if item is None or item[0] != where:
                return None
            self._items.move_to_end(cid)
            return item[1], item[2]

    def put(
        self,
        cid: str,
        where: bytes,
        conversation: Conversation,
        messages: list[Message],
    ) -> None:
        with self._lock:
            self._items[cid] = (where, conversation, messages)
            self._items.move_to_end(cid)
            while len(self._items) > _VIEW_CACHE_SIZE:
                self._items.popitem(last=False)


@dataclass(slots=True)
class ArchiveResult:
    archived: int = 0
    raced: int = 0
    too_big: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)


class ArchiveStore:
    """Mixin of Store; see store/__init__.py for the contract."""

    env: Env
    codec: Codec
    archive_dir: Path
    segments: SegmentWriter
    max_frame_bytes: int
    _views: _ViewCache | None = None
    # Provided by ConversationStore (conversations.py).
    list_messages: Callable[..., list[Message]]

    # Queries

    def archive_entry(self, conversation_id: str) -> ArchiveEntry | None:
        with self.env.read() as txn:
            raw = txn.get(id_bytes(conversation_id), db=self.env.dbs["arch"])
            return None if raw is None else unpack_record(ArchiveEntry, raw)

    def iter_archive(self) -> Iterator[tuple[str, ArchiveEntry]]:
        """Every index entry, read in one snapshot."""
        with self.env.read() as txn:
            cursor = txn.cursor(db=self.env.dbs["arch"])
            entries = [
                (id_hex(bytes(k)), unpack_record(ArchiveEntry, v)) for k, v in cursor
            ]
        yield from entries

    def conversation_times(self) -> list[tuple[str, int, int, bool]]:
        """(id, created, updated, archived) of every conversation, hot or not."""
        found = []
        with self.env.read() as txn:
            for key, value in txn.cursor(db=self.env.dbs["conv"]):
                conv = unpack_record(Conversation, self.codec.open(key, value))
                found.append((conv.id, conv.created, conv.updated, False))
        found += [(c, e.created, e.updated, True) for c, e in self.iter_archive()]
        return sorted(found, key=lambda row: row[1])

    def activity_since(self, since_ms: int) -> Activity:
        """Conversations and messages of the period from ``since_ms`` on, read
        in one transaction (see Activity). Each conversation's messages are
        read newest first and the walk stops at the first one older than the
        period, so a long conversation costs only its recent part."""
        dbs = self.env.dbs
        codec = self.codec
        hot: list[tuple[Conversation, list[Message]]] = []
        archived: list[tuple[str, ArchiveEntry]] = []
        with self.env.read() as txn:
            messages = txn.cursor(db=dbs["msg"])
            for key, value in txn.cursor(db=dbs["conv"]):
                conv_key = bytes(key)
                conversation = unpack_record(Conversation, codec.open(key, value))
                if conversation.updated < since_ms:
                    continue
                recent: list[Message] = []
                more = (
                    messages.prev()
                    if messages.set_range(conv_key + b"\xff" * 8)
                    else messages.last()
                )
                while more and bytes(messages.key()[:16]) == conv_key:
                    message = unpack_record(
                        Message, codec.open(messages.key(), messages.value())
                    )
                    if message.ts < since_ms:
                        break
                    recent.append(message)
                    more = messages.prev()
                recent.reverse()
                hot.append((conversation, recent))
            cursor = txn.cursor(db=dbs["arch"])
            more = cursor.set_range(max(0, since_ms).to_bytes(8, "big"))
            while more:
                entry = unpack_record(ArchiveEntry, cursor.value())
                if entry.created >= since_ms:
                    archived.append((id_hex(bytes(cursor.key())), entry))
                more = cursor.next()
        return Activity(hot, archived)

    def read_archived(
        self, conversation_id: str
    ) -> tuple[Conversation, list[Message]] | None:
        """An archived conversation without restoring it. Blocking (file I/O);
        the last few read are kept decoded."""
        for _attempt in range(3):
            entry = self.archive_entry(conversation_id)
            if entry is None:
                return None
            where = pack_record(entry)
            cached = self._view_cache().get(conversation_id, where)
            if cached is not None:
                return cached
            try:
                contents = self._read_contents(entry)
            except FileNotFoundError:
                continue  # compaction moved it; read the index again
            conversation = unpack_record(Conversation, contents.conversation)
            messages = [unpack_record(Message, m) for m in contents.messages]
            self._view_cache().put(conversation_id, where, conversation, messages)
            return conversation, messages
        return None

    def _view_cache(self) -> _ViewCache:
        if self._views is None:
            self._views = _ViewCache()
        return self._views

    def read_conversation(self, conversation_id: str) -> Conversation | None:
        """The hot conversation, else the archived one, read-only.

        Blocking when the archived frame is not cached: call ensure_readable
        first on the event loop."""
        try:
            key = id_bytes(conversation_id)
        except ValueError:
            return None
        with self.env.read() as txn:
            raw = txn.get(key, db=self.env.dbs["conv"])
            if raw is not None:
                conv: Conversation = unpack_record(
                    Conversation, self.codec.open(key, raw)
                )
                return conv
        archived = self.read_archived(conversation_id)
        return None if archived is None else archived[0]

    def read_messages(
        self, conversation_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[Message]:
        """Messages with seq above ``after_seq``, hot or read-only from the
        archive (see read_conversation)."""
        key = id_bytes(conversation_id)
        with self.env.read() as txn:
            hot = txn.get(key, db=self.env.dbs["conv"]) is not None
        if hot:
            return self.list_messages(conversation_id, after_seq, limit)
        archived = self.read_archived(conversation_id)
        if archived is None:
            return []
        found = [m for m in archived[1] if m.seq > after_seq]
        return found if limit is None else found[:limit]

    def list_history(
        self, limit: int, before: str | None = None
    ) -> list[ConversationRef]:
        """Closed and archived conversations, newest first (by start time),
        started before the conversation ``before``. Reads only index entries
        and hot records, never a frame."""
        dbs = self.env.dbs
        upto = id_bytes(before) if before else b"\xff" * 16
        found: list[ConversationRef] = []
        with self.env.read() as txn:
            for name in ("conv", "arch"):
                cursor = txn.cursor(db=dbs[name])
                more = cursor.prev() if cursor.set_range(upto) else cursor.last()
                taken = 0
                while more and taken < limit:
                    ref = self._history_ref(name, bytes(cursor.key()), cursor.value())
                    if ref is not None:
                        found.append(ref)
                        taken += 1
                    more = cursor.prev()
        found.sort(key=lambda ref: ref.id, reverse=True)
        return found[:limit]

    def _history_ref(
        self, name: str, key: bytes, value: bytes | memoryview
    ) -> ConversationRef | None:
        if name == "arch":
            entry = unpack_record(ArchiveEntry, value)
            return ConversationRef(
                id_hex(key),
                entry.visitor,
                "archived",
                entry.created,
                entry.updated,
                entry.messages,
                True,
            )
        conv = unpack_record(Conversation, self.codec.open(key, value))
        if conv.state != "closed":
            return None  # open conversations have their own lists
        return ConversationRef(
            conv.id,
            conv.visitor_id,
            conv.state,
            conv.created,
            conv.updated,
            conv.last_seq,
            False,
        )

    def _read_contents(self, entry: ArchiveEntry) -> Contents:
        path = segment_path(self.archive_dir, entry.seg)
        frame = read_frame(path, entry.off, entry.len, self.max_frame_bytes)
        return decode_frame(self.codec, frame, self.max_frame_bytes)

    # Restore

    async def ensure_hot(self, conversation_id: str) -> bool:
        """Restore an archived conversation; True if it is hot afterwards."""
        try:
            key = id_bytes(conversation_id)
        except ValueError:
            return False
        with self.env.read() as txn:
            if txn.get(key, db=self.env.dbs["conv"]) is not None:
                return True
            if txn.get(key, db=self.env.dbs["arch"]) is None:
                return False
        return await asyncio.to_thread(self.restore_blocking, conversation_id)

    async def ensure_readable(self, conversation_id: str) -> bool:
        """Restore an archived conversation, or, when the disk is too full
        for that, keep it archived and read it once in a worker thread so
        read_conversation and read_messages serve it read-only. True if
        the conversation exists."""
        try:
            return await self.ensure_hot(conversation_id)
        except StorageFull:
            log.warning("no room to restore %s; serving it read-only", conversation_id)
            found = await asyncio.to_thread(self.read_archived, conversation_id)
            return found is not None

    def restore_blocking(self, conversation_id: str) -> bool:
        """Put an archived conversation back in the hot databases."""
        key = id_bytes(conversation_id)
        for _attempt in range(5):
            entry = self.archive_entry(conversation_id)
            if entry is None:
                return self.get_conversation_raw(key) is not None
            try:
                contents = self._read_contents(entry)
            except FileNotFoundError:
                continue
            outcome = self.env.write_blocking(self._restore_job(key, entry, contents))
            if outcome is not None:
                return outcome
        raise CorruptData(f"conversation {conversation_id} kept moving during restore")

    def get_conversation_raw(self, key: bytes) -> bytes | None:
        with self.env.read() as txn:
            raw = txn.get(key, db=self.env.dbs["conv"])
            return None if raw is None else bytes(raw)

    def _restore_job(
        self, key: bytes, entry: ArchiveEntry, contents: Contents
    ) -> Callable[[lmdb.Transaction], bool | None]:
        dbs = self.env.dbs
        codec = self.codec
        expected = pack_record(entry)
        conversation = unpack_record(Conversation, contents.conversation)
        records = []
        for raw in contents.messages:
            message = unpack_record(Message, raw)
            message_key = key + message.seq.to_bytes(8, "big")
            records.append((message_key, codec.seal(message_key, raw)))
        sealed_conversation = codec.seal(key, contents.conversation)

        def job(txn: lmdb.Transaction) -> bool | None:
            current = txn.get(key, db=dbs["arch"])
            if current is None:
                return txn.get(key, db=dbs["conv"]) is not None
            if bytes(current) != expected:
                return None  # moved by compaction meanwhile: read it again
            txn.delete(key, db=dbs["arch"])
            if txn.get(key, db=dbs["conv"]) is not None:
                return True  # NOTE: never both; the hot copy wins
            txn.cursor(db=dbs["msg"]).putmulti(records)
            txn.put(key, sealed_conversation, db=dbs["conv"])
            if conversation.state != "closed":
                txn.put(key, b"", db=dbs["open"])
            txn.put(key, pack(now_ms()), db=dbs["restored"])
            return True

        return job

    # Archive

    def find_idle(
        self,
        idle_before_ms: int,
        limit: int,
        is_busy: Callable[[Conversation], bool] | None = None,
    ) -> list[bytes]:
        """Ids of conversations untouched (and not restored) since the cutoff."""
        dbs = self.env.dbs
        found: list[bytes] = []
        with self.env.read() as txn:
            restored = txn.cursor(db=dbs["restored"])
            for key, value in txn.cursor(db=dbs["conv"]):
                conversation = unpack_record(Conversation, self.codec.open(key, value))
                if conversation.updated >= idle_before_ms:
                    continue
                back = restored.get(key)
                if back is not None and unpack(back) >= idle_before_ms:
                    continue
                if is_busy is not None and is_busy(conversation):
                    continue
                found.append(bytes(key))
                if len(found) >= limit:
                    break
        return found

    def archive_blocking(self, keys: list[bytes]) -> ArchiveResult:
        """Archive these conversations (both steps). Blocking; never on the loop."""
        result = ArchiveResult()
        with archive_lock(self.archive_dir):
            snapshots, frames = [], []
            for key in keys:
                snapshot = self._snapshot(key)
                if snapshot is None:
                    continue
                frame = encode_frame(self.codec, key, snapshot.contents)
                if len(frame) > self.max_frame_bytes:
                    log.warning("conversation %s is too big to archive", id_hex(key))
                    result.too_big += 1
                    continue
                snapshots.append(snapshot)
                frames.append(frame)
            placed = self.segments.append(frames)

            futures = [
                self.env.submit(self._archive_job(snapshot, seg, off, len(frame)))
                for snapshot, frame, (seg, off) in zip(
                    snapshots, frames, placed, strict=True
                )
            ]
            for future, frame in zip(futures, frames, strict=True):
                if future.result():
                    result.archived += 1
                    result.bytes += len(frame)
                else:
                    result.raced += 1
        return result

    def _snapshot(self, key: bytes) -> _Snapshot | None:
        dbs = self.env.dbs
        with self.env.read() as txn:
            raw = txn.get(key, db=dbs["conv"])
            if raw is None:
                return None
            plain = bytes(self.codec.open(key, raw))
            messages = []
            cursor = txn.cursor(db=dbs["msg"])
            if cursor.set_range(key):
                for message_key, value in cursor:
                    if bytes(message_key[:16]) != key:
                        break
                    messages.append(bytes(self.codec.open(message_key, value)))
        conversation = unpack_record(Conversation, plain)
        return _Snapshot(key, conversation, Contents(plain, messages))

    def _archive_job(
        self, snapshot: _Snapshot, seg: int, off: int, length: int
    ) -> Callable[[lmdb.Transaction], bool]:
        dbs = self.env.dbs
        codec = self.codec
        key = snapshot.key
        seen = snapshot.conversation
        entry = ArchiveEntry(
            seg,
            off,
            length,
            seen.updated,
            seen.created,
            seen.visitor_id,
            len(snapshot.contents.messages),
            codec.keyring.current if codec.keyring else 0,
            now_ms(),
        )

        def job(txn: lmdb.Transaction) -> bool:
            raw = txn.get(key, db=dbs["conv"])
            if raw is None:
                return False
            now = unpack_record(Conversation, codec.open(key, raw))
            if now.last_seq != seen.last_seq or now.updated != seen.updated:
                return False  # touched since the snapshot: stays hot

            cursor = txn.cursor(db=dbs["msg"])
            if cursor.set_range(key):
                while cursor.key()[:16] == key and cursor.delete():
                    pass
            for name in ("conv", "open", "restored"):
                txn.delete(key, db=dbs[name])
            txn.put(key, pack_record(entry), db=dbs["arch"])
            return True

        return job
