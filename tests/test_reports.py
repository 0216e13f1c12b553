"""The admin reports (报表) over a real server on 127.0.0.1.

Conversations are made through real visitor and agent sockets at the real
time; the figures are checked on the period's totals (and the days adding
up to them), so a run across midnight still holds.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient

from goflypy import reports
from goflypy.desk import QUEUE_NOTICE
from goflypy.store.keys import now_ms
from tests.conftest import add_agent, desk_of, sign_in
from tests.kb_support import wait_for
from tests.test_ws_functional import hello, origin, recv, recv_message

SHANGHAI = ZoneInfo("Asia/Shanghai")
FIGURES = ("started", "archived_started", "visitor_messages", "handed_to_human")


@dataclass
class Visit:
    """One shopper's conversation as the visitor socket saw it."""

    conversation_id: str
    token: str
    sent: int = 0
    robot_kinds: list[str] = field(default_factory=list)
    queued_ts: int | None = None


async def ask(ws: Any, visit: Visit, text: str) -> dict[str, Any]:
    """Send a question and wait for the robot's reply to it."""
    visit.sent += 1
    await ws.send_json({"type": "message", "client_id": f"c{visit.sent}", "text": text})
    mine = await recv_message(ws, "visitor")
    reply = await recv_message(ws, "robot", seq_above=mine["seq"])
    visit.robot_kinds.append(reply["kind"])
    if reply["kind"] in ("handoff", "human") and visit.queued_ts is None:
        visit.queued_ts = reply["ts"]
        status = await recv(ws, "status")
        while status["state"] != "queued":
            status = await recv(ws, "status")
    return reply


async def new_visit(client: TestClient, *questions: str) -> Visit:
    async with client.ws_connect("/ws/visitor") as ws:
        welcome = await hello(ws)
        visit = Visit(welcome["conversation_id"], welcome["visitor_token"])
        for text in questions:
            await ask(ws, visit, text)
    return visit


async def agent_replies(
    client: TestClient, username: str, replies: list[tuple[str, str]]
) -> list[int]:
    """Sign in as ``username`` and send (conversation id, text) replies;
    returns the stored times of the messages."""
    assert (await sign_in(client, username)).status == 302
    stamps = []
    async with client.ws_connect("/ws/agent", headers={"Origin": origin(client)}) as ws:
        await recv(ws, "welcome")
        for n, (conversation_id, text) in enumerate(replies):
            await ws.send_json(
                {
                    "type": "message",
                    "conversation_id": conversation_id,
                    "client_id": f"{username}-{n}",
                    "text": text,
                }
            )
            stamps.append((await recv(ws, "ack"))["ts"])
    return stamps


async def rate(client: TestClient, visit: Visit, score: int) -> None:
    async with client.ws_connect("/ws/visitor") as ws:
        await hello(ws, visit.token, last_seq=10_000)
        await ws.send_json({"type": "rate", "score": score})
    store = desk_of(client).store

    async def stored() -> bool:
        return bool(store.get_conversation(visit.conversation_id).rating == score)

    await wait_for(stored, "the rating to be stored")


async def get_report(client: TestClient, days: Any = 7, status: int = 200) -> Any:
    response = await client.get("/api/reports", params={"days": str(days)})
    data = await response.json()
    assert response.status == status, data
    return data


async def sign_in_root(client: TestClient) -> None:
    if desk_of(client).store.get_account("root") is None:
        await add_agent(client, "root", "admin")
    assert (await sign_in(client, "root")).status == 302


