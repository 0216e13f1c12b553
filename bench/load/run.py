"""Load test: goflypy against a bare aiohttp server, in the same run.

    .venv/bin/python bench/load/run.py   # the figures in docs/benchmarks.md
    .venv/bin/python bench/load/run.py --idle 2000 --sockets 1000 --rates 100,200

For each server (bare first, then goflypy), on 127.0.0.1 only:

1. idle: open ``--idle`` visitor sockets (each says hello and gets its
   welcome) from ``--workers`` processes and report the server's memory
   growth per socket (VmRSS, and RssAnon, which leaves out LMDB's mapped
   file pages);
2. traffic: with ``--sockets`` visitor sockets open, ``--active`` of them
   in conversations claimed by ``--agents`` agents, send visitor->agent and
   agent->visitor messages (half each) at each rate of ``--rates``, for
   ``--seconds`` each, and report delivered messages per second and
   p50/p99 end-to-end latency.

Everything is bounded: each process exits by itself after ``--deadline``
seconds, and every process started here is stopped here, by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PASSWORD = "Bench-agent-2024"
# A step counts as sustained while its p99 stays under this.
SUSTAINED_P99_MS = 500
# goflypy limits lifted for a load test from one address (all of them are
# settings an operator could choose); the protocol work itself is unchanged.
GOFLYPY_FLAGS = {
    "max-connections": 19_900,
    "connects-per-ip-per-min": 10_000_000,
    "new-visitors-per-ip-per-min": 10_000_000,
    "sockets-per-ip": 1_000_000,
    "visitor-rate-per-min": 100_000,
    "ip-rate-per-min": 100_000_000,
    "agent-rate-per-min": 100_000_000,
    "frames-per-s": 100_000,
    "send-queue-frames": 8192,
    "log-level": "warning",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon"):
            fields[name] = int(value.split()[0])
    return fields


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Child:
    """A subprocess speaking JSON lines; ended by its own pid."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ask(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("a load worker died; see its stderr above")
        return dict(json.loads(line))

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(RuntimeError, TimeoutError, ConnectionError):
                await self.ask({"cmd": "quit"}, 5)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def spawn_worker(role: str, opts: dict[str, Any]) -> Child:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "worker.py"),
        role,
        json.dumps(opts),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=64 * 1024 * 1024,
    )
    return Child(proc)


# Servers


def prepare_goflypy(data: Path, agents: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    from goflypy.auth import new_account
    from goflypy.store import Store

    with Store(data) as store:
        for name in agents:
            store.put_account_blocking(
                new_account(name, PASSWORD, "agent", name.title()), create=True
            )


async def start_server(kind: str, port: int, data: Path, deadline: float) -> Any:
    if kind == "bare":
        argv = [sys.executable, str(HERE / "bare.py"), str(port)]
    else:
        flags = [f"--{k}={v}" for k, v in GOFLYPY_FLAGS.items()]
        code = (
            "import resource, signal, sys\n"
            "_s, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\n"
            f"signal.alarm({int(deadline)})\n"
            "from goflypy.cli import main\n"
            "import os, cProfile\n"
            "out = os.environ.get('BENCH_PROFILE')\n"
            "if out:\n"
            "    cProfile.run('main(sys.argv[1:])', out)\n"
            "else:\n"
            "    sys.exit(main(sys.argv[1:]))\n"
        )
        argv = [
            sys.executable,
            "-c",
            code,
            "serve",
            f"--data-dir={data}",
            f"--port={port}",
            *flags,
        ]
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL
    )
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status == 200:
                        return proc
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{kind} server did not start")


async def stop_server(proc: Any) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# Phases


