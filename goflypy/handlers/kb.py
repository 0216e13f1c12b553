"""Knowledge-base admin pages and API, and FAQ suggestions for agents.

Every /api/kb route needs a signed-in admin; /api/console/suggestions any
signed-in console account. State changes repeat the CSRF cookie in the
X-CSRF-Token header and must come from this site's own origin.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from ..errors import BadRequest, NotFound
from ..faqfile import FaqFileError, new_faq_id
from ..kb import KnowledgeBase
from ..log import server as log
from ..models import FaqEntry
from ..nlp.intents import detect_order
from ..nlp.normalize import normalize_text
from ..vocabulary import (
    check_category_rule,
    check_dict_word,
    check_faq_id,
    check_rules_keep_fitting,
    check_synonym_group,
    check_word,
    entry_from_json,
)
from .common import (
    APP_DESK,
    NO_STORE,
    admin_page,
    json_body,
    json_reply,
    require_admin,
    signed_in,
)

APP_KB = web.AppKey("kb", KnowledgeBase)
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
MAX_TRY_CHARS = 500
PAGE_LIMIT = 500
_FORMATS = {"csv": ".csv", "jsonl": ".jsonl"}


def _kb(request: web.Request) -> KnowledgeBase:
    return request.app[APP_KB]


def _entry_json(entry: FaqEntry) -> dict[str, Any]:
    return asdict(entry)


# The page


async def kb_page(request: web.Request) -> web.Response:
    """GET /console/kb: the knowledge-base editor (admins only)."""
    return admin_page(request, "kb.html")


# Entries


async def list_entries(request: web.Request) -> web.Response:
    """GET /api/kb/entries?q=&category=&offset=&limit=."""
    require_admin(request)
    offset, limit = _int(request, "offset", 0), _int(request, "limit", 100)
    store = request.app[APP_DESK].store
    # Normalising every text of a large FAQ takes a while: not on the loop.
    result = await asyncio.to_thread(
        _search,
        store.list_faq,
        request.query.get("q", ""),
        request.query.get("category", ""),
    )
    found = result["found"]
    limit = max(1, min(limit, PAGE_LIMIT))
    page = found[max(0, offset) : max(0, offset) + limit]
    return json_reply(
        {
            "total": len(found),
            "all": result["all"],
            "categories": result["categories"],
            "entries": [_entry_json(entry) for entry in page],
        }
    )


def _search(
    list_faq: Callable[[], list[FaqEntry]], text: str, category: str
) -> dict[str, Any]:
    entries = list_faq()
    query = normalize_text(text)
    found = [
        entry
        for entry in entries
        if (not category or entry.category == category) and _matches(entry, query)
    ]
    found.sort(key=lambda entry: entry.faq_id)
    categories = sorted({entry.category for entry in entries if entry.category})
    return {"found": found, "all": len(entries), "categories": categories}


def _matches(entry: FaqEntry, query: str) -> bool:
    if not query:
        return True
    texts = (entry.faq_id, entry.question, entry.answer, entry.category)
    return any(query in normalize_text(t) for t in (*texts, *entry.alternatives))


def _int(request: web.Request, name: str, default: int) -> int:
    try:
        return int(request.query.get(name, default))
    except ValueError:
        raise BadRequest(f"{name} 必须是整数") from None


async def get_entry(request: web.Request) -> web.Response:
    """GET /api/kb/entries/{faq_id}."""
    require_admin(request)
    entry = request.app[APP_DESK].store.get_faq(request.match_info["faq_id"])
    if entry is None:
        raise NotFound("条目不存在")
    return json_reply(_entry_json(entry))


async def create_entry(request: web.Request) -> web.Response:
    """POST /api/kb/entries: a new entry; the id is made up when not given."""
    account = require_admin(request, changes=True)
    data = await json_body(request)
    raw_id = data.get("faq_id")
    faq_id = check_faq_id(raw_id) if raw_id else new_faq_id()
    entry = entry_from_json(data, faq_id)
    indexed = await _kb(request).create_entry(entry)
    log.info("admin %s created FAQ entry %s", account.username, faq_id)
    return json_reply({"entry": _entry_json(entry), "indexed": indexed}, status=201)


async def update_entry(request: web.Request) -> web.Response:
    """PUT /api/kb/entries/{faq_id}."""
    account = require_admin(request, changes=True)
    faq_id = check_faq_id(request.match_info["faq_id"])
    entry = entry_from_json(await json_body(request), faq_id)
    indexed = await _kb(request).update_entry(entry)
    log.info("admin %s edited FAQ entry %s", account.username, faq_id)
    return json_reply({"entry": _entry_json(entry), "indexed": indexed})


async def delete_entry(request: web.Request) -> web.Response:
    """DELETE /api/kb/entries/{faq_id}."""
    account = require_admin(request, changes=True)
    faq_id = request.match_info["faq_id"]
    indexed = await _kb(request).delete_entry(faq_id)
    log.info("admin %s deleted FAQ entry %s", account.username, faq_id)
    return json_reply({"deleted": faq_id, "indexed": indexed})


# Try it


async def try_robot(request: web.Request) -> web.Response:
    """POST /api/kb/try {text}: the robot's decision, scores and top three."""
    require_admin(request, changes=True)
    text = (await json_body(request)).get("text")
    if not isinstance(text, str):
        raise BadRequest("请输入要试的问题")
    if len(text) > MAX_TRY_CHARS:
        raise BadRequest(f"请输入不超过 {MAX_TRY_CHARS} 字的问题")
    order = detect_order(text)
    if order is not None:
        # Live chats send these to the order system, never to the FAQ.
        reply = (
            f"查询订单 {order.order_id}（已登录的会员）"
            if order.order_id
            else "请顾客提供订单号"
        )
        return json_reply(
            {"action": "order", "reply": reply, "score": 1.0, "candidates": []}
        )
    decision = await _kb(request).decide(text)
    return json_reply(decision.to_dict())


