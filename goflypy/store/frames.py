"""Archive frames and the append-only segment files that hold them.

A frame is one conversation: its record and all its messages, msgpack'd,
zlib-compressed and, when encryption is on, sealed. Its 32-byte header:

    magic  b"\\x89GFA"   4   finds frames again after damage
    format 1            1
    flags               1   1 = zlib, 2 = sealed
    key version         2   0 when not sealed
    conversation id    16
    payload length      4   never trusted beyond the configured maximum
    CRC32               4   of the header's first 28 bytes and the payload

Segments are ``seg-NNNNNNNN.gfa`` in ``<data dir>/archive``; frames are only
ever appended, and a segment is only deleted whole, by compaction.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import msgpack

from ..errors import CorruptData
from .crypto import Codec, version_of

MAGIC = b"\x89GFA"
FORMAT = 1
FLAG_ZLIB = 1
FLAG_SEALED = 2
HEADER = struct.Struct(">4sBBH16sII")
_SEGMENT_GLOB = "seg-*.gfa"


@dataclass(slots=True)
class Frame:
    """A checked frame: its header fields and payload (still compressed)."""

    conversation: bytes
    flags: int
    key_version: int
    payload: bytes

    @property
    def size(self) -> int:
        return HEADER.size + len(self.payload)


@dataclass(slots=True)
class Contents:
    """What a frame holds, as plain msgpack records."""

    conversation: bytes
    messages: list[bytes]


# Encoding


def _aad(conversation: bytes) -> bytes:
    return b"frame" + conversation


def encode_frame(codec: Codec, conversation: bytes, contents: Contents) -> bytes:
    """One frame's bytes, header included."""
    body = msgpack.packb(
        {"v": 1, "conv": contents.conversation, "msgs": contents.messages},
        use_bin_type=True,
    )
    payload = codec.seal(_aad(conversation), zlib.compress(body, 6))
    flags = FLAG_ZLIB | (FLAG_SEALED if codec.enabled else 0)
    return _with_header(conversation, flags, version_of(payload), payload)


def _with_header(
    conversation: bytes, flags: int, version: int, payload: bytes
) -> bytes:
    head = HEADER.pack(MAGIC, FORMAT, flags, version, conversation, len(payload), 0)
    crc = zlib.crc32(payload, zlib.crc32(head[:-4]))
    return head[:-4] + struct.pack(">I", crc) + payload


def decode_frame(codec: Codec, frame: Frame, max_bytes: int) -> Contents:
    """Open, decompress and unpack a checked frame; CorruptData if it lies."""
    body = bytes(codec.open(_aad(frame.conversation), frame.payload))
    try:
        inflater = zlib.decompressobj()
        plain = inflater.decompress(body, max_bytes)
        if inflater.unconsumed_tail:
            raise CorruptData(f"frame inflates past the {max_bytes}-byte maximum")
        data = msgpack.unpackb(plain, raw=False)
        return Contents(data["conv"], list(data["msgs"]))
    except (zlib.error, ValueError, KeyError, TypeError) as exc:
        raise CorruptData(f"frame payload does not decode: {exc}") from None


def reseal_frame(codec: Codec, frame: Frame, max_bytes: int) -> bytes:
    """The frame re-encoded under the current key."""
    return encode_frame(
        codec, frame.conversation, decode_frame(codec, frame, max_bytes)
    )


def raw_frame(frame: Frame) -> bytes:
    return _with_header(
        frame.conversation, frame.flags, frame.key_version, frame.payload
    )


# Reading


