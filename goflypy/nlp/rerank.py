"""Second-stage scoring of the nearest FAQ texts, and knowledge-base terms.

The vector index finds about thirty candidates fast; this module re-scores
them by how much of the question's weighted content each candidate covers and
the other way round, with sound-alike words and shared characters counting in
part. It also learns the knowledge base's own terms (pairs of characters the
general dictionary splits but the FAQ always writes together, such as a
product name) so that a question about a sibling of such a term, which the
FAQ does not cover, is handed off instead of being matched on the rest.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from pypinyin import lazy_pinyin

from .normalize import is_cjk

# Share of a FAQ in which a term must appear to count as a core term.
_CORE_SHARE = 0.02
# A term's characters must appear together at least this often.
_TERM_COHESION = 0.8
_TERM_MIN_DOCS = 3
# Partial credit for a word that shares characters with a candidate's word.
_CHAR_CREDIT = 0.5
_SOUND_CREDIT = 0.9
# Weight of the vector cosine against the coverage score.
COSINE_WEIGHT = 2.0


def _pairs(tokens: list[str]) -> set[str]:
    """Return adjacent single-character CJK tokens joined into pairs."""
    return {
        first + second
        for first, second in zip(tokens, tokens[1:], strict=False)
        if len(first) == 1 and len(second) == 1 and is_cjk(first) and is_cjk(second)
    }


@lru_cache(maxsize=1 << 16)
def _sound(word: str) -> str:
    """Return the toneless pinyin of ``word``."""
    return "".join(lazy_pinyin(word))


@dataclass
class KbStats:
    """Word and character-pair statistics of the FAQ texts (thread-safe)."""

    words: Counter[str] = field(default_factory=Counter)
    pairs: Counter[str] = field(default_factory=Counter)
    chars: Counter[str] = field(default_factory=Counter)
    docs: int = 0
    _core: frozenset[str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, raw_tokens: list[str], words: list[str]) -> None:
        """Count one FAQ text: its surface tokens and its content words."""
        with self._lock:
            self.words.update(set(words))
            self.pairs.update(_pairs(raw_tokens))
            self.chars.update({char for token in raw_tokens for char in token})
            self.docs += 1
            self._core = None

    def idf(self, word: str) -> float:
        """Return the smoothed inverse document frequency of ``word``."""
        return math.log((self.docs + 1) / (self.words.get(word, 0) + 1)) + 1.0

    def core_terms(self) -> frozenset[str]:
        """Return the FAQ's own frequent terms that the dictionary splits."""
        with self._lock:
            if self._core is None:
                self._core = frozenset(self._find_core())
            return self._core

    def _find_core(self) -> list[str]:
        """Pick cohesive, frequent character pairs; the caller holds the lock."""
        floor = max(_TERM_MIN_DOCS, _CORE_SHARE * self.docs)
        return [
            pair
            for pair, count in self.pairs.items()
            if count >= floor
            and count >= _TERM_COHESION * min(self.chars[pair[0]], self.chars[pair[1]])
        ]

    def sibling_term(self, raw_tokens: list[str]) -> str | None:
        """Return an unknown term standing where a core term would, else None.

        "借呗" in a FAQ about "花呗": same pattern, another product that the FAQ
        does not cover. A sound-alike ("花贝") is a typo, not a sibling.
        """
        core = self.core_terms()
        pairs = _pairs(raw_tokens)
        if not core or pairs & core:
            return None
        for pair in sorted(pairs):
            if self.pairs.get(pair, 0):
                continue
            for term in core:
                shares = pair[0] == term[0] or pair[1] == term[1]
                if shares and _sound(pair) != _sound(term):
                    return pair
        return None


class _Matcher:
    """Soft word matching between one question and its candidates."""

    def __init__(self, stats: KbStats, query: list[str]) -> None:
        self.stats = stats
        self.query = query

    def similarity(self, word: str, other: str) -> float:
        """Return 1 for the same word, partial credit for near words."""
        if word == other:
            return 1.0
        if len(word) > 1 and len(other) > 1 and _sound(word) == _sound(other):
            return _SOUND_CREDIT
        common = len(set(word) & set(other))
        if not common:
            return 0.0
        return _CHAR_CREDIT * common / max(len(set(word)), len(set(other)))

    def coverage(self, source: list[str], target: list[str]) -> float:
        """Return the IDF-weighted share of ``source`` found in ``target``."""
        if not source or not target:
            return 0.0
        total = sum(self.stats.idf(word) for word in source)
        found = sum(
            self.stats.idf(word) * max(self.similarity(word, other) for other in target)
            for word in source
        )
        return found / total

    def score(self, words: list[str], cosine: float) -> float:
        """Combine both coverages (harmonic mean) with the vector cosine."""
        forward = self.coverage(self.query, words)
        backward = self.coverage(words, self.query)
        both = 2 * forward * backward / (forward + backward) if forward else 0.0
        return (both + COSINE_WEIGHT * cosine) / (1.0 + COSINE_WEIGHT)


def rescore(
    stats: KbStats, query: list[str], candidates: list[tuple[list[str], float]]
) -> list[float]:
    """Return a 0..1 score per (content words, cosine) candidate."""
    matcher = _Matcher(stats, query)
    return [matcher.score(words, cosine) for words, cosine in candidates]
