"""The knowledge-base admin API over a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from goflypy import faqfile
from goflypy.handlers.kb import APP_KB
from goflypy.models import FaqEntry
from goflypy.nlp import Robot
from goflypy.server import make_app
from goflypy.store import DictWord, SynonymGroup
from goflypy.vocabulary import usable_vocabulary
from tests.conftest import ClientFactory, add_agent, desk_of, make_config, sign_in
from tests.kb_support import Admin, page_csrf, sign_in_admin, wait_for
from tests.test_ws_functional import hello, recv_message

DEMO_FAQ = Path(faqfile.__file__).parent / "data" / "demo_faq.jsonl"
SUGAR_APPLE = {"topic": "水果", "members": ["释迦"]}


def demo_entry(faq_id: str) -> dict[str, Any]:
    """One entry of the shipped demo FAQ, as the entry API takes it."""
    for line in DEMO_FAQ.read_text(encoding="utf-8").splitlines():
        entry: dict[str, Any] = json.loads(line)
        if entry["faq_id"] == faq_id:
            return entry
    raise AssertionError(f"no demo entry {faq_id}")


DURIAN = {
    "faq_id": "durian",
    "question": "榴莲怎么挑选",
    "alternatives": ["怎么挑榴莲"],
    "answer": "看颜色、闻香味，尖刺微微发软的比较熟。",
    "category": "挑选",
}


# Entries


async def test_create_edit_delete_and_the_robot_follows(client: TestClient) -> None:
    admin = await sign_in_admin(client)
    before = await admin.decide("榴莲怎么挑选")
    assert before["faq_id"] != "durian"

    created = await admin.call("POST", "/api/kb/entries", DURIAN, status=201)
    assert created["indexed"] is True
    decision = await admin.decide("榴莲怎么挑选")
    assert decision["action"] == "answer" and decision["faq_id"] == "durian"
    assert decision["reply"] == DURIAN["answer"]
    assert [c["faq_id"] for c in decision["candidates"]][0] == "durian"

    edited = {**DURIAN, "answer": "挑选榴莲：闻一闻，有浓香的熟了。"}
    await admin.call("PUT", "/api/kb/entries/durian", edited)
    assert (await admin.decide("怎么挑榴莲"))["reply"] == edited["answer"]
    listed = await admin.call("GET", "/api/kb/entries?q=榴莲")
    assert [e["faq_id"] for e in listed["entries"]] == ["durian"]
    assert listed["entries"][0]["answer"] == edited["answer"]
    assert "挑选" in listed["categories"]

    await admin.call("DELETE", "/api/kb/entries/durian")
    gone = await admin.decide("榴莲怎么挑选")
    assert gone["faq_id"] is None
    assert "durian" not in [c["faq_id"] for c in gone["candidates"]]
    await admin.call("GET", "/api/kb/entries/durian", status=404)
    await admin.call("DELETE", "/api/kb/entries/durian", status=404)


async def test_delete_and_re_add_under_the_same_id(client: TestClient) -> None:
    admin = await sign_in_admin(client)
    await admin.call("POST", "/api/kb/entries", DURIAN, status=201)
    await admin.call("DELETE", "/api/kb/entries/durian")
    invoice = {
        "faq_id": "durian",
        "question": "发票怎么开",
        "answer": "下单后在订单详情里申请电子发票。",
    }
    await admin.call("POST", "/api/kb/entries", invoice, status=201)

    assert (await admin.decide("发票怎么开"))["faq_id"] == "durian"
    old = await admin.decide("榴莲怎么挑选")
    assert old["action"] != "answer"
    assert desk_of(client).store.get_faq("durian").question == "发票怎么开"


async def test_bad_entries_and_duplicate_ids_are_refused(client: TestClient) -> None:
    admin = await sign_in_admin(client)
    empty = await admin.call(
        "POST", "/api/kb/entries", {**DURIAN, "question": " "}, status=400
    )
    assert "标准问题" in empty["message"]
    await admin.call("POST", "/api/kb/entries", {**DURIAN, "answer": ""}, status=400)
    bad_id = await admin.call(
        "POST", "/api/kb/entries", {**DURIAN, "faq_id": "a b"}, status=400
    )
    assert "编号" in bad_id["message"]
    taken = await admin.call(
        "POST", "/api/kb/entries", {**DURIAN, "faq_id": "strawberry"}, status=409
    )
    assert "strawberry" in taken["message"]
    assert (await admin.decide("草莓怎么保存"))["faq_id"] == "strawberry"
    made = await admin.call(
        "POST", "/api/kb/entries", {**DURIAN, "faq_id": ""}, status=201
    )
    assert made["entry"]["faq_id"].startswith("faq-")


# Vocabulary


async def test_a_synonym_reaches_the_robot_and_bad_ones_are_refused(
    client: TestClient,
) -> None:
    admin = await sign_in_admin(client)
    assert (await admin.decide("红颜怎么保存"))["score"] < 0.95

    refused = {
        "space": {"canonical": "草莓", "variants": ["红 颜"]},
        "empty canonical": {"canonical": "", "variants": ["红颜"]},
        "no variants": {"canonical": "草莓", "variants": ["", " "]},
        "cycle with the shipped table": {"canonical": "士多啤梨", "variants": ["草莓"]},
        "taken variant": {"canonical": "蓝莓", "variants": ["士多啤梨"]},
    }
    for why, body in refused.items():
        answer = await admin.call("POST", "/api/kb/synonyms", body, status=400)
        assert answer["error"] == "bad_request", why
        assert answer["message"], why
    cycle = await admin.call(
        "POST", "/api/kb/synonyms", refused["cycle with the shipped table"], status=400
    )
    assert "循环" in cycle["message"]
    space = await admin.call("POST", "/api/kb/synonyms", refused["space"], status=400)
    assert "空格" in space["message"]

    await admin.call(
        "POST", "/api/kb/synonyms", {"canonical": "草莓", "variants": ["红颜"]}
    )
    reverse = await admin.call(
        "POST",
        "/api/kb/synonyms",
        {"canonical": "红颜", "variants": ["草莓"]},
        status=400,
    )
    assert "循环" in reverse["message"]
    await admin.settled()
    decision = await admin.decide("红颜怎么保存")
    assert decision["faq_id"] == "strawberry" and decision["score"] >= 0.95
    assert (await admin.decide("草莓怎么保存"))["faq_id"] == "strawberry"

    vocabulary = await admin.call("GET", "/api/kb/vocabulary")
    assert vocabulary["synonyms"][0]["variants"] == ["红颜"]
    assert vocabulary["shipped_synonyms"] > 100

    await admin.call("DELETE", "/api/kb/synonyms/草莓")
    await admin.settled()
    assert (await admin.decide("红颜怎么保存"))["score"] < 0.95


async def test_dictionary_words_are_kept_whole(client: TestClient) -> None:
    admin = await sign_in_admin(client)
    lexicon = desk_of(client).robot.lexicon
    assert "叶菜拼盘" not in lexicon.surface_tokens("叶菜拼盘怎么卖")

    await admin.call("POST", "/api/kb/words", {"word": "叶菜拼盘", "freq": "3000"})
    await admin.settled()
    assert "叶菜拼盘" in lexicon.surface_tokens("叶菜拼盘怎么卖")
    spaced = await admin.call("POST", "/api/kb/words", {"word": "叶 菜"}, status=400)
    assert "空格" in spaced["message"]
    await admin.call("POST", "/api/kb/words", {"word": "苹果", "freq": 0}, status=400)
    words = (await admin.call("GET", "/api/kb/vocabulary"))["words"]
    assert [(w["word"], w["freq"]) for w in words] == [("叶菜拼盘", 3000)]

    await admin.call("DELETE", "/api/kb/words/叶菜拼盘")
    await admin.settled()
    assert "叶菜拼盘" not in lexicon.surface_tokens("叶菜拼盘怎么卖")


async def test_stop_words_are_not_vocabulary(client: TestClient) -> None:
    admin = await sign_in_admin(client)
    for word in ("的", "吗", "请问"):
        refused = await admin.call("POST", "/api/kb/words", {"word": word}, status=400)
        assert refused["error"] == "bad_request"
        assert f"“{word}”是停用词" in refused["message"]
        assert "不能加入词典" in refused["message"]
    variant = await admin.call(
        "POST",
        "/api/kb/synonyms",
        {"canonical": "草莓", "variants": ["红颜", "请问"]},
        status=400,
    )
    assert "同义词“请问”是停用词" in variant["message"]
    canonical = await admin.call(
        "POST",
        "/api/kb/synonyms",
        {"canonical": "了", "variants": ["红颜"]},
        status=400,
    )
    assert "标准词“了”是停用词" in canonical["message"]
    vocabulary = await admin.call("GET", "/api/kb/vocabulary")
    assert vocabulary["words"] == [] and vocabulary["synonyms"] == []


async def test_a_category_rule_reaches_the_robot_and_delete_restores(
    client: TestClient,
) -> None:
    admin = await sign_in_admin(client)
    # The demo's return policy is written for all fresh food (生鲜, 水果).
    await admin.call("POST", "/api/kb/entries", demo_entry("refund-policy"), status=201)
    question = "释迦不想要了能退吗"
    before = await admin.decide(question)
    assert before["action"] != "answer"
    storage_before = await admin.decide("释迦怎么保存")
    assert storage_before["faq_id"] == "strawberry"

    saved = await admin.call("POST", "/api/kb/categories", SUGAR_APPLE)
    assert saved["rule"]["topic"] == "水果" and saved["rule"]["members"] == ["释迦"]
    assert saved["indexed"] is True
    await admin.settled()
    # 释迦 is now a fruit: the policy for all fruit answers it ...
    after = await admin.decide(question)
    assert after["action"] == "answer" and after["faq_id"] == "refund-policy"
    # ... and the strawberry entry, about another fruit, counts for less.
    storage = await admin.decide("释迦怎么保存")
    strawberry = {c["faq_id"]: c["score"] for c in storage["candidates"]}
    assert strawberry["strawberry"] < storage_before["score"]

    vocabulary = await admin.call("GET", "/api/kb/vocabulary")
    assert [(r["topic"], r["members"]) for r in vocabulary["categories"]] == [
        ("水果", ["释迦"])
    ]
    assert "草莓" in vocabulary["shipped_categories"]["水果"]
    assert "释迦" not in vocabulary["shipped_categories"]["水果"]
    assert "水果" in vocabulary["shipped_categories"]["生鲜"]

    deleted = await admin.call("DELETE", "/api/kb/categories/水果")
    assert deleted == {"deleted": "水果", "indexed": True}
    await admin.settled()
    assert (await admin.decide(question))["action"] != "answer"
    assert desk_of(client).robot.lexicon.topics("释迦") == ()
    # What is left of 水果 is built in: it can't go.
    shipped = await admin.call("DELETE", "/api/kb/categories/水果", status=400)
    assert "内置类别" in shipped["message"]
    await admin.call("DELETE", "/api/kb/categories/没有的类别", status=404)
    assert (await admin.call("GET", "/api/kb/vocabulary"))["categories"] == []


async def test_bad_category_rules_are_refused(client: TestClient) -> None:
    admin = await sign_in_admin(client)
    refused = {
        "loop with the shipped rules": ({"topic": "草莓", "members": ["水果"]}, "循环"),
        "loop two steps up": ({"topic": "榴莲", "members": ["生鲜"]}, "循环"),
        "stop word member": ({"topic": "水果", "members": ["释迦", "吗"]}, "停用词"),
        "stop word topic": ({"topic": "的", "members": ["释迦"]}, "停用词"),
        "empty topic": ({"topic": " ", "members": ["释迦"]}, "类别不能为空"),
        "no members": ({"topic": "水果", "members": ["", " "]}, "至少"),
        "space": ({"topic": "水果", "members": ["释 迦"]}, "空格"),
        "repeated member": ({"topic": "水果", "members": ["释迦", "释迦"]}, "重复"),
        "member is the topic": ({"topic": "水果", "members": ["水果"]}, "相同"),
    }
    for why, (body, words) in refused.items():
        answer = await admin.call("POST", "/api/kb/categories", body, status=400)
        assert answer["error"] == "bad_request", why
        assert words in answer["message"], (why, answer["message"])

    # A loop through another custom rule.
    await admin.call(
        "POST", "/api/kb/categories", {"topic": "热带水果", "members": ["释迦"]}
    )
    loop = await admin.call(
        "POST",
        "/api/kb/categories",
        {"topic": "释迦", "members": ["热带水果"]},
        status=400,
    )
    assert "释迦 → 热带水果" in loop["message"] and "循环" in loop["message"]
    rules = desk_of(client).store.list_categories()
    assert [(r.topic, r.members) for r in rules] == [("热带水果", ["释迦"])]
    await admin.settled()
    assert desk_of(client).robot.lexicon.topics("释迦") == ("热带水果",)


async def test_a_category_rule_re_indexes_only_the_entries_that_use_it(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    admin = await sign_in_admin(client)
    pick = {**DURIAN, "question": "释迦怎么挑选", "alternatives": []}
    await admin.call("POST", "/api/kb/entries", pick, status=201)
    caplog.set_level(logging.INFO, "goflypy.nlp")
    saved = await admin.call("POST", "/api/kb/categories", SUGAR_APPLE)
    assert saved["indexed"] is True
    assert "vocabulary change re-indexed 1 FAQ entries" in caplog.text


# Files


async def _export(admin: Admin, fmt: str) -> str:
    response = await admin.client.get(f"/api/kb/export?format={fmt}")
    assert response.status == 200
    assert "attachment" in response.headers["Content-Disposition"]
    return (await response.read()).decode("utf-8-sig")


async def _import(admin: Admin, name: str, body: str, mode: str) -> Any:
    response = await admin.client.post(
        f"/api/kb/import?name={name}&mode={mode}",
        data=body.encode("utf-8"),
        headers={"X-CSRF-Token": admin.csrf},
    )
    return response.status, await response.json()


async def test_import_and_export_round_trip(client: TestClient) -> None:
    admin = await sign_in_admin(client)
    exported = await _export(admin, "jsonl")
    rows = [json.loads(line) for line in exported.splitlines()]
    assert {row["faq_id"] for row in rows} == {
        "strawberry",
        "shipping-fee",
        "refund-time",
    }

    # CSV out, a new row added in a spreadsheet, CSV back in.
    table = list(csv.DictReader(io.StringIO(await _export(admin, "csv"))))
    table.append(
        {
            "faq_id": "durian",
            "question": DURIAN["question"],
            "answer": DURIAN["answer"],
            "alternatives": "|".join(DURIAN["alternatives"]),
            "category": "挑选",
            "updated": "",
        }
    )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    status, result = await _import(admin, "faq.csv", buffer.getvalue(), "merge")
    assert status == 200 and result == {"imported": 4, "removed": 0}
    await admin.settled()
    assert (await admin.decide("怎么挑榴莲"))["faq_id"] == "durian"

    again = [json.loads(line) for line in (await _export(admin, "jsonl")).splitlines()]
    by_id = {row["faq_id"]: row for row in again}
    for row in rows:
        for field in ("question", "answer", "alternatives", "category"):
            assert by_id[row["faq_id"]][field] == row[field]
    assert by_id["durian"]["alternatives"] == DURIAN["alternatives"]

    # Replace with only the durian: the others leave the store and the index.
    only = json.dumps(DURIAN, ensure_ascii=False) + "\n"
    status, result = await _import(admin, "one.jsonl", only, "replace")
    assert (status, result) == (200, {"imported": 1, "removed": 3})
    await admin.settled()
    assert (await admin.decide("草莓怎么保存"))["faq_id"] is None
    assert [e.faq_id for e in desk_of(client).store.list_faq()] == ["durian"]


async def test_a_bad_import_lists_every_bad_line_and_changes_nothing(
    client: TestClient,
) -> None:
    admin = await sign_in_admin(client)
    lines = [
        json.dumps(DURIAN, ensure_ascii=False),
        '{"faq_id": "x"}',
        "{oops",
        '{"faq_id": "durian", "question": "榴莲多少钱", "alternatives": 3}',
    ]
    body = "\n".join(lines) + "\n"
    for mode in ("replace", "merge"):
        status, result = await _import(admin, "bad.jsonl", body, mode)
        assert status == 400
        assert result["error"] == "bad_request"
        assert result["message"] == "导入失败：bad.jsonl：发现 4 处问题，整个文件未导入"
        assert result["problems"] == [
            "第 2 行：缺少问题 (question)",
            "第 3 行：不是有效的 JSON（第 2 个字符附近出错）",
            "第 4 行：相似问法 (alternatives) 必须是文本列表",
            "第 4 行：编号 (faq_id)“durian”与第 1 行重复",
        ]
        assert result["more"] == 0
        ids = {entry.faq_id for entry in desk_of(client).store.list_faq()}
        assert ids == {"strawberry", "shipping-fee", "refund-time"}
    status, refused = await _import(admin, "faq.txt", "x", "merge")
    assert status == 400 and "csv" in refused["message"]


async def test_a_long_list_of_bad_lines_is_capped(client: TestClient) -> None:
    admin = await sign_in_admin(client)
    rows = [{"faq_id": f"q{n}", "answer": "答"} for n in range(70)]
    body = "".join(json.dumps(row) + "\n" for row in rows)
    status, result = await _import(admin, "many.jsonl", body, "merge")
    assert status == 400
    assert len(result["problems"]) == 50 and result["more"] == 20
    assert result["problems"][49] == "第 50 行：缺少问题 (question)"
    assert "发现 70 处问题" in result["message"]


async def test_imported_rows_without_an_id_get_a_new_one(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await sign_in_admin(client)
    # The first id made up is taken by a stored entry, which must stay.
    made = iter(["strawberry", "faq-0000beef"])
    monkeypatch.setattr(faqfile, "new_faq_id", lambda: next(made))
    body = "faq_id,question,answer\n,榴莲怎么挑选,闻香味，刺发软的熟了。\n"
    status, result = await _import(admin, "new.csv", body, "merge")
    assert (status, result) == (200, {"imported": 1, "removed": 0})
    store = desk_of(client).store
    assert store.get_faq("faq-0000beef").question == "榴莲怎么挑选"
    assert store.get_faq("strawberry").question == "草莓怎么保存"
    await admin.settled()
    assert (await admin.decide("榴莲怎么挑选"))["faq_id"] == "faq-0000beef"


# Unanswered and handed off


async def _ask_as_shopper(client: TestClient, *texts: str) -> None:
    """Each text from a new shopper: a hand-off ends the robot's part."""
    for text in texts:
        async with client.ws_connect("/ws/visitor") as ws:
            await hello(ws)
            await recv_message(ws, "robot")  # greeting
            await ws.send_json({"type": "message", "client_id": "u1", "text": text})
            echo = await recv_message(ws, "visitor")
            await recv_message(ws, "robot", seq_above=echo["seq"])