def parse_frame(
    data: bytes | memoryview | mmap.mmap, offset: int, max_bytes: int
) -> Frame:
    """The frame at ``offset`` of ``data``; CorruptData naming what is wrong."""
    head = bytes(data[offset : offset + HEADER.size])
    if len(head) < HEADER.size:
        raise CorruptData(f"truncated frame header at offset {offset}")
    magic, fmt, flags, version, conv, length, crc = HEADER.unpack(head)
    if magic != MAGIC:
        raise CorruptData(f"no frame at offset {offset}")
    if fmt != FORMAT:
        raise CorruptData(f"frame at offset {offset} has unknown format {fmt}")
    if length > max_bytes:
        raise CorruptData(
            f"frame at offset {offset} claims {length} bytes, over the "
            f"{max_bytes}-byte maximum"
        )
    payload = bytes(data[offset + HEADER.size : offset + HEADER.size + length])
    if len(payload) < length:
        raise CorruptData(f"frame at offset {offset} is truncated")
    if zlib.crc32(payload, zlib.crc32(head[:-4])) != crc:
        raise CorruptData(f"frame at offset {offset} fails its checksum")
    return Frame(conv, flags, version, payload)


def read_frame(path: Path, offset: int, length: int, max_bytes: int) -> Frame:
    """Read one indexed frame; FileNotFoundError if compaction removed it."""
    if length > max_bytes + HEADER.size:
        raise CorruptData(f"index entry claims a {length}-byte frame")
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read(length)
    return parse_frame(data, 0, max_bytes)


@dataclass(slots=True)
class ScanItem:
    offset: int
    frame: Frame | None
    error: str = ""


def scan_segment(path: Path, max_bytes: int) -> Iterator[ScanItem]:
    """Every frame of a segment in order; damage is reported, then skipped
    by searching for the next magic."""
    if path.stat().st_size == 0:
        return
    with (
        path.open("rb") as handle,
        mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data,
    ):
        offset = 0
        while offset < len(data):
            try:
                frame = parse_frame(data, offset, max_bytes)
            except CorruptData as exc:
                yield ScanItem(offset, None, str(exc))
                found = data.find(MAGIC, offset + 1)
                if found < 0:
                    return
                offset = found
                continue
            yield ScanItem(offset, frame)
            offset += frame.size


# Segment files


def segment_path(directory: Path, number: int) -> Path:
    return directory / f"seg-{number:08d}.gfa"


def list_segments(directory: Path) -> dict[int, Path]:
    found = {}
    for path in directory.glob(_SEGMENT_GLOB):
        try:
            found[int(path.stem[4:])] = path
        except ValueError:
            continue
    return dict(sorted(found.items()))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentWriter:
    """Appends frames to the newest segment; one per process start, so a
    torn tail left by a crash is never written after."""

    def __init__(self, directory: Path, max_segment_bytes: int) -> None:
        self.directory = directory
        self.max_segment_bytes = max_segment_bytes
        self.current: int | None = None

    def append(self, frames: list[bytes]) -> list[tuple[int, int]]:
        """Write frames, fsync once; returns (segment, offset) of each."""
        if not frames:
            return []
        number = self._segment_for(sum(len(f) for f in frames))
        path = segment_path(self.directory, number)
        placed = []
        with path.open("ab") as handle:
            offset = handle.tell()
            for frame in frames:
                placed.append((number, offset))
                handle.write(frame)
                offset += len(frame)
            handle.flush()
            os.fsync(handle.fileno())
        return placed

    def _segment_for(self, size: int) -> int:
        if self.current is not None:
            path = segment_path(self.directory, self.current)
            if path.stat().st_size + size <= self.max_segment_bytes:
                return self.current
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = list_segments(self.directory)
        self.current = max(existing, default=0) + 1
        segment_path(self.directory, self.current).touch()
        _fsync_dir(self.directory)
        return self.current

    def remove(self, number: int) -> None:
        segment_path(self.directory, number).unlink(missing_ok=True)
        _fsync_dir(self.directory)


@contextmanager
def archive_lock(directory: Path, wait: bool = True) -> Iterator[bool]:
    """Cross-process lock for appending, compacting and backing up segments.

    Yields False (and holds nothing) when ``wait`` is off and it is taken.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "lock").open("a") as handle:
        flags = fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(handle.fileno(), flags)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
