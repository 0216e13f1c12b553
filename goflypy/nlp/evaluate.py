"""Offline scoring of the robot against labelled queries."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .intents import detect_order
from .robot import Decision, Robot

ORDER = "order"

DEFINITION = (
    "correct_action: a query with a gold FAQ id is correct only when the action "
    "is 'answer' with that id (a 'suggest' listing it does not count); a query "
    "whose gold id is null is correct only when the action is 'handoff' or "
    "'human' (a 'suggest' or an answer is wrong). in_kb_top1 and in_kb_recall3 "
    "are over queries with a gold id and read the ranked candidates whatever "
    "the action. As in a live chat, a question about an order goes to the "
    "order system (action 'order') before the FAQ: a query whose intent is "
    "'order' is correct only then, and any other query sent there is wrong."
)


def is_correct(decision: Decision, gold: str | None, intent: str | None = None) -> bool:
    """Apply the correct_action rule to one decision."""
    if intent == ORDER or decision.action == ORDER:
        return intent == ORDER and decision.action == ORDER
    if gold is None:
        return decision.action in ("handoff", "human")
    return decision.action == "answer" and decision.faq_id == gold


def live_decision(robot: Robot, text: str) -> Decision:
    """Route ``text`` as a live chat does: order questions skip the FAQ."""
    if detect_order(text) is not None:
        return Decision(ORDER, "")
    return robot.decide(text)


def _ratio(part: int, whole: int) -> float:
    """Return part/whole rounded for reports, 0.0 when whole is 0."""
    return round(part / whole, 4) if whole else 0.0


def evaluate(
    robot: Robot, queries: list[dict[str, Any]], details: bool = False
) -> dict[str, Any]:
    """Run ``robot.decide`` on every query and return JSON-ready figures.

    Each query holds ``qid``, ``query``, ``gold_faq_id`` (None: must hand off)
    and optionally ``type`` and ``intent`` ("order": must go to the order
    system). With ``details`` the result also lists every
    query's action, score and candidate ids.
    """
    counts: Counter[str] = Counter()
    handoffs: Counter[str] = Counter()
    correct_by_type: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    top1 = recall3 = in_kb = correct = 0
    rows = []

    for query in queries:
        gold = query.get("gold_faq_id")
        kind = str(query.get("type") or ("in_kb" if gold else "handoff"))
        decision = live_decision(robot, str(query["query"]))
        ranked = [candidate.faq_id for candidate in decision.candidates]
        ok = is_correct(decision, gold, query.get("intent"))

        counts[kind] += 1
        actions[decision.action] += 1
        handoffs[kind] += decision.action in ("handoff", "human")
        correct_by_type[kind] += ok
        correct += ok
        if gold is not None:
            in_kb += 1
            top1 += bool(ranked) and ranked[0] == gold
            recall3 += gold in ranked[:3]
        if details:
            rows.append(_detail(query, decision, ok))

    result: dict[str, Any] = {
        "queries": len(queries),
        "in_kb_queries": in_kb,
        "in_kb_top1": _ratio(top1, in_kb),
        "in_kb_recall3": _ratio(recall3, in_kb),
        "correct_action": _ratio(correct, len(queries)),
        "correct_action_by_type": {
            kind: _ratio(correct_by_type[kind], n) for kind, n in counts.items()
        },
        "handoff_rate": {kind: _ratio(handoffs[kind], n) for kind, n in counts.items()},
        "counts": dict(counts),
        "actions": dict(actions),
        "thresholds": {
            "answer": robot.thresholds.answer,
            "suggest": robot.thresholds.suggest,
        },
        "definition": DEFINITION,
    }
    if details:
        result["details"] = rows
    return result


def _detail(query: dict[str, Any], decision: Decision, ok: bool) -> dict[str, Any]:
    """Return the per-query row of a detailed report."""
    return {
        "qid": query.get("qid"),
        "gold_faq_id": query.get("gold_faq_id"),
        "action": decision.action,
        "faq_id": decision.faq_id,
        "score": decision.score,
        "candidates": [[c.faq_id, c.score] for c in decision.candidates],
        "correct": ok,
    }
