"""Admin reports: per-day figures of the last 7 or 30 days.

Everything comes from one read snapshot of the store (Store.activity_since):
hot conversations touched in the period with their messages of the period,
and, for archived conversations, only what the archive index says (when
they started). Days are calendar days in the shop's time zone.

What is counted:

- started: conversations created that day, hot or archived.
- visitor_messages: messages shoppers sent that day (hot conversations).
- handed_to_human: conversations whose first hand-off in the period fell on
  that day. A hand-off is the robot's hand-off message (meta kind "handoff"
  or "human"), the desk's "transferring you" notice, the offline notice, or,
  when none of those is in the period, the conversation's ``queued_at``.
- robot: the robot's replies that day by meta kind (answered, suggested,
  handed off, order look-ups); ``answer_rate`` is answered over answered +
  suggested + handed off.
- first_response: from that hand-off to the first agent message after it,
  one sample per conversation, on the day of the hand-off; median and 90th
  percentile (nearest rank) in milliseconds.
- ratings: rated conversations active in the period, on the day of their
  last activity.
- agents: agent messages in the period and the conversations they went to.
- top_questions: the knowledge base's unanswered-question list, as kept
  (its counts are since the question was first asked), asked in the period.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from .desk import HANDOFF_ACTIONS
from .models import Account, Conversation, Message
from .store import Store, Unanswered
from .store.archive import Activity
from .store.kb import UNANSWERED_LIMIT
from .store.keys import now_ms

PERIODS = (7, 30)
TIMEZONE = "Asia/Shanghai"
CACHE_S = 60.0
TOP_QUESTIONS = 10
_ROBOT_KINDS = {
    "answer": "answered",
    "suggest": "suggested",
    "handoff": "handed_off",
    "human": "handed_off",
    "order": "orders",
}


@dataclass(slots=True)
class _Day:
    """Running counts of one day (or of the whole period)."""

    started: int = 0
    archived_started: int = 0
    visitor_messages: int = 0
    handed_to_human: int = 0
    robot: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("answered", "suggested", "handed_off", "orders"), 0
        )
    )
    response_ms: list[int] = field(default_factory=list)
    ratings: list[int] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        robot = self.robot
        decided = robot["answered"] + robot["suggested"] + robot["handed_off"]
        return {
            "started": self.started,
            "archived_started": self.archived_started,
            "visitor_messages": self.visitor_messages,
            "handed_to_human": self.handed_to_human,
            "robot": dict(robot),
            "answer_rate": round(robot["answered"] / decided, 4) if decided else None,
            "first_response": _spread(self.response_ms),
            "ratings": {
                "count": len(self.ratings),
                "average": (
                    round(statistics.fmean(self.ratings), 2) if self.ratings else None
                ),
            },
        }


def _spread(samples: list[int]) -> dict[str, Any]:
    """Count, median and 90th percentile (nearest rank) of response times."""
    if not samples:
        return {"count": 0, "median_ms": None, "p90_ms": None}
    ordered = sorted(samples)
    rank = math.ceil(0.9 * len(ordered)) - 1
    return {
        "count": len(ordered),
        "median_ms": round(statistics.median(ordered)),
        "p90_ms": ordered[rank],
    }


@dataclass(slots=True)
class _Agent:
    username: str
    display_name: str
    conversations: set[str] = field(default_factory=set)
    messages: int = 0


class _Period:
    """The calendar days of a report and the bucket of each instant."""

    def __init__(self, days: int, now: int, zone: ZoneInfo) -> None:
        self.zone = zone
        self.today = self.day_of(now)
        self.first = self.today - timedelta(days=days - 1)
        start = datetime(self.first.year, self.first.month, self.first.day, tzinfo=zone)
        self.since = int(start.timestamp() * 1000)
        self.until = now
        self.buckets = [_Day() for _ in range(days)]
        self.total = _Day()

    def day_of(self, ts: int) -> date:
        return datetime.fromtimestamp(ts / 1000, self.zone).date()

    def bucket(self, ts: int) -> _Day | None:
        index = (self.day_of(ts) - self.first).days
        return self.buckets[index] if 0 <= index < len(self.buckets) else None

    def add(self, ts: int, change: Callable[[_Day], None]) -> None:
        """Apply ``change`` to the day of ``ts`` and to the totals."""
        day = self.bucket(ts)
        if day is not None and ts <= self.until:
            change(day)
            change(self.total)


def build_report(
    store: Store, days: int, queue_texts: tuple[str, ...]
) -> dict[str, Any]:
    """The report of the last ``days`` days up to now (blocking reads)."""
    now = now_ms()
    period = _Period(days, now, ZoneInfo(TIMEZONE))
    activity = store.activity_since(period.since)
    accounts = store.list_accounts()
    unanswered = store.list_unanswered(UNANSWERED_LIMIT)
    return summarise(period, activity, accounts, unanswered, queue_texts)


def summarise(
    period: _Period,
    activity: Activity,
    accounts: list[Account],
    unanswered: list[Unanswered],
    queue_texts: tuple[str, ...],
) -> dict[str, Any]:
    """The report's JSON from what the snapshot held."""
    agents = {
        a.username: _Agent(a.username, a.display_name)
        for a in accounts
        if not a.disabled
    }
    for conversation, messages in activity.conversations:
        _count_conversation(period, conversation, messages, agents, queue_texts)
    for _cid, entry in activity.archived:
        period.add(entry.created, _archived_start)

    daily = []
    for offset, bucket in enumerate(period.buckets):
        day = period.first + timedelta(days=offset)
        daily.append({"date": day.isoformat(), **bucket.figures()})
    asked = [q for q in unanswered if q.last >= period.since]
    asked.sort(key=lambda q: (-q.count, -q.last))
    return {
        "days": len(period.buckets),
        "timezone": period.zone.key,
        "since": period.since,
        "until": period.until,
        "generated": period.until,
        "cache_s": CACHE_S,
        "daily": daily,
        "totals": period.total.figures(),
        "agents": [
            {
                "username": agent.username,
                "display_name": agent.display_name,
                "conversations": len(agent.conversations),
                "messages": agent.messages,
            }
            for agent in sorted(
                agents.values(), key=lambda a: (-a.messages, a.username)
            )
        ],
        "top_questions": [
            {"key": q.key, "text": q.text, "count": q.count, "last": q.last}
            for q in asked[:TOP_QUESTIONS]
        ],
    }


