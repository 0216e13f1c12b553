"""Checks on admin-entered knowledge-base text: entries, synonyms, words, rules.

Every refusal is a BadRequest whose message an admin can act on. Stored
vocabulary is checked again when it is loaded, so an entry that became bad
(the shipped synonym table changed underneath it) is skipped with a warning
instead of stopping the robot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from .display import clean
from .errors import BadRequest
from .faqfile import (
    FAQ_ID_PATTERN,
    FAQ_ID_RULE,
    MAX_ALTERNATIVES,
    MAX_ANSWER_CHARS,
    MAX_CATEGORY_CHARS,
    MAX_QUESTION_CHARS,
    has_surrogates,
)
from .log import nlp as log
from .models import FaqEntry
from .nlp.normalize import has_content, normalize_text
from .nlp.segment import is_stopword
from .store import CategoryRule, DictWord, SynonymGroup

MAX_WORD_CHARS = 20

MIN_FREQ, MAX_FREQ, DEFAULT_FREQ = 1, 1_000_000, 2000
MAX_MEMBERS = 200


# FAQ entries


def check_faq_id(raw: object) -> str:
    faq_id = text_field(raw, "编号").strip()
    if not FAQ_ID_PATTERN.match(faq_id):
        raise BadRequest(FAQ_ID_RULE)
    return faq_id


def entry_from_json(data: dict[str, Any], faq_id: str) -> FaqEntry:
    """Validate an entry posted by the admin pages."""
    question = clean(text_field(data.get("question"), "标准问题")).strip()
    if not question:
        raise BadRequest("标准问题不能为空")
    if len(question) > MAX_QUESTION_CHARS:
        raise BadRequest(f"标准问题最长 {MAX_QUESTION_CHARS} 个字符")
    answer = clean(text_field(data.get("answer"), "答案")).strip()
    if not answer:
        raise BadRequest("答案不能为空")
    if len(answer) > MAX_ANSWER_CHARS:
        raise BadRequest(f"答案最长 {MAX_ANSWER_CHARS} 个字符")
    category = clean(text_field(data.get("category"), "分类")).strip()
    if len(category) > MAX_CATEGORY_CHARS:
        raise BadRequest(f"分类最长 {MAX_CATEGORY_CHARS} 个字符")
    alternatives = check_alternatives(data.get("alternatives"), question)
    return FaqEntry(faq_id, question, answer, alternatives, category)


def check_alternatives(raw: object, question: str) -> list[str]:
    """Alternatives from a list or one per line; blanks and repeats dropped."""
    if raw is None:
        items: list[Any] = []
    elif isinstance(raw, str):
        items = raw.splitlines()
    elif isinstance(raw, list):
        items = raw
    else:
        raise BadRequest("相似问法必须是文本列表")
    seen = {normalize_text(question)}
    found: list[str] = []
    for item in items:
        text = clean(text_field(item, "相似问法")).strip()
        key = normalize_text(text)
        if not text or key in seen:
            continue
        if len(text) > MAX_QUESTION_CHARS:
            raise BadRequest(f"相似问法最长 {MAX_QUESTION_CHARS} 个字符")
        seen.add(key)
        found.append(text)
    if len(found) > MAX_ALTERNATIVES:
        raise BadRequest(f"相似问法最多 {MAX_ALTERNATIVES} 条")
    return found


def with_alternative(entry: FaqEntry, text: str) -> bool:
    """Add ``text`` to the entry's phrasings; False if it already has it."""
    known = {normalize_text(t) for t in (entry.question, *entry.alternatives)}
    if normalize_text(text) in known:
        return False
    if len(entry.alternatives) >= MAX_ALTERNATIVES:
        raise BadRequest(f"该条目的相似问法已达 {MAX_ALTERNATIVES} 条")
    entry.alternatives.append(text.strip()[:MAX_QUESTION_CHARS])
    return True


# Words and synonyms


