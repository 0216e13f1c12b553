"""Word segmentation with the retail dictionary, synonyms and stop words."""

from __future__ import annotations

import logging
import threading
from importlib import resources
from pathlib import Path

import jieba

from .normalize import is_meaningful_char, normalize_text

log = logging.getLogger("goflypy.nlp")

RETAIL_DICT = "retail_dict.txt"
SYNONYMS = "synonyms.txt"

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


class Lexicon:
    """A private jieba tokenizer plus the synonym table; thread-safe once warm."""

    def __init__(
        self,
        dict_paths: list[Path] | None = None,
        synonym_paths: list[Path] | None = None,
    ) -> None:
        self._dict_paths = dict_paths or [_data_path(RETAIL_DICT)]
        self._synonym_paths = synonym_paths or [_data_path(SYNONYMS)]
        self._tokenizer = jieba.Tokenizer()
        self._synonyms: dict[str, str] = {}
        self._shipped: dict[str, str] = {}
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
            # NOTE: words go to this tokenizer only; jieba's global one never sees them.
            for word in {*self._synonyms, *self._synonyms.values()}:
                if len(word) > 1:
                    self._tokenizer.add_word(word, _SYNONYM_FREQ)
            self._ready = True
        log.info("robot lexicon ready: %d synonyms", len(self._synonyms))

    def shipped_synonyms(self) -> dict[str, str]:
        """Return the variant->canonical table of the synonym files."""
        self.warm_up()
        return dict(self._shipped)

    def use_custom(self, synonyms: dict[str, str], words: dict[str, int]) -> None:
        """Replace the admin-added synonyms (variant->canonical) and words.

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
            for word in {*synonyms, *synonyms.values()}:
                if len(word) > 1:
                    wanted.setdefault(word, _SYNONYM_FREQ)
            self._custom_words = {word: freq.get(word) for word in wanted}
            for word, count in wanted.items():
                self._tokenizer.add_word(word, count)
            self._custom_total = sum(wanted.values())
            self._synonyms = {**self._shipped, **synonyms}
        log.info(
            "robot lexicon: %d custom synonyms, %d custom words",
            len(synonyms),
            len(words),
        )

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
