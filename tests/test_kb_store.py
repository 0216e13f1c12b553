"""Knowledge-base vocabulary checks, the unanswered list and the lexicon overlay."""

from __future__ import annotations

from pathlib import Path

import pytest

from goflypy.errors import BadRequest
from goflypy.models import FaqEntry
from goflypy.nlp.segment import Lexicon
from goflypy.store import DictWord, Store, SynonymGroup
from goflypy.store.crypto import parse_keys
from goflypy.vocabulary import (
    check_alternatives,
    check_dict_word,
    check_synonym_group,
    usable_vocabulary,
    with_alternative,
)

SHIPPED = {"士多啤梨": "草莓", "车厘子": "樱桃", "退钱": "退款"}


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
    synonyms, words = usable_vocabulary(SHIPPED, groups, [DictWord("叶菜拼盘", 9)])
    assert synonyms == {"蓝梅子": "蓝莓"}
    assert words == {"叶菜拼盘": 9}


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
