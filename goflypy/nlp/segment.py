"""Word segmentation with the retail dictionary, synonyms and stop words."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import jieba

from .normalize import is_meaningful_char, normalize_text

log = logging.getLogger("goflypy.nlp")

RETAIL_DICT = "retail_dict.txt"
SYNONYMS = "synonyms.txt"
CATEGORIES = "categories.txt"

# Frequency given to synonym variants so jieba keeps each one as a single word.
_SYNONYM_FREQ = 3000

# Words that say nothing about which FAQ entry is meant.
_STOPWORD_TEXT = """
    的 了 吗 呢 啊 呀 吧 哦 哈 嘛 么 啦 哇 噢 嗯 额 呃 哎 诶 喔 滴 咯
    我 你 您 他 她 它 我们 你们 他们 咱们 亲 亲亲 各位
    是 和 与 及 或 也 都 就 很 太 这 那 这个 那个 这些 那些 这里 那里
    请问 请 问下 问一下 一下 麻烦 谢谢 感谢 多谢 你好 您好 在吗 在不在
    hi hello 哈喽 嗨 好的 嗯嗯 一个 个 些 到底 就是 然后
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def _data_path(name: str) -> Path:
    """Return the path of a bundled data file."""
    return Path(str(resources.files("goflypy.data") / name))


def read_synonyms(path: Path) -> dict[str, str]:
    """Read ``canonical variant variant ...`` lines into a variant->canonical map."""
    table: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = [normalize_text(word) for word in line.split()]
        canonical = words[0]
        for variant in words[1:]:
            table[variant] = canonical
    return table


def read_categories(path: Path) -> dict[str, list[str]]:
    """Read ``topic member member ...`` lines into a topic->members map."""
    rules: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        topic, *members = (normalize_text(word) for word in line.split())
        rules.setdefault(topic, []).extend(members)
    return rules


def direct_topics(
    rules: dict[str, list[str]], canonical: Callable[[str], str]
) -> dict[str, tuple[str, ...]]:
    """Return each member's own topics, all words through ``canonical``."""
    direct: dict[str, list[str]] = {}
    for topic, members in rules.items():
        for member in members:
            known = direct.setdefault(canonical(member), [])
            if canonical(topic) not in known:
                known.append(canonical(topic))
    return {member: tuple(topics) for member, topics in direct.items()}