async def scrape(base: str) -> dict[str, float]:
    """A few goflypy figures from /metrics: CPU and where messages waited."""
    async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as r:
        text = await r.text()
    wanted = {
        "process_cpu_seconds_total": "cpu_s",
        'goflypy_message_commit_seconds_sum{sender="visitor"}': "v_commit_s",
        'goflypy_message_commit_seconds_count{sender="visitor"}': "v_commits",
        'goflypy_message_commit_seconds_sum{sender="agent"}': "a_commit_s",
        'goflypy_message_commit_seconds_count{sender="agent"}': "a_commits",
        "goflypy_store_commits_total": "store_commits",
    }
    found = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in wanted:
            found[wanted[name]] = round(float(value), 3)
    return found


async def settle(base: str, limit_s: float = 600) -> float:
    """Wait until the server answers /healthz quickly three times running.

    Claims are acknowledged before the server finishes the work they cause;
    a traffic step must not start while that work still holds the loop.
    """
    started = time.monotonic()
    quick = 0
    async with aiohttp.ClientSession() as http:
        while quick < 3 and time.monotonic() - started < limit_s:
            sent = time.monotonic()
            async with http.get(base + "/healthz") as r:
                await r.read()
            quick = quick + 1 if time.monotonic() - sent < 0.05 else 0
            await asyncio.sleep(0.2)
    return time.monotonic() - started


async def open_visitors(
    base: str, total: int, workers: int, active: int, deadline: float
) -> tuple[list[Child], list[str], int]:
    children = [
        await spawn_worker(
            "visitors",
            {
                "base": base,
                "count": total // workers,
                "active": active // workers,
                "max_seconds": deadline,
            },
        )
        for _ in range(workers)
    ]
    answers = await asyncio.gather(*(c.ask({"cmd": "open"}, 600) for c in children))
    conversations = [cid for a in answers for cid in a["conversations"]]
    return children, conversations, sum(a["open"] for a in answers)


async def idle_phase(
    kind: str, base: str, pid: int, args: argparse.Namespace
) -> dict[str, Any]:
    await asyncio.sleep(2)
    before = memory_kb(pid)
    started = time.monotonic()
    children, _ids, opened = await open_visitors(
        base, args.idle, args.workers, 0, args.deadline
    )
    connect_s = time.monotonic() - started
    await asyncio.sleep(5)  # let the server settle (greetings, commits)
    after = memory_kb(pid)
    for child in children:
        await child.stop()
    result = {
        "sockets": opened,
        "connect_s": round(connect_s, 1),
        "rss_mb": round(after["VmRSS"] / 1024, 1),
        "rss_kb_per_socket": round((after["VmRSS"] - before["VmRSS"]) / opened, 2),
        "anon_kb_per_socket": round((after["RssAnon"] - before["RssAnon"]) / opened, 2),
    }
    print(f"  {kind} idle: {json.dumps(result)}", flush=True)
    return result