async def test_unanswered_questions_are_kept_and_adopted_in_one_click(
    client: TestClient,
) -> None:
    admin = await sign_in_admin(client)
    await _ask_as_shopper(client, "电视机遥控器坏了", "！！！", "草莓怎么保存")
    await _ask_as_shopper(client, "电视机遥控器坏了")

    async def listed() -> bool:
        items = (await admin.call("GET", "/api/kb/unanswered"))["items"]
        return bool(items) and items[0]["count"] == 2

    await wait_for(listed, "the handed-off question to be listed twice")
    data = await admin.call("GET", "/api/kb/unanswered")
    assert data["total"] == 1  # neither the answered nor the empty question
    item = data["items"][0]
    assert item["text"] == "电视机遥控器坏了" and item["action"] == "handoff"
    assert len(item["candidates"]) <= 3

    await admin.call(
        "POST",
        f"/api/kb/unanswered/{item['key']}/adopt",
        {"faq_id": "refund-time"},
    )
    entry = desk_of(client).store.get_faq("refund-time")
    assert "电视机遥控器坏了" in entry.alternatives
    assert (await admin.call("GET", "/api/kb/unanswered"))["items"] == []
    assert (await admin.decide("电视机遥控器坏了"))["faq_id"] == "refund-time"
    await admin.call(
        "POST",
        f"/api/kb/unanswered/{item['key']}/adopt",
        {"faq_id": "refund-time"},
        status=404,
    )