async def status(request: web.Request) -> web.Response:
    """GET /api/kb/status: entry count and whether the index is catching up."""
    require_admin(request)
    kb = _kb(request)
    store = request.app[APP_DESK].store
    return json_reply(
        {
            "entries": store.count_faq_entries(),
            "indexing": kb.busy or kb.pending > 0,
            "pending": kb.pending,
            "unanswered": store.count_unanswered(),
        }
    )


# Synonyms, dictionary words and category rules


async def list_vocabulary(request: web.Request) -> web.Response:
    """GET /api/kb/vocabulary: custom synonym groups, words and category rules,
    with the shipped rules (topic -> members) for display."""
    require_admin(request)
    store = request.app[APP_DESK].store
    groups = sorted(store.list_synonyms(), key=lambda g: g.canonical)
    words = sorted(store.list_words(), key=lambda w: w.word)
    rules = sorted(store.list_categories(), key=lambda r: r.topic)
    lexicon = _kb(request).robot.lexicon
    shipped = lexicon.shipped_synonyms()
    return json_reply(
        {
            "synonyms": [asdict(group) for group in groups],
            "words": [asdict(word) for word in words],
            "shipped_synonyms": len(shipped),
            "categories": [asdict(rule) for rule in rules],
            "shipped_categories": lexicon.shipped_categories(),
        }
    )


async def put_synonyms(request: web.Request) -> web.Response:
    """POST /api/kb/synonyms {canonical, variants, replaces?}."""
    account = require_admin(request, changes=True)
    data = await json_body(request)
    replaces = data.get("replaces")
    replaces = check_word(replaces, "原标准词") if replaces else None
    kb = _kb(request)
    shipped = kb.robot.lexicon.shipped_synonyms()
    groups = kb.store.list_synonyms()
    group = check_synonym_group(data, shipped, groups, replaces)
    check_rules_keep_fitting(
        shipped,
        [*(g for g in groups if g.canonical not in (group.canonical, replaces)), group],
        kb.robot.lexicon.shipped_categories(),
        kb.store.list_categories(),
    )
    indexed = await kb.put_synonym_group(group, replaces)
    log.info("admin %s saved a synonym group", account.username)
    return json_reply({"group": asdict(group), "indexed": indexed})


async def delete_synonyms(request: web.Request) -> web.Response:
    """DELETE /api/kb/synonyms/{canonical}."""
    require_admin(request, changes=True)
    canonical = request.match_info["canonical"]
    indexed = await _kb(request).delete_synonym_group(canonical)
    return json_reply({"deleted": canonical, "indexed": indexed})


async def put_word(request: web.Request) -> web.Response:
    """POST /api/kb/words {word, freq?}."""
    require_admin(request, changes=True)
    word = check_dict_word(await json_body(request))
    indexed = await _kb(request).put_word(word)
    return json_reply({"word": asdict(word), "indexed": indexed})


async def delete_word(request: web.Request) -> web.Response:
    """DELETE /api/kb/words/{word}."""
    require_admin(request, changes=True)
    word = request.match_info["word"]
    indexed = await _kb(request).delete_word(word)
    return json_reply({"deleted": word, "indexed": indexed})


async def put_categories(request: web.Request) -> web.Response:
    """POST /api/kb/categories {topic, members, replaces?}."""
    account = require_admin(request, changes=True)
    data = await json_body(request)
    replaces = data.get("replaces")
    replaces = check_word(replaces, "原类别") if replaces else None
    kb = _kb(request)
    lexicon = kb.robot.lexicon
    rule = check_category_rule(
        data,
        lexicon.shipped_categories(),
        kb.store.list_categories(),
        lexicon.canonical,
        replaces,
    )
    indexed = await kb.put_category_rule(rule, replaces)
    log.info("admin %s saved a category rule", account.username)
    return json_reply({"rule": asdict(rule), "indexed": indexed})


