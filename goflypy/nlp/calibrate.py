"""Choose the answer/suggest thresholds from a labelled query file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .evaluate import is_correct, live_decision
from .robot import (
    OTHER_GOODS,
    SUGGEST_REPLY,
    WHICH_GOODS,
    Candidate,
    Decision,
    Robot,
    Thresholds,
)

_ANSWER_GRID = [round(0.30 + 0.02 * step, 2) for step in range(26)]
_MARGIN_GRID = [0.0, 0.01, 0.02, 0.03, 0.05]
_SUGGEST_BELOW = [0.0, 0.05, 0.10]


@dataclass(slots=True)
class _Row:
    """One labelled query with the decision it gets when nothing is held back."""

    gold: str | None
    intent: str | None
    fixed: Decision | None
    candidates: list[Candidate]
    # The best entry is about other goods than the question, or the best
    # entries name different goods and the question none: never answered,
    # whatever the thresholds.
    held_back: bool = False


def _rows(robot: Robot, queries: list[dict[str, Any]]) -> list[_Row]:
    """Decide every query once with zero thresholds and keep the ranked lists."""
    saved = robot.thresholds
    robot.thresholds = Thresholds(0.0, 0.0, 0.0)
    try:
        rows = []
        for query in queries:
            decision = live_decision(robot, str(query["query"]))
            held_back = decision.held_back in (OTHER_GOODS, WHICH_GOODS)
            # Intents and hand-offs that the thresholds cannot change stay fixed.
            fixed = None if decision.action == "answer" or held_back else decision
            rows.append(
                _Row(
                    query.get("gold_faq_id"),
                    query.get("intent"),
                    fixed,
                    decision.candidates,
                    held_back,
                )
            )
        return rows
    finally:
        robot.thresholds = saved


def _score(rows: list[_Row], thresholds: Thresholds) -> dict[str, float]:
    """Return correct-action, wrong-answer and hand-off rates for ``thresholds``."""
    correct = wrong = handoff = 0
    for row in rows:
        decision = row.fixed or Robot._choose(row.candidates, thresholds)
        if row.held_back and decision.action == "answer":
            decision = Decision("suggest", SUGGEST_REPLY, None, decision.score)
        correct += is_correct(decision, row.gold, row.intent)
        wrong += decision.action == "answer" and decision.faq_id != row.gold
        handoff += decision.action in ("handoff", "human")
    total = max(len(rows), 1)
    return {
        "correct_action": round(correct / total, 4),
        "wrong_answer": round(wrong / total, 4),
        "handoff": round(handoff / total, 4),
    }


def calibrate(robot: Robot, queries: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the best thresholds on ``queries`` and the trade-off table.

    The best setting maximises correct action; among equals, the one with
    fewer wrong answers wins. ``tradeoff`` lists, per answer threshold, the
    best margin and suggest band found for it.
    """
    rows = _rows(robot, queries)
    table: list[dict[str, Any]] = []
    for answer in _ANSWER_GRID:
        options = [
            (Thresholds(answer, max(0.0, answer - below), margin), below)
            for margin in _MARGIN_GRID
            for below in _SUGGEST_BELOW
        ]
        scored = [(_score(rows, option), option) for option, _below in options]
        figures, best = max(
            scored,
            key=lambda item: (item[0]["correct_action"], -item[0]["wrong_answer"]),
        )
        table.append({"thresholds": _as_dict(best), **figures})

    chosen = max(table, key=lambda row: (row["correct_action"], -row["wrong_answer"]))
    return {"queries": len(rows), "best": chosen, "tradeoff": table}


def _as_dict(thresholds: Thresholds) -> dict[str, float]:
    """Return ``thresholds`` as a JSON-ready dict."""
    return {
        "answer": thresholds.answer,
        "suggest": round(thresholds.suggest, 2),
        "margin": thresholds.margin,
    }


def format_tradeoff(report: dict[str, Any]) -> str:
    """Render a calibration report as a table and the settings to use."""
    lines = [
        f"{report['queries']} labelled queries",
        "answer  suggest  margin  correct  wrong-answer  handoff",
    ]
    for row in report["tradeoff"]:
        limit = row["thresholds"]
        lines.append(
            f"{limit['answer']:6.2f}  {limit['suggest']:7.2f}  {limit['margin']:6.2f}"
            f"  {row['correct_action']:7.3f}  {row['wrong_answer']:12.3f}"
            f"  {row['handoff']:7.3f}"
        )
    best = report["best"]["thresholds"]
    lines += [
        "",
        "best on this file (put in the config file):",
        f"robot_answer_threshold = {best['answer']}",
        f"robot_suggest_threshold = {best['suggest']}",
        f"robot_margin = {best['margin']}",
    ]
    return "\n".join(lines)
