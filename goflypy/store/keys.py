"""Key layout and value encoding.

A conversation id is 16 bytes: 8 bytes of big-endian milliseconds, then 8
random bytes, so ids sort by creation time. A message key is the
conversation id followed by its 8-byte big-endian sequence number, so one
conversation's messages are one contiguous, ordered range. Outside the store
ids travel as 32 lowercase hex characters.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from typing import Any

import msgpack

_SEQ = struct.Struct(">Q")


def now_ms() -> int:
    """UTC epoch milliseconds."""
    return time.time_ns() // 1_000_000


def new_id(ts_ms: int | None = None) -> bytes:
    """A 16-byte id that sorts by time."""
    return _SEQ.pack(now_ms() if ts_ms is None else ts_ms) + os.urandom(8)


def id_hex(raw: bytes) -> str:
    return raw.hex()


def id_bytes(text: str) -> bytes:
    """Parse an id from its hex form; ValueError if it is not one."""
    if len(text) != 32:
        raise ValueError("bad id")
    return bytes.fromhex(text)


def message_key(conversation: bytes, seq: int) -> bytes:
    return conversation + _SEQ.pack(seq)


def seq_of(key: bytes | memoryview) -> int:
    return int(_SEQ.unpack(bytes(key[16:24]))[0])


def token_key(token: str) -> bytes:
    """Secrets are stored only as their SHA-256."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def unpack(buffer: bytes | memoryview) -> Any:
    """Decode straight from an LMDB buffer (or bytes)."""
    return msgpack.unpackb(buffer, raw=False)


def pack_record(record: Any) -> bytes:
    """Encode a slotted dataclass as a msgpack map."""
    return pack({name: getattr(record, name) for name in record.__slots__})


def unpack_record(cls: type[Any], buffer: bytes | memoryview) -> Any:
    """Decode a record, ignoring fields this version does not know."""
    data = unpack(buffer)
    known = cls.__slots__
    return cls(**{name: value for name, value in data.items() if name in known})
