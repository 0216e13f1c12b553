"""The LMDB environment and its single writer thread.

All writes go through one thread that groups whatever is queued into one
transaction (group commit). Each job runs in a nested transaction, so a job
that raises is rolled back alone and the others in its batch still commit.
A job's future resolves only after the outer transaction is durably
committed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from ..errors import StorageFull, StoreError
from ..log import store as log

T = TypeVar("T")
Job = Callable[[lmdb.Transaction], Any]

DB_NAMES = (
    "conv",  # conversation id -> Conversation
    "msg",  # conversation id + seq -> Message
    "cid",  # visitor or agent + client id -> conversation id + seq
    "open",  # conversation id of every conversation not closed -> b""
    "visitor",  # visitor id -> Visitor
    "vtoken",  # sha256(visitor token) -> visitor id
    "shopper",  # sha256(verified shopper id) -> visitor id
    "account",  # username -> Account
    "session",  # sha256(session token) -> session record
    "faq",  # faq id -> FaqEntry
    "meta",  # name -> value (schema version, secrets, settings)
    "arch",  # conversation id -> where its archive frame is (archive.py)
    "restored",  # conversation id -> ms it came back from the archive
    "lexicon",  # admin synonym groups and dictionary words (kb.py)
    "unanswered",  # salted hash of a handed-off question -> its record (kb.py)
    "unanswered_at",  # last-asked ms + that hash -> b"" (kb.py)
)

# A failed commit with less free disk than this is reported as storage full.
_FULL_BELOW = 1024 * 1024
# Grow the map when it is this full; double it each time.
_GROW_AT = 0.75
_STOP = object()


class _Gate:
    """Many readers at once, or one map resize with no reader open.

    NOTE: set_mapsize must not run while this process has a read
    transaction open; a waiting resize holds new readers back so it
    cannot starve.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._resizing = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._resizing = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


