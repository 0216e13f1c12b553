"""FAQ files: JSONL and CSV round trips, and every bad line listed by number."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from goflypy import faqfile
from goflypy.faqfile import FaqFileError, read_faq_file, write_faq_file
from goflypy.models import FaqEntry
from tests.test_cli import goflypy

MAX_LISTED = faqfile.MAX_LISTED_PROBLEMS

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


def problems_of(path: Path) -> list[str]:
    """The problems a refused file lists (it must be refused)."""
    with pytest.raises(FaqFileError) as caught:
        read_faq_file(path)
    assert str(caught.value).splitlines()[1:] == [
        f"  {problem}" for problem in caught.value.problems
    ]
    return caught.value.problems


def test_bad_json_names_line() -> None:
    assert problems_of(DATA / "faq_bad_json.jsonl") == [
        "第 2 行：不是有效的 JSON（第 34 个字符附近出错）"
    ]


def test_duplicate_names_both_lines() -> None:
    assert problems_of(DATA / "faq_duplicate.jsonl") == [
        "第 3 行：编号 (faq_id)“a”与第 1 行重复"
    ]


def test_missing_question_names_csv_line() -> None:
    # The second record spans lines 3-4, so the empty question is on line 5.
    with pytest.raises(ValueError, match=r"faq_bad_question\.csv：发现 1 处问题"):
        read_faq_file(DATA / "faq_bad_question.csv")
    assert problems_of(DATA / "faq_bad_question.csv") == [
        "第 5 行：缺少问题 (question)"
    ]


def test_every_bad_line_is_listed_by_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "faq.jsonl"
    lines = [
        '{"faq_id": "a", "question": "运费怎么算"}',
        '{"faq_id": "b", "question": "  "}',
        "",
        "{not json",
        '["a list"]',
        '{"faq_id": "c", "question": ["q"], "alternatives": 3, "updated": "x"}',
        '{"faq_id": "a", "question": "运费多少"}',
        '{"faq_id": "d", "question": "发票怎么开", "category": {"k": 1}}',
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert problems_of(path) == [
        "第 2 行：缺少问题 (question)",
        "第 4 行：不是有效的 JSON（第 2 个字符附近出错）",
        "第 5 行：应为一个 JSON 对象（{...}）",
        "第 6 行：问题 (question) 必须是文本",
        "第 6 行：相似问法 (alternatives) 必须是文本列表",
        "第 6 行：更新时间 (updated) 必须是整数",
        "第 7 行：编号 (faq_id)“a”与第 1 行重复",
        "第 8 行：分类 (category) 必须是文本",
    ]


def test_bad_csv_rows_are_all_listed(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    path.write_text(
        "faq_id,question,answer,updated\na,,答案,\nb,发票怎么开,可以,\nc,,答案,soon\n",
        encoding="utf-8",
    )
    assert problems_of(path) == [
        "第 2 行：缺少问题 (question)",
        "第 4 行：更新时间 (updated) 必须是整数",
        "第 4 行：缺少问题 (question)",
    ]


def test_the_list_is_capped_and_the_rest_counted(tmp_path: Path) -> None:
    path = tmp_path / "faq.jsonl"
    rows = [{"faq_id": f"q{n}", "question": ""} for n in range(MAX_LISTED + 12)]
    path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    with pytest.raises(FaqFileError) as caught:
        read_faq_file(path, name="big.jsonl")
    error = caught.value
    assert len(error.problems) == MAX_LISTED and error.more == 12
    assert error.problems[-1] == f"第 {MAX_LISTED} 行：缺少问题 (question)"
    text = str(error)
    assert text.startswith(f"big.jsonl：发现 {MAX_LISTED + 12} 处问题，整个文件未导入")
    assert text.endswith("另有 12 处问题未列出")
    assert str(tmp_path) not in text


def test_blank_ids_get_new_ones(tmp_path: Path) -> None:
    path = tmp_path / "faq.jsonl"
    lines = [
        '{"faq_id": "", "question": "运费怎么算"}',
        '{"faq_id": "  ", "question": "发票怎么开"}',
        '{"question": "多久发货"}',
        '{"faq_id": "kept", "question": "怎么退货"}',
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    entries = read_faq_file(path)
    ids = [entry.faq_id for entry in entries]
    assert ids[3] == "kept"
    assert all(re.fullmatch(r"faq-[0-9a-f]{8}", faq_id) for faq_id in ids[:3])
    assert len(set(ids)) == 4
    assert [entry.question for entry in entries][:3] == [
        "运费怎么算",
        "发票怎么开",
        "多久发货",
    ]


def test_new_ids_avoid_the_file_and_taken_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "faq.csv"
    path.write_text(
        "faq_id,question\n,运费怎么算\nfaq-1,发票怎么开\n", encoding="utf-8"
    )
    made = iter(["faq-1", "faq-2", "faq-3"])
    monkeypatch.setattr(faqfile, "new_faq_id", lambda: next(made))
    entries = read_faq_file(path, taken={"faq-2"}.__contains__)
    assert [entry.faq_id for entry in entries] == ["faq-3", "faq-1"]


def test_missing_faq_id_is_no_longer_an_error(tmp_path: Path) -> None:
    path = tmp_path / "faq.jsonl"
    path.write_text('{"faq_id": "a", "question": "q"}\n{"question": "q2"}\n', "utf-8")
    assert [entry.question for entry in read_faq_file(path)] == ["q", "q2"]


def test_bad_alternatives(tmp_path: Path) -> None:
    path = tmp_path / "faq.jsonl"
    path.write_text('{"faq_id": "a", "question": "q", "alternatives": 3}\n', "utf-8")
    assert problems_of(path) == ["第 1 行：相似问法 (alternatives) 必须是文本列表"]


def test_csv_without_required_column(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    path.write_text("faq_id,answer\na,b\n", "utf-8")
    assert problems_of(path) == ["第 1 行：CSV 表头缺少“question”列"]


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="不支持的文件类型“.xlsx”"):
        read_faq_file(tmp_path / "faq.xlsx")
    with pytest.raises(ValueError, match="unknown FAQ file type"):
        write_faq_file(tmp_path / "faq.txt", ENTRIES)


def test_the_command_line_lists_the_problems_and_imports_nothing(
    tmp_path: Path,
) -> None:
    data = ("--data-dir", str(tmp_path))
    bad = tmp_path / "bad.jsonl"
    lines = [
        '{"faq_id": "durian", "question": "榴莲怎么挑选", "answer": "闻香味"}',
        '{"faq_id": "x"}',
        '{"faq_id": "y", "question": "q", "updated": "soon"}',
    ]
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    refused = goflypy("faq", "import", str(bad), *data)
    assert refused.returncode == 1, refused.stderr
    assert "Traceback" not in refused.stderr
    assert "整个文件未导入" in refused.stderr
    assert "第 2 行：缺少问题 (question)" in refused.stderr
    assert "第 3 行：更新时间 (updated) 必须是整数" in refused.stderr
    exported = tmp_path / "out.jsonl"
    assert goflypy("faq", "export", str(exported), *data).returncode == 0
    assert "durian" not in exported.read_text(encoding="utf-8")


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
        {"faq_id": "big", "question": "问" * 201, "answer": "答" * 2001},
        {"faq_id": "many", "question": "问", "alternatives": ["又"] * 51},
        {"faq_id": "long", "question": "问", "alternatives": ["又" * 201]},
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    assert problems_of(path) == [
        "第 2 行：问题 (question) 超过 200 个字符",
        "第 2 行：答案 (answer) 超过 2000 个字符",
        "第 3 行：相似问法 (alternatives) 超过 50 条",
        "第 4 行：相似问法 (alternatives) 中有一条超过 200 个字符",
    ]


def test_csv_cells_never_run_as_spreadsheet_formulas(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    risky = FaqEntry("f1", '=HYPERLINK("http://x")', "-1 元？", ["@所有人"], "+")
    write_faq_file(path, [risky])
    text = path.read_text(encoding="utf-8-sig")
    assert "'=HYPERLINK" in text and "'-1 元" in text
    assert read_faq_file(path) == [risky]


def test_ids_the_pages_cannot_address_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "faq.jsonl"
    rows = [
        {"faq_id": "a/b", "question": "草莓怎么保存"},
        {"faq_id": "ok-1", "question": "运费怎么算"},
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    with pytest.raises(FaqFileError) as caught:
        read_faq_file(path)
    assert caught.value.problems[0].startswith("第 1 行：编号 (faq_id)“a/b”不可用")
    assert caught.value.total == 1


def test_csv_quotes_that_do_not_pair_refuse_the_file(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    path.write_text(
        'faq_id,question,answer\nr1,第一行,答案一\nr2,"他说"好的",答案二\n'
        "r3,第三行,答案三\n",
        encoding="utf-8",
    )
    assert problems_of(path) == [
        '第 3 行：CSV 字段里的引号要写成两个（""），或把整个字段放在引号里，'
        "此处之后的内容无法读取"
    ]
    path.write_text(
        'faq_id,question,answer\nq9,"没有闭合,答\nq10,b,c\n', encoding="utf-8"
    )
    assert problems_of(path) == ["第 2 行：CSV 有引号没有闭合，此处之后的内容无法读取"]
    # A quoted field may hold line breaks: an answer over several lines.
    path.write_text('faq_id,question,answer\nm1,问,"第一行\n第二行"\n', "utf-8")
    assert read_faq_file(path)[0].answer == "第一行\n第二行"


def test_unknown_csv_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    path.write_text("faq_id,question,答案\nc1,有答案吗,这是答案\n", "utf-8")
    [problem] = problems_of(path)
    assert problem.startswith("第 1 行：CSV 表头有不认识的列 “答案”，可用的列：")


def test_big5_is_refused_not_garbled(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    text = "faq_id,question,answer\nbig5a,士多啤梨點樣保存,放雪櫃冷藏，兩日內食完。\n"
    path.write_bytes(text.encode("big5"))
    assert problems_of(path) == [
        "文件不是 UTF-8 或 GB18030 编码的文本，请另存为 UTF-8 后再导入"
    ]
    path.write_bytes(text.replace("big5a", "gbk1").encode("gb18030"))
    assert read_faq_file(path)[0].question == "士多啤梨點樣保存"


def test_lone_surrogates_and_dot_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "faq.jsonl"
    path.write_text(
        '{"faq_id": "j1", "question": "\\ud800abc", "answer": "x"}\n'
        '{"faq_id": "j2", "question": "q", "alternatives": ["\\udfff"]}\n'
        '{"faq_id": "..", "question": "q2"}\n',
        encoding="utf-8",
    )
    problems = problems_of(path)
    assert (
        problems[0] == "第 1 行：问题 (question) 含有无效字符（不成对的 UTF-16 代理项）"
    )
    assert problems[1].startswith("第 2 行：相似问法 (alternatives) 含有无效字符")
    assert problems[2].startswith("第 3 行：编号 (faq_id)“..”不可用")