def check_word(raw: object, what: str) -> str:
    """One word: no spaces, some text, not too long; returned normalised."""
    word = text_field(raw, what).strip()
    if not word:
        raise BadRequest(f"{what}不能为空")
    if any(char.isspace() for char in word):
        raise BadRequest(f"{what}“{word}”含有空格，每个词请单独填写")
    normal = normalize_text(word)
    if not has_content(normal):
        raise BadRequest(f"{what}“{word}”不含文字或数字")
    if len(normal) > MAX_WORD_CHARS:
        raise BadRequest(f"{what}“{word}”太长（最多 {MAX_WORD_CHARS} 个字）")
    return normal


def check_not_stopword(word: str, what: str, use: str) -> None:
    """BadRequest if ``word`` (normalised) is a stop word the robot ignores."""
    if is_stopword(word):
        raise BadRequest(
            f"{what}“{word}”是停用词（“的”“了”“吗”这类词），"
            f"机器人匹配时会忽略它，不能{use}"
        )


def check_dict_word(data: dict[str, Any]) -> DictWord:
    """A custom dictionary word: a word that is not a stop word, and its freq."""
    word = check_word(data.get("word"), "词语")
    check_not_stopword(word, "词语", "加入词典")
    raw = data.get("freq")
    if raw in (None, ""):
        return DictWord(word, DEFAULT_FREQ)
    try:
        freq = int(str(raw))
    except ValueError:
        raise BadRequest("词频必须是整数") from None
    if not MIN_FREQ <= freq <= MAX_FREQ:
        raise BadRequest(f"词频应在 {MIN_FREQ} 到 {MAX_FREQ} 之间")
    return DictWord(word, freq)


def check_synonym_group(
    data: dict[str, Any],
    shipped: dict[str, str],
    groups: Iterable[SynonymGroup],
    replaces: str | None = None,
) -> SynonymGroup:
    """Validate a group against the shipped table and the other custom groups.

    Refused: a space, an empty side, a stop word on either side, a
    one-character variant, a variant that already means something else, and
    any chain or cycle (a canonical word used as a variant), since synonyms
    map in one step.
    """
    canonical = check_word(data.get("canonical"), "标准词")
    raw = data.get("variants")
    items = raw.split("\n") if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise BadRequest("同义词必须是文本列表")
    variants = list(
        dict.fromkeys(check_word(item, "同义词") for item in items if _filled(item))
    )
    if not variants:
        raise BadRequest("请至少填写一个同义词")
    if len(variants) > MAX_MEMBERS:
        raise BadRequest(f"一组同义词最多 {MAX_MEMBERS} 个")
    group = SynonymGroup(canonical, variants)
    others = [g for g in groups if g.canonical not in (canonical, replaces)]
    check_group_fits(group, {**shipped, **_table(others)})
    return group


def check_group_fits(group: SynonymGroup, table: dict[str, str]) -> None:
    """BadRequest unless ``group`` can join the variant->canonical ``table``."""
    canonical = group.canonical
    check_not_stopword(canonical, "标准词", "作为标准词")
    for variant in group.variants:
        check_not_stopword(variant, "同义词", "作为同义词")
    targets = set(table.values())
    for variant in group.variants:
        if variant == canonical:
            raise BadRequest(f"同义词“{variant}”不能与标准词相同")
        if len(variant) < 2:
            raise BadRequest(f"同义词“{variant}”只有一个字，容易误判，请至少写两个字")
        if table.get(canonical) == variant:
            raise BadRequest(f"“{canonical}”与“{variant}”互相指向，会形成循环")
        owner = table.get(variant)
        if owner is not None and owner != canonical:
            raise BadRequest(f"“{variant}”已是“{owner}”的同义词")
        if variant in targets:
            raise BadRequest(
                f"“{variant}”本身是标准词，不能再作为“{canonical}”的同义词"
                "（同义词只换一次，会形成链条）"
            )
    owner = table.get(canonical)
    if owner is not None:
        raise BadRequest(
            f"“{canonical}”已是“{owner}”的同义词，请把这些词加到“{owner}”一组"
        )


