"""Archive upkeep: compaction, retention and re-encryption after a key rotation.

Every method here blocks and belongs on a worker thread. Each changes the
hot databases only through writer jobs that first check the record is still
what was read, so they never undo a write that happened meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lmdb

from ..errors import CorruptData
from ..log import store as log
from ..models import Visitor
from .archive import ArchiveEntry
from .crypto import Codec
from .env import Env
from .frames import (
    SegmentWriter,
    archive_lock,
    list_segments,
    raw_frame,
    read_frame,
    reseal_frame,
    segment_path,
)
from .keys import id_bytes, pack_record, unpack_record

# Frames moved per fsync and index update during compaction.
_MOVE_BATCH_BYTES = 8 * 1024 * 1024
_RESEAL_BATCH = 500
# Databases whose values are sealed (under their own key as associated
# data) when encryption is on.
SEALED_DBS = ("conv", "msg", "visitor", "unanswered")
# Databases mapping a lookup key to a visitor id.
_VISITOR_LINKS = ("vtoken", "shopper")


@dataclass(slots=True)
class SegmentStats:
    number: int
    size: int
    live_bytes: int
    live_frames: int
    stale_key_frames: int

    @property
    def dead_bytes(self) -> int:
        return self.size - self.live_bytes


@dataclass(slots=True)
class _Extras:
    """What goes with expired conversations: (dedupe key, message key),
    visitor key -> its conversation key, (database, link key, visitor key)."""

    cids: list[tuple[bytes, bytes]]
    visitors: dict[bytes, bytes]
    links: list[tuple[str, bytes, bytes]]


class UpkeepStore:
    """Mixin of Store; see store/__init__.py for the contract."""

    env: Env
    codec: Codec
    archive_dir: Path
    segments: SegmentWriter
    max_frame_bytes: int
    iter_archive: Callable[[], Iterator[tuple[str, ArchiveEntry]]]

    # Compaction

    def segment_stats(self) -> list[SegmentStats]:
        """Size, live bytes and frames under an old key, per segment."""
        current = self.codec.keyring.current if self.codec.keyring else 0
        stats = {
            number: SegmentStats(number, path.stat().st_size, 0, 0, 0)
            for number, path in list_segments(self.archive_dir).items()
        }
        for _cid, entry in self.iter_archive():
            seg = stats.get(entry.seg)
            if seg is None:
                continue
            seg.live_bytes += entry.len
            seg.live_frames += 1
            seg.stale_key_frames += entry.key_version != current
        return list(stats.values())

    def compact_blocking(self, dead_ratio: float = 0.5, small_bytes: int = 0) -> int:
        """Rewrite segments that are mostly dead, small, or under an old key
        into the current one, then delete them. Returns segments removed."""
        removed = 0
        with archive_lock(self.archive_dir, wait=False) as locked:
            if not locked:
                return 0
            for seg in self.segment_stats():
                if seg.number == self.segments.current:
                    if not seg.stale_key_frames:
                        continue
                    # After a rotation: append elsewhere so this one can go.
                    self.segments.current = None
                if (
                    seg.live_frames == 0
                    or seg.dead_bytes >= dead_ratio * seg.size
                    or seg.size < small_bytes
                    or seg.stale_key_frames
                ):
                    removed += self._move_segment(seg.number)
        return removed

    def _move_segment(self, number: int) -> int:
        entries = [
            (id_bytes(cid), entry)
            for cid, entry in self.iter_archive()
            if entry.seg == number
        ]
        path = segment_path(self.archive_dir, number)
        failed = False
        batch: list[tuple[bytes, ArchiveEntry, bytes]] = []
        for key, entry in entries:
            try:
                frame = read_frame(path, entry.off, entry.len, self.max_frame_bytes)
                if self.codec.enabled and frame.key_version != self._current_key():
                    data = reseal_frame(self.codec, frame, self.max_frame_bytes)
                else:
                    data = raw_frame(frame)
            except CorruptData as exc:
                log.error("segment %d keeps a damaged frame: %s", number, exc)
                failed = True
                continue
            batch.append((key, entry, data))
            if sum(len(d) for _k, _e, d in batch) >= _MOVE_BATCH_BYTES:
                self._relocate(batch)
                batch = []
        self._relocate(batch)
        if failed or any(e.seg == number for _c, e in self.iter_archive()):
            return 0
        self.segments.remove(number)
        log.info("archive segment %d compacted away", number)
        return 1

    def _current_key(self) -> int:
        return self.codec.keyring.current if self.codec.keyring else 0

    def _relocate(self, batch: list[tuple[bytes, ArchiveEntry, bytes]]) -> None:
        if not batch:
            return
        placed = self.segments.append([data for _k, _e, data in batch])
        db = self.env.dbs["arch"]
        moves = []
        for (key, entry, data), (seg, off) in zip(batch, placed, strict=True):
            moved = ArchiveEntry(**{n: getattr(entry, n) for n in entry.__slots__})
            moved.seg, moved.off, moved.len = seg, off, len(data)
            moved.key_version = self._current_key() if self.codec.enabled else 0
            moves.append((key, pack_record(entry), pack_record(moved)))

        def job(txn: lmdb.Transaction) -> None:
            for key, old, new in moves:
                if txn.get(key, db=db) == old:
                    txn.put(key, new, db=db)

        self.env.write_blocking(job)

    # Retention

    def expire_blocking(self, cutoff_ms: int) -> int:
        """Delete archived conversations idle since before the cutoff, with
        their dedupe entries, their visitor and the links to that visitor.

        A conversation restored meanwhile keeps everything."""
        dbs = self.env.dbs
        old = {
            id_bytes(cid): pack_record(entry)
            for cid, entry in self.iter_archive()
            if entry.updated < cutoff_ms
        }
        if not old:
            return 0
        extras = self._expiry_extras(old)

        def job(txn: lmdb.Transaction) -> int:
            gone = set()
            for key, raw in old.items():
                if txn.get(key, db=dbs["arch"]) == raw:
                    txn.delete(key, db=dbs["arch"])
                    gone.add(key)
            for cid_key, message_key in extras.cids:
                if message_key[:16] in gone:
                    txn.delete(cid_key, message_key, db=dbs["cid"])
            doomed = {v for v, conv in extras.visitors.items() if conv in gone}
            for db, link, vid in extras.links:
                if vid in doomed:
                    txn.delete(link, vid, db=dbs[db])
            for vid in doomed:
                txn.delete(vid, db=dbs["visitor"])
            return len(gone)

        gone = int(self.env.write_blocking(job))
        log.info("retention removed %d archived conversations", gone)
        return gone

    def _expiry_extras(self, old: dict[bytes, bytes]) -> _Extras:
        """Dedupe entries of the doomed conversations, their visitors, and
        the token and shopper links that lead to those visitors."""
        dbs = self.env.dbs
        extras = _Extras([], {}, [])
        with self.env.read() as txn:
            for key, value in txn.cursor(db=dbs["cid"]):
                if bytes(value[:16]) in old:
                    extras.cids.append((bytes(key), bytes(value)))
            for key, value in txn.cursor(db=dbs["visitor"]):
                visitor = unpack_record(Visitor, self.codec.open(key, value))
                conv = visitor.conversation_id
                if conv and id_bytes(conv) in old:
                    extras.visitors[bytes(key)] = id_bytes(conv)
            for db in _VISITOR_LINKS:
                for key, value in txn.cursor(db=dbs[db]):
                    if bytes(value) in extras.visitors:
                        extras.links.append((db, bytes(key), bytes(value)))
        return extras

    # Re-encryption

    def reseal_blocking(self) -> int:
        """Re-encrypt hot records sealed under an older key. Returns how many."""
        if not self.codec.enabled:
            return 0
        total = 0
        for name in (n for n in SEALED_DBS if n in self.env.dbs):
            after = b""
            while True:
                batch, after = self._stale_records(name, after)
                if not batch:
                    break
                total += self._reseal(name, batch)
        return total

    def _stale_records(
        self, name: str, after: bytes
    ) -> tuple[list[tuple[bytes, bytes]], bytes]:
        found: list[tuple[bytes, bytes]] = []
        last = after
        with self.env.read() as txn:
            cursor = txn.cursor(db=self.env.dbs[name])
            if not cursor.set_range(after):
                return found, last
            for key, value in cursor:
                if bytes(key) == after:
                    continue
                last = bytes(key)
                if self.codec.needs_reseal(value):
                    found.append((last, bytes(value)))
                    if len(found) >= _RESEAL_BATCH:
                        break
        return found, last

    def _reseal(self, name: str, batch: list[tuple[bytes, bytes]]) -> int:
        db = self.env.dbs[name]
        codec = self.codec
        fresh = [(k, v, codec.seal(k, bytes(codec.open(k, v)))) for k, v in batch]

        def job(txn: lmdb.Transaction) -> int:
            done = 0
            for key, old, new in fresh:
                if txn.get(key, db=db) == old:
                    txn.put(key, new, db=db)
                    done += 1
            return done

        return int(self.env.write_blocking(job))