def topic_closure(direct: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Return each member's topics and their topics in turn, nearest first.

    A member that is its own topic, directly or through a loop, is not
    repeated; loops end instead of recursing.
    """
    closure: dict[str, tuple[str, ...]] = {}
    for member, topics in direct.items():
        seen: list[str] = []
        pending = list(topics)
        while pending:
            topic = pending.pop(0)
            if topic == member or topic in seen:
                continue
            seen.append(topic)
            pending.extend(direct.get(topic, ()))
        closure[member] = tuple(seen)
    return closure


class Lexicon:
    """A private jieba tokenizer plus the synonym table; thread-safe once warm."""

    def __init__(
        self,
        dict_paths: list[Path] | None = None,
        synonym_paths: list[Path] | None = None,
        category_paths: list[Path] | None = None,
    ) -> None:
        self._dict_paths = dict_paths or [_data_path(RETAIL_DICT)]
        self._synonym_paths = synonym_paths or [_data_path(SYNONYMS)]
        if category_paths is None:
            category_paths = [_data_path(CATEGORIES)]
        self._category_paths = category_paths
        self._tokenizer = jieba.Tokenizer()
        self._synonyms: dict[str, str] = {}
        self._shipped: dict[str, str] = {}
        # Category rules (topic -> members) and each member's topics.
        self._shipped_rules: dict[str, list[str]] = {}
        self._rules: dict[str, list[str]] = {}
        self._direct: dict[str, tuple[str, ...]] = {}
        self._topics: dict[str, tuple[str, ...]] = {}
        # Admin-added words -> the frequency each had before (None: unknown).
        self._custom_words: dict[str, int | None] = {}
        self._custom_total = 0
        self._ready = False
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Load jieba's dictionary, the retail words and the synonyms (blocking)."""
        with self._lock:
            if self._ready:
                return
            # jieba announces its dictionary build on its own stderr handler.
            logging.getLogger("jieba").setLevel(logging.WARNING)
            self._tokenizer.initialize()
            for path in self._dict_paths:
                # jieba leaves a file it opened itself unclosed; hand it our own.
                with path.open("rb") as handle:
                    self._tokenizer.load_userdict(handle)
            for path in self._synonym_paths:
                self._synonyms.update(read_synonyms(path))
            self._shipped = dict(self._synonyms)
            for path in self._category_paths:
                for topic, members in read_categories(path).items():
                    self._shipped_rules.setdefault(topic, []).extend(members)
            self._use_rules(self._shipped_rules)
            # NOTE: words go to this tokenizer only; jieba's global one never sees them.
            rules = self._shipped_rules
            for word in {*self._synonyms, *self._synonyms.values(), *rules}.union(
                *rules.values()
            ):
                if len(word) > 1:
                    self._tokenizer.add_word(word, _SYNONYM_FREQ)
            self._ready = True
        log.info("robot lexicon ready: %d synonyms", len(self._synonyms))

    def shipped_synonyms(self) -> dict[str, str]:
        """Return the variant->canonical table of the synonym files."""
        self.warm_up()
        return dict(self._shipped)

    def shipped_categories(self) -> dict[str, list[str]]:
        """Return the topic->members rules of the category files."""
        self.warm_up()
        return {topic: list(members) for topic, members in self._shipped_rules.items()}

    def use_custom(
        self,
        synonyms: dict[str, str],
        words: dict[str, int],
        categories: dict[str, list[str]] | None = None,
    ) -> None:
        """Replace the admin-added synonyms (variant->canonical), words and rules.

        ``categories`` maps a topic to its members; an admin rule for a
        shipped topic adds to its members.

        Blocking; the caller validates the entries. Queries running meanwhile
        see either the old or the new vocabulary word by word; FAQ texts that
        use a changed word must be indexed again afterwards.
        """
        self.warm_up()
        with self._lock:
            freq = self._tokenizer.FREQ
            for word, before in self._custom_words.items():
                # A zero frequency keeps the prefix entry jieba may rely on.
                freq[word] = before or 0
            # add_word adds to jieba's total; take ours back out so repeated
            # edits do not skew every word's probability.
            self._tokenizer.total -= self._custom_total
            wanted = dict(words)
            rules = {
                topic: list(members) for topic, members in self._shipped_rules.items()
            }
            for topic, members in (categories or {}).items():
                rules.setdefault(topic, []).extend(members)
            vocabulary = {*synonyms, *synonyms.values()}
            for topic, members in (categories or {}).items():
                vocabulary.update([topic, *members])
            for word in vocabulary:
                if len(word) > 1:
                    wanted.setdefault(word, _SYNONYM_FREQ)
            self._custom_words = {word: freq.get(word) for word in wanted}
            for word, count in wanted.items():
                self._tokenizer.add_word(word, count)
            self._custom_total = sum(wanted.values())
            self._synonyms = {**self._shipped, **synonyms}
            self._use_rules(rules)
        log.info(
            "robot lexicon: %d custom synonyms, %d custom words, %d custom rules",
            len(synonyms),
            len(words),
            len(categories or {}),
        )

    def _use_rules(self, rules: dict[str, list[str]]) -> None:
        """Swap in category ``rules``; the caller holds the lock."""
        self._rules = rules
        self._direct = direct_topics(rules, self.canonical)
        self._topics = topic_closure(self._direct)

    def topics(self, word: str) -> tuple[str, ...]:
        """Return the topics of canonical ``word``, nearest first."""
        return self._topics.get(word, ())

    def enrich(self, tokens: list[str]) -> list[str]:
        """Return canonical ``tokens`` followed by the topics they carry."""
        extra: list[str] = []
        present = set(tokens)
        for word in tokens:
            for topic in self._topics.get(word, ()):
                if topic not in present:
                    present.add(topic)
                    extra.append(topic)
        return tokens + extra if extra else tokens

    def topic_words(self, tokens: list[str]) -> list[str]:
        """Return the topics canonical ``tokens`` name or carry, once each.

        "榴莲" carries 水果 and 生鲜; "生鲜" names its own topic. These are the
        words a category rule lets two texts share.
        """
        found: dict[str, None] = {}
        for word in tokens:
            if word in self._rules:
                found.setdefault(word, None)
            for topic in self._topics.get(word, ()):
                found.setdefault(topic, None)
        return list(found)

    def members(self, tokens: list[str]) -> dict[str, frozenset[str]]:
        """Return, per topic, which of enriched ``tokens`` are listed under it."""
        found: dict[str, set[str]] = {}
        for word in set(tokens):
            for topic in self._direct.get(word, ()):
                found.setdefault(topic, set()).add(word)
        return {topic: frozenset(words) for topic, words in found.items()}

    def canonical(self, word: str) -> str:
        """Return the canonical form of ``word`` (itself when it has none)."""
        return self._synonyms.get(word, word)

    def surface_tokens(self, text: str) -> list[str]:
        """Normalise and segment ``text``; drop punctuation, keep words as typed."""
        if not self._ready:
            self.warm_up()
        words: list[str] = []
        for piece in self._tokenizer.cut(normalize_text(text), HMM=False):
            piece = piece.strip()
            if piece and any(is_meaningful_char(char) for char in piece):
                words.append(piece)
        return words

    def tokens(self, text: str) -> list[str]:
        """Normalise, segment and canonicalise ``text``; punctuation is dropped."""
        return [self.canonical(word) for word in self.surface_tokens(text)]

    def content_words(self, tokens: list[str]) -> list[str]:
        """Return the canonical forms of ``tokens`` that are not stop words."""
        words = (self.canonical(word) for word in tokens)
        return [word for word in words if not is_stopword(word)]


def is_stopword(word: str) -> bool:
    """Tell whether ``word`` carries no topic of its own."""
    return word in STOPWORDS
