"""Hot backup, restore and a full check of a data directory.

A backup is a directory: ``lmdb/data.mdb`` (a compacting copy taken in one
read snapshot), ``archive/seg-*.gfa`` and ``BACKUP.json`` (sizes and CRC32
of every file). The archive lock is held throughout, so no frame is appended
or compacted away while the copy runs; every frame the snapshot's index
names was fsync'd before its entry was committed, so it is in the copy.
Keys are never part of a backup: keep them apart.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import CorruptData, GoflyError, StoreError
from ..models import Conversation, Message, Visitor
from .frames import archive_lock, list_segments, scan_segment
from .keys import unpack_record

MANIFEST = "BACKUP.json"
_CHUNK = 1024 * 1024


def _crc_file(path: Path) -> tuple[int, int]:
    crc, size = 0, 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return size, crc


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True) + [root]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def backup(store: Any, dest: Path) -> dict[str, Any]:
    """Copy a live store to ``dest`` (new or empty). Blocking."""
    if dest.exists() and any(dest.iterdir()):
        raise GoflyError(f"backup destination {dest} is not empty")
    started = time.monotonic()
    (dest / "archive").mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, int]] = {}
    with archive_lock(store.archive_dir):
        store.env.copy_to(dest / "lmdb")
        for path in list_segments(store.archive_dir).values():
            shutil.copyfile(path, dest / "archive" / path.name)
    for path in sorted(dest.rglob("*")):
        if path.is_file():
            size, crc = _crc_file(path)
            files[str(path.relative_to(dest))] = {"size": size, "crc32": crc}
    manifest = {
        "format": 1,
        "goflypy": __version__,
        "created_ms": time.time_ns() // 1_000_000,
        "key_versions": store.key_versions(),
        "files": files,
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    _fsync_tree(dest)
    manifest["seconds"] = round(time.monotonic() - started, 3)
    return manifest


def verify_backup(src: Path) -> dict[str, Any]:
    """The manifest, after checking every file it lists; GoflyError if not."""
    try:
        manifest: dict[str, Any] = json.loads((src / MANIFEST).read_text("utf-8"))
    except FileNotFoundError:
        raise GoflyError(f"{src} is not a goflypy backup (no {MANIFEST})") from None
    for name, expected in manifest["files"].items():
        path = src / name
        if not path.is_file():
            raise GoflyError(f"backup file {name} is missing")
        size, crc = _crc_file(path)
        if (size, crc) != (expected["size"], expected["crc32"]):
            raise CorruptData(f"backup file {name} does not match its checksum")
    return manifest


def restore(src: Path, data_dir: Path, force: bool = False) -> Path | None:
    """Bring a verified backup into ``data_dir``; the server must be stopped.

    An existing store is refused unless ``force``; then it is moved aside,
    and the returned path says where.
    """
    verify_backup(src)
    moved: Path | None = None
    existing = [data_dir / "lmdb", data_dir / "archive"]
    if any(p.exists() for p in existing):
        if not force:
            raise GoflyError(
                f"{data_dir} already holds a store; pass --force to replace it "
                "(the old one is kept beside it)"
            )
        moved = data_dir / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}"
        moved.mkdir(parents=True)
        for path in existing:
            if path.exists():
                path.rename(moved / path.name)
    (data_dir / "lmdb").mkdir(parents=True)
    shutil.copyfile(src / "lmdb" / "data.mdb", data_dir / "lmdb" / "data.mdb")
    shutil.copytree(src / "archive", data_dir / "archive")
    _fsync_tree(data_dir / "lmdb")
    _fsync_tree(data_dir / "archive")
    return moved


# Check


def check_store(store: Any) -> dict[str, Any]:
    """Decode every conversation, message and visitor record, open every
    indexed frame and scan every segment. Blocking; ``problems`` lists what
    failed."""
    problems: list[str] = []
    records = _check_records(store, problems)
    indexed = _check_index(store, problems)
    segments = _check_segments(store, indexed, problems)
    return {
        "records": records,
        "archived_conversations": len(indexed),
        "segments": segments,
        "key_versions": store.key_versions(),
        "problems": problems,
        "ok": not problems,
    }


def _check_records(store: Any, problems: list[str]) -> dict[str, int]:
    counts = {"conversations": 0, "messages": 0, "visitors": 0}
    for label, cls, key, value in _iter_raw(store):
        try:
            unpack_record(cls, store.codec.open(key, value))
            counts[label] += 1
        except (GoflyError, ValueError, TypeError) as exc:
            problems.append(f"{label[:-1]} {key.hex()}: {exc}")
    return counts


def _iter_raw(store: Any) -> Iterator[tuple[str, type, bytes, bytes]]:
    for db, label, cls in (
        ("conv", "conversations", Conversation),
        ("msg", "messages", Message),
        ("visitor", "visitors", Visitor),
    ):
        after = b""
        while True:
            with store.env.read() as txn:
                cursor = txn.cursor(db=store.env.dbs[db])
                chunk = []
                if cursor.set_range(after):
                    for key, value in cursor:
                        if bytes(key) != after:
                            chunk.append((bytes(key), bytes(value)))
                        if len(chunk) >= 2000:
                            break
            if not chunk:
                break
            for key, value in chunk:
                yield label, cls, key, value
            after = chunk[-1][0]


def _check_index(store: Any, problems: list[str]) -> dict[tuple[int, int], str]:
    indexed = {}
    for cid, entry in store.iter_archive():
        indexed[(entry.seg, entry.off)] = cid
        try:
            if store.read_archived(cid) is None:
                problems.append(f"archived conversation {cid}: its frame is missing")
        except (CorruptData, StoreError, OSError) as exc:
            problems.append(f"archived conversation {cid}: {exc}")
    return indexed


def _check_segments(
    store: Any, indexed: dict[tuple[int, int], str], problems: list[str]
) -> list[dict[str, Any]]:
    report = []
    for number, path in list_segments(store.archive_dir).items():
        live = dead = 0
        for item in scan_segment(path, store.max_frame_bytes):
            # A crash mid-append leaves an unindexed, truncated tail: harmless.
            if item.frame is None:
                if (number, item.offset) in indexed or "truncated" not in item.error:
                    problems.append(f"segment {path.name}: {item.error}")
                continue
            if (number, item.offset) in indexed:
                live += 1
            else:
                dead += 1
        size = path.stat().st_size
        report.append({"segment": path.name, "bytes": size, "live": live, "dead": dead})
    return report