class Env:
    """One LMDB environment: inline reads, writes through the writer thread."""

    def __init__(
        self,
        path: Path,
        map_size: int,
        commit_batch: int = 256,
        max_map_size: int = 0,
    ) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        # 0 means the map may grow as long as the disk has room.
        self.max_map_size = max_map_size
        self._env = lmdb.open(
            str(path),
            map_size=map_size,
            max_dbs=len(DB_NAMES) + 4,
            max_readers=256,
            readahead=False,
            sync=True,
            metasync=True,
        )
        cleared = self._env.reader_check()
        if cleared:
            log.warning("cleared %d stale reader slots", cleared)
        with self._env.begin(write=True) as txn:
            self.dbs = {
                name: self._env.open_db(name.encode(), txn=txn) for name in DB_NAMES
            }

        self._gate = _Gate()
        self._batch = commit_batch
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name="goflypy-writer", daemon=True
        )
        self._thread.start()
        self.commits = 0
        self.last_commit_ms = 0.0

    # Reads

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        """A short read transaction whose values are zero-copy buffers.

        NOTE: buffers die with the transaction; decode inside the block.
        """
        while True:
            with self._gate.shared():
                try:
                    txn = self._env.begin(buffers=True)
                except lmdb.MapResizedError:
                    pass
                else:
                    with txn:
                        yield txn
                    return
            # Another process (the command line) grew the map: adopt it.
            with self._gate.exclusive():
                self._env.set_mapsize(0)

    # Writes

    def submit(
        self, job: Callable[[lmdb.Transaction], T]
    ) -> concurrent.futures.Future[T]:
        """Queue a write job; the future resolves after its durable commit."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        if not self._thread.is_alive():
            future.set_exception(StoreError("store is closed"))
            return future
        self._jobs.put((job, future))
        return future

    async def write(self, job: Callable[[lmdb.Transaction], T]) -> T:
        """Run a write job on the writer thread and wait for its commit."""
        return await asyncio.wrap_future(self.submit(job))

    def write_blocking(self, job: Callable[[lmdb.Transaction], T]) -> T:
        """Same as write(), for code that is not on an event loop."""
        return self.submit(job).result()

    def close(self) -> None:
        """Finish queued writes, stop the writer and close the environment."""
        if self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join()
        self._env.close()

    def copy_to(self, dest: Path) -> None:
        """Write a compacted, consistent copy of the store to ``dest``.

        Blocks for the length of the copy; the copy is one read snapshot.
        """
        dest.mkdir(parents=True, exist_ok=True)
        with self.read() as txn:
            self._env.copy(str(dest), compact=True, txn=txn)

    def info(self) -> dict[str, int]:
        info = self._env.info()
        stat = self._env.stat()
        return {
            "map_size": info["map_size"],
            "used": (info["last_pgno"] + 1) * stat["psize"],
            "readers": info["num_readers"],
        }

    # Writer thread

    def _run(self) -> None:
        while True:
            first = self._jobs.get()
            if first is _STOP:
                return
            batch = [first]
            stop = False
            while len(batch) < self._batch:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._commit_batch(batch)
            if stop:
                return

    def _commit_batch(
        self, batch: list[tuple[Job, concurrent.futures.Future[Any]]]
    ) -> None:
        for _attempt in range(8):
            self._grow_if_needed()
            started = time.perf_counter()
            try:
                outcomes = self._apply(batch)
            except lmdb.MapFullError:
                if self._grow():
                    continue
                break
            except lmdb.Error as exc:
                self._fail_all(batch, exc)
                return
            self.commits += 1
            self.last_commit_ms = (time.perf_counter() - started) * 1000
            for future, result, error in outcomes:
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(error)
            return
        self._fail_all(batch, lmdb.MapFullError("map could not grow"))

    def _apply(
        self, batch: list[tuple[Job, concurrent.futures.Future[Any]]]
    ) -> list[tuple[concurrent.futures.Future[Any], Any, BaseException | None]]:
        outcomes: list[
            tuple[concurrent.futures.Future[Any], Any, BaseException | None]
        ] = []
        try:
            txn = self._env.begin(write=True)
        except lmdb.MapResizedError:
            with self._gate.exclusive():
                self._env.set_mapsize(0)
            txn = self._env.begin(write=True)
        try:
            for job, future in batch:
                child = self._env.begin(write=True, parent=txn)
                try:
                    result = job(child)
                except lmdb.MapFullError:
                    child.abort()
                    raise
                except Exception as exc:  # one job's failure stays its own
                    child.abort()
                    outcomes.append((future, None, exc))
                    continue
                child.commit()
                outcomes.append((future, result, None))
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        return outcomes

    def _fail_all(
        self, batch: list[tuple[Job, concurrent.futures.Future[Any]]], exc: Exception
    ) -> None:
        full = (
            isinstance(exc, lmdb.MapFullError)
            or (
                isinstance(exc, lmdb.Error)
                and getattr(exc, "errno", None) == errno.ENOSPC
            )
            or "No space left" in str(exc)
            or self._is_disk_full()
        )
        if full:
            log.error("storage full: %s", exc)
            error: Exception = StorageFull("storage full: the message was not stored")
        else:
            log.error("commit failed: %s", exc)
            error = StoreError(f"commit failed: {exc}")
        for _job, future in batch:
            future.set_exception(error)

    def _is_disk_full(self) -> bool:
        """Whether the data disk is (nearly) out of space.

        LMDB reports a short write as EIO, not ENOSPC, when the disk had a
        few bytes left but not a whole page run.
        """
        try:
            stat = os.statvfs(self.path)
        except OSError:
            return False
        return stat.f_bavail * stat.f_frsize < _FULL_BELOW

    def _grow_if_needed(self) -> None:
        info = self.info()
        if info["used"] >= info["map_size"] * _GROW_AT:
            self._grow()

    def _grow(self) -> bool:
        """Double the map (up to max_map_size); False when it may not grow."""
        with self._gate.exclusive():
            current = self._env.info()["map_size"]
            target = current * 2
            if self.max_map_size:
                target = min(target, self.max_map_size)
            if target <= current:
                return False
            self._env.set_mapsize(target)
        log.info("LMDB map grown from %d to %d bytes", current, target)
        return True
