"""The FAQ robot: intents, retrieval and the answer/suggest/hand-off decision."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..models import FaqEntry
from .embed import Embedder, HashingEmbedder, word_sounds
from .index import FaqIndex, SparseIndex
from .intents import GREETING, HUMAN, detect_intent
from .normalize import has_content, normalize_text
from .rerank import (
    KbStats,
    Matcher,
    blend,
    ceiling,
    combine,
    fuse,
    order_share,
    sequence,
)
from .segment import Lexicon

log = logging.getLogger("goflypy.nlp")

GREETING_REPLY = "您好！我是智能客服，请问有什么可以帮您？"
HUMAN_REPLY = "好的，正在为您转接人工客服，请稍候。"
HANDOFF_REPLY = "这个问题我还不太会回答，已为您转接人工客服，请稍候。"
EMPTY_REPLY = "请问有什么可以帮您？请简单描述一下您的问题。"
SUGGEST_REPLY = "您是不是想问："

TOP_CANDIDATES = 3
# How many nearest entries the second stage re-scores.
RERANK_POOL = 16
# Bump when features or weights change, so saved indexes are rebuilt.
_EMBEDDER_VERSION = "hash-v6"


# A score this high is the question itself, however close the runner-up.
_EXACT = 0.95

# Why the robot held back from the best entry (``Decision.held_back``).
SIBLING_TERM = "sibling_term"
OTHER_GOODS = "other_goods"
WHICH_GOODS = "which_goods"

# Share of its score an entry keeps when it names other goods of the same
# topic than the question (strawberries asked, durians written).
OTHER_GOODS_FACTOR = 0.6


@dataclass(slots=True)
class Thresholds:
    """Scores (cosine, 0..1) at or above which the robot answers or suggests.

    ``margin``: when the runner-up is this close to the best entry, the
    question is ambiguous ("怎么保存" fits every fruit) and the robot
    suggests instead of guessing, unless the best is a near-exact match.
    """

    answer: float = 0.46
    suggest: float = 0.42
    margin: float = 0.02


@dataclass(slots=True)
class Candidate:
    """One FAQ entry the robot considered, with its similarity score."""

    faq_id: str
    question: str
    answer: str
    score: float


@dataclass(slots=True)
class Decision:
    """What the robot does with one visitor message."""

    action: str
    reply: str
    faq_id: str | None = None
    score: float = 0.0
    candidates: list[Candidate] = field(default_factory=list)
    # Why the robot held back from the best entry: SIBLING_TERM (the question
    # names an unknown sibling of one of the FAQ's own terms), OTHER_GOODS (the
    # entry is about other goods of the same topic than the question) or
    # WHICH_GOODS (the best entries are about different goods and the question
    # names none).
    held_back: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


@dataclass(slots=True)
class _Query:
    """One question as the search and the goods rules read it."""

    raw: list[str]  # surface tokens
    tokens: list[str]  # their canonical forms
    goods: dict[str, frozenset[str]]  # Lexicon.members of the enriched tokens


@dataclass(slots=True)
class _State:
    """One consistent generation of embedder, index and entries."""

    embedder: Embedder
    index: FaqIndex
    entries: dict[str, FaqEntry]
    stats: KbStats = field(default_factory=KbStats)
    words: dict[str, list[list[str]]] = field(default_factory=dict)
    # Per entry, the ``rerank.sequence`` string of each text.
    sequences: dict[str, list[str]] = field(default_factory=dict)
    # Per entry, the goods its standard question names, by topic
    # (``Lexicon.members``).
    members: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)
    # Exact lexical index, used instead of the vector index when the
    # embedder is the default hashing one (which it approximates).
    lexical: SparseIndex = field(default_factory=SparseIndex)


def _texts(entry: FaqEntry) -> list[str]:
    """Return the question and its distinct alternatives."""
    texts = [entry.question, *entry.alternatives]
    return [text for text in dict.fromkeys(texts) if text.strip()]


def _exact(embedder: Embedder) -> bool:
    """Tell whether queries go to the exact lexical index, not the vector one.

    The default hashing embedder only approximates the sparse features that
    the lexical index holds exactly, so its vectors are never searched and
    neither built nor saved.
    """
    return isinstance(embedder, HashingEmbedder)


def _by_id(entries: list[FaqEntry]) -> dict[str, FaqEntry]:
    """Return ``entries`` keyed by id."""
    return {entry.faq_id: entry for entry in entries}


def _clamp(score: float) -> float:
    """Return ``score`` rounded and kept within 0..1."""
    return min(1.0, max(0.0, round(score, 4)))


def _other_goods(
    asked: dict[str, frozenset[str]], written: dict[str, frozenset[str]] | None
) -> bool:
    """Tell whether an entry names only other goods of a topic than the question.

    "榴莲能放冰箱吗" against "草莓怎么保存": both name fruit, different fruit.
    An entry about the topic itself ("水果怎么保存") names no member and fits.
    """
    if not written:
        return False
    return any(
        topic in written and not members & written[topic]
        for topic, members in asked.items()
    )


def _sounds_named(text: str, good: str) -> bool:
    """Tell whether ``text`` names ``good`` by its sound (草梅 for 草莓)."""
    sounds = word_sounds(good)
    if not sounds:
        return False
    return f" {' '.join(sounds)} " in f" {' '.join(word_sounds(text))} "


def fingerprint(entries: list[FaqEntry]) -> str:
    """Return a digest of what the index depends on in ``entries``."""
    digest = hashlib.sha256(_EMBEDDER_VERSION.encode())
    for entry in sorted(entries, key=lambda item: item.faq_id):
        for text in (entry.faq_id, *_texts(entry)):
            digest.update(text.encode("utf-8") + b"\x00")
        digest.update(b"\x01")
    return digest.hexdigest()


class Robot:
    """Answers visitor messages from the FAQ; see ``goflypy.nlp`` for the contract."""

    def __init__(
        self,
        thresholds: Thresholds | None = None,
        index_dir: Path | None = None,
        lexicon: Lexicon | None = None,
        dim: int = 1024,
    ) -> None:
        self.thresholds = thresholds or Thresholds()
        self.index_dir = index_dir
        self.lexicon = lexicon or Lexicon()
        self.dim = dim
        self._write_lock = threading.Lock()
        self._state = self._empty_state()

    def warm_up(self) -> None:
        """Load the dictionaries and synonyms (blocking, about a second)."""
        self.lexicon.warm_up()

    def new_embedder(self) -> Embedder:
        """Return a fresh, unfitted embedder; override to plug in another model."""
        return HashingEmbedder(self.lexicon, dim=self.dim)

    def rebuild(self, entries: list[FaqEntry]) -> None:
        """Replace the whole index with ``entries`` (blocking; thread-safe)."""
        started = time.perf_counter()
        with self._write_lock:
            state, loaded = self._load_or_build(list(entries))
            self._state = state
        elapsed = (time.perf_counter() - started) * 1000
        how = "loaded" if loaded else "built"
        log.info("FAQ index %s: %d entries in %.0f ms", how, len(entries), elapsed)

    def upsert(self, entry: FaqEntry) -> None:
        """Add ``entry`` or replace the entry with its id (blocking; thread-safe)."""
        with self._write_lock:
            state = self._state
            texts = _texts(entry)
            # NOTE: corpus statistics only grow between full rebuilds.
            state.embedder.add(texts)
            state.entries[entry.faq_id] = entry
            self._count(state, entry)
            if not _exact(state.embedder):
                state.index.add(entry.faq_id, state.embedder.embed(texts))
        log.debug("FAQ entry %s indexed (%d texts)", entry.faq_id, len(texts))

    def remove(self, faq_id: str) -> None:
        """Forget the entry ``faq_id``; unknown ids are ignored (thread-safe)."""
        with self._write_lock:
            state = self._state
            state.index.remove(faq_id)
            state.entries.pop(faq_id, None)
            state.words.pop(faq_id, None)
            state.sequences.pop(faq_id, None)
            state.members.pop(faq_id, None)
            state.lexical.remove(faq_id)
        log.debug("FAQ entry %s removed", faq_id)

    def decide(self, text: str) -> Decision:
        """Return the robot's decision for one visitor message (blocking CPU work)."""
        intent = detect_intent(text)
        if intent == HUMAN:
            return Decision("human", HUMAN_REPLY)
        if intent == GREETING:
            return Decision("greeting", GREETING_REPLY)
        if not has_content(normalize_text(text)):
            return Decision("handoff", HANDOFF_REPLY)

        state = self._state
        raw = self.lexicon.surface_tokens(text)
        query = self._query(raw)
        candidates = self._search(state, text, query, TOP_CANDIDATES)
        sibling = state.stats.sibling_term(raw)
        if sibling is not None:
            decision = Decision("handoff", HANDOFF_REPLY, None, 0.0, candidates)
            decision.held_back = SIBLING_TERM
        else:
            decision = self._choose(candidates, self.thresholds)
        if decision.action == "answer":
            held_back = self._held_back(state, query, candidates)
            if held_back is not None:
                decision = Decision(
                    "suggest", SUGGEST_REPLY, None, decision.score, candidates
                )
                decision.held_back = held_back
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "robot %s score=%.3f faq=%s held_back=%s sibling=%s top=%s",
                decision.action,
                decision.score,
                decision.faq_id,
                decision.held_back,
                sibling,
                [(c.faq_id, c.score) for c in decision.candidates],
            )
        return decision

    def _held_back(
        self, state: _State, query: _Query, candidates: list[Candidate]
    ) -> str | None:
        """Return why the best entry, good enough to answer, must not be.

        OTHER_GOODS: "释迦怎么保存" against "草莓怎么保存" (scored down in the
        search, but a small FAQ may have nothing closer). WHICH_GOODS: "怎么保存"
        or "水果怎么保存" against "草莓怎么保存" and "芒果怎么保存": which fruit
        is meant is the shopper's to say, not the robot's to guess.
        """
        if candidates[0].score >= _EXACT:
            return None
        tokens, asked = query.tokens, query.goods
        best = state.members.get(candidates[0].faq_id) or {}
        if asked and _other_goods(asked, best):
            return OTHER_GOODS
        if len(candidates) > 1 and self._unnamed_goods(
            state, tokens, asked, best, candidates
        ):
            return WHICH_GOODS
        return None

    @staticmethod
    def _unnamed_goods(
        state: _State,
        tokens: list[str],
        asked: dict[str, frozenset[str]],
        best: dict[str, frozenset[str]],
        candidates: list[Candidate],
    ) -> bool:
        """Tell whether the best entries are about goods the question doesn't name."""
        # The goods the entry names itself, not those its topics stand for.
        own = [good for goods in best.values() for good in goods if good not in best]
        heard = sequence(tokens)
        named = all(
            any(good in goods for goods in asked.values()) or _sounds_named(heard, good)
            for good in own
        )
        if named:
            return False
        for other in candidates[1:]:
            theirs = state.members.get(other.faq_id) or {}
            if any(topic in theirs and theirs[topic] != best[topic] for topic in best):
                return True
        return False

    def search(self, text: str, limit: int = TOP_CANDIDATES) -> list[Candidate]:
        """Return up to ``limit`` FAQ candidates for ``text``, best first."""
        raw = self.lexicon.surface_tokens(text)
        return self._search(self._state, text, self._query(raw), limit)

    def _query(self, raw: list[str]) -> _Query:
        """Read a question's surface tokens once for the search and the rules."""
        lexicon = self.lexicon
        tokens = [lexicon.canonical(word) for word in raw]
        return _Query(raw, tokens, lexicon.members(lexicon.enrich(tokens)))

    def _search(
        self, state: _State, text: str, query: _Query, limit: int
    ) -> list[Candidate]:
        """Rank FAQ entries for ``text``, read as ``query``."""
        lexicon = self.lexicon
        raw, tokens, goods = query.raw, query.tokens, query.goods
        query_seq = sequence(tokens)
        query_len = len(query_seq)
        embedder = state.embedder
        matcher = Matcher(state.stats, lexicon.content_words(raw), lexicon.topics)
        best: dict[str, float] = {}
        pool = max(limit, RERANK_POOL)
        if isinstance(embedder, HashingEmbedder):  # see _exact
            weights = embedder.sparse(tokens, lexicon.topic_words(tokens))
            if not weights:
                return []
            floor = 0.0
            for faq_id, number, cosine in state.lexical.search(weights, pool * 2):
                # Rows come by falling cosine: once even full coverage cannot
                # lift a row past the current top ``limit``, none later can.
                if ceiling(cosine) <= floor:
                    break
                texts = state.words.get(faq_id)
                seqs = state.sequences.get(faq_id)
                if not texts or not seqs or number >= len(texts):
                    continue
                if faq_id not in best and len(best) == pool:
                    break
                # The in-order share costs far less than the coverage: with it,
                # a row that full coverage could not lift past ``floor`` is
                # skipped before the coverage is counted.
                text_len = len(seqs[number])
                order = order_share(query_seq, seqs[number])
                if combine(fuse(1.0, cosine), order, query_len, text_len) <= floor:
                    continue
                fused = fuse(matcher.coverage(texts[number]), cosine)
                score = combine(fused, order, query_len, text_len)
                if goods and _other_goods(goods, state.members.get(faq_id)):
                    score *= OTHER_GOODS_FACTOR
                if score > best.get(faq_id, 0.0):
                    best[faq_id] = score
                    if len(best) >= limit:
                        floor = sorted(best.values(), reverse=True)[limit - 1]
        else:
            vector = embedder.embed([text])[0]
            if not np.any(vector):
                return []
            for faq_id, cosine in state.index.search(vector, pool):
                texts = state.words.get(faq_id)
                seqs = state.sequences.get(faq_id)
                if texts and seqs:
                    score = max(
                        blend(fuse(matcher.coverage(words), cosine), query_seq, seq)
                        for words, seq in zip(texts, seqs, strict=True)
                    )
                    if goods and _other_goods(goods, state.members.get(faq_id)):
                        score *= OTHER_GOODS_FACTOR
                    best[faq_id] = score

        scored = [
            (score, state.entries[faq_id])
            for faq_id, score in best.items()
            if faq_id in state.entries
        ]
        scored.sort(key=lambda item: -item[0])
        return [
            Candidate(entry.faq_id, entry.question, entry.answer, _clamp(score))
            for score, entry in scored[:limit]
        ]

    def _count(self, state: _State, entry: FaqEntry) -> None:
        """Record the content words of ``entry`` and count them into the stats."""
        embedder = state.embedder
        texts = []
        seqs = []
        rows = []
        goods: dict[str, frozenset[str]] | None = None
        for text in _texts(entry):
            raw = self.lexicon.surface_tokens(text)
            words = self.lexicon.content_words(raw)
            tokens = [self.lexicon.canonical(word) for word in raw]
            seqs.append(sequence(tokens))
            if goods is None:  # the standard question says what the entry is about
                goods = self.lexicon.members(self.lexicon.enrich(tokens))
            state.stats.add(raw, words)
            texts.append(words)
            if isinstance(embedder, HashingEmbedder):
                rows.append(embedder.sparse(tokens, self.lexicon.topic_words(tokens)))
        state.words[entry.faq_id] = texts
        state.sequences[entry.faq_id] = seqs
        state.members[entry.faq_id] = goods or {}
        state.lexical.add(entry.faq_id, rows)

    @staticmethod
    def _choose(candidates: list[Candidate], thresholds: Thresholds) -> Decision:
        """Turn ranked candidates into an action by the thresholds."""
        if not candidates:
            return Decision("handoff", HANDOFF_REPLY)
        best = candidates[0]
        runner_up = candidates[1].score if len(candidates) > 1 else 0.0
        is_clear = best.score >= _EXACT or best.score - runner_up > thresholds.margin
        if best.score >= thresholds.answer and is_clear:
            return Decision("answer", best.answer, best.faq_id, best.score, candidates)
        if best.score >= thresholds.suggest:
            return Decision("suggest", SUGGEST_REPLY, None, best.score, candidates)
        return Decision("handoff", HANDOFF_REPLY, None, best.score, candidates)

    def _empty_state(self) -> _State:
        """Return a state with no entries."""
        embedder = self.new_embedder()
        embedder.fit([])
        return _State(embedder, FaqIndex(embedder.dim), {})

    def _build(self, entries: list[FaqEntry]) -> _State:
        """Embed and index ``entries`` from scratch."""
        embedder = self.new_embedder()
        embedder.fit([text for entry in entries for text in _texts(entry)])
        if _exact(embedder):
            index = FaqIndex(embedder.dim)
        else:
            total = sum(len(_texts(entry)) for entry in entries)
            index = FaqIndex(embedder.dim, capacity=total + 16)
            for entry in entries:
                index.add(entry.faq_id, embedder.embed(_texts(entry)))
        return self._with_stats(_State(embedder, index, _by_id(entries)))

    def _with_stats(self, state: _State) -> _State:
        """Fill the second-stage statistics of ``state`` from its entries."""
        for entry in state.entries.values():
            self._count(state, entry)
        return state

    def _vocabulary_stamp(self) -> str:
        """Return a digest of the synonyms and words the lexicon now uses.

        Saved corpus statistics are only valid for the vocabulary they were
        counted with, so an edited synonym table forces a rebuild.
        """
        self.lexicon.warm_up()
        digest = hashlib.sha256()
        for name in ("_synonyms", "_custom_words", "_topics"):
            table = getattr(self.lexicon, name, None) or {}
            for key, value in sorted(table.items(), key=lambda item: item[0]):
                digest.update(f"{key}\x00{value}\x01".encode())
            digest.update(b"\x02")
        return digest.hexdigest()[:16]

    def _load_or_build(self, entries: list[FaqEntry]) -> tuple[_State, bool]:
        """Reuse the saved index when it matches ``entries``; else build and save."""
        stamp = f"{fingerprint(entries)}:{self.dim}:{self._vocabulary_stamp()}"
        if self.index_dir is not None:
            state = self._load(stamp, entries)
            if state is not None:
                return state, True

        state = self._build(entries)
        if self.index_dir is not None:
            extra = {"fingerprint": stamp, "embedder": state.embedder.state()}
            try:
                state.index.save(self.index_dir, extra)
            except OSError as error:
                log.warning("FAQ index not saved to %s: %s", self.index_dir, error)
        return state, False

    def _load(self, stamp: str, entries: list[FaqEntry]) -> _State | None:
        """Return the saved state if its fingerprint is ``stamp``, else None."""
        assert self.index_dir is not None
        try:
            index, extra = FaqIndex.load(self.index_dir)
            if extra.get("fingerprint") != stamp:
                log.info("saved FAQ index is stale; rebuilding")
                return None
            embedder = self.new_embedder()
            embedder.load_state(extra["embedder"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            log.warning("saved FAQ index unreadable (%s); rebuilding", error)
            return None
        return self._with_stats(_State(embedder, index, _by_id(entries)))
