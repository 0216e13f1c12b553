"""Prometheus metrics of one running server, in its own registry.

Counters on the hot path are plain prometheus_client instruments; what
other objects already know (sockets, robot decisions, store commits, the
archive backlog) is read when /metrics is scraped, so the hub, desk and
store carry no metrics code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .desk import Desk
from .log import server as log

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The backlog gauge scans conversations: at most this many, this often.
BACKLOG_SCAN_LIMIT = 10_000
BACKLOG_EVERY_S = 60.0
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
RTT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SOCKET_KINDS = ("visitor", "agent")
DROP_REASONS = ("queue_full", "dead")


class Metrics:
    """The instruments socket handlers update, plus the scrape-time readings."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        ProcessCollector(registry=registry)
        self.frames_in = Counter(
            "goflypy_frames_received",
            "Frames read from sockets",
            ["kind"],
            registry=registry,
        )
        self.frames_out = Counter(
            "goflypy_frames_sent",
            "Frames written to sockets",
            ["kind"],
            registry=registry,
        )
        self.messages_in = Counter(
            "goflypy_messages_received",
            "Chat messages accepted from visitors and agents",
            ["sender"],
            registry=registry,
        )
        self.messages_out = Counter(
            "goflypy_messages_sent",
            "Chat messages queued to sockets, replays after a reconnect included",
            ["kind"],
            registry=registry,
        )
        self.dropped = Counter(
            "goflypy_sockets_dropped",
            "Sockets the server closed: queue_full (not reading), dead (no pong)",
            ["reason"],
            registry=registry,
        )
        self.closed = Counter(
            "goflypy_sockets_closed",
            "Sockets ended, by WebSocket close code (1006: no close handshake)",
            ["code"],
            registry=registry,
        )
        self.refused = Counter(
            "goflypy_refused",
            "Frames, messages or connections refused by a limit",
            ["limit"],
            registry=registry,
        )
        self.store_wait = Histogram(
            "goflypy_message_commit_seconds",
            "From a message's arrival to its durable commit (what its ack waits for)",
            ["sender"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.ping_rtt = Histogram(
            "goflypy_ping_rtt_seconds",
            "Round trip of server pings",
            buckets=RTT_BUCKETS,
            registry=registry,
        )
        # Every series exists from the start: a scraper sees 0, not nothing.
        for kind in SOCKET_KINDS:
            self.frames_in.labels(kind)
            self.frames_out.labels(kind)
            self.messages_in.labels(kind)
            self.messages_out.labels(kind)
            self.store_wait.labels(kind)
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        self._state = _StateCollector()
        registry.register(self._state)

    def watch(self, desk: Desk) -> None:
        """Read connection, robot and store figures from ``desk`` on scrapes."""
        self._state.desk = desk

    async def render(self) -> bytes:
        """The exposition text; the archive backlog is counted off the loop."""
        state = self._state
        now = time.monotonic()
        if now - state.backlog_at >= BACKLOG_EVERY_S:
            state.backlog_at = now
            state.backlog = await asyncio.to_thread(state.count_backlog)
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self) -> None:
        self.desk: Desk | None = None
        self.backlog: int | None = None
        self.backlog_at = -BACKLOG_EVERY_S

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        desk = self.desk
        if desk is None:
            return
        counts = desk.hub.counts()
        sockets = GaugeMetricFamily(
            "goflypy_connections", "Open sockets by kind", labels=["kind"]
        )
        online = GaugeMetricFamily(
            "goflypy_online", "People with at least one open socket", labels=["kind"]
        )
        for kind in SOCKET_KINDS:
            sockets.add_metric([kind], counts[f"{kind}_sockets"])
            online.add_metric([kind], counts[f"{kind}s"])
        yield sockets
        yield online

        decisions = CounterMetricFamily(
            "goflypy_robot_decisions", "Robot decisions by action", labels=["action"]
        )
        for action, count in sorted(desk.robot_decisions.items()):
            decisions.add_metric([action], count)
        yield decisions
        yield from self._store(desk)

    def _store(self, desk: Desk) -> Iterator[Metric]:
        env: Any = desk.store.env
        commits = getattr(env, "commits", None)
        if commits is not None:
            yield CounterMetricFamily(
                "goflypy_store_commits", "Write transactions committed", value=commits
            )
        last_ms = getattr(env, "last_commit_ms", None)
        if last_ms is not None:
            yield GaugeMetricFamily(
                "goflypy_store_last_commit_seconds",
                "Duration of the latest write transaction",
                value=last_ms / 1000,
            )
        if self.backlog is not None:
            yield GaugeMetricFamily(
                "goflypy_archive_backlog",
                "Conversations idle past the archive TTL that are still hot",
                value=self.backlog,
            )

    def count_backlog(self) -> int | None:
        """Idle conversations due for archiving (blocking; a worker thread)."""
        desk = self.desk
        if desk is None or desk.config.archive_after_hours <= 0:
            return None
        find_idle = getattr(desk.store, "find_idle", None)
        if find_idle is None:
            return None
        cutoff = int(time.time() * 1000 - desk.config.archive_after_hours * 3_600_000)
        try:
            return len(find_idle(cutoff, BACKLOG_SCAN_LIMIT, None))
        except Exception:
            log.exception("counting the archive backlog failed")
            return None


APP_METRICS = web.AppKey("metrics", Metrics)
