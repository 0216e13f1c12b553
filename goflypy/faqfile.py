"""FAQ import and export files: JSON Lines or CSV, chosen by file extension.

Columns (JSON keys or the CSV header): ``faq_id``, ``question``, ``answer``,
``alternatives`` (a JSON list of strings, or a ``|``-separated string in CSV),
``category`` and optionally ``updated``. ``question`` is required (an entry
without an answer is matched but never answered: the robot hands its
questions to a human); a row with a blank ``faq_id`` gets a new one; texts
have upper limits (``entry_problems``).

Reading checks the whole file before anything is kept: every problem is
collected, by line and field, in Chinese for the shop's admins, and one
FaqFileError (a ValueError) lists them all, so a bad file is refused whole.
"""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .display import clean
from .models import FaqEntry

MAX_ID_CHARS = 64
MAX_CATEGORY_CHARS = 40
MAX_QUESTION_CHARS = 200
MAX_ANSWER_CHARS = 2000
MAX_ALTERNATIVES = 50
# What an entry id may hold: it appears in URLs and file names.
FAQ_ID_PATTERN = re.compile(r"^(?!\.+$)[\w.-]{1,64}$")
FAQ_ID_RULE = (
    "编号只能包含字母、数字、汉字、下划线、点和连字符，不能只有点，最长 64 个字符"
)
# Characters that no Chinese text file means: GB18030 gives them to Big5 bytes.
_PRIVATE_USE = re.compile("[\ue000-\uf8ff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# The CSV reader's complaints (strict mode), as an admin reads them.
_CSV_ERRORS = {
    "',' expected after '\"'": '字段里的引号要写成两个（""），或把整个字段放在引号里',
    "unexpected end of data": "有引号没有闭合",
    "line contains NUL": "含有空字符 (NUL)",
}
_BROKEN = "含有无效字符（不成对的 UTF-16 代理项）"
# A file's problems listed one by one; the rest are only counted.
MAX_LISTED_PROBLEMS = 50
COLUMNS = ("faq_id", "question", "answer", "alternatives", "category", "updated")
_JSONL = (".jsonl", ".ndjson")
_CSV = (".csv",)
# How each column is named to the admin.
_LABELS = {
    "faq_id": "编号 (faq_id)",
    "question": "问题 (question)",
    "answer": "答案 (answer)",
    "alternatives": "相似问法 (alternatives)",
    "category": "分类 (category)",
    "updated": "更新时间 (updated)",
}


def has_surrogates(text: str) -> bool:
    """Tell whether ``text`` holds a lone UTF-16 surrogate (no store takes it)."""
    return _SURROGATE.search(text) is not None


def new_faq_id() -> str:
    """A fresh random entry id, as the admin form and imports hand out."""
    return "faq-" + secrets.token_hex(4)


class FaqFileError(ValueError):
    """A FAQ file that cannot be read: every problem found, by line.

    ``problems`` holds the first MAX_LISTED_PROBLEMS messages and ``more``
    counts the others; ``str()`` is a summary line followed by the list.
    """

    def __init__(self, name: str, problems: list[str]) -> None:
        self.name = name
        self.total = len(problems)
        self.problems = problems[:MAX_LISTED_PROBLEMS]
        self.more = self.total - len(self.problems)
        lines = [self.summary, *(f"  {problem}" for problem in self.problems)]
        if self.more:
            lines.append(f"  …… 另有 {self.more} 处问题未列出")
        super().__init__("\n".join(lines))

    @property
    def summary(self) -> str:
        return f"{self.name}：发现 {self.total} 处问题，整个文件未导入"


@dataclass
class _Problems:
    """Problems found so far, each already naming its line."""

    items: list[str] = field(default_factory=list)

    def add(self, line: int, message: str) -> None:
        self.items.append(f"第 {line} 行：{message}")


def read_faq_file(
    path: Path,
    *,
    name: str | None = None,
    taken: Callable[[str], bool] | None = None,
) -> list[FaqEntry]:
    """Read FAQ entries from a .jsonl or .csv file.

    Raises FaqFileError listing every bad line (``name`` stands for the file
    in its message). Rows with a blank ``faq_id`` get a new id that no other
    row uses and, when given, for which ``taken`` is false.
    """
    shown = str(path) if name is None else name
    suffix = path.suffix.lower()
    if suffix not in _JSONL + _CSV:
        raise FaqFileError(
            shown, [f"不支持的文件类型“{suffix}”，请使用 .csv 或 .jsonl 文件"]
        )
    text = _read_text(path, shown)
    problems = _Problems()
    rows = _jsonl_rows if suffix in _JSONL else _csv_rows
    entries: list[FaqEntry] = []
    seen: dict[str, int] = {}
    for line, row in rows(text, problems):
        before = len(problems.items)
        entry = _entry(line, row, problems)
        first = seen.get(entry.faq_id)
        if first is not None:
            problems.add(
                line, f"{_LABELS['faq_id']}“{entry.faq_id}”与第 {first} 行重复"
            )
        elif entry.faq_id:
            seen[entry.faq_id] = line
        if len(problems.items) == before:
            entries.append(entry)
    if problems.items:
        raise FaqFileError(shown, problems.items)
    for entry in entries:
        if not entry.faq_id:
            entry.faq_id = _fresh_id(seen, taken)
            seen[entry.faq_id] = 0
    return entries


def _fresh_id(seen: dict[str, int], taken: Callable[[str], bool] | None) -> str:
    while True:
        faq_id = new_faq_id()
        if faq_id not in seen and not (taken is not None and taken(faq_id)):
            return faq_id


def write_faq_file(path: Path, entries: list[FaqEntry]) -> None:
    """Write ``entries`` as .jsonl or .csv (UTF-8 with BOM, so Excel reads it)."""
    suffix = path.suffix.lower()
    if suffix in _JSONL:
        lines = [json.dumps(_record(entry), ensure_ascii=False) for entry in entries]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    elif suffix in _CSV:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for entry in entries:
            record = _record(entry)
            record["alternatives"] = "|".join(entry.alternatives)
            writer.writerow({name: _to_cell(value) for name, value in record.items()})
        path.write_text(buffer.getvalue(), encoding="utf-8-sig")
    else:
        raise ValueError(
            f"{path}: unknown FAQ file type {suffix!r} (use .jsonl or .csv)"
        )


def _read_text(path: Path, shown: str) -> str:
    """Read UTF-8 (with or without BOM), falling back to GB18030 for Excel files."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        text = None
    # Big5 bytes often decode as GB18030 too, into private-use characters.
    if text is None or _PRIVATE_USE.search(text):
        raise FaqFileError(
            shown, ["文件不是 UTF-8 或 GB18030 编码的文本，请另存为 UTF-8 后再导入"]
        )
    return text


def _jsonl_rows(text: str, problems: _Problems) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; note bad lines."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            problems.add(number, f"不是有效的 JSON（第 {error.colno} 个字符附近出错）")
            continue
        if not isinstance(row, dict):
            problems.add(number, "应为一个 JSON 对象（{...}）")
            continue
        yield number, row


# A spreadsheet runs a cell that starts like a formula; exported cells get
# a leading apostrophe, which import takes off again.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _to_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _from_cell(value: Any) -> Any:
    if isinstance(value, str) and value[1:2] and value[1:].startswith(_FORMULA_START):
        return value[1:] if value.startswith("'") else value
    return value


def _csv_rows(text: str, problems: _Problems) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (starting line number, row) for each CSV record after the header.

    A header without the ``faq_id`` or ``question`` column, or a record the
    CSV reader cannot get past, ends the file with a problem.
    """
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        fields = [name.strip() for name in reader.fieldnames or []]
    except csv.Error:
        problems.add(1, "CSV 表头无法读取")
        return
    missing = [name for name in ("faq_id", "question") if name not in fields]
    for name in missing:
        problems.add(1, f"CSV 表头缺少“{name}”列")
    unknown = [name for name in fields if name and name not in COLUMNS]
    if unknown:
        names = "、".join(f"“{name}”" for name in unknown)
        problems.add(1, f"CSV 表头有不认识的列 {names}，可用的列：{'、'.join(COLUMNS)}")
    if missing or unknown:
        return
    reader.fieldnames = fields
    start = reader.line_num + 1
    try:
        for row in reader:
            if any(
                (value or "").strip()
                for value in row.values()
                if isinstance(value, str)
            ):
                yield start, {name: _from_cell(value) for name, value in row.items()}
            start = reader.line_num + 1
    except csv.Error as error:
        why = _CSV_ERRORS.get(str(error).split(" (")[0], "格式错误")
        problems.add(start, f"CSV {why}，此处之后的内容无法读取")


def _entry(line: int, row: dict[str, Any], problems: _Problems) -> FaqEntry:
    """Check one row and turn it into a FaqEntry, noting each problem.

    The entry is only kept when no problem was noted; a blank ``faq_id``
    stays blank here.
    """

    wrong_type: set[str] = set()

    def text(name: str) -> str:
        value = row.get(name)
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            problems.add(line, f"{_LABELS[name]} 必须是文本")
            wrong_type.add(name)
            return ""
        if isinstance(value, str) and has_surrogates(value):
            problems.add(line, f"{_LABELS[name]} {_BROKEN}")
            wrong_type.add(name)
            return ""
        return clean(str(value)).strip()

    entry = FaqEntry(
        faq_id=text("faq_id"),
        question=text("question"),
        answer=text("answer"),
        alternatives=_alternatives(row.get("alternatives"), line, problems),
        category=text("category"),
        updated=_updated(row.get("updated"), line, problems),
    )
    if entry.faq_id and not FAQ_ID_PATTERN.match(entry.faq_id):
        problems.add(line, f"{_LABELS['faq_id']}“{entry.faq_id}”不可用：{FAQ_ID_RULE}")
    if not entry.question and "question" not in wrong_type:
        problems.add(line, f"缺少{_LABELS['question']}")
    for problem in entry_problems(entry):
        problems.add(line, problem)
    return entry


def entry_problems(entry: FaqEntry) -> list[str]:
    """What makes an entry too big to keep (Chinese, naming the field).

    Long texts would slow every rebuild of the index and every answer;
    the limits leave room for any real FAQ.
    """
    found = [
        f"{_LABELS[name]} 超过 {most} 个字符"
        for name, value, most in (
            ("faq_id", entry.faq_id, MAX_ID_CHARS),
            ("question", entry.question, MAX_QUESTION_CHARS),
            ("answer", entry.answer, MAX_ANSWER_CHARS),
            ("category", entry.category, MAX_CATEGORY_CHARS),
        )
        if len(value) > most
    ]
    if len(entry.alternatives) > MAX_ALTERNATIVES:
        found.append(f"{_LABELS['alternatives']} 超过 {MAX_ALTERNATIVES} 条")
    if any(len(text) > MAX_QUESTION_CHARS for text in entry.alternatives):
        found.append(
            f"{_LABELS['alternatives']} 中有一条超过 {MAX_QUESTION_CHARS} 个字符"
        )
    return found


def _alternatives(value: Any, line: int, problems: _Problems) -> list[str]:
    """Return alternatives from a JSON list or a ``|``-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        items = value.split("|")
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = value
    else:
        problems.add(line, f"{_LABELS['alternatives']} 必须是文本列表")
        return []
    if any(has_surrogates(item) for item in items):
        problems.add(line, f"{_LABELS['alternatives']} {_BROKEN}")
        return []
    cleaned = (clean(item).strip() for item in items)
    return [item for item in cleaned if item]


def _updated(value: Any, line: int, problems: _Problems) -> int:
    """Return the ``updated`` timestamp as an int (0 when absent)."""
    if value is None or value == "":
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        problems.add(line, f"{_LABELS['updated']} 必须是整数")
        return 0


def _record(entry: FaqEntry) -> dict[str, Any]:
    """Return the JSON-ready form of ``entry``."""
    return {
        "faq_id": entry.faq_id,
        "question": entry.question,
        "answer": entry.answer,
        "alternatives": list(entry.alternatives),
        "category": entry.category,
        "updated": entry.updated,
    }
