"""Text made safe to display: no control or bidi characters.

Messages are stored verbatim; everything that leaves on a socket passes
through ``clean_frame`` first (the hub does it), so a visitor cannot reverse
the direction of an agent's screen with U+202E or hide text behind
terminal escapes. Tab and line feed stay: they are how people write.
"""

from __future__ import annotations

import re
from typing import Any

_STRIPPED = (
    [c for c in range(0x20) if c not in (0x09, 0x0A)]
    + list(range(0x7F, 0xA0))
    + [0x061C, 0x200E, 0x200F]
    + list(range(0x202A, 0x202F))
    + list(range(0x2066, 0x206A))
)
_TABLE = dict.fromkeys(_STRIPPED)

# In JSON text (ensure_ascii off) C0 controls appear as escapes, the rest raw.
# A literal backslash before b, f or r also matches: that only costs a rescan.
_DIRTY_JSON = re.compile(
    r"[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
    r"|\\u00[01]|\\[bfr]"
)


def clean(text: str) -> str:
    """``text`` without control (except tab and newline) or bidi characters."""
    return text.translate(_TABLE)


def clean_frame(value: Any) -> Any:
    """A copy of a JSON-ready value with every string cleaned."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {key: clean_frame(item) for key, item in value.items()}
    if isinstance(value, list):
        return [clean_frame(item) for item in value]
    return value


def is_dirty(encoded: str) -> bool:
    """Whether JSON text may hold characters that ``clean`` removes."""
    return _DIRTY_JSON.search(encoded) is not None