def _archived_start(day: _Day) -> None:
    day.started += 1
    day.archived_started += 1


def _is_queue_point(message: Message, queue_texts: tuple[str, ...]) -> bool:
    if message.sender == "robot":
        return message.meta.get("kind") in HANDOFF_ACTIONS
    return message.sender == "system" and message.text in queue_texts


def _count_conversation(
    period: _Period,
    conversation: Conversation,
    messages: list[Message],
    agents: dict[str, _Agent],
    queue_texts: tuple[str, ...],
) -> None:
    """Add one hot conversation's part of the period."""
    if conversation.created >= period.since:
        period.add(conversation.created, _started)
    if conversation.rating is not None:
        rating = int(conversation.rating)
        period.add(conversation.updated, lambda d: d.ratings.append(rating))

    queued: int | None = next(
        (m.ts for m in messages if _is_queue_point(m, queue_texts)), None
    )
    if queued is None and conversation.queued_at >= period.since:
        queued = conversation.queued_at
    if queued is not None:
        period.add(queued, _handed)
        answer = next(
            (m.ts for m in messages if m.sender == "agent" and m.ts >= queued), None
        )
        if answer is not None:
            waited = answer - queued
            period.add(queued, lambda d: d.response_ms.append(waited))

    for message in messages:
        if message.sender == "visitor":
            period.add(message.ts, _visitor_message)
        elif message.sender == "robot":
            outcome = _ROBOT_KINDS.get(str(message.meta.get("kind", "")))
            if outcome is not None:
                period.add(message.ts, _robot_outcome(outcome))
        elif message.sender == "agent" and message.agent:
            if period.bucket(message.ts) is None or message.ts > period.until:
                continue
            agent = agents.get(message.agent)
            if agent is None:
                name = message.agent_name or message.agent
                agent = agents[message.agent] = _Agent(message.agent, name)
            agent.messages += 1
            agent.conversations.add(conversation.id)


def _started(day: _Day) -> None:
    day.started += 1


def _handed(day: _Day) -> None:
    day.handed_to_human += 1


def _visitor_message(day: _Day) -> None:
    day.visitor_messages += 1


def _robot_outcome(outcome: str) -> Callable[[_Day], None]:
    def change(day: _Day) -> None:
        day.robot[outcome] += 1

    return change


class ReportCache:
    """Each period's report, kept for ``ttl_s`` so reloads do not rescan."""

    def __init__(self, ttl_s: float | None = None) -> None:
        self.ttl_s = CACHE_S if ttl_s is None else ttl_s
        self._items: dict[int, tuple[float, dict[str, Any]]] = {}
        self._lock = asyncio.Lock()

    async def get(
        self, days: int, build: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """The cached report of ``days``, built now if missing or stale; one
        build at a time, so a burst of reloads scans once."""
        async with self._lock:
            kept = self._items.get(days)
            if kept is not None and time.monotonic() - kept[0] < self.ttl_s:
                return kept[1]
            report = await build()
            self._items[days] = (time.monotonic(), report)
            return report
