"""Who is connected, and fan-out to them. Knows no sockets.

A ``Peer`` is anything with a non-blocking ``send(text, seq)`` that queues
one encoded frame (``seq`` is set for conversation messages)
and returns False when the peer is over its budget (the peer then closes
itself). The hub encodes each frame once, however many peers receive it,
and one peer's failure never stops a fan-out.

Presence is counted per person, not per socket: a visitor or agent with
several devices or tabs is online while any one of them is connected, and
``join_*``/``leave_*`` return True only when that changes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Protocol

from .display import clean_frame, is_dirty
from .log import ws as log

SOCKET_KINDS = ("visitor", "agent")


class Peer(Protocol):
    def send(self, text: str, seq: int | None = None) -> bool: ...

    def drop(self, code: int, reason: str) -> None: ...


def encode(frame: dict[str, Any]) -> str:
    """One frame as sent on a socket, with text made safe to display.

    Stored text stays verbatim; only what goes out loses control and bidi
    characters. The common clean frame costs one regex scan.
    """
    text = json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
    if is_dirty(text):
        text = json.dumps(clean_frame(frame), ensure_ascii=False, separators=(",", ":"))
    return text


class Hub:
    """Connected visitors (by visitor id) and agents (by username)."""

    def __init__(self) -> None:
        self._visitors: dict[str, set[Peer]] = defaultdict(set)
        self._agents: dict[str, set[Peer]] = defaultdict(set)
        self._open: dict[str, set[Peer]] = {kind: set() for kind in SOCKET_KINDS}

    # Open sockets, from the upgrade (before any hello) to the close.

    def socket_opened(self, kind: str, peer: Peer) -> None:
        self._open[kind].add(peer)

    def socket_closed(self, kind: str, peer: Peer) -> None:
        self._open[kind].discard(peer)

    def open_sockets(self) -> int:
        return sum(len(peers) for peers in self._open.values())

    # Membership

    def join_visitor(self, visitor_id: str, peer: Peer) -> bool:
        """Add a visitor device; True when the visitor just came online."""
        first = not self._visitors.get(visitor_id)
        self._visitors[visitor_id].add(peer)
        return first

    def leave_visitor(self, visitor_id: str, peer: Peer) -> bool:
        """Remove a visitor device; True when the visitor just went offline."""
        return _leave(self._visitors, visitor_id, peer)

    def join_agent(self, username: str, peer: Peer) -> bool:
        """Add an agent tab; True when the agent just came online."""
        first = not self._agents.get(username)
        self._agents[username].add(peer)
        return first

    def leave_agent(self, username: str, peer: Peer) -> bool:
        """Remove an agent tab; True when the agent just went offline."""
        return _leave(self._agents, username, peer)

    # Presence

    def is_visitor_online(self, visitor_id: str) -> bool:
        return bool(self._visitors.get(visitor_id))

    def online_agents(self) -> list[str]:
        return sorted(self._agents)

    def is_agent_online(self, username: str) -> bool:
        return bool(self._agents.get(username))

    def counts(self) -> dict[str, int]:
        """People online and open sockets by kind (sockets include pre-hello)."""
        return {
            "visitors": len(self._visitors),
            "visitor_sockets": len(self._open["visitor"]),
            "agents": len(self._agents),
            "agent_sockets": len(self._open["agent"]),
        }

    # Fan-out

    def to_visitor(self, visitor_id: str, frame: dict[str, Any]) -> int:
        """Send to every device of a visitor; returns how many took it."""
        peers = self._visitors.get(visitor_id)
        if not peers:
            return 0
        seq = frame["seq"] if frame.get("type") == "message" else None
        return _fan_out(list(peers), encode(frame), seq)

    def to_agents(self, frame: dict[str, Any], only: str | None = None) -> int:
        """Send to every agent socket (or to one agent's sockets)."""
        if only is not None:
            peers = list(self._agents.get(only, ()))
        else:
            peers = [peer for group in self._agents.values() for peer in group]
        if not peers:
            return 0
        seq = frame["seq"] if frame.get("type") == "message" else None
        return _fan_out(peers, encode(frame), seq)

    def agent_peers(self, username: str) -> list[Peer]:
        """The open console sockets of one agent."""
        return list(self._agents.get(username, ()))

    def all_peers(self) -> list[Peer]:
        """Every open socket, whether or not it has said hello."""
        return [peer for peers in self._open.values() for peer in peers]


def _leave(table: dict[str, set[Peer]], key: str, peer: Peer) -> bool:
    peers = table.get(key)
    if peers is None or peer not in peers:
        return False
    peers.discard(peer)
    if peers:
        return False
    del table[key]
    return True


def _fan_out(peers: list[Peer], text: str, seq: int | None = None) -> int:
    delivered = 0
    for peer in peers:
        try:
            if peer.send(text, seq):
                delivered += 1
        except Exception:  # one broken peer never stops the others
            log.exception("send to a peer failed")
    return delivered