async def traffic_phase(
    kind: str, base: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    names = [f"agent{i}" for i in range(args.agents)]
    agents = await spawn_worker(
        "agents",
        {
            "base": base,
            "agents": names,
            "password": PASSWORD if kind == "goflypy" else "",
            "max_seconds": args.deadline,
        },
    )
    await agents.ask({"cmd": "open"}, 60)
    children, conversations, opened = await open_visitors(
        base, args.sockets, args.workers, args.active, args.deadline
    )
    started = time.monotonic()
    await agents.ask({"cmd": "claim", "ids": conversations}, 960)
    claim_s = time.monotonic() - started
    settle_s = await settle(base)
    print(
        f"  {kind}: {opened} visitor sockets, {len(conversations)} claimed "
        f"in {claim_s:.1f} s, server idle again after {settle_s:.1f} s",
        flush=True,
    )
    if opened < args.sockets:
        # A limit refused the rest: the figures would not be comparable.
        print(
            f"  WARNING: {kind} opened only {opened} of {args.sockets} sockets",
            file=sys.stderr,
            flush=True,
        )

    steps = []
    try:
        for rate in args.rates:
            half = rate / 2
            command = {"cmd": "traffic", "seconds": args.seconds, "drain": 2.0}
            answers = await asyncio.gather(
                agents.ask({**command, "rate": half}, args.seconds + 60),
                *(
                    c.ask({**command, "rate": half / len(children)}, args.seconds + 60)
                    for c in children
                ),
            )
            a2v = [x for a in answers[1:] for x in a["latencies"]]
            v2a = answers[0]["latencies"]
            sent = sum(a["sent"] for a in answers)
            both = a2v + v2a
            step = {
                "rate": rate,
                "sent_per_s": round(sent / args.seconds),
                "delivered_per_s": round(len(both) / args.seconds),
                "p50_ms": round(statistics.median(both), 1) if both else None,
                "p99_ms": round(percentile(both, 0.99) or 0, 1) if both else None,
                "v2a_p99_ms": round(percentile(v2a, 0.99) or 0, 1) if v2a else None,
                "a2v_p99_ms": round(percentile(a2v, 0.99) or 0, 1) if a2v else None,
                "sockets_closed": sum(a["closed"] for a in answers),
                "v2a": len(v2a),
                "a2v": len(a2v),
                "errors": [a["errors"] for a in answers if a["errors"]],
            }
            if kind == "goflypy":
                step["server"] = await scrape(base)
            steps.append(step)
            print(f"  {kind} traffic: {json.dumps(step)}", flush=True)
            if step["p99_ms"] is None or step["p99_ms"] > 2000:
                break  # saturated: the next step only queues more
    finally:
        for child in [agents, *children]:
            await child.stop()
    return steps


async def run_one(kind: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    port = free_port()
    data = root / f"{kind}-data"
    base = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {}
    # Each phase gets a fresh server and store, as after a deploy.
    for phase in ("idle", "traffic"):
        if not (args.idle if phase == "idle" else args.sockets):
            continue
        shutil.rmtree(data, ignore_errors=True)
        if kind == "goflypy":
            prepare_goflypy(data, [f"agent{i}" for i in range(args.agents)])
        proc = await start_server(kind, port, data, args.deadline)
        try:
            if phase == "idle":
                result["idle"] = await idle_phase(kind, base, proc.pid, args)
            else:
                result["traffic"] = await traffic_phase(kind, base, args)
                result["rss_mb_end"] = round(memory_kb(proc.pid)["VmRSS"] / 1024, 1)
        finally:
            await stop_server(proc)
    return result


def ratios(bare: dict[str, Any], gofly: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "idle" in bare and "idle" in gofly:
        out["memory_per_socket"] = round(
            gofly["idle"]["rss_kb_per_socket"] / bare["idle"]["rss_kb_per_socket"], 2
        )
    if bare.get("traffic") and gofly.get("traffic"):
        best = {
            kind: sustained(r["traffic"])
            for kind, r in (("bare", bare), ("goflypy", gofly))
        }
        out["sustained_msg_per_s"] = best
        if best["bare"]:
            out["throughput"] = round(best["goflypy"] / best["bare"], 2)
    return out


def sustained(steps: list[dict[str, Any]]) -> int:
    """Highest rate delivered in full with p99 within SUSTAINED_P99_MS."""
    ok = [
        s["delivered_per_s"]
        for s in steps
        if s["p99_ms"] is not None
        and s["p99_ms"] <= SUSTAINED_P99_MS
        and s["delivered_per_s"] >= 0.99 * s["sent_per_s"]
    ]
    return max(ok, default=0)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="goflypy-load-"))
    try:
        results = {}
        for kind in ("bare", "goflypy"):
            print(f"{kind}:", flush=True)
            results[kind] = await run_one(kind, args, root)
        results["ratios"] = ratios(results["bare"], results["goflypy"])
        return results
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=19_500)
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--active", type=int, default=500)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rates", default="250,500,1000,1500,2000,3000,4000")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--deadline", type=float, default=1500.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.rates = [int(r) for r in args.rates.split(",")]

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = asyncio.run(asyncio.wait_for(main_async(args), args.deadline))
    results["command"] = " ".join(["bench/load/run.py", *sys.argv[1:]])
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