async def test_unanswered_can_be_dismissed_and_the_list_is_bounded(
    client: TestClient,
) -> None:
    admin = await sign_in_admin(client)
    store = desk_of(client).store
    for number in range(6):
        await store.record_unanswered(
            f"问题{number}",
            f"问题{number}",
            action="handoff",
            score=0.1,
            candidates=[],
            limit=4,
        )
    items = (await admin.call("GET", "/api/kb/unanswered"))["items"]
    assert [i["text"] for i in items] == ["问题5", "问题4", "问题3", "问题2"]
    await admin.call("DELETE", f"/api/kb/unanswered/{items[0]['key']}")
    left = (await admin.call("GET", "/api/kb/unanswered"))["items"]
    assert [i["text"] for i in left] == ["问题4", "问题3", "问题2"]
    await admin.call("DELETE", f"/api/kb/unanswered/{'0' * 32}", status=404)


# Access


async def test_logged_out_and_agents_are_refused(client: TestClient) -> None:
    page = await client.get("/console/kb", allow_redirects=False)
    assert page.status == 302 and page.headers["Location"].startswith("/console/login")
    for method, path in (
        ("GET", "/api/kb/entries"),
        ("POST", "/api/kb/entries"),
        ("GET", "/api/kb/unanswered"),
        ("GET", "/api/console/suggestions?conversation_id=x"),
    ):
        response = await client.request(method, path, json=DURIAN)
        assert response.status == 401, (method, path)

    await add_agent(client, "amy", "agent")
    await sign_in(client, "amy")
    agent = Admin(client, await page_csrf(client))
    page = await client.get("/console/kb")
    assert page.status == 403
    for method, path in (
        ("GET", "/api/kb/entries"),
        ("POST", "/api/kb/entries"),
        ("PUT", "/api/kb/entries/strawberry"),
        ("DELETE", "/api/kb/entries/strawberry"),
        ("POST", "/api/kb/synonyms"),
        ("POST", "/api/kb/categories"),
        ("DELETE", "/api/kb/categories/水果"),
        ("POST", "/api/kb/try"),
        ("GET", "/api/kb/export?format=csv"),
    ):
        answer = await agent.call(method, path, DURIAN, status=403)
        assert answer["message"] == "需要管理员权限", (method, path)
    assert desk_of(client).store.get_faq("strawberry") is not None


