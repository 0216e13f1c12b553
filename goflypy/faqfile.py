"""FAQ import and export files: JSON Lines or CSV, chosen by file extension.

Columns (JSON keys or the CSV header): ``faq_id``, ``question``, ``answer``,
``alternatives`` (a JSON list of strings, or a ``|``-separated string in CSV),
``category`` and optionally ``updated``. ``faq_id`` and ``question`` are
required (an entry without an answer is matched but never answered: the
robot hands its questions to a human); texts have upper limits
(``entry_problem``). Every problem raises ValueError naming the file and
line number.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .models import FaqEntry

MAX_ID_CHARS = 64
MAX_CATEGORY_CHARS = 40
MAX_QUESTION_CHARS = 200
MAX_ANSWER_CHARS = 2000
MAX_ALTERNATIVES = 50
COLUMNS = ("faq_id", "question", "answer", "alternatives", "category", "updated")
_JSONL = (".jsonl", ".ndjson")
_CSV = (".csv",)


def read_faq_file(path: Path) -> list[FaqEntry]:
    """Read FAQ entries from a .jsonl or .csv file; raises ValueError on bad rows."""
    suffix = path.suffix.lower()
    if suffix not in _JSONL + _CSV:
        raise ValueError(
            f"{path}: unknown FAQ file type {suffix!r} (use .jsonl or .csv)"
        )
    text = _read_text(path)
    rows = _jsonl_rows(path, text) if suffix in _JSONL else _csv_rows(path, text)

    entries: list[FaqEntry] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        entry = _entry(path, line, row)
        if entry.faq_id in seen:
            raise ValueError(
                f"{path}:{line}: duplicate faq_id {entry.faq_id!r} "
                f"(first on line {seen[entry.faq_id]})"
            )
        seen[entry.faq_id] = line
        entries.append(entry)
    return entries


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


def _read_text(path: Path) -> str:
    """Read UTF-8 (with or without BOM), falling back to GB18030 for Excel files."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 or GB18030 text") from None


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: bad JSON: {error.msg}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object")
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


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (starting line number, row) for each CSV record after the header."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = [name.strip() for name in reader.fieldnames or []]
    for required in ("faq_id", "question"):
        if required not in fields:
            raise ValueError(f"{path}:1: CSV header lacks the column {required!r}")
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
        raise ValueError(f"{path}:{reader.line_num}: bad CSV: {error}") from None


def _entry(path: Path, line: int, row: dict[str, Any]) -> FaqEntry:
    """Validate one row and turn it into a FaqEntry."""
    where = f"{path}:{line}"
    faq_id = _text(row.get("faq_id"), where, "faq_id").strip()
    question = _text(row.get("question"), where, "question").strip()
    answer = _text(row.get("answer"), where, "answer").strip()
    if not faq_id:
        raise ValueError(f"{where}: missing faq_id")
    if not question:
        raise ValueError(f"{where}: missing question")
    entry = FaqEntry(
        faq_id=faq_id,
        question=question,
        answer=answer,
        alternatives=_alternatives(row.get("alternatives"), where),
        category=_text(row.get("category"), where, "category").strip(),
        updated=_updated(row.get("updated"), where),
    )
    problem = entry_problem(entry)
    if problem:
        raise ValueError(f"{where}: {problem}")
    return entry


def entry_problem(entry: FaqEntry) -> str | None:
    """What makes an entry too big to keep, or None.

    Long texts would slow every rebuild of the index and every answer;
    the limits leave room for any real FAQ.
    """
    for name, value, most in (
        ("faq_id", entry.faq_id, MAX_ID_CHARS),
        ("question", entry.question, MAX_QUESTION_CHARS),
        ("answer", entry.answer, MAX_ANSWER_CHARS),
        ("category", entry.category, MAX_CATEGORY_CHARS),
    ):
        if len(value) > most:
            return f"{name} is longer than {most} characters"
    if len(entry.alternatives) > MAX_ALTERNATIVES:
        return f"more than {MAX_ALTERNATIVES} alternatives"
    if any(len(text) > MAX_QUESTION_CHARS for text in entry.alternatives):
        return f"an alternative is longer than {MAX_QUESTION_CHARS} characters"
    return None


def _text(value: Any, where: str, name: str) -> str:
    """Return ``value`` as a string; None and numbers are accepted."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{where}: {name} must be text")
    return str(value)


def _alternatives(value: Any, where: str) -> list[str]:
    """Return alternatives from a JSON list or a ``|``-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        items = value.split("|")
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = value
    else:
        raise ValueError(f"{where}: alternatives must be a list of strings")
    return [item.strip() for item in items if item.strip()]


def _updated(value: Any, where: str) -> int:
    """Return the ``updated`` timestamp as an int (0 when absent)."""
    if value is None or value == "":
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: updated must be an integer") from None


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
