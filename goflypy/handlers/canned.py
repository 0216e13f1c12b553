"""Canned replies (快捷回复): prepared answers agents insert into the reply box.

Any signed-in console account lists them; only admins create, edit and
delete them, repeating the CSRF cookie in the X-CSRF-Token header like the
/api/kb routes. Texts are cleaned like every other text shown on a screen
(no control or bidi characters) and bounded.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict
from typing import Any

from aiohttp import web

from ..display import clean
from ..errors import BadRequest, NotFound
from ..log import server as log
from ..store import CannedReply
from ..store.kb import CANNED_LIMIT
from ..vocabulary import text_field
from .common import APP_DESK, json_body, json_reply, require_admin, signed_in

MAX_TITLE_CHARS = 40
MAX_TEXT_CHARS = 2000
# A title made from the text when none is given.
DERIVED_TITLE_CHARS = 20
REPLY_ID_PATTERN = re.compile(r"^[\w.-]{1,64}$")
_SPACES = re.compile(r"\s+")


def new_reply_id() -> str:
    """A fresh random reply id."""
    return "reply-" + secrets.token_hex(4)


def normal_text(raw: str) -> str:
    """Line breaks as ``\\n``, no control or bidi characters, no outer blanks."""
    return clean(raw.replace("\r\n", "\n").replace("\r", "\n")).strip()


def normal_title(raw: str) -> str:
    """One line, runs of blanks made one space."""
    return _SPACES.sub(" ", clean(raw)).strip()


def reply_from_json(data: dict[str, Any], reply_id: str) -> CannedReply:
    """Validate a canned reply posted by the console; BadRequest in Chinese."""
    text = normal_text(text_field(data.get("text"), "回复内容"))
    if not text:
        raise BadRequest("回复内容不能为空")
    if len(text) > MAX_TEXT_CHARS:
        raise BadRequest(f"回复内容最长 {MAX_TEXT_CHARS} 个字符")
    title = normal_title(text_field(data.get("title"), "标题"))
    if len(title) > MAX_TITLE_CHARS:
        raise BadRequest(f"标题最长 {MAX_TITLE_CHARS} 个字符")
    if not title:
        title = normal_title(text.split("\n", 1)[0])[:DERIVED_TITLE_CHARS]
    return CannedReply(reply_id, title, text)


def _check_id(raw: object) -> str:
    if not isinstance(raw, str) or not REPLY_ID_PATTERN.match(raw):
        raise BadRequest("快捷回复编号无效")
    return raw


def sorted_replies(replies: list[CannedReply]) -> list[CannedReply]:
    """By title, then id, so equal titles keep one order."""
    return sorted(replies, key=lambda r: (r.title, r.reply_id))


async def list_replies(request: web.Request) -> web.Response:
    """GET /api/console/canned: every canned reply, sorted by title."""
    signed_in(request)
    replies = sorted_replies(request.app[APP_DESK].store.list_canned())
    return json_reply({"replies": [asdict(r) for r in replies], "limit": CANNED_LIMIT})


async def save_reply(request: web.Request) -> web.Response:
    """POST /api/console/canned {reply_id?, title, text}: a new reply (201),
    or an edit of the reply ``reply_id`` names."""
    account = require_admin(request, changes=True)
    data = await json_body(request)
    raw_id = data.get("reply_id")
    create = raw_id in (None, "")
    reply_id = new_reply_id() if create else _check_id(raw_id)
    reply = reply_from_json(data, reply_id)
    await request.app[APP_DESK].store.put_canned(reply, create=create)
    log.info(
        "admin %s %s canned reply %s",
        account.username,
        "created" if create else "edited",
        reply_id,
    )
    return json_reply({"reply": asdict(reply)}, status=201 if create else 200)


async def delete_reply(request: web.Request) -> web.Response:
    """DELETE /api/console/canned/{reply_id}."""
    account = require_admin(request, changes=True)
    reply_id = request.match_info["reply_id"]
    # An id we never hand out (too long for a key, say) names nothing.
    found = REPLY_ID_PATTERN.match(reply_id) is not None
    if not found or not await request.app[APP_DESK].store.delete_canned(reply_id):
        raise NotFound("快捷回复不存在或已被删除")
    log.info("admin %s deleted canned reply %s", account.username, reply_id)
    return json_reply({"deleted": reply_id})
