"""Text to vector: the embedder interface and the default offline embedder."""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
from pypinyin import lazy_pinyin

from .normalize import is_cjk
from .segment import Lexicon, is_stopword

# Share of the final cosine carried by each feature family: content words,
# content characters, every character (stop words included), character pairs,
# the toneless pinyin of each character and of each whole word (measured, no
# gain: off), and the topics category rules give (榴莲 -> 水果, 生鲜). Chosen
# on a labelled dev split and the project's retail set.
DEFAULT_WEIGHTS: dict[str, float] = {
    "w": 0.3,
    "c": 2.0,
    "a": 0.3,
    "b": 0.3,
    "p": 0.5,
    "s": 0.0,
    "t": 0.6,
}


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 rows of width ``dim``.

    ``fit`` sees every FAQ text at a full rebuild and ``add`` each text added
    later; a model that needs no corpus statistics may ignore both. A text
    sharing nothing with the fitted corpus may embed to the zero vector, which
    the robot reads as "meaningless".
    """

    dim: int

    def fit(self, texts: list[str]) -> None: ...

    def add(self, texts: list[str]) -> None: ...

    def embed(self, texts: list[str]) -> np.ndarray: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...


@lru_cache(maxsize=1 << 16)
def word_sounds(word: str) -> tuple[str, ...]:
    """Return the toneless pinyin of each CJK character of ``word`` (cached)."""
    chars = "".join(char for char in word if is_cjk(char))
    return tuple(lazy_pinyin(chars)) if chars else ()


def token_features(
    tokens: list[str], topics: list[str] | None = None
) -> dict[str, list[str]]:
    """Split canonical surface ``tokens`` into the feature families.

    ``w`` content words, ``c`` their CJK characters, ``a`` the CJK characters
    of every token, ``b`` adjacent content-character pairs, ``p`` toneless
    pinyin per content character and ``s`` per content word of two or more
    characters, so sound-alike typos (东结/冻结) still meet; ``t`` the
    ``topics`` of the text (``Lexicon.topic_words``).
    """
    words = [word for word in tokens if not is_stopword(word)]
    content = "".join(words)
    chars = [char for char in content if is_cjk(char)]
    every = [char for word in tokens for char in word if is_cjk(char)]
    bigrams = [
        content[i : i + 2]
        for i in range(len(content) - 1)
        if is_cjk(content[i]) and is_cjk(content[i + 1])
    ]
    sounds = [word_sounds(word) for word in words]
    pinyin = [sound for word_sound in sounds for sound in word_sound]
    whole = ["".join(word_sound) for word_sound in sounds if len(word_sound) > 1]
    return {
        "w": words,
        "c": chars,
        "a": every,
        "b": bigrams,
        "p": pinyin,
        "s": whole,
        "t": list(topics or ()),
    }


def _features(lexicon: Lexicon, text: str) -> dict[str, list[str]]:
    """Return the feature families of ``text``."""
    tokens = lexicon.tokens(text)
    return token_features(tokens, lexicon.topic_words(tokens))


@lru_cache(maxsize=1 << 17)
def _bucket(feature: str, dim: int) -> tuple[int, float]:
    """Return a stable hash bucket and sign for ``feature``."""
    code = zlib.crc32(feature.encode("utf-8"))
    return code % dim, 1.0 if code & 0x80000000 else -1.0


class HashingEmbedder:
    """IDF-weighted words, characters, bigrams and pinyin hashed to ``dim`` floats."""

    def __init__(
        self,
        lexicon: Lexicon,
        dim: int = 1024,
        weights: dict[str, float] | None = None,
    ) -> None:
        self.dim = dim
        self.lexicon = lexicon
        self.weights = dict(weights or DEFAULT_WEIGHTS)
        self._df: Counter[str] = Counter()
        self._docs = 0

    def fit(self, texts: list[str]) -> None:
        """Recount document frequencies over ``texts``."""
        self._df = Counter()
        self._docs = 0
        self.add(texts)

    def add(self, texts: list[str]) -> None:
        """Count ``texts`` into the document frequencies."""
        for text in texts:
            self._df.update(set(self._keys(text)))
            self._docs += 1

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return one normalised row per text; zero rows for unknown content."""
        rows = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            tokens = self.lexicon.tokens(text)
            weights = self.sparse(tokens, self.lexicon.topic_words(tokens))
            self.hash_into(rows[row], weights)
        return rows

    def sparse(
        self, tokens: list[str], topics: list[str] | None = None
    ) -> dict[str, float]:
        """Return the unit-length feature weights of canonical ``tokens``.

        The dot product of two of these is the exact cosine that the hashed
        rows approximate; an empty dict stands for the zero vector.
        """
        return self._weigh(token_features(tokens, topics))

    def hash_into(self, out: np.ndarray, weights: dict[str, float]) -> None:
        """Write the hashed, normalised row of ``weights`` into ``out``."""
        cells: dict[int, float] = {}
        for key, amount in weights.items():
            index, sign = _bucket(key, self.dim)
            cells[index] = cells.get(index, 0.0) + sign * amount
        for index, amount in cells.items():
            out[index] = amount
        length = float(np.linalg.norm(out))
        if length > 0.0:
            out /= length

    def state(self) -> dict[str, Any]:
        """Return the corpus statistics for saving."""
        return {"df": dict(self._df), "docs": self._docs, "dim": self.dim}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore statistics saved by ``state``."""
        if state["dim"] != self.dim:
            raise ValueError("saved embedder width differs")
        self._df = Counter(state["df"])
        self._docs = int(state["docs"])

    def _keys(self, text: str) -> Iterable[str]:
        """Yield every prefixed feature of ``text``."""
        for family, values in _features(self.lexicon, text).items():
            for value in values:
                yield f"{family}:{value}"

    def _weigh(self, families: dict[str, list[str]]) -> dict[str, float]:
        """Return IDF weights per feature, each family scaled to its share."""
        df = self._df
        known = any(
            f"{family}:{value}" in df
            for family in ("w", "b")
            for value in families[family]
        )
        if not known:
            return {}

        log_docs = math.log(self._docs + 1)
        weights: dict[str, float] = {}
        for family, values in families.items():
            share = self.weights.get(family, 0.0)
            if not values or share <= 0.0:
                continue
            part: dict[str, float] = {}
            for value in values:
                key = f"{family}:{value}"
                seen = df.get(key, 0)
                # A feature no FAQ text has cannot meet any; it would only
                # shrink the family's share of this vector.
                if seen:
                    part[key] = log_docs - math.log(seen + 1) + 1.0
            if part:
                scale = math.sqrt(share / sum(v * v for v in part.values()))
                for key, amount in part.items():
                    weights[key] = amount * scale
        length = math.sqrt(sum(v * v for v in weights.values()))
        return {key: amount / length for key, amount in weights.items()}