def check_days_add_up(report: dict[str, Any], days: int) -> None:
    """The period's days, oldest first, ending today, summing to the totals."""
    daily = report["daily"]
    assert len(daily) == days == report["days"]
    today = datetime.fromtimestamp(report["until"] / 1000, SHANGHAI).date()
    first = today - timedelta(days=days - 1)
    assert [d["date"] for d in daily] == [
        (first + timedelta(days=n)).isoformat() for n in range(days)
    ]
    midnight = datetime(first.year, first.month, first.day, tzinfo=SHANGHAI)
    assert report["since"] == int(midnight.timestamp() * 1000)
    assert report["timezone"] == "Asia/Shanghai"
    totals = report["totals"]
    for name in FIGURES:
        assert sum(d[name] for d in daily) == totals[name], name
    for name in totals["robot"]:
        assert sum(d["robot"][name] for d in daily) == totals["robot"][name], name
    for part in ("first_response", "ratings"):
        assert sum(d[part]["count"] for d in daily) == totals[part]["count"], part


# Access


async def test_only_admins_get_reports_and_only_for_7_or_30_days(
    client: TestClient,
) -> None:
    signed_out = await client.get("/api/reports?days=7")
    assert signed_out.status == 401
    assert (await signed_out.json())["message"] == "请先登录"
    page = await client.get("/console/reports", allow_redirects=False)
    assert page.status == 302
    assert page.headers["Location"] == "/console/login?next=/console/reports"

    await add_agent(client, "amy")
    await sign_in(client, "amy")
    refused = await client.get("/api/reports?days=7")
    assert refused.status == 403
    assert (await refused.json())["message"] == "需要管理员权限"
    assert (await client.get("/console/reports")).status == 403
    assert "/console/reports" not in await (await client.get("/console")).text()

    await sign_in_root(client)
    for bad in ("14", "0", "-7", "abc", "7.0", ""):
        answer = await get_report(client, bad, status=400)
        assert answer["message"] == "统计周期只能是 7 天或 30 天", bad
    page = await client.get("/console/reports")
    assert page.status == 200
    html = await page.text()
    assert 'id="reports-cards"' in html and "/static/console/reports.js" in html
    assert page.headers["Cache-Control"] == "no-store"
    assert 'id="reports-link"' in await (await client.get("/console")).text()
    assert 'href="/console/reports"' in await (await client.get("/console/kb")).text()

    for days in (7, 30):
        report = await get_report(client, days)
        check_days_add_up(report, days)
        assert report["totals"]["started"] == 0
        assert report["totals"]["answer_rate"] is None
        assert report["totals"]["first_response"] == {
            "count": 0,
            "median_ms": None,
            "p90_ms": None,
        }


# Figures


