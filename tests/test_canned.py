"""Canned replies (快捷回复) over a real server on 127.0.0.1, and the demo seed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from goflypy.cli import DEMO_CANNED
from goflypy.store import CannedReply, Store, SynonymGroup
from goflypy.store.kb import CANNED_LIMIT
from tests.conftest import add_agent, desk_of, sign_in
from tests.kb_support import Admin, page_csrf, sign_in_admin
from tests.test_cli import goflypy

URL = "/api/console/canned"
REFUND = {"title": "退款说明", "text": "退款审核通过后 1 到 3 个工作日原路退回。"}
GREETING = {"title": "问候", "text": "您好，请问有什么可以帮您？"}
HOSTILE_TITLE = "<img src=x onerror=alert(1)>"
HOSTILE_TEXT = "<script>alert('x')</script>\n请稍等"


async def sign_in_agent(client: TestClient, username: str = "amy") -> Admin:
    """An agent session; ``Admin`` is only the caller with its CSRF token."""
    await add_agent(client, username, "agent")
    response = await sign_in(client, username)
    assert response.status == 302, await response.text()
    return Admin(client, await page_csrf(client))


def titles(listed: dict[str, Any]) -> list[str]:
    return [reply["title"] for reply in listed["replies"]]


async def test_admins_create_edit_delete_and_agents_list(client: TestClient) -> None:
    admin = await sign_in_admin(client)
    assert (await admin.call("GET", URL))["replies"] == []
    refund = (await admin.call("POST", URL, REFUND, status=201))["reply"]
    greeting = (await admin.call("POST", URL, GREETING, status=201))["reply"]
    assert refund["reply_id"] != greeting["reply_id"]
    assert refund["text"] == REFUND["text"] and refund["updated"] > 0

    agent = await sign_in_agent(client)
    listed = await agent.call("GET", URL)
    assert titles(listed) == sorted([REFUND["title"], GREETING["title"]])
    assert listed["limit"] == CANNED_LIMIT

    admin = await sign_in_admin(client, "root2")
    edited = {"reply_id": refund["reply_id"], "title": "退款", "text": "已为您退款。"}
    saved = (await admin.call("POST", URL, edited, status=200))["reply"]
    assert saved == {**edited, "updated": saved["updated"]}
    listed = await admin.call("GET", URL)
    assert len(listed["replies"]) == 2
    assert {"title": "退款", "text": "已为您退款。"}.items() <= next(
        r for r in listed["replies"] if r["reply_id"] == refund["reply_id"]
    ).items()

    deleted = await admin.call("DELETE", f"{URL}/{refund['reply_id']}")
    assert deleted == {"deleted": refund["reply_id"]}
    assert titles(await admin.call("GET", URL)) == [GREETING["title"]]
    gone = await admin.call("DELETE", f"{URL}/{refund['reply_id']}", status=404)
    assert "不存在" in gone["message"]
    await admin.call("DELETE", f"{URL}/{'x' * 600}", status=404)
    # Editing a reply another admin deleted meanwhile does not bring it back.
    stale = await admin.call("POST", URL, edited, status=404)
    assert "不存在" in stale["message"]
    assert titles(await admin.call("GET", URL)) == [GREETING["title"]]


async def test_agents_may_not_change_them_and_strangers_not_read(
    client: TestClient,
) -> None:
    for method, path in (("GET", URL), ("POST", URL), ("DELETE", f"{URL}/x")):
        response = await client.request(method, path, json=GREETING)
        assert response.status == 401, (method, path)
        assert (await response.json())["message"] == "请先登录"

    admin = await sign_in_admin(client)
    made = (await admin.call("POST", URL, GREETING, status=201))["reply"]
    agent = await sign_in_agent(client)
    refused = await agent.call("POST", URL, REFUND, status=403)
    assert refused["message"] == "需要管理员权限"
    edit = {**GREETING, "reply_id": made["reply_id"], "text": "改掉"}
    await agent.call("POST", URL, edit, status=403)
    await agent.call("DELETE", f"{URL}/{made['reply_id']}", status=403)
    stored = desk_of(client).store.list_canned()
    assert [(r.title, r.text) for r in stored] == [tuple(GREETING.values())]


async def test_changes_without_the_csrf_token_are_refused(client: TestClient) -> None:
    admin = await sign_in_admin(client)
    made = (await admin.call("POST", URL, GREETING, status=201))["reply"]
    for token in ("forged", ""):
        forged = Admin(client, token)
        answer = await forged.call("POST", URL, REFUND, status=403)
        assert answer["error"] == "csrf"
        answer = await forged.call("DELETE", f"{URL}/{made['reply_id']}", status=403)
        assert answer["error"] == "csrf"
    response = await client.post(
        URL,
        json=REFUND,
        headers={"X-CSRF-Token": admin.csrf, "Origin": "https://evil.example"},
    )
    assert response.status == 403
    assert titles(await admin.call("GET", URL)) == [GREETING["title"]]


async def test_bad_and_oversized_replies_are_refused_in_chinese(
    client: TestClient,
) -> None:
    admin = await sign_in_admin(client)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"title": "空", "text": " \n\t "}, "回复内容不能为空"),
        ({"title": "空"}, "回复内容不能为空"),
        ({"title": "长", "text": "好" * 2001}, "回复内容最长 2000 个字符"),
        ({"title": "标" * 41, "text": "好"}, "标题最长 40 个字符"),
        ({"title": "数字", "text": 42}, "回复内容必须是文本"),
        ({"title": ["x"], "text": "好"}, "标题必须是文本"),
        ({"reply_id": "a b", "text": "好"}, "快捷回复编号无效"),
    ]
    for body, message in cases:
        answer = await admin.call("POST", URL, body, status=400)
        assert answer["message"] == message, body
    response = await client.post(URL, data="[1]", headers={"X-CSRF-Token": admin.csrf})
    assert response.status == 400
    assert (await response.json())["message"] == "请求内容必须是 JSON 对象"
    assert (await admin.call("GET", URL))["replies"] == []

    # The limits themselves are allowed.
    edge = {"title": "标" * 40, "text": "好" * 2000}
    await admin.call("POST", URL, edge, status=201)


async def test_the_list_is_bounded(client: TestClient) -> None:
    admin = await sign_in_admin(client)
    store = desk_of(client).store
    replies = [
        CannedReply(f"seed-{n}", f"回复 {n:03d}", "好的")
        for n in range(CANNED_LIMIT - 1)
    ]
    await asyncio.to_thread(store.seed_canned_blocking, replies)
    await admin.call("POST", URL, GREETING, status=201)
    full = await admin.call("POST", URL, REFUND, status=400)
    assert full["message"] == f"快捷回复最多 {CANNED_LIMIT} 条，请先删除不再使用的"
    assert len((await admin.call("GET", URL))["replies"]) == CANNED_LIMIT
    # Editing still works when the list is full; deleting makes room.
    edit = {"reply_id": "seed-0", "title": "改过", "text": "好的呀"}
    await admin.call("POST", URL, edit, status=200)
    await admin.call("DELETE", f"{URL}/seed-1")
    await admin.call("POST", URL, REFUND, status=201)


async def test_texts_are_returned_as_data_and_cleaned(client: TestClient) -> None:
    admin = await sign_in_admin(client)
    await admin.call(
        "POST", URL, {"title": HOSTILE_TITLE, "text": HOSTILE_TEXT}, status=201
    )
    messy = {"title": "  多行\n标题\u202e  ", "text": "\u202e第一行\r\n第二行\x07  "}
    cleaned = (await admin.call("POST", URL, messy, status=201))["reply"]
    assert (cleaned["title"], cleaned["text"]) == ("多行 标题", "第一行\n第二行")
    first_line = "  感谢您的耐心等待，祝您生活愉快！欢迎下次光临。"
    untitled = {"title": "", "text": first_line + "\n好"}
    derived = (await admin.call("POST", URL, untitled, status=201))["reply"]
    assert derived["title"] == "感谢您的耐心等待，祝您生活愉快！欢迎下次"

    agent = await sign_in_agent(client)
    response = await client.get(URL)
    assert response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    listed = await response.json()
    hostile = next(r for r in listed["replies"] if r["title"] == HOSTILE_TITLE)
    assert hostile["text"] == HOSTILE_TEXT
    assert agent.csrf  # the agent reads the list with a plain GET


async def test_canned_replies_share_the_lexicon_without_touching_it(
    client: TestClient,
) -> None:
    store = desk_of(client).store
    await store.put_synonym_group(SynonymGroup("草莓", ["士多啤梨"]))
    await store.put_canned(CannedReply("r1", "问候", "您好"), create=True)
    assert [g.canonical for g in store.list_synonyms()] == ["草莓"]
    assert [r.reply_id for r in store.list_canned()] == ["r1"]
    assert store.get_canned("r1") == store.list_canned()[0]
    assert await store.delete_canned("r1") is True
    assert store.get_canned("r1") is None
    assert [g.canonical for g in store.list_synonyms()] == ["草莓"]


def test_the_demo_seeds_canned_replies_once(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")
    for _round in range(2):
        done = goflypy("init", "--demo", "--data-dir", data_dir)
        assert done.returncode == 0, done.stderr
    with Store(tmp_path / "data") as store:
        seeded = store.list_canned()
    assert sorted((r.title, r.text) for r in seeded) == sorted(DEMO_CANNED)
    assert 3 <= len(seeded) <= 5


async def test_an_emptied_demo_shop_stays_empty(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")
    assert goflypy("init", "--demo", "--data-dir", data_dir).returncode == 0
    with Store(tmp_path / "data") as store:
        assert store.list_faq() and store.list_canned()
        for entry in store.list_faq():
            await store.delete_faq(entry.faq_id)
        for reply in store.list_canned():
            await store.delete_canned(reply.reply_id)
    # `make serve` passes --demo at every start.
    assert goflypy("init", "--demo", "--data-dir", data_dir).returncode == 0
    with Store(tmp_path / "data") as store:
        assert store.list_faq() == [] and store.list_canned() == []


async def test_a_lone_surrogate_is_refused_not_a_500(client: TestClient) -> None:
    admin = await sign_in_admin(client)
    refused = await admin.call("POST", URL, {"text": "\udc00好的"}, status=400)
    assert "代理项" in refused["message"]
