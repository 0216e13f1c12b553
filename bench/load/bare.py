"""The baseline: a bare aiohttp WebSocket server with the same traffic shape.

It speaks just enough of goflypy's two socket protocols for the load
generator: ``hello`` gets ``welcome``; a visitor ``message`` is acked,
echoed to the visitor and fanned out to every agent socket; an agent
``message`` is acked and delivered to the visitor. Nothing is stored.

    python bench/load/bare.py PORT
"""

from __future__ import annotations

import contextlib
import itertools
import json
import resource
import sys

from aiohttp import WSMsgType, web

VISITORS: dict[str, web.WebSocketResponse] = {}
AGENTS: set[web.WebSocketResponse] = set()
SEQ = itertools.count(1)


def dumps(frame: dict[str, object]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


async def visitor_ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    vid = ""
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            if frame["type"] == "hello":
                vid = f"v{next(SEQ)}"
                VISITORS[vid] = ws
                await ws.send_str(
                    dumps(
                        {
                            "type": "welcome",
                            "visitor_token": vid,
                            "visitor_id": vid,
                            "conversation_id": vid,
                            "last_seq": 0,
                        }
                    )
                )
            elif frame["type"] == "message":
                seq = next(SEQ)
                out = dumps(
                    {
                        "type": "message",
                        "conversation_id": vid,
                        "seq": seq,
                        "sender": "visitor",
                        "text": frame["text"],
                        "client_id": frame["client_id"],
                    }
                )
                await ws.send_str(
                    dumps({"type": "ack", "client_id": frame["client_id"], "seq": seq})
                )
                await ws.send_str(out)
                for agent in list(AGENTS):
                    with contextlib.suppress(Exception):  # one gone agent only
                        await agent.send_str(out)
    finally:
        VISITORS.pop(vid, None)
    return ws


async def agent_ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    AGENTS.add(ws)
    await ws.send_str(dumps({"type": "welcome", "conversations": []}))
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            if frame["type"] == "message":
                seq = next(SEQ)
                out = dumps(
                    {
                        "type": "message",
                        "conversation_id": frame["conversation_id"],
                        "seq": seq,
                        "sender": "agent",
                        "text": frame["text"],
                    }
                )
                await ws.send_str(
                    dumps({"type": "ack", "client_id": frame["client_id"], "seq": seq})
                )
                visitor = VISITORS.get(frame["conversation_id"])
                if visitor is not None:
                    with contextlib.suppress(Exception):
                        await visitor.send_str(out)
            elif frame["type"] == "claim":
                await ws.send_str(
                    dumps(
                        {
                            "type": "conversation",
                            "conversation": {"id": frame["conversation_id"]},
                        }
                    )
                )
    finally:
        AGENTS.discard(ws)
    return ws


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "visitors": len(VISITORS)})


def main() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    app = web.Application()
    app.router.add_get("/ws/visitor", visitor_ws)
    app.router.add_get("/ws/agent", agent_ws)
    app.router.add_get("/healthz", healthz)
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        print=None,
        access_log=None,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
