"""The FAQ robot, with real jieba and hnswlib."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from goflypy.faqfile import read_faq_file
from goflypy.models import FaqEntry
from goflypy.nlp import Candidate, Decision, Robot, Thresholds, evaluate
from goflypy.nlp.normalize import normalize_text
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
    assert lexicon.tokens("车厘子") == ["樱桃"]
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
