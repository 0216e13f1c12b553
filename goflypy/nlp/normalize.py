"""Text clean-up applied to every FAQ text and every visitor message."""

from __future__ import annotations

import re
import threading
import unicodedata
from functools import lru_cache

from opencc import OpenCC

# Zero-width characters, bidi embeddings/overrides/isolates, soft hyphen, BOM.
_INVISIBLE = re.compile(
    "[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)
_SPACES = re.compile(r"\s+")

_converter: OpenCC | None = None
_converter_lock = threading.Lock()


def _t2s() -> OpenCC:
    """Return the shared traditional-to-simplified converter, built on first use."""
    global _converter
    if _converter is None:
        with _converter_lock:
            if _converter is None:
                _converter = OpenCC("t2s")
    return _converter


@lru_cache(maxsize=4096)
def normalize_text(text: str) -> str:
    """Return ``text`` as NFKC, simplified, lower-case, with invisibles removed.

    Cached: one message passes through here several times on its way.
    """
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", text)
    text = _t2s().convert(text)
    text = text.lower()
    return _SPACES.sub(" ", text).strip()


def is_meaningful_char(char: str) -> bool:
    """Tell whether ``char`` is a letter or digit, not punctuation or a symbol."""
    return unicodedata.category(char)[0] in ("L", "N")


def has_content(text: str) -> bool:
    """Tell whether normalised ``text`` holds at least one letter or digit."""
    return any(is_meaningful_char(char) for char in text)


def is_cjk(char: str) -> bool:
    """Tell whether ``char`` is a CJK unified ideograph."""
    code = ord(char)
    return 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF
