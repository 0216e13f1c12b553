"""The FAQ robot, with real jieba and hnswlib."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from goflypy.faqfile import read_faq_file
from goflypy.models import FaqEntry
from goflypy.nlp import Candidate, Decision, Robot, Thresholds, evaluate
from goflypy.nlp.embed import Embedder, HashingEmbedder, token_features
from goflypy.nlp.index import SparseIndex
from goflypy.nlp.normalize import normalize_text
from goflypy.nlp.rerank import KbStats, Matcher, blend, ceiling, fuse, sequence
from goflypy.nlp.robot import OTHER_GOODS_FACTOR, _texts
from goflypy.nlp.segment import Lexicon

DEMO_FAQ = Path(__file__).parent.parent / "goflypy" / "data" / "demo_faq.jsonl"
SMALL_FAQ = Path(__file__).parent / "data" / "faq_small.jsonl"
THRESHOLDS = Thresholds(answer=0.6, suggest=0.4)


@pytest.fixture(scope="module")
def demo_robot(lexicon: Lexicon) -> Robot:
    robot = Robot(thresholds=THRESHOLDS, lexicon=lexicon)
    robot.rebuild(read_faq_file(DEMO_FAQ))
    return robot


@pytest.fixture
def robot(lexicon: Lexicon) -> Robot:
    robot = Robot(thresholds=THRESHOLDS, lexicon=lexicon)
    robot.rebuild(read_faq_file(SMALL_FAQ))
    return robot


# normalisation and segmentation


def test_normalize_full_width_and_case() -> None:
    assert normalize_text("ＡＢＣ１２３？") == "abc123?"


def test_normalize_strips_zero_width_and_bidi() -> None:
    assert (
        normalize_text("草\u200b莓\u200d怎\u202e么\u2066保\ufeff存") == "草莓怎么保存"
    )


def test_normalize_traditional_and_spaces() -> None:
    assert normalize_text("  士多啤梨點樣\t保存  ") == "士多啤梨点样 保存"


def test_synonyms_become_one_word(lexicon: Lexicon) -> None:
    assert lexicon.tokens("士多啤梨") == ["草莓"]
    # The topics its category rules give it, nearest first.
    assert lexicon.topic_words(["草莓", "生鲜"]) == ["水果", "生鲜"]
    assert lexicon.tokens("车厘子")[0] == "樱桃"
    assert lexicon.tokens("退钱多久") == lexicon.tokens("退款多久")
    assert "运费" in lexicon.tokens("邮费多少")
    assert "快递" in lexicon.tokens("包裹到哪了")


def test_synonyms_apply_to_faq_text_too(lexicon: Lexicon) -> None:
    robot = Robot(thresholds=THRESHOLDS, lexicon=lexicon)
    robot.rebuild([FaqEntry("c", "车厘子能放几天", "冷藏 5 天。")])
    decision = robot.decide("樱桃能放几天")
    assert decision.action == "answer"
    assert decision.faq_id == "c"
    assert decision.score == pytest.approx(1.0)


# intents and meaningless input


@pytest.mark.parametrize(
    "text", ["你好", "在吗", "hi", "Hello!", "您好，在吗？", "亲 在不在"]
)
def test_greeting(robot: Robot, text: str) -> None:
    decision = robot.decide(text)
    assert decision.action == "greeting"
    assert decision.reply and decision.faq_id is None


def test_greeting_with_question_is_a_question(robot: Robot) -> None:
    assert robot.decide("你好，草莓怎么保存").faq_id == "strawberry"


@pytest.mark.parametrize(
    "text", ["转人工", "我要人工客服", "找客服", "真人在吗", "人工"]
)
def test_human(robot: Robot, text: str) -> None:
    decision = robot.decide(text)
    assert decision.action == "human"
    assert decision.reply


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "？？？",
        "。。",
        "...!!!",
        "\u200b\u200b",
        "asdf",
        "🙂🙂",
        "qwer zxcv",
    ],
)
def test_meaningless_input_never_answers(robot: Robot, text: str) -> None:
    decision = robot.decide(text)
    assert decision.action == "handoff"
    assert decision.score == 0.0
    assert decision.faq_id is None and decision.candidates == []


def test_empty_faq_hands_off(lexicon: Lexicon) -> None:
    robot = Robot(thresholds=THRESHOLDS, lexicon=lexicon)
    robot.rebuild([])
    assert robot.decide("草莓怎么保存").action == "handoff"
    assert robot.decide("你好").action == "greeting"


def test_decide_before_rebuild(lexicon: Lexicon) -> None:
    assert Robot(lexicon=lexicon).decide("草莓怎么保存").action == "handoff"


# retrieval on the demo FAQ


@pytest.mark.parametrize(
    "text",
    ["草莓怎么保存", "请问草莓怎么保存?", "士多啤梨點樣保存", "草莓怎么保存\u200b"],
)
def test_demo_answers_strawberry(demo_robot: Robot, text: str) -> None:
    decision = demo_robot.decide(text)
    assert decision.action == "answer"
    assert decision.faq_id == "storage-strawberry"
    assert "冷藏" in decision.reply
    assert decision.candidates[0].faq_id == "storage-strawberry"


@pytest.mark.parametrize(
    ("text", "faq_id"),
    [
        ("退钱多久到", "refund-time"),
        ("邮费怎么收", "shipping-fee"),
        ("包裹到哪了", "shipping-track"),
        ("車厘子能放幾天", "storage-cherry"),
        ("可以货到付款吗", "pay-cod"),
    ],
)
def test_demo_paraphrases(demo_robot: Robot, text: str, faq_id: str) -> None:
    assert demo_robot.decide(text).candidates[0].faq_id == faq_id


def test_suggest_lists_top_three(demo_robot: Robot) -> None:
    demo_robot.thresholds = Thresholds(answer=0.99, suggest=0.3)
    try:
        decision = demo_robot.decide("牛油果太生了")
    finally:
        demo_robot.thresholds = THRESHOLDS
    assert decision.action == "suggest"
    assert decision.faq_id is None
    assert len(decision.candidates) == 3
    assert decision.candidates[0].faq_id == "ripen-avocado"
    scores = [candidate.score for candidate in decision.candidates]
    assert scores == sorted(scores, reverse=True)


def test_unrelated_question_hands_off(demo_robot: Robot) -> None:
    assert demo_robot.decide("今天天气怎么样").action == "handoff"


def test_decision_to_dict_is_json(demo_robot: Robot) -> None:
    data = demo_robot.decide("草莓怎么保存").to_dict()
    assert json.loads(json.dumps(data, ensure_ascii=False)) == data
    assert data["action"] == "answer"
    assert set(data["candidates"][0]) == {"faq_id", "question", "answer", "score"}


def test_records_are_plain() -> None:
    candidate = Candidate("a", "q", "ans", 0.5)
    decision = Decision("suggest", "您是不是想问：", None, 0.5, [candidate])
    assert decision.to_dict()["candidates"][0]["faq_id"] == "a"


# following edits


def test_remove_then_readd_same_id(robot: Robot) -> None:
    robot.remove("strawberry")
    assert robot.decide("草莓怎么保存").faq_id != "strawberry"
    robot.remove("strawberry")  # twice is harmless

    robot.upsert(FaqEntry("strawberry", "草莓怎么保存", "冷藏。"))
    decision = robot.decide("草莓怎么保存")
    assert (decision.action, decision.faq_id, decision.reply) == (
        "answer",
        "strawberry",
        "冷藏。",
    )


def test_upsert_follows_edit(robot: Robot) -> None:
    robot.upsert(FaqEntry("shipping-fee", "配送范围是哪里", "本市主城区。"))
    assert robot.decide("运费怎么算").faq_id != "shipping-fee"
    decision = robot.decide("配送范围是哪里")
    assert decision.faq_id == "shipping-fee"
    assert decision.reply == "本市主城区。"


def test_many_upserts_grow_and_reuse_slots(lexicon: Lexicon) -> None:
    robot = Robot(thresholds=THRESHOLDS, lexicon=lexicon)
    robot.rebuild([])
    for round_ in range(3):
        for i in range(40):
            robot.upsert(FaqEntry(f"f{i}", f"第{i}号商品怎么保存{round_}", f"a{i}"))
    for i in range(39):
        robot.remove(f"f{i}")
    decision = robot.decide("第39号商品怎么保存2")
    assert decision.faq_id == "f39"
    assert len(decision.candidates) == 1


# concurrency and persistence


def test_decide_while_rebuilding(lexicon: Lexicon) -> None:
    robot = Robot(thresholds=THRESHOLDS, lexicon=lexicon)
    demo = read_faq_file(DEMO_FAQ)
    robot.rebuild(demo)
    errors: list[BaseException] = []
    stop = threading.Event()

    def ask() -> None:
        try:
            while not stop.is_set():
                decision = robot.decide("草莓怎么保存")
                assert decision.action in ("answer", "handoff")
                robot.decide("退钱多久到")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for round_ in range(4):
        robot.rebuild(demo[: len(demo) - round_])
        robot.upsert(FaqEntry("extra", "樱桃可以冷冻吗", "可以。"))
        robot.remove("extra")
    stop.set()
    for thread in threads:
        thread.join()

    assert errors == []
    assert robot.decide("草莓怎么保存").faq_id == "storage-strawberry"


def test_index_is_saved_and_reused(tmp_path: Path, lexicon: Lexicon) -> None:
    entries = read_faq_file(SMALL_FAQ)
    first = Robot(thresholds=THRESHOLDS, index_dir=tmp_path / "index", lexicon=lexicon)
    first.rebuild(entries)
    assert (tmp_path / "index").is_dir()

    second = Robot(thresholds=THRESHOLDS, index_dir=tmp_path / "index", lexicon=lexicon)
    second.rebuild(entries)
    assert second.decide("草莓怎么保存").faq_id == "strawberry"
    vector = second._state.embedder.embed(["草莓怎么保存"])
    assert np.allclose(vector, first._state.embedder.embed(["草莓怎么保存"]))

    changed = [*entries, FaqEntry("new", "发票怎么开", "订单页申请。")]
    second.rebuild(changed)
    assert second.decide("发票怎么开").faq_id == "new"


def test_corrupt_saved_index_is_rebuilt(tmp_path: Path, lexicon: Lexicon) -> None:
    index_dir = tmp_path / "index"
    index_dir.mkdir()
    (index_dir / "faq.meta").write_bytes(b"not msgpack at all")
    (index_dir / "faq.hnsw").write_bytes(b"junk")
    robot = Robot(thresholds=THRESHOLDS, index_dir=index_dir, lexicon=lexicon)
    robot.rebuild(read_faq_file(SMALL_FAQ))
    assert robot.decide("草莓怎么保存").faq_id == "strawberry"


# evaluation


def test_evaluate_runs_decide(robot: Robot) -> None:
    queries = [
        {
            "qid": "1",
            "query": "草莓能放几天呢",
            "gold_faq_id": "strawberry",
            "type": "in_kb",
        },
        {
            "qid": "2",
            "query": "邮费多少",
            "gold_faq_id": "shipping-fee",
            "type": "in_kb",
        },
        {"qid": "3", "query": "黄河有多长", "gold_faq_id": None, "type": "out"},
    ]
    result = evaluate(robot, queries)
    assert result["in_kb_top1"] == 1.0
    assert result["in_kb_recall3"] == 1.0
    assert result["correct_action"] == 1.0
    assert result["handoff_rate"] == {"in_kb": 0.0, "out": 1.0}
    assert result["counts"] == {"in_kb": 2, "out": 1}
    assert result["thresholds"] == {"answer": 0.6, "suggest": 0.4}
    assert "suggest" in result["definition"]
    json.dumps(result)


# exact lexical index and second-stage scoring


def test_sparse_index_ranks_by_exact_cosine() -> None:
    index = SparseIndex()
    index.add("a", [{"x": 0.6, "y": 0.8}, {"z": 1.0}])
    index.add("b", [{"x": 1.0}])
    hits = index.search({"x": 1.0}, 10)
    assert [(faq_id, number) for faq_id, number, _ in hits] == [("b", 0), ("a", 0)]
    assert [round(score, 6) for _, _, score in hits] == [1.0, 0.6]
    assert index.search({"z": 0.5}, 10) == [("a", 1, 0.5)]
    assert index.search({"unknown": 1.0}, 10) == []
    assert index.search({}, 10) == []


def test_sparse_index_replaces_and_forgets_rows() -> None:
    index = SparseIndex()
    index.add("a", [{"x": 1.0}])
    index.add("a", [{"y": 1.0}])
    assert index.search({"x": 1.0}, 10) == []
    assert index.search({"y": 1.0}, 10) == [("a", 0, 1.0)]
    index.remove("a")
    index.remove("a")  # twice is harmless
    assert index.search({"y": 1.0}, 10) == []
    index.add("a", [{"y": 1.0}, {}])
    assert index.search({"y": 1.0}, 10) == [("a", 0, 1.0)]


def test_coverage_is_the_harmonic_mean_of_both_directions() -> None:
    stats = KbStats()  # no documents: every word weighs the same
    matcher = Matcher(stats, ["草莓", "保存", "冰箱"])
    assert matcher.coverage(["草莓", "保存"]) == pytest.approx(0.8)
    assert matcher.coverage(["草莓", "保存", "冰箱"]) == pytest.approx(1.0)
    assert matcher.coverage(["运费"]) == 0.0
    assert matcher.coverage([]) == 0.0
    # A sound-alike word earns most of the credit, a shared character some.
    assert Matcher(stats, ["冻结"]).coverage(["东结"]) == pytest.approx(0.9)
    assert Matcher(stats, ["冻结"]).coverage(["冻住"]) == pytest.approx(0.25)


def test_blend_rewards_order_and_penalises_length_gaps() -> None:
    assert blend(1.0, "草莓怎么保存", "草莓怎么保存") == pytest.approx(1.0)
    # Same characters, same fused score: the one in the text's order wins.
    in_order = blend(0.6, "草莓怎么保存", "草莓保存")
    shuffled = blend(0.6, "草莓怎么保存", "保存草莓")
    assert in_order > shuffled
    # A text far longer than the question loses to one of about its length.
    assert blend(0.6, "草莓保存", "草莓保存") > blend(
        0.6, "草莓保存", "草莓保存" + "冷藏冷冻多久温度放置方法" * 3
    )
    assert blend(0.0, "草莓", "运费怎么算退款多久到账") == 0.0
    assert blend(0.5, "", "") >= 0.0
    assert ceiling(0.7) >= blend(fuse(1.0, 0.7), "草莓", "草莓")


def test_search_returns_the_best_of_every_entry(demo_robot: Robot) -> None:
    state = demo_robot._state
    lexicon = demo_robot.lexicon

    texts = [
        "草莓怎么保存",
        "怎么保存",
        "运费怎么算",
        "水果坏了能退吗",
        "发票",
        "榴莲怎么放",
    ]
    for text in texts:
        raw = lexicon.surface_tokens(text)
        tokens = lexicon.tokens(text)
        query = state.embedder.sparse(tokens, lexicon.topic_words(tokens))
        query_seq = sequence(tokens)
        asked = lexicon.members(lexicon.enrich(tokens))
        matcher = Matcher(state.stats, lexicon.content_words(raw), lexicon.topics)
        brute = {}
        for faq_id, texts in state.words.items():
            for number, words in enumerate(texts):
                entry = state.entries[faq_id]
                written = lexicon.tokens(_texts(entry)[number])
                row = state.embedder.sparse(written, lexicon.topic_words(written))
                cosine = sum(
                    weight * row.get(key, 0.0) for key, weight in query.items()
                )
                text_seq = sequence(written)
                fused = fuse(matcher.coverage(words), cosine)
                score = blend(fused, query_seq, text_seq)
                goods_written = state.members[faq_id]
                if any(
                    topic in goods_written and not goods & goods_written[topic]
                    for topic, goods in asked.items()
                ):
                    score *= OTHER_GOODS_FACTOR
                brute[faq_id] = max(score, brute.get(faq_id, 0.0))
        expected = sorted(brute.items(), key=lambda item: -item[1])
        found = [(c.faq_id, c.score) for c in demo_robot.search(text)]
        # Exact scores, the true best first; the search prunes by cosine, so
        # a far-off tail may hold another entry of about the same score.
        assert found[0][0] == expected[0][0]
        for faq_id, score in found:
            assert score == pytest.approx(brute[faq_id], abs=1e-3)
            assert faq_id in [faq_id for faq_id, _ in expected[:5]]
        if expected[2][1] >= demo_robot.thresholds.suggest:
            assert [faq_id for faq_id, _ in found] == [
                faq_id for faq_id, _ in expected[:3]
            ]


def test_features_carry_pinyin_per_character_and_word() -> None:
    families = token_features(["运费", "怎么", "的", "算"])
    assert families["w"] == ["运费", "怎么", "算"]
    assert families["c"] == ["运", "费", "怎", "么", "算"]
    assert families["a"] == ["运", "费", "怎", "么", "的", "算"]
    assert families["b"] == ["运费", "费怎", "怎么", "么算"]
    assert families["p"] == ["yun", "fei", "zen", "me", "suan"]
    assert families["s"] == ["yunfei", "zenme"]


@pytest.mark.parametrize(
    ("text", "faq_id"),
    [("运废怎么算", "shipping-fee"), ("怎么推款", "refund-how")],
)
def test_typos_still_reach_the_entry(demo_robot: Robot, text: str, faq_id: str) -> None:
    assert faq_id in [c.faq_id for c in demo_robot.decide(text).candidates]


def test_default_thresholds_suggest_for_a_vague_question(lexicon: Lexicon) -> None:
    robot = Robot(lexicon=lexicon)
    robot.rebuild(read_faq_file(DEMO_FAQ))
    vague = robot.decide("怎么保存")
    assert vague.action == "suggest"
    assert all(c.faq_id.startswith("storage-") for c in vague.candidates)
    clear = robot.decide("请问草莓怎么保存?")
    assert (clear.action, clear.faq_id) == ("answer", "storage-strawberry")


def test_saved_index_is_rebuilt_for_another_vocabulary(
    tmp_path: Path, lexicon: Lexicon, caplog: pytest.LogCaptureFixture
) -> None:
    entries = read_faq_file(SMALL_FAQ)
    first = Robot(thresholds=THRESHOLDS, index_dir=tmp_path / "index", lexicon=lexicon)
    first.rebuild(entries)

    extra = tmp_path / "synonyms.txt"
    extra.write_text("草莓 莓莓果\n", encoding="utf-8")
    shipped = Path(__file__).parent.parent / "goflypy" / "data" / "synonyms.txt"
    edited = Lexicon(synonym_paths=[shipped, extra])
    second = Robot(thresholds=THRESHOLDS, index_dir=tmp_path / "index", lexicon=edited)
    with caplog.at_level(logging.INFO, logger="goflypy.nlp"):
        second.rebuild(entries)
    assert "FAQ index built" in caplog.text
    assert second.decide("莓莓果怎么保存").faq_id == "strawberry"

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="goflypy.nlp"):
        Robot(index_dir=tmp_path / "index", lexicon=edited).rebuild(entries)
    assert "FAQ index loaded" in caplog.text


class _PluggedEmbedder:
    """Another embedder behind the interface: exercises the vector-index path."""

    def __init__(self, lexicon: Lexicon) -> None:
        self._inner = HashingEmbedder(lexicon, dim=256)
        self.dim = self._inner.dim
        self.calls = 0

    def fit(self, texts: list[str]) -> None:
        self._inner.fit(texts)

    def add(self, texts: list[str]) -> None:
        self._inner.add(texts)

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return self._inner.embed(texts)

    def state(self) -> dict[str, Any]:
        return self._inner.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self._inner.load_state(state)


def test_a_plugged_embedder_searches_the_vector_index(lexicon: Lexicon) -> None:
    class PluggedRobot(Robot):
        def new_embedder(self) -> Embedder:
            return _PluggedEmbedder(self.lexicon)

    robot = PluggedRobot(thresholds=THRESHOLDS, lexicon=lexicon)
    robot.rebuild(read_faq_file(DEMO_FAQ))
    embedder = robot._state.embedder
    assert isinstance(embedder, _PluggedEmbedder)
    before = embedder.calls
    decision = robot.decide("请问草莓怎么保存?")
    assert (decision.action, decision.faq_id) == ("answer", "storage-strawberry")
    assert embedder.calls == before + 1
    assert robot.decide("今天天气怎么样").action == "handoff"
    assert robot.decide("asdf").candidates == []