class Vocabulary(NamedTuple):
    """The custom vocabulary the robot uses, in ``Lexicon.use_custom`` shapes."""

    synonyms: dict[str, str]
    words: dict[str, int]
    categories: dict[str, list[str]]


def usable_vocabulary(
    shipped: dict[str, str],
    groups: list[SynonymGroup],
    words: list[DictWord],
    shipped_rules: dict[str, list[str]] | None = None,
    rules: Iterable[CategoryRule] = (),
) -> Vocabulary:
    """The stored custom vocabulary minus anything that no longer fits."""
    accepted: dict[str, str] = {}
    for group in sorted(groups, key=lambda g: g.updated):
        try:
            check_group_fits(group, {**shipped, **accepted})
        except BadRequest as error:
            log.warning("custom synonym group skipped: %s", error.message)
            continue
        accepted.update(dict.fromkeys(group.variants, group.canonical))
    kept: dict[str, int] = {}
    for word in words:
        if is_stopword(word.word):
            log.warning("custom dictionary word skipped: %s is a stop word", word.word)
            continue
        kept[word.word] = word.freq
    table = {**shipped, **accepted}
    canonical = _lookup(table)
    categories: dict[str, list[str]] = {}
    for rule, problem in _fit_rules(rules, shipped_rules or {}, canonical):
        if problem is not None:
            log.warning("custom category rule skipped: %s", problem.message)
        else:
            categories[rule.topic] = list(rule.members)
    return Vocabulary(accepted, kept, categories)


def _fit_rules(
    rules: Iterable[CategoryRule],
    shipped_rules: dict[str, list[str]],
    canonical: Callable[[str], str],
) -> Iterator[tuple[CategoryRule, BadRequest | None]]:
    """Each stored rule, oldest first, with why it doesn't fit (None: it does).

    A rule that fits joins the graph the later ones are checked against.
    """
    graph = {topic: list(members) for topic, members in shipped_rules.items()}
    for rule in sorted(rules, key=lambda r: r.updated):
        try:
            check_rule_fits(rule, graph, canonical)
        except BadRequest as error:
            yield rule, error
            continue
        graph.setdefault(rule.topic, []).extend(rule.members)
        yield rule, None


# Category rules


def check_category_rule(
    data: dict[str, Any],
    shipped_rules: dict[str, list[str]],
    rules: Iterable[CategoryRule],
    canonical: Callable[[str], str] | None = None,
    replaces: str | None = None,
) -> CategoryRule:
    """Validate a rule against the shipped rules and the other custom rules.

    ``canonical`` maps a word to its standard word (the synonym table in
    use). Refused: a space, an empty side, a stop word, a repeated member,
    a member that is the topic itself or already belongs to it in the
    shipped rules, too many members, and any loop (a topic that would
    become its own topic through the rules).
    """
    topic = check_word(data.get("topic"), "类别")
    raw = data.get("members")
    items = raw.split("\n") if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise BadRequest("成员必须是文本列表")
    read = canonical or _same
    members: list[str] = []
    for item in items:
        if not _filled(item):
            continue
        member = check_word(item, "成员")
        for earlier in members:
            if read(member) == read(earlier):
                same = "" if member == earlier else f"（与“{earlier}”是同义词）"
                raise BadRequest(f"成员“{member}”重复了{same}")
        members.append(member)
    if not members:
        raise BadRequest("请至少填写一个成员")
    if len(members) > MAX_MEMBERS:
        raise BadRequest(f"一条类别规则最多 {MAX_MEMBERS} 个成员")
    shipped_members = {read(word): word for word in shipped_rules.get(topic, ())}
    for member in members:
        if read(member) in shipped_members:
            already = shipped_members[read(member)]
            same = "" if already == member else f"（作为同义词“{already}”）"
            raise BadRequest(f"“{member}”已在内置规则“{topic}”中{same}，无需再添加")
    rule = CategoryRule(topic, members)
    graph = {name: list(words) for name, words in shipped_rules.items()}
    for other in rules:
        if other.topic not in (topic, replaces):
            graph.setdefault(other.topic, []).extend(other.members)
    check_rule_fits(rule, graph, canonical)
    return rule


