"""FAQ files: JSONL and CSV round trips and errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from goflypy.faqfile import read_faq_file, write_faq_file
from goflypy.models import FaqEntry

DATA = Path(__file__).parent / "data"

ENTRIES = [
    FaqEntry(
        "strawberry", "草莓怎么保存", "冷藏，吃前再洗。", ["草莓放冰箱可以吗"], "保存"
    ),
    FaqEntry("comma", '带"引号",和逗号的问题', "第一行\n第二行", ["甲", "乙"], "", 17),
    FaqEntry("bare", "只有问题"),
]


@pytest.mark.parametrize("name", ["faq.jsonl", "faq.csv"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_faq_file(path, ENTRIES)
    assert read_faq_file(path) == ENTRIES


def test_csv_is_excel_friendly(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    write_faq_file(path, ENTRIES)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")


def test_gbk_csv_is_read(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    text = "faq_id,question,alternatives\nq1,运费怎么算,邮费多少|包邮吗\n"
    path.write_bytes(text.encode("gbk"))
    [entry] = read_faq_file(path)
    assert entry.alternatives == ["邮费多少", "包邮吗"]
    assert entry.answer == ""


def test_jsonl_fixture_without_answer() -> None:
    entries = read_faq_file(DATA / "faq_small.jsonl")
    assert [entry.faq_id for entry in entries] == [
        "strawberry",
        "shipping-fee",
        "refund-time",
    ]
    assert entries[2].answer == ""
    assert entries[0].alternatives == ["草莓放冰箱可以吗", "草莓能放几天"]


def test_bad_json_names_line() -> None:
    with pytest.raises(ValueError, match=r"faq_bad_json\.jsonl:2: bad JSON"):
        read_faq_file(DATA / "faq_bad_json.jsonl")


def test_duplicate_names_both_lines() -> None:
    with pytest.raises(
        ValueError, match=r":3: duplicate faq_id 'a' \(first on line 1\)"
    ):
        read_faq_file(DATA / "faq_duplicate.jsonl")


def test_missing_question_names_csv_line() -> None:
    # The second record spans lines 3-4, so the empty question is on line 5.
    with pytest.raises(ValueError, match=r"faq_bad_question\.csv:5: missing question"):
        read_faq_file(DATA / "faq_bad_question.csv")


def test_missing_faq_id(tmp_path: Path) -> None:
    path = tmp_path / "faq.jsonl"
    path.write_text('{"faq_id": "a", "question": "q"}\n{"question": "q2"}\n', "utf-8")
    with pytest.raises(ValueError, match=r"faq\.jsonl:2: missing faq_id"):
        read_faq_file(path)


def test_bad_alternatives(tmp_path: Path) -> None:
    path = tmp_path / "faq.jsonl"
    path.write_text('{"faq_id": "a", "question": "q", "alternatives": 3}\n', "utf-8")
    with pytest.raises(ValueError, match=r":1: alternatives must be a list"):
        read_faq_file(path)


def test_csv_without_required_column(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    path.write_text("faq_id,answer\na,b\n", "utf-8")
    with pytest.raises(ValueError, match=r"faq\.csv:1: .*'question'"):
        read_faq_file(path)


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown FAQ file type"):
        read_faq_file(tmp_path / "faq.xlsx")
    with pytest.raises(ValueError, match="unknown FAQ file type"):
        write_faq_file(tmp_path / "faq.txt", ENTRIES)


def test_demo_faq_is_valid() -> None:
    path = Path(__file__).parent.parent / "goflypy" / "data" / "demo_faq.jsonl"
    entries = read_faq_file(path)
    assert len(entries) >= 45
    for entry in entries:
        assert entry.answer and entry.category
        assert len(entry.alternatives) >= 2


def test_oversized_fields_are_refused_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "faq.jsonl"
    rows = [
        {"faq_id": "ok", "question": "运费怎么算", "answer": "满99包邮"},
        {"faq_id": "big", "question": "问" * 201, "answer": "答"},
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    with pytest.raises(ValueError, match=r"faq\.jsonl:2: question is longer than 200"):
        read_faq_file(path)
    rows[1] = {"faq_id": "big", "question": "问", "answer": "答" * 2001}
    path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    with pytest.raises(ValueError, match=r"answer is longer than 2000"):
        read_faq_file(path)
    rows[1] = {"faq_id": "big", "question": "问", "alternatives": ["又"] * 51}
    path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    with pytest.raises(ValueError, match=r"more than 50 alternatives"):
        read_faq_file(path)


def test_csv_cells_never_run_as_spreadsheet_formulas(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    risky = FaqEntry("f1", '=HYPERLINK("http://x")', "-1 元？", ["@所有人"], "+")
    write_faq_file(path, [risky])
    text = path.read_text(encoding="utf-8-sig")
    assert "'=HYPERLINK" in text and "'-1 元" in text
    assert read_faq_file(path) == [risky]