async def delete_categories(request: web.Request) -> web.Response:
    """DELETE /api/kb/categories/{topic}."""
    require_admin(request, changes=True)
    topic = request.match_info["topic"]
    indexed = await _kb(request).delete_category_rule(topic)
    return json_reply({"deleted": topic, "indexed": indexed})


# Import and export


async def export_entries(request: web.Request) -> web.Response:
    """GET /api/kb/export?format=csv|jsonl."""
    require_admin(request)
    fmt = request.query.get("format", "jsonl")
    if fmt not in _FORMATS:
        raise BadRequest("格式只能是 csv 或 jsonl")
    body = await _kb(request).export_bytes(_FORMATS[fmt])
    name = time.strftime("faq-%Y%m%d", time.gmtime()) + _FORMATS[fmt]
    kind = "text/csv" if fmt == "csv" else "application/x-ndjson"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', **NO_STORE}
    return web.Response(body=body, headers=headers, content_type=kind, charset="utf-8")


async def import_entries(request: web.Request) -> web.Response:
    """POST /api/kb/import?name=file.csv&mode=merge|replace, the file as body.

    A file with any bad line is refused whole: 400 with ``problems``, the
    first of them by line, and ``more``, how many were left off.
    """
    account = require_admin(request, changes=True)
    name = request.query.get("name", "")
    mode = request.query.get("mode", "merge")
    if mode not in ("merge", "replace"):
        raise BadRequest("导入方式只能是 merge 或 replace")
    if not name.lower().endswith((".csv", ".jsonl", ".ndjson")):
        raise BadRequest("请上传 .csv 或 .jsonl 文件")
    if request.content_type.startswith("multipart/"):
        raise BadRequest("请把文件内容直接作为请求体上传，不要用表单（multipart）")
    data = await _read_upload(request)
    try:
        entries = await _kb(request).parse_upload(data, _plain_name(name))
    except FaqFileError as error:
        return _refused_file(error)
    if mode == "replace" and not entries:
        raise BadRequest("文件中没有条目；替换导入会清空知识库，已拒绝")
    result = await _kb(request).import_entries(entries, replace=mode == "replace")
    log.info(
        "admin %s imported %d FAQ entries (%s)",
        account.username,
        result["imported"],
        mode,
    )
    return json_reply(result)


def _refused_file(error: FaqFileError) -> web.Response:
    """400 in the shape of every /api error, plus the problems by line."""
    return json_reply(
        {
            "error": BadRequest.code,
            "message": f"导入失败：{error.summary}",
            "problems": error.problems,
            "more": error.more,
        },
        status=BadRequest.status,
    )


def _plain_name(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1][:100]


async def _read_upload(request: web.Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_UPLOAD_BYTES:
            raise BadRequest(f"文件太大（最大 {MAX_UPLOAD_BYTES // 1024 // 1024} MB）")
        chunks.append(chunk)
    return b"".join(chunks)


# Unanswered and handed off


async def list_unanswered(request: web.Request) -> web.Response:
    """GET /api/kb/unanswered: handed-off questions, most recent first."""
    require_admin(request)
    store = request.app[APP_DESK].store
    items = store.list_unanswered(_int(request, "limit", 200))
    return json_reply(
        {"total": store.count_unanswered(), "items": [asdict(i) for i in items]}
    )


async def adopt_unanswered(request: web.Request) -> web.Response:
    """POST /api/kb/unanswered/{key}/adopt {faq_id}: add it as a phrasing."""
    account = require_admin(request, changes=True)
    key = request.match_info["key"]
    faq_id = check_faq_id((await json_body(request)).get("faq_id"))
    store = request.app[APP_DESK].store
    record = store.get_unanswered(key)
    if record is None:
        raise NotFound("该问题已处理或已过期")
    entry = await _kb(request).add_alternative(faq_id, record.text)
    await store.delete_unanswered(key)
    log.info("admin %s added a phrasing to FAQ entry %s", account.username, faq_id)
    return json_reply({"entry": _entry_json(entry)})


async def dismiss_unanswered(request: web.Request) -> web.Response:
    """DELETE /api/kb/unanswered/{key}."""
    require_admin(request, changes=True)
    key = request.match_info["key"]
    if not await request.app[APP_DESK].store.delete_unanswered(key):
        raise NotFound("该问题已处理或已过期")
    return json_reply({"deleted": key})


# Agent console


async def suggestions(request: web.Request) -> web.Response:
    """GET /api/console/suggestions?conversation_id=: top three FAQ answers
    for the shopper's last message."""
    signed_in(request)
    store = request.app[APP_DESK].store
    conversation = store.get_conversation(request.query.get("conversation_id", ""))
    if conversation is None:
        raise NotFound("会话不存在")
    after = max(0, conversation.last_seq - 50)
    messages = store.list_messages(conversation.id, after_seq=after)
    last = next((m for m in reversed(messages) if m.sender == "visitor"), None)
    if last is None:
        return json_reply({"seq": 0, "suggestions": []})
    found = await _kb(request).suggest(last.text)
    return json_reply({"seq": last.seq, "suggestions": found})
