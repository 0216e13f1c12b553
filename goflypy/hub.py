"""Who is connected, and fan-out to them. Knows no sockets.

A ``Peer`` is anything with a non-blocking ``send(text, seq)`` that queues
one encoded frame (``seq`` is set for a visitor's conversation messages)
and returns False when the peer is over its budget (the peer then closes
itself). The hub encodes each frame once, however many peers
receive it, and one peer's failure never stops a fan-out.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Protocol

from .log import ws as log


class Peer(Protocol):
    def send(self, text: str, seq: int | None = None) -> bool: ...


def encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


class Hub:
    """Connected visitors (by visitor id) and agents (by username)."""

    def __init__(self) -> None:
        self._visitors: dict[str, set[Peer]] = defaultdict(set)
        self._agents: dict[str, set[Peer]] = defaultdict(set)

    # Membership

    def join_visitor(self, visitor_id: str, peer: Peer) -> bool:
        """Add a visitor device; True when the visitor just came online."""
        first = not self._visitors.get(visitor_id)
        self._visitors[visitor_id].add(peer)
        return first

    def leave_visitor(self, visitor_id: str, peer: Peer) -> bool:
        """Remove a visitor device; True when the visitor just went offline."""
        peers = self._visitors.get(visitor_id)
        if peers is None:
            return False
        peers.discard(peer)
        if peers:
            return False
        del self._visitors[visitor_id]
        return True

    def join_agent(self, username: str, peer: Peer) -> None:
        self._agents[username].add(peer)

    def leave_agent(self, username: str, peer: Peer) -> None:
        peers = self._agents.get(username)
        if peers is not None:
            peers.discard(peer)
            if not peers:
                del self._agents[username]

    # Presence

    def is_visitor_online(self, visitor_id: str) -> bool:
        return bool(self._visitors.get(visitor_id))

    def online_agents(self) -> list[str]:
        return sorted(self._agents)

    def counts(self) -> dict[str, int]:
        return {
            "visitors": len(self._visitors),
            "visitor_sockets": sum(len(p) for p in self._visitors.values()),
            "agents": len(self._agents),
            "agent_sockets": sum(len(p) for p in self._agents.values()),
        }

    # Fan-out

    def to_visitor(self, visitor_id: str, frame: dict[str, Any]) -> int:
        """Send to every device of a visitor; returns how many took it."""
        seq = frame["seq"] if frame.get("type") == "message" else None
        return _fan_out(list(self._visitors.get(visitor_id, ())), encode(frame), seq)

    def to_agents(self, frame: dict[str, Any], only: str | None = None) -> int:
        """Send to every agent socket (or to one agent's sockets)."""
        if only is not None:
            peers = list(self._agents.get(only, ()))
        else:
            peers = [peer for group in self._agents.values() for peer in group]
        return _fan_out(peers, encode(frame))

    def all_peers(self) -> list[Peer]:
        return [
            peer
            for table in (self._visitors, self._agents)
            for group in table.values()
            for peer in group
        ]


def _fan_out(peers: list[Peer], text: str, seq: int | None = None) -> int:
    delivered = 0
    for peer in peers:
        try:
            if peer.send(text, seq):
                delivered += 1
        except Exception:  # one broken peer never stops the others
            log.exception("send to a peer failed")
    return delivered
