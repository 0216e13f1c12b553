"""The archiver: the server's background task for archival and upkeep.

Each pass runs in a worker thread (never on the event loop): follow a key
rotation, archive idle conversations, compact segments, apply retention and
re-encrypt records left under an older key.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .config import Config
from .log import store as log
from .models import Conversation
from .store import Store
from .store.crypto import load_keyring
from .store.keys import now_ms

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# Conversations archived per snapshot-and-fsync round.
ARCHIVE_BATCH = 64
# Segments smaller than this share of the maximum are merged by compaction.
SMALL_SEGMENT_SHARE = 1 / 16
RETENTION_EVERY_MS = HOUR_MS


@dataclass(slots=True)
class PassReport:
    archived: int = 0
    raced: int = 0
    too_big: int = 0
    compacted: int = 0
    expired: int = 0
    resealed: int = 0


class Archiver:
    """Runs archive passes every ``archive_interval_s`` until stopped."""

    def __init__(
        self,
        store: Store,
        config: Config,
        is_busy: Callable[[Conversation], bool] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.is_busy = is_busy
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: asyncio.Future[PassReport] | None = None
        self._last_retention = 0
        self._resealed_to = -1
        self.passes = 0

    # Lifecycle

    def start(self) -> Archiver:
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    async def stop(self) -> None:
        """Stop after the pass in flight, so the store can close under it."""
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._running is not None:
            await asyncio.gather(self._running, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.archive_interval_s)
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("archiver pass failed")

    async def run_once(self) -> PassReport:
        """One pass in a worker thread; shielded so cancelling waits for it."""
        self._running = asyncio.ensure_future(asyncio.to_thread(self.pass_blocking))
        return await asyncio.shield(self._running)

    # One pass

    def pass_blocking(self) -> PassReport:
        report = PassReport()
        self._follow_keys()
        self._archive(report)
        if self._stop.is_set():
            return report
        small = int(self.store.segments.max_segment_bytes * SMALL_SEGMENT_SHARE)
        report.compacted = self.store.compact_blocking(0.5, small)
        self._expire(report)
        self._reseal(report)
        self.passes += 1
        if report.archived or report.compacted or report.expired:
            log.info("archiver: %s", report)
        return report

    def _archive(self, report: PassReport) -> None:
        hours = self.config.archive_after_hours
        if hours <= 0:
            return
        cutoff = now_ms() - int(hours * HOUR_MS)
        while not self._stop.is_set():
            keys = self.store.find_idle(cutoff, ARCHIVE_BATCH, self.is_busy)
            if not keys:
                return
            result = self.store.archive_blocking(keys)
            report.archived += result.archived
            report.raced += result.raced
            report.too_big += result.too_big
            if result.archived == 0:
                return  # everything raced or was too big: try next pass

    def _expire(self, report: PassReport) -> None:
        days = self.config.retention_days
        now = now_ms()
        if days <= 0 or now - self._last_retention < RETENTION_EVERY_MS:
            return
        self._last_retention = now
        report.expired = self.store.expire_blocking(now - days * DAY_MS)

    def _follow_keys(self) -> None:
        """Adopt a key that ``goflypy keys rotate`` added while we ran."""
        keyring = self.store.codec.keyring
        versions = self.store.key_versions()
        if keyring is None or not versions or max(versions) <= keyring.current:
            return
        fresh = load_keyring(self.config.encryption_key_file)
        if fresh is not None and fresh.current > keyring.current:
            self.store.use_keyring(fresh)
            log.info("now sealing with key version %d", fresh.current)

    def _reseal(self, report: PassReport) -> None:
        keyring = self.store.codec.keyring
        if keyring is None or self._resealed_to == keyring.current:
            return
        report.resealed = self.store.reseal_blocking()
        self._resealed_to = keyring.current
