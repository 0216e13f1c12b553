"""Admin-edited robot vocabulary, canned replies for agents, and the
questions the robot could not answer.

The ``lexicon`` database holds synonym groups (``s:`` + canonical word),
dictionary words (``w:`` + word), category rules (``c:`` + topic word) and
the agents' canned replies (``r:`` + reply id), which the robot never reads.
The ``unanswered`` database holds one record per distinct question the robot
handed off, keyed by a salted hash of its normalised text so repeats add up;
``unanswered_at`` orders those keys by the last time they were asked, so the
oldest are dropped first once the list is full. Question texts are sealed
like message bodies when encryption is on.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lmdb

from ..errors import BadRequest, NotFound
from .crypto import Codec
from .env import Env
from .keys import now_ms, pack, pack_record, unpack, unpack_record

UNANSWERED_LIMIT = 1000
CANNED_LIMIT = 500
_SYNONYM = b"s:"
_WORD = b"w:"
_CATEGORY = b"c:"
_CANNED = b"r:"
_SALT = b"unanswered_salt"
_STAMP = struct.Struct(">Q")


@dataclass(slots=True)
class SynonymGroup:
    """Variant words that all mean ``canonical``."""

    canonical: str
    variants: list[str] = field(default_factory=list)
    updated: int = 0


@dataclass(slots=True)
class DictWord:
    """A word the segmenter must keep whole; ``freq`` as in a jieba dictionary."""

    word: str
    freq: int = 2000
    updated: int = 0


@dataclass(slots=True)
class CategoryRule:
    """Words that belong to ``topic``: a text naming a member carries the topic."""

    topic: str
    members: list[str] = field(default_factory=list)
    updated: int = 0


@dataclass(slots=True)
class CannedReply:
    """A prepared answer agents insert into the reply box; ``title`` finds it."""

    reply_id: str
    title: str
    text: str
    updated: int = 0


@dataclass(slots=True)
class Unanswered:
    """A question the robot handed off, with how often and when it came."""

    key: str
    text: str
    count: int
    first: int
    last: int
    action: str = "handoff"
    score: float = 0.0
    candidates: list[dict[str, Any]] = field(default_factory=list)
    conversation_id: str = ""


class KbStore:
    """Mixin of Store; see store/__init__.py for the contract."""

    env: Env
    codec: Codec

    # Synonyms and dictionary words

    def list_synonyms(self) -> list[SynonymGroup]:
        return [unpack_record(SynonymGroup, raw) for raw in self._prefixed(_SYNONYM)]

    def list_words(self) -> list[DictWord]:
        return [unpack_record(DictWord, raw) for raw in self._prefixed(_WORD)]

    async def put_synonym_group(
        self, group: SynonymGroup, replaces: str | None = None
    ) -> None:
        """Store ``group``; ``replaces`` names a group it takes the place of."""
        group.updated = now_ms()
        await self._put_replacing(_SYNONYM, group.canonical, group, replaces)

    async def delete_synonym_group(self, canonical: str) -> bool:
        return await self._delete(_SYNONYM + canonical.encode("utf-8"))

    async def put_word(self, word: DictWord) -> None:
        db = self.env.dbs["lexicon"]
        word.updated = now_ms()

        def job(txn: lmdb.Transaction) -> None:
            txn.put(_WORD + word.word.encode("utf-8"), pack_record(word), db=db)

        await self.env.write(job)

    async def delete_word(self, word: str) -> bool:
        return await self._delete(_WORD + word.encode("utf-8"))

    # Category rules

    def list_categories(self) -> list[CategoryRule]:
        return [unpack_record(CategoryRule, raw) for raw in self._prefixed(_CATEGORY)]

    async def put_category_rule(
        self, rule: CategoryRule, replaces: str | None = None
    ) -> None:
        """Store ``rule``; ``replaces`` names a topic whose rule it takes over."""
        rule.updated = now_ms()
        await self._put_replacing(_CATEGORY, rule.topic, rule, replaces)

    async def delete_category_rule(self, topic: str) -> bool:
        return await self._delete(_CATEGORY + topic.encode("utf-8"))

    # Canned replies

    def list_canned(self) -> list[CannedReply]:
        """Every canned reply, in id order."""
        return [unpack_record(CannedReply, raw) for raw in self._prefixed(_CANNED)]

    def get_canned(self, reply_id: str) -> CannedReply | None:
        with self.env.read() as txn:
            raw = txn.get(_canned_key(reply_id), db=self.env.dbs["lexicon"])
            if raw is None:
                return None
            return unpack_record(CannedReply, raw)  # type: ignore[no-any-return]

    async def put_canned(
        self, reply: CannedReply, *, create: bool, limit: int = CANNED_LIMIT
    ) -> None:
        """Store ``reply``: a new one (BadRequest once ``limit`` are stored)
        or, without ``create``, one that exists (NotFound otherwise)."""
        reply.updated = now_ms()
        await self.env.write(self._canned_job([reply], create, limit))

    def seed_canned_blocking(
        self, replies: list[CannedReply], limit: int = CANNED_LIMIT
    ) -> None:
        """Add ``replies`` in one commit (demo data); BadRequest past ``limit``."""
        stamp = now_ms()
        for reply in replies:
            reply.updated = stamp
        self.env.write_blocking(self._canned_job(replies, True, limit))

    async def delete_canned(self, reply_id: str) -> bool:
        return await self._delete(_canned_key(reply_id))

    def _canned_job(
        self, replies: list[CannedReply], create: bool, limit: int
    ) -> Callable[[lmdb.Transaction], None]:
        db = self.env.dbs["lexicon"]

        def job(txn: lmdb.Transaction) -> None:
            if create:
                count = _count_prefixed(txn, db, _CANNED)
                if count + len(replies) > limit:
                    raise BadRequest(f"快捷回复最多 {limit} 条，请先删除不再使用的")
            for reply in replies:
                key = _canned_key(reply.reply_id)
                exists = txn.get(key, db=db) is not None
                if create and exists:
                    raise BadRequest("快捷回复编号重复，请重试")
                if not create and not exists:
                    raise NotFound("快捷回复不存在或已被删除")
                txn.put(key, pack_record(reply), db=db)

        return job

    async def _put_replacing(
        self, prefix: bytes, name: str, record: Any, replaces: str | None
    ) -> None:
        """Store ``record`` as ``name``, removing ``replaces`` in the same commit."""
        db = self.env.dbs["lexicon"]

        def job(txn: lmdb.Transaction) -> None:
            if replaces is not None:
                txn.delete(prefix + replaces.encode("utf-8"), db=db)
            txn.put(prefix + name.encode("utf-8"), pack_record(record), db=db)

        await self.env.write(job)

    def _prefixed(self, prefix: bytes) -> list[bytes]:
        found: list[bytes] = []
        with self.env.read() as txn:
            cursor = txn.cursor(db=self.env.dbs["lexicon"])
            if not cursor.set_range(prefix):
                return found
            for key, value in cursor:
                if not bytes(key).startswith(prefix):
                    break
                found.append(bytes(value))
        return found

    async def _delete(self, key: bytes) -> bool:
        db = self.env.dbs["lexicon"]

        def job(txn: lmdb.Transaction) -> bool:
            return bool(txn.delete(key, db=db))

        return await self.env.write(job)

    def count_faq_entries(self) -> int:
        with self.env.read() as txn:
            return int(txn.stat(self.env.dbs["faq"])["entries"])

    # Unanswered questions

    async def record_unanswered(
        self,
        text: str,
        normalized: str,
        *,
        action: str,
        score: float,
        candidates: list[dict[str, Any]],
        conversation_id: str = "",
        limit: int = UNANSWERED_LIMIT,
    ) -> None:
        """Count one handed-off question; the oldest drop out past ``limit``."""
        dbs = self.env.dbs
        codec = self.codec
        asked = now_ms()

        def job(txn: lmdb.Transaction) -> None:
            stamp = _after_newest(txn, dbs, asked)
            key = self._unanswered_key(txn, normalized)
            raw = txn.get(key, db=dbs["unanswered"])
            if raw is None:
                record = Unanswered(key.hex(), text, 0, stamp, stamp)
            else:
                record = unpack_record(Unanswered, codec.open(key, raw))
                txn.delete(_STAMP.pack(record.last) + key, db=dbs["unanswered_at"])
            record.count += 1
            record.last = stamp
            record.action = action
            record.score = score
            record.candidates = candidates
            record.conversation_id = conversation_id
            sealed = codec.seal(key, pack_record(record))
            txn.put(key, sealed, db=dbs["unanswered"])
            txn.put(_STAMP.pack(stamp) + key, b"", db=dbs["unanswered_at"])
            _trim(txn, dbs, limit)

        await self.env.write(job)

    def list_unanswered(self, limit: int = 200) -> list[Unanswered]:
        """The most recently asked first."""
        found: list[Unanswered] = []
        dbs = self.env.dbs
        with self.env.read() as txn:
            cursor = txn.cursor(db=dbs["unanswered_at"])
            if not cursor.last():
                return found
            while len(found) < limit:
                key = bytes(cursor.key())[_STAMP.size :]
                raw = txn.get(key, db=dbs["unanswered"])
                if raw is not None:
                    found.append(unpack_record(Unanswered, self.codec.open(key, raw)))
                if not cursor.prev():
                    break
        return found

    def count_unanswered(self) -> int:
        with self.env.read() as txn:
            return int(txn.stat(self.env.dbs["unanswered"])["entries"])

    def get_unanswered(self, key_hex: str) -> Unanswered | None:
        key = _key_bytes(key_hex)
        if key is None:
            return None
        with self.env.read() as txn:
            raw = txn.get(key, db=self.env.dbs["unanswered"])
            if raw is None:
                return None
            return unpack_record(Unanswered, self.codec.open(key, raw))  # type: ignore[no-any-return]

    async def delete_unanswered(self, key_hex: str) -> bool:
        key = _key_bytes(key_hex)
        if key is None:
            return False
        dbs = self.env.dbs
        codec = self.codec

        def job(txn: lmdb.Transaction) -> bool:
            raw = txn.get(key, db=dbs["unanswered"])
            if raw is None:
                return False
            record = unpack_record(Unanswered, codec.open(key, raw))
            txn.delete(_STAMP.pack(record.last) + key, db=dbs["unanswered_at"])
            return bool(txn.delete(key, db=dbs["unanswered"]))

        return await self.env.write(job)

    def _unanswered_key(self, txn: lmdb.Transaction, normalized: str) -> bytes:
        """A salted hash, so the key alone does not confirm a guessed question."""
        meta = self.env.dbs["meta"]
        salt = txn.get(_SALT, db=meta)
        if salt is None:
            salt = pack(os.urandom(16))
            txn.put(_SALT, salt, db=meta)
        digest = hashlib.blake2b(
            normalized.encode("utf-8"), digest_size=16, key=bytes(unpack(salt))
        )
        return digest.digest()


def _canned_key(reply_id: str) -> bytes:
    return _CANNED + reply_id.encode("utf-8")


def _count_prefixed(txn: lmdb.Transaction, db: Any, prefix: bytes) -> int:
    cursor = txn.cursor(db=db)
    count = 0
    if not cursor.set_range(prefix):
        return count
    for key in cursor.iternext(keys=True, values=False):
        if not bytes(key).startswith(prefix):
            break
        count += 1
    return count


def _after_newest(txn: lmdb.Transaction, dbs: dict[str, Any], stamp: int) -> int:
    """``stamp``, or just after the newest one, so the order of asking holds."""
    cursor = txn.cursor(db=dbs["unanswered_at"])
    if not cursor.last():
        return stamp
    newest = int(_STAMP.unpack(bytes(cursor.key())[: _STAMP.size])[0])
    return max(stamp, newest + 1)


def _trim(txn: lmdb.Transaction, dbs: dict[str, Any], limit: int) -> None:
    """Drop the least recently asked questions beyond ``limit``."""
    extra = int(txn.stat(dbs["unanswered"])["entries"]) - limit
    cursor = txn.cursor(db=dbs["unanswered_at"])
    while extra > 0 and cursor.first():
        key = bytes(cursor.key())[_STAMP.size :]
        cursor.delete()
        txn.delete(key, db=dbs["unanswered"])
        extra -= 1


def _key_bytes(key_hex: str) -> bytes | None:
    if len(key_hex) != 32:
        return None
    try:
        return bytes.fromhex(key_hex)
    except ValueError:
        return None