async def test_changes_without_the_csrf_token_are_refused(client: TestClient) -> None:
    admin = await sign_in_admin(client)
    forged = Admin(client, "forged")
    for method, path, body in (
        ("POST", "/api/kb/entries", DURIAN),
        ("PUT", "/api/kb/entries/strawberry", DURIAN),
        ("DELETE", "/api/kb/entries/strawberry", None),
        ("POST", "/api/kb/synonyms", {"canonical": "草莓", "variants": ["红颜"]}),
        ("POST", "/api/kb/words", {"word": "叶菜拼盘"}),
        ("POST", "/api/kb/categories", SUGAR_APPLE),
    ):
        answer = await forged.call(method, path, body, status=403)
        assert answer["error"] == "csrf", (method, path)
    response = await client.delete(
        "/api/kb/entries/strawberry",
        headers={"X-CSRF-Token": admin.csrf, "Origin": "https://evil.example"},
    )
    assert response.status == 403
    assert desk_of(client).store.get_faq("strawberry") is not None
    assert desk_of(client).store.list_synonyms() == []
    assert desk_of(client).store.list_categories() == []
    assert "durian" not in {e.faq_id for e in desk_of(client).store.list_faq()}


# Agents' suggestions


async def test_agents_see_the_top_three_answers_for_the_last_message(
    client: TestClient,
) -> None:
    await _ask_as_shopper(client, "你们运费怎么算的")
    await add_agent(client, "amy", "agent")
    await sign_in(client, "amy")
    conversation = desk_of(client).store.list_open_conversations()[0]

    response = await client.get(
        f"/api/console/suggestions?conversation_id={conversation.id}"
    )
    data = await response.json()
    assert response.status == 200
    assert 1 <= len(data["suggestions"]) <= 3
    top = data["suggestions"][0]
    assert top["faq_id"] == "shipping-fee"
    assert top["answer"] == "满 99 元包邮，不满收 8 元运费。"
    missing = await client.get("/api/console/suggestions?conversation_id=nope")
    assert missing.status == 404


