"""Archive upkeep: compaction, retention and re-encryption after a key rotation.

Every method here blocks and belongs on a worker thread. Each changes the
hot databases only through writer jobs that first check the record is still
what was read, so they never undo a write that happened meanwhile.
"""

from __future__ import annotations

from collections import defaultdict
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
                    continue
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
        their dedupe entries and, if it has no other, their visitor."""
        dbs = self.env.dbs
        old = {
            id_bytes(cid): pack_record(entry)
            for cid, entry in self.iter_archive()
            if entry.updated < cutoff_ms
        }
        if not old:
            return 0
        doomed_cids, visitors, tokens = self._expiry_extras(old)

        def job(txn: lmdb.Transaction) -> int:
            gone = 0
            for key, raw in old.items():
                if txn.get(key, db=dbs["arch"]) == raw:
                    txn.delete(key, db=dbs["arch"])
                    gone += 1
            for cid_key, message_key in doomed_cids:
                if txn.get(cid_key, db=dbs["cid"]) == message_key:
                    txn.delete(cid_key, db=dbs["cid"])
            for token_key, vid in tokens:
                txn.delete(token_key, vid, db=dbs["vtoken"])
            for vid in visitors:
                txn.delete(vid, db=dbs["visitor"])
            return gone

        gone = int(self.env.write_blocking(job))
        log.info("retention removed %d archived conversations", gone)
        return gone

    def _expiry_extras(
        self, old: dict[bytes, bytes]
    ) -> tuple[list[tuple[bytes, bytes]], set[bytes], list[tuple[bytes, bytes]]]:
        dbs = self.env.dbs
        cids: list[tuple[bytes, bytes]] = []
        visitors: set[bytes] = set()
        tokens: list[tuple[bytes, bytes]] = []
        with self.env.read() as txn:
            for key, value in txn.cursor(db=dbs["cid"]):
                if bytes(value[:16]) in old:
                    cids.append((bytes(key), bytes(value)))
            owners = defaultdict(list)
            for key, value in txn.cursor(db=dbs["visitor"]):
                visitor = unpack_record(Visitor, value)
                if visitor.conversation_id and id_bytes(visitor.conversation_id) in old:
                    owners[bytes(key)].append(visitor.id)
            visitors = set(owners)
            for key, value in txn.cursor(db=dbs["vtoken"]):
                if bytes(value) in visitors:
                    tokens.append((bytes(key), bytes(value)))
        return cids, visitors, tokens

    # Re-encryption

    def reseal_blocking(self) -> int:
        """Re-encrypt hot records sealed under an older key. Returns how many."""
        if not self.codec.enabled:
            return 0
        total = 0
        for name in ("conv", "msg"):
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
