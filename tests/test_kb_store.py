"""Knowledge-base vocabulary checks, the unanswered list and the lexicon overlay."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from goflypy.errors import BadRequest
from goflypy.kb import _changed_rules
from goflypy.models import FaqEntry
from goflypy.nlp.segment import Lexicon
from goflypy.store import CategoryRule, DictWord, Store, SynonymGroup
from goflypy.store.crypto import parse_keys
from goflypy.vocabulary import (
    MAX_MEMBERS,
    check_alternatives,
    check_category_rule,
    check_dict_word,
    check_synonym_group,
    usable_vocabulary,
    with_alternative,
)

SHIPPED = {"士多啤梨": "草莓", "车厘子": "樱桃", "退钱": "退款"}
RULES = {
    "水果": ["草莓", "樱桃", "榴莲"],
    "蔬菜": ["叶菜"],
    "生鲜": ["水果", "蔬菜"],
}


def refused(data: dict[str, object], groups: list[SynonymGroup] | None = None) -> str:
    with pytest.raises(BadRequest) as caught:
        check_synonym_group(data, SHIPPED, groups or [])
    return caught.value.message


def test_synonym_groups_are_normalised_and_checked() -> None:
    group = check_synonym_group(
        {"canonical": "草莓", "variants": ["紅顏", "紅顏", "ＨＹ果"]}, SHIPPED, []
    )
    assert group.canonical == "草莓" and group.variants == ["红颜", "hy果"]

    assert "空格" in refused({"canonical": "草 莓", "variants": ["红颜"]})
    assert "空格" in refused({"canonical": "草莓", "variants": ["红\t颜"]})
    assert "不能为空" in refused({"canonical": " ", "variants": ["红颜"]})
    assert "至少" in refused({"canonical": "草莓", "variants": []})
    assert "文字" in refused({"canonical": "！！", "variants": ["红颜"]})
    assert "一个字" in refused({"canonical": "草莓", "variants": ["莓"]})
    assert "相同" in refused({"canonical": "草莓", "variants": ["草莓"]})


def test_cycles_chains_and_taken_words_are_refused() -> None:
    assert "循环" in refused({"canonical": "士多啤梨", "variants": ["草莓"]})
    mine = [SynonymGroup("蓝莓", ["蓝梅子"])]
    assert "循环" in refused({"canonical": "蓝梅子", "variants": ["蓝莓"]}, mine)
    assert "已是“草莓”" in refused({"canonical": "蓝莓", "variants": ["士多啤梨"]})
    assert "链条" in refused({"canonical": "浆果", "variants": ["蓝莓"]}, mine)
    assert "请把这些词加到" in refused({"canonical": "退钱", "variants": ["退账"]})

    # Editing a group may keep its own words.
    edited = check_synonym_group(
        {"canonical": "蓝莓", "variants": ["蓝梅子", "蓝浆果"]}, SHIPPED, mine
    )
    assert edited.variants == ["蓝梅子", "蓝浆果"]


def test_stored_groups_that_no_longer_fit_are_skipped() -> None:
    groups = [
        SynonymGroup("蓝莓", ["蓝梅子"], updated=1),
        SynonymGroup("士多啤梨", ["草莓"], updated=2),  # a cycle now
    ]
    synonyms, words, rules = usable_vocabulary(
        SHIPPED, groups, [DictWord("叶菜拼盘", 9)]
    )
    assert synonyms == {"蓝梅子": "蓝莓"}
    assert words == {"叶菜拼盘": 9}
    assert rules == {}


def canonical(word: str) -> str:
    return SHIPPED.get(word, word)


def refused_rule(
    data: dict[str, object],
    rules: list[CategoryRule] | None = None,
    replaces: str | None = None,
) -> str:
    with pytest.raises(BadRequest) as caught:
        check_category_rule(data, RULES, rules or [], canonical, replaces)
    return caught.value.message


def test_category_rules_are_normalised_and_checked() -> None:
    rule = check_category_rule(
        {"topic": "水果", "members": "釋迦\n\n ＡＢ果 \n"}, RULES, [], canonical
    )
    assert rule == CategoryRule("水果", ["释迦", "ab果"])

    assert "空格" in refused_rule({"topic": "水 果", "members": ["释迦"]})
    assert "空格" in refused_rule({"topic": "水果", "members": ["释 迦"]})
    assert "不能为空" in refused_rule({"topic": " ", "members": ["释迦"]})
    assert "至少" in refused_rule({"topic": "水果", "members": ["", " "]})
    assert "文本列表" in refused_rule({"topic": "水果", "members": 3})
    assert "重复" in refused_rule({"topic": "水果", "members": ["释迦", "釋迦"]})
    assert "相同" in refused_rule({"topic": "水果", "members": ["水果"]})
    assert "已在内置规则" in refused_rule({"topic": "水果", "members": ["草莓"]})
    too_many = [f"果{n}" for n in range(MAX_MEMBERS + 1)]
    assert "最多" in refused_rule({"topic": "水果", "members": too_many})
    long_word = "释" * 21
    assert "太长" in refused_rule({"topic": "水果", "members": [long_word]})
    assert "类别“了”是停用词" in refused_rule({"topic": "了", "members": ["释迦"]})
    assert "成员“吗”是停用词" in refused_rule({"topic": "水果", "members": ["吗"]})


def test_category_loops_are_refused() -> None:
    # Through the shipped rules, one step and two.
    loop = refused_rule({"topic": "草莓", "members": ["水果"]})
    assert "循环" in loop and "草莓 → 水果" in loop
    assert "榴莲 → 水果 → 生鲜" in refused_rule({"topic": "榴莲", "members": ["生鲜"]})
    # Through a synonym, and a member that is the topic's synonym.
    assert "循环" in refused_rule({"topic": "士多啤梨", "members": ["水果"]})
    assert "同义词" in refused_rule({"topic": "草莓", "members": ["士多啤梨"]})
    # Through another custom rule.
    mine = [CategoryRule("热带水果", ["释迦"])]
    assert "循环" in refused_rule({"topic": "释迦", "members": ["热带水果"]}, mine)
    # Editing a rule may keep its own members; renaming drops the old one.
    edited = check_category_rule(
        {"topic": "热带水果", "members": ["释迦", "山竹"]}, RULES, mine, canonical
    )
    assert edited.members == ["释迦", "山竹"]
    renamed = check_category_rule(
        {"topic": "释迦", "members": ["热带水果"]}, RULES, mine, canonical, "热带水果"
    )
    assert renamed.topic == "释迦"


def test_stored_rules_that_no_longer_fit_are_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "goflypy.nlp")
    rules = [
        CategoryRule("水果", ["释迦"], updated=1),
        CategoryRule("释迦", ["生鲜"], updated=2),  # a loop with the first
        CategoryRule("了", ["释迦"], updated=3),
        CategoryRule("热带水果", ["释迦", "山竹"], updated=4),
    ]
    synonyms, words, categories = usable_vocabulary(SHIPPED, [], [], RULES, rules)
    assert categories == {"水果": ["释迦"], "热带水果": ["释迦", "山竹"]}
    assert "custom category rule skipped" in caplog.text and "循环" in caplog.text


def test_a_rule_change_touches_its_members_and_the_words_below_them() -> None:
    old = {"水果": ["草莓"], "生鲜": ["水果"], "莓果": ["蓝莓"]}
    new = {"水果": ["草莓"], "生鲜": ["水果", "莓果"], "莓果": ["蓝莓"]}
    table = {"蓝梅子": "蓝莓", "士多啤梨": "草莓"}
    # 莓果 (and so 蓝莓, and its synonym) gained a topic; fruit did not change.
    assert _changed_rules(old, new, table) == {"生鲜", "莓果", "蓝莓", "蓝梅子"}
    assert _changed_rules(new, new, table) == set()


def test_category_rules_in_the_lexicon_come_and_go() -> None:
    fresh = Lexicon()
    fresh.warm_up()
    assert fresh.topics("释迦") == ()
    fresh.use_custom({}, {}, {"水果": ["释迦"]})
    assert fresh.topics("释迦") == ("水果", "生鲜")
    fresh.use_custom({}, {}, {})
    assert fresh.topics("释迦") == ()


def test_words_and_alternatives() -> None:
    assert check_dict_word({"word": "叶菜拼盘"}).freq == 2000
    with pytest.raises(BadRequest):
        check_dict_word({"word": "叶菜拼盘", "freq": "many"})
    assert check_alternatives("a\n\n A \nb\nq", "q") == ["a", "b"]
    entry = FaqEntry("x", "草莓怎么保存", "冷藏")
    assert with_alternative(entry, "草莓怎么放")
    assert not with_alternative(entry, "草莓怎么保存")
    assert not with_alternative(entry, " 草莓怎么放 ")
    assert entry.alternatives == ["草莓怎么放"]


def test_custom_words_and_synonyms_come_and_go() -> None:
    fresh = Lexicon()
    fresh.warm_up()
    before = fresh.surface_tokens("叶菜拼盘和草莓")
    total = fresh._tokenizer.total
    fresh.use_custom({"红颜": "草莓"}, {"叶菜拼盘": 3000, "草莓": 5})
    assert fresh.canonical("红颜") == "草莓"
    assert "叶菜拼盘" in fresh.surface_tokens("叶菜拼盘和草莓")

    fresh.use_custom({}, {})
    assert fresh.canonical("红颜") == "红颜"
    assert fresh.canonical("士多啤梨") == "草莓"
    assert fresh.surface_tokens("叶菜拼盘和草莓") == before
    assert fresh._tokenizer.total == total  # no drift after many edits


async def test_unanswered_counts_repeats_and_drops_the_oldest(tmp_path: Path) -> None:
    with Store(tmp_path / "data") as store:
        for text in ("发票", "发票", "保修", "赠品", "包装"):
            await store.record_unanswered(
                text, text, action="handoff", score=0.2, candidates=[], limit=3
            )
        items = store.list_unanswered()
        assert [(i.text, i.count) for i in items] == [
            ("包装", 1),
            ("赠品", 1),
            ("保修", 1),
        ]
        assert store.count_unanswered() == 3
        await store.record_unanswered(
            "保修", "保修", action="handoff", score=0.3, candidates=[], limit=3
        )
        first = store.list_unanswered()[0]
        assert (first.text, first.count, first.score) == ("保修", 2, 0.3)
        assert await store.delete_unanswered(first.key)
        assert store.get_unanswered(first.key) is None
        assert not await store.delete_unanswered("not-a-key")


async def test_unanswered_questions_are_sealed_at_rest(tmp_path: Path) -> None:
    keyring = parse_keys("1:" + "ab" * 16, "test")
    with Store(tmp_path / "data", keyring=keyring) as store:
        await store.record_unanswered(
            "我的发票在哪里", "我的发票在哪里", action="handoff", score=0, candidates=[]
        )
        assert store.list_unanswered()[0].text == "我的发票在哪里"
    raw = (tmp_path / "data" / "lmdb" / "data.mdb").read_bytes()
    assert "我的发票在哪里".encode() not in raw


async def test_synonym_groups_and_words_round_trip(tmp_path: Path) -> None:
    with Store(tmp_path / "data") as store:
        await store.put_synonym_group(SynonymGroup("草莓", ["红颜"]))
        await store.put_synonym_group(SynonymGroup("莓果", ["红颜"]), replaces="草莓")
        await store.put_word(DictWord("叶菜拼盘", 10))
        assert [g.canonical for g in store.list_synonyms()] == ["莓果"]
        assert [w.word for w in store.list_words()] == ["叶菜拼盘"]
        assert await store.delete_word("叶菜拼盘")
        assert not await store.delete_synonym_group("草莓")
        assert store.list_words() == []


async def test_category_rules_round_trip(tmp_path: Path) -> None:
    with Store(tmp_path / "data") as store:
        await store.put_category_rule(CategoryRule("水果", ["释迦", "山竹"]))
        await store.put_category_rule(CategoryRule("热带", ["释迦"]), replaces="水果")
        await store.put_category_rule(CategoryRule("蔬菜", ["秋葵"]))
        await store.put_synonym_group(SynonymGroup("草莓", ["红颜"]))
        await store.put_word(DictWord("叶菜拼盘", 10))
        rules = store.list_categories()
        assert [(r.topic, r.members) for r in rules] == [
            ("热带", ["释迦"]),
            ("蔬菜", ["秋葵"]),
        ]
        assert all(rule.updated > 0 for rule in rules)
        # The other vocabulary keeps to itself.
        assert [g.canonical for g in store.list_synonyms()] == ["草莓"]
        assert [w.word for w in store.list_words()] == ["叶菜拼盘"]
        assert await store.delete_category_rule("热带")
        assert not await store.delete_category_rule("水果")
    with Store(tmp_path / "data") as store:
        assert [r.topic for r in store.list_categories()] == ["蔬菜"]
