"""The knowledge base as admins edit it: the store and the robot kept in step.

Every change is committed to the store first; then one follower task brings
the robot's index in line. Single edits are applied incrementally
(``Robot.upsert`` / ``Robot.remove``, reading the entry back from the store so
the newest version always wins) ahead of bulk work; vocabulary changes and
imports from the command line rebuild the whole index in a worker thread
while queries keep using the previous one. The custom vocabulary is synonym
groups, dictionary words and category rules. The saved index lives in a
directory named after the custom vocabulary, so a restart can only reuse an
index built with the same words; the robot rebuilds it when the entries
differ.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .errors import BadRequest, Conflict, NotFound
from .faqfile import read_faq_file, write_faq_file
from .log import nlp as log
from .models import FaqEntry
from .nlp import Decision, Robot
from .nlp.normalize import has_content, normalize_text
from .store import CategoryRule, DictWord, Store, SynonymGroup
from .vocabulary import Vocabulary, usable_vocabulary, with_alternative

# How many queued entries one worker-thread call indexes; between calls
# single edits jump the queue.
INDEX_CHUNK = 25
# How long an edit's response waits for the index before saying "pending".
INDEX_WAIT_S = 5.0
# A vocabulary change touching more of the FAQ than this rebuilds it whole.
REBUILD_SHARE = 0.3
# Seconds without edits after which incremental changes are folded into a
# full rebuild: corpus statistics only grow between rebuilds, so until then
# the live index scores a little differently from the one a restart builds.
SETTLE_S = 30.0
# Agents' suggestions below this share of the suggest threshold are noise.
SUGGESTION_FLOOR = 0.5
_LEX_PREFIX = "lex-"


class KnowledgeBase:
    """Edits of FAQ entries and vocabulary, and the index follower."""

    def __init__(self, store: Store, robot: Robot) -> None:
        self.store = store
        self.robot = robot
        self.index_root = robot.index_dir
        self._urgent: dict[str, None] = {}
        self._bulk: dict[str, None] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._rebuild_waiters: list[asyncio.Future[None]] = []
        self._rebuild_wanted = False
        self._vocabulary_waiters: list[asyncio.Future[None]] = []
        # The custom vocabulary the robot uses now.
        self._applied = Vocabulary({}, {}, {})
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._edit_lock: asyncio.Lock | None = None
        # Incremental changes not yet folded into a full rebuild.
        self._unsettled = False
        self.busy = False

    # Start-up and shut-down

    def prepare_blocking(self) -> int:
        """Load the vocabulary and the index (blocking; run it in a thread)."""
        self.robot.warm_up()
        entries = self.store.list_faq()
        self._apply_vocabulary_and_rebuild(entries)
        return len(entries)

    def start(self) -> None:
        """Start the follower on the running loop."""
        self._wake = asyncio.Event()
        self._edit_lock = asyncio.Lock()
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    @property
    def pending(self) -> int:
        queued = len(self._urgent) + len(self._bulk) + len(self._vocabulary_waiters)
        return queued + int(self._rebuild_wanted)

    # FAQ entries

    async def create_entry(self, entry: FaqEntry) -> bool:
        """Store a new entry; Conflict if the id is taken. True once indexed."""
        async with self._locked():
            if self.store.get_faq(entry.faq_id) is not None:
                raise Conflict(f"编号“{entry.faq_id}”已存在")
            entry.updated = 0
            await self.store.put_faq([entry])
        return await self.entries_changed([entry.faq_id])

    async def update_entry(self, entry: FaqEntry) -> bool:
        """Replace an existing entry; NotFound if it is gone. True once indexed."""
        async with self._locked():
            if self.store.get_faq(entry.faq_id) is None:
                raise NotFound(f"条目“{entry.faq_id}”不存在")
            entry.updated = 0
            await self.store.put_faq([entry])
        return await self.entries_changed([entry.faq_id])

    async def delete_entry(self, faq_id: str) -> bool:
        async with self._locked():
            if not await self.store.delete_faq(faq_id):
                raise NotFound(f"条目“{faq_id}”不存在")
        return await self.entries_changed([faq_id])

    async def add_alternative(self, faq_id: str, text: str) -> FaqEntry:
        """Add ``text`` as another phrasing of ``faq_id`` (no-op if it has it)."""
        async with self._locked():
            entry = self.store.get_faq(faq_id)
            if entry is None:
                raise NotFound(f"条目“{faq_id}”不存在")
            if with_alternative(entry, text):
                entry.updated = 0
                await self.store.put_faq([entry])
        await self.entries_changed([faq_id])
        return entry

    async def import_entries(
        self, entries: list[FaqEntry], *, replace: bool
    ) -> dict[str, int]:
        """Store imported entries in one commit; index them in the background."""
        async with self._locked():
            before = await asyncio.to_thread(self._ids) if replace else set()
            for entry in entries:
                entry.updated = 0
            await self.store.put_faq(entries, replace=replace)
        ids = [entry.faq_id for entry in entries]
        removed = sorted(before - set(ids))
        self._mark([*ids, *removed], urgent=False)
        return {"imported": len(ids), "removed": len(removed)}

    async def entries_changed(self, faq_ids: Iterable[str]) -> bool:
        """Queue ids for the index and wait a little; True if indexed in time."""
        futures = self._mark(faq_ids, urgent=True)
        return await _wait_for(futures)

    # Vocabulary

    async def put_synonym_group(
        self, group: SynonymGroup, replaces: str | None
    ) -> bool:
        """Store a group; True once the index follows it."""
        await self.store.put_synonym_group(group, replaces)
        return await self.vocabulary_changed()

    async def delete_synonym_group(self, canonical: str) -> bool:
        if not await self.store.delete_synonym_group(canonical):
            raise NotFound(f"同义词组“{canonical}”不存在")
        return await self.vocabulary_changed()

    async def put_word(self, word: DictWord) -> bool:
        await self.store.put_word(word)
        return await self.vocabulary_changed()

    async def delete_word(self, word: str) -> bool:
        if not await self.store.delete_word(word):
            raise NotFound(f"词语“{word}”不存在")
        return await self.vocabulary_changed()

    async def put_category_rule(self, rule: CategoryRule, replaces: str | None) -> bool:
        """Store a category rule; True once the index follows it."""
        await self.store.put_category_rule(rule, replaces)
        return await self.vocabulary_changed()

    async def delete_category_rule(self, topic: str) -> bool:
        if not await self.store.delete_category_rule(topic):
            if topic in self.robot.lexicon.shipped_categories():
                raise BadRequest(
                    f"“{topic}”是内置类别，不能删除；可以为它添加自定义成员"
                )
            raise NotFound(f"类别规则“{topic}”不存在")
        return await self.vocabulary_changed()

    async def vocabulary_changed(self) -> bool:
        """Re-index what the vocabulary change touches; True once done in time."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._vocabulary_waiters.append(future)
        self._poke()
        return await _wait_for([future])

    def request_rebuild(self) -> asyncio.Future[None]:
        """Ask for a full rebuild (vocabulary or outside import changed)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._rebuild_waiters.append(future)
        self._rebuild_wanted = True
        self._poke()
        return future

    # Robot

    async def decide(self, text: str) -> Decision:
        return await asyncio.to_thread(self.robot.decide, text)

    async def suggest(self, text: str, limit: int = 3) -> list[dict[str, Any]]:
        """The best entries for ``text`` that are worth an agent's look."""
        candidates = await asyncio.to_thread(self.robot.search, text, limit)
        floor = self.robot.thresholds.suggest * SUGGESTION_FLOOR
        return [
            {
                "faq_id": c.faq_id,
                "question": c.question,
                "answer": c.answer,
                "score": c.score,
            }
            for c in candidates
            if c.score >= floor
        ]

    # Files

    async def export_bytes(self, suffix: str) -> bytes:
        """The whole FAQ as a .csv or .jsonl file's bytes."""
        return await asyncio.to_thread(self._export, suffix)

    async def parse_upload(self, data: bytes, name: str) -> list[FaqEntry]:
        """Read an uploaded file; FaqFileError listing every bad line.

        Rows without an id get new ones that no stored entry has.
        """
        return await asyncio.to_thread(_read_file, data, name, self._has_entry)

    def _has_entry(self, faq_id: str) -> bool:
        return self.store.get_faq(faq_id) is not None

    # The follower

    def _mark(self, faq_ids: Iterable[str], *, urgent: bool) -> list[Any]:
        target = self._urgent if urgent else self._bulk
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for faq_id in faq_ids:
            target[faq_id] = None
            if urgent:
                future: asyncio.Future[None] = loop.create_future()
                self._waiters.setdefault(faq_id, []).append(future)
                futures.append(future)
        self._poke()
        return futures

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _locked(self) -> asyncio.Lock:
        if self._edit_lock is None:
            self._edit_lock = asyncio.Lock()
        return self._edit_lock

    async def _follow(self) -> None:
        assert self._wake is not None
        while True:
            if self._unsettled:
                try:
                    await asyncio.wait_for(self._wake.wait(), SETTLE_S)
                except TimeoutError:
                    log.info("FAQ edits settled; rebuilding the index in full")
                    self._rebuild_wanted = True
            else:
                await self._wake.wait()
            self._wake.clear()
            while self.pending:
                self.busy = True
                try:
                    await self._step()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("FAQ index update failed")
            self.busy = False

    async def _step(self) -> None:
        """One unit of index work: a rebuild, or a chunk of changed ids."""
        if self._rebuild_wanted:
            self._rebuild_wanted = False
            waiters, self._rebuild_waiters = self._rebuild_waiters, []
            self._unsettled = False
            try:
                await asyncio.to_thread(self._rebuild_from_store)
            finally:
                _resolve(waiters)
            return
        self._unsettled = True
        if self._vocabulary_waiters:
            waiters, self._vocabulary_waiters = self._vocabulary_waiters, []
            try:
                await asyncio.to_thread(self._update_vocabulary)
            finally:
                _resolve(waiters)
            return

        source = self._urgent or self._bulk
        chunk = list(source)[:INDEX_CHUNK]
        for faq_id in chunk:
            del source[faq_id]
        waiters = [f for faq_id in chunk for f in self._waiters.pop(faq_id, [])]
        current = {faq_id: self.store.get_faq(faq_id) for faq_id in chunk}
        try:
            await asyncio.to_thread(self._apply, current)
        finally:
            _resolve(waiters)

    def _ids(self) -> set[str]:
        return {entry.faq_id for entry in self.store.list_faq()}

    def _export(self, suffix: str) -> bytes:
        entries = sorted(self.store.list_faq(), key=lambda entry: entry.faq_id)
        return _write_file(entries, suffix)

    def _rebuild_from_store(self) -> None:
        self._apply_vocabulary_and_rebuild(self.store.list_faq())

    def _apply(self, current: dict[str, FaqEntry | None]) -> None:
        for faq_id, entry in current.items():
            try:
                if entry is None:
                    self.robot.remove(faq_id)
                else:
                    self.robot.upsert(entry)
            except Exception:  # one bad entry must not hold up the others
                log.exception("FAQ entry %s could not be indexed", faq_id)

    def _load_vocabulary(self) -> Vocabulary:
        """The stored custom vocabulary that fits (blocking)."""
        lexicon = self.robot.lexicon
        try:
            return usable_vocabulary(
                lexicon.shipped_synonyms(),
                self.store.list_synonyms(),
                self.store.list_words(),
                lexicon.shipped_categories(),
                self.store.list_categories(),
            )
        except Exception:  # the robot keeps working on the shipped words
            log.exception("custom vocabulary unreadable; using the shipped one")
            return Vocabulary({}, {}, {})

    def _update_vocabulary(self) -> None:
        """Blocking: apply the stored vocabulary, re-index the entries it touches.

        A whole rebuild only when most of the FAQ is touched.
        """
        vocabulary = self._load_vocabulary()
        before = self._applied
        changed = _changed(before.synonyms, vocabulary.synonyms) | _changed(
            before.words, vocabulary.words
        )
        lexicon = self.robot.lexicon
        shipped_rules = lexicon.shipped_categories()
        self._use(vocabulary)
        changed |= _changed_rules(
            _with_shipped(shipped_rules, before.categories),
            _with_shipped(shipped_rules, vocabulary.categories),
            {**lexicon.shipped_synonyms(), **before.synonyms, **vocabulary.synonyms},
        )
        if not changed:
            return
        entries = self.store.list_faq()
        touched = [entry for entry in entries if _mentions(entry, changed)]
        if len(touched) > REBUILD_SHARE * len(entries):
            self._apply_vocabulary_and_rebuild(entries)
            return
        self._apply({entry.faq_id: entry for entry in touched})
        log.info("vocabulary change re-indexed %d FAQ entries", len(touched))

    def _use(self, vocabulary: Vocabulary) -> None:
        """Hand ``vocabulary`` to the robot's lexicon (blocking)."""
        synonyms, words, categories = vocabulary
        self.robot.lexicon.use_custom(synonyms, words, categories)
        self._applied = vocabulary

    def _apply_vocabulary_and_rebuild(self, entries: list[FaqEntry]) -> None:
        """Blocking: load the custom vocabulary, then rebuild for it."""
        started = time.perf_counter()
        vocabulary = self._load_vocabulary()
        self._use(vocabulary)
        if self.index_root is not None:
            self.robot.index_dir = self._index_dir(vocabulary)
        self.robot.rebuild(entries)
        if self.index_root is not None:
            _drop_other_indexes(self.index_root, self.robot.index_dir)
        log.info(
            "FAQ index ready: %d entries in %.0f ms",
            len(entries),
            (time.perf_counter() - started) * 1000,
        )

    def _index_dir(self, vocabulary: Vocabulary) -> Path:
        assert self.index_root is not None
        synonyms, words, categories = vocabulary
        if not synonyms and not words and not categories:
            return self.index_root
        digest = hashlib.sha256()
        for variant, canonical in sorted(synonyms.items()):
            digest.update(f"s\0{variant}\0{canonical}\n".encode())
        for word, freq in sorted(words.items()):
            digest.update(f"w\0{word}\0{freq}\n".encode())
        for topic, members in sorted(categories.items()):
            digest.update(f"c\0{topic}\0{chr(0).join(members)}\n".encode())
        return self.index_root / (_LEX_PREFIX + digest.hexdigest()[:16])