# Restart and load


async def test_a_restart_finds_the_index_in_step_with_the_store(
    make_client: ClientFactory, aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await make_client()
    admin = await sign_in_admin(client)
    await admin.call("POST", "/api/kb/entries", DURIAN, status=201)
    await admin.call("DELETE", "/api/kb/entries/refund-time")
    await admin.call(
        "POST", "/api/kb/synonyms", {"canonical": "草莓", "variants": ["红颜"]}
    )
    await admin.call("POST", "/api/kb/categories", SUGAR_APPLE)
    await admin.settled()
    await client.close()

    # The same data directory, without seeding the FAQ again.
    again = await aiohttp_client(make_app(make_config(tmp_path)))
    robot = desk_of(again).robot
    # The saved index is kept per custom vocabulary, so it cannot be reused
    # for other words.
    assert robot.index_dir is not None and robot.index_dir.name.startswith("lex-")
    assert robot.decide("榴莲怎么挑选").faq_id == "durian"
    assert robot.decide("退款多久到账").faq_id != "refund-time"
    after = robot.decide("红颜怎么保存")
    assert after.faq_id == "strawberry" and after.score >= 0.95
    assert robot.lexicon.topics("释迦") == ("水果", "生鲜")
    # The saved index is named after the rules too.
    applied = again.server.app[APP_KB]._applied
    assert applied.categories == {"水果": ["释迦"]}
    without = applied._replace(categories={})
    assert robot.index_dir != again.server.app[APP_KB]._index_dir(without)
    await again.close()


async def test_queries_keep_answering_during_a_bulk_import(client: TestClient) -> None:
    admin = await sign_in_admin(client)
    entries = [
        {
            "faq_id": f"bulk-{n}",
            "question": f"第{n}号礼盒什么时候发货",
            "answer": f"第{n}号礼盒下单后48小时内发货。",
            "category": "礼盒",
        }
        for n in range(300)
    ]
    body = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)
    questions = ["草莓怎么保存", "运费怎么算", "退款多久到账"]
    expected = ["strawberry", "shipping-fee", "refund-time"]

    status, result = await _import(admin, "bulk.jsonl", body, "merge")
    assert (status, result) == (200, {"imported": 300, "removed": 0})

    # Ask from three clients at once until the index has taken every entry.
    async def ask_while_indexing(first: int) -> list[tuple[bool, int, Any]]:
        seen = []
        for number in range(first, first + 10_000):
            indexing = (await admin.call("GET", "/api/kb/status"))["indexing"]
            seen.append(
                (indexing, number % 3, await admin.decide(questions[number % 3]))
            )
            if not indexing:
                return seen
        return seen

    rounds = await asyncio.gather(*(ask_while_indexing(n) for n in range(3)))
    answers = [item for seen in rounds for item in seen]
    assert any(indexing for indexing, _, _ in answers), "the import ended first"
    for _, which, decision in answers:
        assert decision["faq_id"] == expected[which], decision

    assert len(desk_of(client).robot.search("第77号礼盒什么时候发货", 3)) == 3
    decision = await admin.decide("第77号礼盒什么时候发货")
    assert decision["candidates"][0]["faq_id"].startswith("bulk-")


