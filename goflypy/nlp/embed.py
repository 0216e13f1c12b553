"""Text to vector: the embedder interface and the default offline embedder."""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np
from pypinyin import lazy_pinyin

from .normalize import is_cjk
from .segment import Lexicon, is_stopword

# Share of the final cosine carried by each feature family.
DEFAULT_WEIGHTS: dict[str, float] = {"w": 0.3, "c": 1.0, "b": 0.3, "p": 0.3}


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


def _features(lexicon: Lexicon, text: str) -> dict[str, list[str]]:
    """Split ``text`` into word, character, bigram and pinyin features."""
    words = [word for word in lexicon.tokens(text) if not is_stopword(word)]
    chars = [char for word in words for char in word if is_cjk(char)]
    bigrams: list[str] = []
    for word_a, word_b in zip(words, words[1:] + [""], strict=True):
        run = word_a + word_b[:1]
        bigrams.extend(
            run[i : i + 2]
            for i in range(len(word_a))
            if i + 1 < len(run) and is_cjk(run[i]) and is_cjk(run[i + 1])
        )
    # Toneless pinyin per character lets sound-alike typos (东结/冻结) still meet.
    pinyin = lazy_pinyin("".join(chars)) if chars else []
    return {"w": words, "c": chars, "b": bigrams, "p": pinyin}


def _bucket(feature: str, dim: int) -> tuple[int, float]:
    """Return a stable hash bucket and sign for ``feature``."""
    code = zlib.crc32(feature.encode("utf-8"))
    return code % dim, 1.0 if code & 0x80000000 else -1.0


class HashingEmbedder:
    """IDF-weighted words, characters, bigrams and pinyin hashed to ``dim`` floats."""

    def __init__(
        self,
        lexicon: Lexicon,
        dim: int = 2048,
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
            self._fill(rows[row], text)
        return rows

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

    def _idf(self, key: str) -> float:
        """Return the smoothed inverse document frequency of ``key``."""
        return math.log((self._docs + 1) / (self._df.get(key, 0) + 1)) + 1.0

    def _fill(self, out: np.ndarray, text: str) -> None:
        """Write the vector of ``text`` into ``out`` in place."""
        families = _features(self.lexicon, text)
        known = any(
            f"{family}:{value}" in self._df
            for family in ("w", "b")
            for value in families[family]
        )
        if not known:
            return

        for family, values in families.items():
            weight = self.weights.get(family, 0.0)
            if not values or weight <= 0.0:
                continue
            counts = Counter(values)
            keys = {value: f"{family}:{value}" for value in counts}
            part = {
                value: (1.0 + math.log(count)) * self._idf(keys[value])
                for value, count in counts.items()
            }
            norm = math.sqrt(sum(v * v for v in part.values()))
            scale = math.sqrt(weight) / norm
            for value, amount in part.items():
                index, sign = _bucket(keys[value], self.dim)
                out[index] += sign * amount * scale

        length = float(np.linalg.norm(out))
        if length > 0.0:
            out /= length