async def record_unanswered(
    store: Store, text: str, decision: Decision, conversation_id: str
) -> None:
    """Keep a handed-off question for the admin's list (empty input is not)."""
    normalized = normalize_text(text)
    if not has_content(normalized):
        return
    candidates = [
        {"faq_id": c.faq_id, "question": c.question, "score": c.score}
        for c in decision.candidates
    ]
    await store.record_unanswered(
        text,
        normalized,
        action=decision.action,
        score=decision.score,
        candidates=candidates,
        conversation_id=conversation_id,
    )


def _changed(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    """Words whose mapping differs between ``old`` and ``new``, with their targets."""
    found: set[str] = set()
    for key in old.keys() | new.keys():
        if old.get(key) != new.get(key):
            found.add(key)
            found.update(v for v in (old.get(key), new.get(key)) if isinstance(v, str))
    return found


def _with_shipped(
    shipped: dict[str, list[str]], custom: dict[str, list[str]]
) -> dict[str, list[str]]:
    """The rules the lexicon uses: custom members added to the shipped ones."""
    rules = {topic: list(members) for topic, members in shipped.items()}
    for topic, members in custom.items():
        rules.setdefault(topic, []).extend(members)
    return rules


def _changed_rules(
    old: dict[str, list[str]], new: dict[str, list[str]], synonyms: dict[str, str]
) -> set[str]:
    """Words whose topics differ between the rule sets ``old`` and ``new``.

    That is each topic that gained or lost members, those members, the words
    below them (their topics' topics changed too), and every synonym of
    these words (``synonyms``: variant->canonical).
    """
    found: set[str] = set()
    moved: set[str] = set()
    for topic in old.keys() | new.keys():
        differ = set(old.get(topic, ())) ^ set(new.get(topic, ()))
        if differ:
            found.add(topic)
            moved |= differ
    # Members by canonical topic, in either rule set, as the lexicon reads them.
    below: dict[str, set[str]] = {}
    for rules in (old, new):
        for topic, members in rules.items():
            below.setdefault(synonyms.get(topic, topic), set()).update(members)
    pending = list(moved)
    while pending:
        word = pending.pop()
        for member in below.get(synonyms.get(word, word), ()):
            if member not in moved:
                moved.add(member)
                pending.append(member)
    found |= moved
    found |= {synonyms.get(word, word) for word in found}
    found |= {variant for variant, word in synonyms.items() if word in found}
    return found


def _mentions(entry: FaqEntry, words: set[str]) -> bool:
    """Whether a text of ``entry`` contains one of ``words`` (normalised)."""
    for text in (entry.question, *entry.alternatives):
        normal = normalize_text(text)
        if any(word in normal for word in words):
            return True
    return False


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


async def _wait_for(futures: list[Any]) -> bool:
    if not futures:
        return True
    done, _pending = await asyncio.wait(futures, timeout=INDEX_WAIT_S)
    return len(done) == len(futures)


def _drop_other_indexes(root: Path, keep: Path | None) -> None:
    """Remove saved indexes built for an earlier custom vocabulary."""
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.is_dir() and path.name.startswith(_LEX_PREFIX) and path != keep:
            shutil.rmtree(path, ignore_errors=True)


def _write_file(entries: list[FaqEntry], suffix: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="goflypy-export-") as tmp:
        path = Path(tmp) / f"faq{suffix}"
        write_faq_file(path, entries)
        return path.read_bytes()


def _read_file(data: bytes, name: str, taken: Callable[[str], bool]) -> list[FaqEntry]:
    suffix = Path(name).suffix.lower()
    with tempfile.TemporaryDirectory(prefix="goflypy-import-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        return read_faq_file(path, name=name, taken=taken)