async def test_figures_follow_what_shoppers_robot_and_agents_did(
    client: TestClient,
) -> None:
    store = desk_of(client).store
    await add_agent(client, "amy")
    await add_agent(client, "bob")

    # A: the robot answers, suggests, then hands off an unknown question.
    first = await new_visit(client, "草莓怎么保存", "运费怎么算", "发票怎么开")
    assert first.robot_kinds[0] == "answer"
    unknown = await new_visit(client, "退款多久到账", "榴莲怎么挑选")
    assert unknown.queued_ts is not None, unknown.robot_kinds
    # B: asks for a person in words; the robot hands over.
    wants_human = await new_visit(client, "转人工")
    assert wants_human.queued_ts is not None, wants_human.robot_kinds
    # C: presses the "human" button: the desk's notice marks the hand-off.
    async with client.ws_connect("/ws/visitor") as ws:
        welcome = await hello(ws)
        pressed = Visit(welcome["conversation_id"], welcome["visitor_token"])
        await ws.send_json({"type": "handoff"})
        notice = await recv_message(ws, "system")
        assert notice["text"] == QUEUE_NOTICE
        pressed.queued_ts = notice["ts"]

    amy = await agent_replies(
        client,
        "amy",
        [(wants_human.conversation_id, "您好"), (wants_human.conversation_id, "请讲")],
    )
    bob = await agent_replies(
        client,
        "bob",
        [(pressed.conversation_id, "在的"), (unknown.conversation_id, "榴莲看颜色")],
    )
    await rate(client, wants_human, 5)
    await rate(client, pressed, 4)

    async def recorded() -> bool:
        return store.count_unanswered() >= 1

    await wait_for(recorded, "the handed-off question to be recorded")

    await sign_in_root(client)
    report = await get_report(client, 7)
    check_days_add_up(report, 7)
    totals = report["totals"]
    visits = [first, unknown, wants_human, pressed]
    assert totals["started"] == 4
    assert totals["archived_started"] == 0
    assert totals["visitor_messages"] == sum(v.sent for v in visits)
    assert totals["handed_to_human"] == sum(v.queued_ts is not None for v in visits)

    kinds = [kind for v in visits for kind in v.robot_kinds]
    robot = {
        "answered": kinds.count("answer"),
        "suggested": kinds.count("suggest"),
        "handed_off": kinds.count("handoff") + kinds.count("human"),
        "orders": kinds.count("order"),
    }
    assert totals["robot"] == robot
    decided = robot["answered"] + robot["suggested"] + robot["handed_off"]
    assert totals["answer_rate"] == round(robot["answered"] / decided, 4)

    waits = sorted(
        [
            amy[0] - wants_human.queued_ts,
            bob[0] - pressed.queued_ts,
            bob[1] - unknown.queued_ts,
        ]
    )
    assert totals["first_response"] == {
        "count": 3,
        "median_ms": round(statistics.median(waits)),
        "p90_ms": waits[math.ceil(0.9 * 3) - 1],
    }
    assert totals["ratings"] == {"count": 2, "average": 4.5}

    assert report["agents"] == [
        {"username": "amy", "display_name": "Amy", "conversations": 1, "messages": 2},
        {"username": "bob", "display_name": "Bob", "conversations": 2, "messages": 2},
        {"username": "root", "display_name": "Root", "conversations": 0, "messages": 0},
    ]
    questions = report["top_questions"]
    assert [(q["text"], q["count"]) for q in questions] == [("榴莲怎么挑选", 1)]

    # The 30-day report counts the same conversations.
    month = await get_report(client, 30)
    check_days_add_up(month, 30)
    assert month["totals"] == totals


async def test_top_questions_reuse_the_unanswered_list(client: TestClient) -> None:
    store = desk_of(client).store
    for n in range(12):
        for _ in range(n + 1):
            await store.record_unanswered(
                f"问题{n}", f"问题{n}", action="handoff", score=0.1, candidates=[]
            )
    await sign_in_root(client)
    report = await get_report(client, 7)
    assert [(q["text"], q["count"]) for q in report["top_questions"]] == [
        (f"问题{n}", n + 1) for n in range(11, 1, -1)
    ]


async def test_archived_conversations_count_from_the_index_alone(
    client: TestClient,
) -> None:
    store = desk_of(client).store
    archived = await new_visit(client, "草莓怎么保存")
    keys = store.find_idle(now_ms() + 1, 10)
    assert len(keys) == 1
    assert (await asyncio.to_thread(store.archive_blocking, keys)).archived == 1
    hot = await new_visit(client, "运费怎么算")

    await sign_in_root(client)
    report = await get_report(client, 7)
    check_days_add_up(report, 7)
    totals = report["totals"]
    assert totals["started"] == 2
    assert totals["archived_started"] == 1
    assert totals["visitor_messages"] == hot.sent
    assert totals["robot"]["answered"] == hot.robot_kinds.count("answer")
    # Read from the index: the conversation is still archived.
    assert store.archive_entry(archived.conversation_id) is not None
    assert store.get_conversation(archived.conversation_id) is None


async def test_each_period_is_kept_for_a_minute(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A generous time to live: the test never depends on how fast it runs.
    monkeypatch.setattr(reports, "CACHE_S", 3600.0)
    await sign_in_root(client)
    before = await get_report(client, 7)
    await new_visit(client, "草莓怎么保存")

    again = await get_report(client, 7)
    assert again == before
    month = await get_report(client, 30)
    assert month["totals"]["started"] == before["totals"]["started"] + 1
