"""Robot quality: the retail query set, sibling terms, calibration, bulk edits."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from goflypy.faqfile import read_faq_file
from goflypy.models import FaqEntry
from goflypy.nlp import Robot, evaluate
from goflypy.nlp.calibrate import calibrate, format_tradeoff
from goflypy.nlp.rerank import KbStats
from goflypy.nlp.segment import Lexicon

DATA = Path(__file__).parent / "data"
DEMO_FAQ = Path(__file__).parent.parent / "goflypy" / "data" / "demo_faq.jsonl"


@pytest.fixture(scope="module")
def demo_robot(lexicon: Lexicon) -> Robot:
    robot = Robot(lexicon=lexicon)
    robot.rebuild(read_faq_file(DEMO_FAQ))
    return robot


def _queries() -> list[dict[str, object]]:
    lines = (DATA / "retail_queries.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_retail_query_set_scores_at_least_0_9(demo_robot: Robot) -> None:
    result = evaluate(demo_robot, _queries())
    assert result["in_kb_top1"] >= 0.9
    assert result["in_kb_recall3"] >= 0.9
    assert result["correct_action"] >= 0.9
    assert result["correct_action_by_type"]["empty"] == 1.0


def _kb(lexicon: Lexicon, texts: list[str]) -> KbStats:
    stats = KbStats()
    for text in texts:
        raw = lexicon.surface_tokens(text)
        stats.add(raw, lexicon.content_words(raw))
    return stats


def test_sibling_of_a_core_term_is_found(lexicon: Lexicon) -> None:
    texts = [f"花呗{topic}" for topic in ("怎么还款", "额度", "分期", "开通")] * 3
    stats = _kb(lexicon, texts)
    assert "花呗" in stats.core_terms()
    assert stats.sibling_term(lexicon.surface_tokens("借呗怎么还款")) == "借呗"
    assert stats.sibling_term(lexicon.surface_tokens("花呗怎么还款")) is None
    # A sound-alike is a typo of the term, not another product.
    assert stats.sibling_term(lexicon.surface_tokens("花贝怎么还款")) is None


def test_calibrate_reports_a_tradeoff(demo_robot: Robot) -> None:
    saved = demo_robot.thresholds
    report = calibrate(demo_robot, _queries())
    assert demo_robot.thresholds is saved
    assert report["best"]["correct_action"] >= 0.9
    answers = [row["thresholds"]["answer"] for row in report["tradeoff"]]
    assert answers == sorted(answers)
    assert "robot_answer_threshold" in format_tradeoff(report)


def test_queries_during_bulk_import_never_fail(lexicon: Lexicon) -> None:
    robot = Robot(lexicon=lexicon)
    robot.rebuild(read_faq_file(DEMO_FAQ))
    bulk = [
        FaqEntry(f"bulk-{n}", f"第{n}号商品怎么保存", f"答案{n}") for n in range(300)
    ]
    errors: list[BaseException] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            try:
                robot.decide("草莓怎么保存")
            except BaseException as error:  # noqa: BLE001 - collected for the assert
                errors.append(error)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    robot.rebuild(read_faq_file(DEMO_FAQ) + bulk)
    for entry in bulk[:50]:
        robot.upsert(entry)
    stop.set()
    for thread in threads:
        thread.join()

    assert errors == []
    assert robot.decide("草莓怎么保存").faq_id == "storage-strawberry"