def check_rules_keep_fitting(
    shipped: dict[str, str],
    groups: Iterable[SynonymGroup],
    shipped_rules: dict[str, list[str]],
    rules: Iterable[CategoryRule],
) -> None:
    """BadRequest if, with synonym ``groups``, a stored category rule would loop.

    A synonym can join two words that the category rules keep apart (a topic
    and one of its members); the rule would then be skipped without a word,
    so the synonym group is refused instead.
    """
    canonical = _lookup({**shipped, **_table(groups)})
    for rule, problem in _fit_rules(rules, shipped_rules, canonical):
        if problem is not None:
            raise BadRequest(
                f"这组同义词会让类别规则“{rule.topic}”失效：{problem.message}"
            )


def check_rule_fits(
    rule: CategoryRule,
    graph: dict[str, list[str]],
    canonical: Callable[[str], str] | None = None,
) -> None:
    """BadRequest unless ``rule`` can join the topic->members ``graph``.

    Words are compared through ``canonical``, as the robot reads them.
    """
    canonical = canonical or _same
    topic = rule.topic
    check_not_stopword(topic, "类别", "作为类别")
    if len(rule.members) > MAX_MEMBERS:
        raise BadRequest(f"一条类别规则最多 {MAX_MEMBERS} 个成员")
    for member in rule.members:
        check_not_stopword(member, "成员", "作为成员")
    # Each word's own topics, all through ``canonical``.
    parents: dict[str, list[str]] = {}
    for name, members in graph.items():
        for member in members:
            parents.setdefault(canonical(member), []).append(canonical(name))
    root = canonical(topic)
    # Where each topic above ``root`` was reached from, to show the chain.
    came_from: dict[str, str] = {root: root}
    pending = [root]
    while pending:
        word = pending.pop(0)
        for parent in parents.get(word, ()):
            if parent not in came_from:
                came_from[parent] = word
                pending.append(parent)
    for member in rule.members:
        if member == topic:
            raise BadRequest(f"成员“{member}”不能与类别相同")
        word = canonical(member)
        if word == root:
            raise BadRequest(
                f"“{member}”与“{topic}”是同义词，不能作为它的成员（会形成循环）"
            )
        if word in came_from:
            raise BadRequest(
                f"“{member}”已是“{topic}”的上级类别（{_chain(came_from, word)}），"
                f"再把它作为“{topic}”的成员会形成循环"
            )


def _chain(came_from: dict[str, str], word: str) -> str:
    """The path ``root → ... → word`` through ``came_from``."""
    path = [word]
    while came_from[path[-1]] != path[-1]:
        path.append(came_from[path[-1]])
    return " → ".join(reversed(path))


def _same(word: str) -> str:
    return word


def _lookup(table: dict[str, str]) -> Callable[[str], str]:
    def canonical(word: str) -> str:
        return table.get(word, word)

    return canonical


def _table(groups: Iterable[SynonymGroup]) -> dict[str, str]:
    return {v: group.canonical for group in groups for v in group.variants}


def _filled(item: object) -> bool:
    return not isinstance(item, str) or bool(item.strip())


def text_field(value: object, what: str) -> str:
    """A posted text field as a str ("" when absent); BadRequest in Chinese."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{what}必须是文本")
    if has_surrogates(value):
        raise BadRequest(f"{what}含有无效字符（不成对的 UTF-16 代理项）")
    return value
