"""One server per data directory, and no restore under a running one.

The server holds an exclusive ``flock`` on ``<data dir>/server.lock`` for
its whole life; the kernel drops it when the process dies, even by
SIGKILL, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import GoflyError

LOCK_FILE = "server.lock"


class ServerRunning(GoflyError):
    """Another process serves this data directory."""


class ServerLock:
    def __init__(self, data_path: Path) -> None:
        self.path = data_path / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ServerRunning naming the holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise ServerRunning(
                f"a goflypy server (pid {holder or '?'}) is using "
                f"{self.path.parent}; stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ServerLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()