async def test_a_command_line_import_is_picked_up_by_the_running_server(
    client: TestClient,
) -> None:
    admin = await sign_in_admin(client)
    await admin.call(
        "POST", "/api/kb/synonyms", {"canonical": "榴莲", "variants": ["猫山王"]}
    )
    await admin.settled()
    store = desk_of(client).store

    # What `goflypy faq import` does from another process.
    def import_like_the_cli() -> None:
        entry = FaqEntry("durian", DURIAN["question"], DURIAN["answer"])
        store.import_faq_blocking([entry], replace=False)
        store.set_meta_blocking("faq_changed", 1)

    await asyncio.to_thread(import_like_the_cli)

    async def answered() -> bool:
        return (await admin.decide("猫山王怎么挑选"))["faq_id"] == "durian"

    await wait_for(answered, "the imported entry, with the custom synonym")


async def test_a_synonym_re_indexes_only_the_entries_that_use_it(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    admin = await sign_in_admin(client)
    musang = {**DURIAN, "question": "猫山王怎么挑选", "alternatives": []}
    await admin.call("POST", "/api/kb/entries", musang, status=201)
    assert (await admin.decide("榴莲怎么挑选"))["score"] < 0.95

    caplog.set_level(logging.INFO, "goflypy.nlp")
    saved = await admin.call(
        "POST", "/api/kb/synonyms", {"canonical": "榴莲", "variants": ["猫山王"]}
    )
    assert saved["indexed"] is True
    decision = await admin.decide("榴莲怎么挑选")
    assert decision["faq_id"] == "durian" and decision["score"] >= 0.95
    assert "vocabulary change re-indexed 1 FAQ entries" in caplog.text


async def test_suggestions_leave_out_what_barely_matches(client: TestClient) -> None:
    # "保存" fits the strawberry entry; the shipping fee only by a whisker.
    await _ask_as_shopper(client, "保存")
    await add_agent(client, "amy", "agent")
    await sign_in(client, "amy")
    conversation = desk_of(client).store.list_open_conversations()[0]
    response = await client.get(
        f"/api/console/suggestions?conversation_id={conversation.id}"
    )
    found = [s["faq_id"] for s in (await response.json())["suggestions"]]
    assert found == ["strawberry"]


async def test_try_it_shows_order_questions_as_the_live_chat_treats_them(
    client: TestClient,
) -> None:
    kb = await sign_in_admin(client)
    decision = await kb.decide("订单1234发货没")
    assert decision["action"] == "order" and "1234" in decision["reply"]
    assert decision["candidates"] == []
    assert (await kb.decide("运费怎么算"))["action"] == "answer"


def test_stored_stop_words_are_skipped_when_loaded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Vocabulary saved before stop words were refused must not reach the robot.
    groups = [SynonymGroup("了", ["红颜"]), SynonymGroup("草莓", ["红颜草莓"])]
    words = [DictWord("吗", 2000), DictWord("叶菜拼盘", 3000)]
    synonyms, kept, _rules = usable_vocabulary({}, groups, words)
    assert synonyms == {"红颜草莓": "草莓"}
    assert kept == {"叶菜拼盘": 3000}
    assert "停用词" in caplog.text and "吗 is a stop word" in caplog.text


async def test_lone_surrogates_are_a_clear_400_everywhere(client: TestClient) -> None:
    admin = await sign_in_admin(client)
    broken = "\ud800abc"
    entry = {**DURIAN, "question": broken}
    refused = await admin.call("POST", "/api/kb/entries", entry, status=400)
    assert "代理项" in refused["message"]
    alternatives = {**DURIAN, "alternatives": [broken]}
    await admin.call("POST", "/api/kb/entries", alternatives, status=400)
    synonyms = {"canonical": "草莓", "variants": [broken]}
    await admin.call("POST", "/api/kb/synonyms", synonyms, status=400)
    await admin.call("POST", "/api/kb/words", {"word": broken}, status=400)
    rule = {"topic": "水果", "members": [broken]}
    await admin.call("POST", "/api/kb/categories", rule, status=400)
    vocabulary = await admin.call("GET", "/api/kb/vocabulary")
    assert vocabulary["words"] == [] and vocabulary["synonyms"] == []
    assert vocabulary["categories"] == []


async def test_a_synonym_that_would_loop_a_category_rule_is_refused(
    client: TestClient,
) -> None:
    admin = await sign_in_admin(client)
    await admin.call(
        "POST", "/api/kb/categories", {"topic": "大类", "members": ["甲甲"]}
    )
    # 甲甲 meaning 大类 would make 大类 a member of itself.
    refused = await admin.call(
        "POST",
        "/api/kb/synonyms",
        {"canonical": "甲甲", "variants": ["大类"]},
        status=400,
    )
    assert "类别规则“大类”失效" in refused["message"]
    vocabulary = await admin.call("GET", "/api/kb/vocabulary")
    assert vocabulary["synonyms"] == []
    assert [rule["topic"] for rule in vocabulary["categories"]] == ["大类"]
    # A synonym that leaves the rules alone is still taken.
    await admin.call(
        "POST", "/api/kb/synonyms", {"canonical": "乙乙", "variants": ["丙丙"]}
    )


async def test_edits_settle_into_a_full_rebuild(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("goflypy.kb.SETTLE_S", 0.3)
    admin = await sign_in_admin(client)
    kb = client.server.app[APP_KB]
    robot = kb.robot
    for n in range(3):
        entry = {**DURIAN, "faq_id": f"durian-{n}", "question": f"榴莲第{n}种吃法"}
        await admin.call("POST", "/api/kb/entries", entry, status=201)
    await admin.settled()
    edited = robot._state  # single edits change the live index in place

    async def rebuilt() -> bool:
        return robot._state is not edited and not kb.busy

    await wait_for(rebuilt, "the settled edits to be rebuilt")
    # Now the live index scores as the one a restart would build.
    fresh = Robot(thresholds=robot.thresholds, lexicon=robot.lexicon)
    fresh.rebuild(desk_of(client).store.list_faq())
    for text in ("榴莲怎么吃", "草莓怎么保存", "运费多少", "退款要多久"):
        assert robot.decide(text).to_dict() == fresh.decide(text).to_dict()


async def test_vocabulary_sizes_synonym_repeats_and_hidden_characters(
    client: TestClient,
) -> None:
    admin = await sign_in_admin(client)
    many = {"canonical": "大词", "variants": [f"变体{n}" for n in range(201)]}
    refused = await admin.call("POST", "/api/kb/synonyms", many, status=400)
    assert "最多 200 个" in refused["message"]
    # 士多啤梨 is the built-in 草莓, already a member of 水果.
    rule = {"topic": "水果", "members": ["释迦", "士多啤梨"]}
    refused = await admin.call("POST", "/api/kb/categories", rule, status=400)
    assert "作为同义词“草莓”" in refused["message"]
    # Control and bidi characters never reach a shopper's screen.
    hidden = {
        **DURIAN,
        "question": "榴莲\u202e怎么\u0007挑选",
        "answer": "看\u0000颜色",
    }
    created = await admin.call("POST", "/api/kb/entries", hidden, status=201)
    stored = await admin.call("GET", f"/api/kb/entries/{created['entry']['faq_id']}")
    assert (stored["question"], stored["answer"]) == ("榴莲怎么挑选", "看颜色")


async def test_an_import_sent_as_a_form_says_so(client: TestClient) -> None:
    admin = await sign_in_admin(client)
    form = aiohttp.FormData()
    form.add_field("file", b"faq_id,question\na,b\n", filename="faq.csv")
    response = await client.post(
        "/api/kb/import?name=faq.csv&mode=merge",
        data=form,
        headers={"X-CSRF-Token": admin.csrf},
    )
    assert response.status == 400
    assert "multipart" in (await response.json())["message"]
