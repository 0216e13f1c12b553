"""Durable message appends per second: the store against raw LMDB.

Baseline, run beside it in the same process: a raw LMDB loop with the same
durability (sync and metasync on), one put per committed transaction, which
is what acknowledging each message on its own commit costs. The store runs
the same number of appends from concurrent senders through its writer
thread, where group commit folds whatever is queued into one commit.

    PYTHONPATH=. .venv/bin/python bench/store_append.py [--messages N --senders N]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import lmdb

from goflypy.models import Message
from goflypy.store import Store
from goflypy.store.crypto import parse_keys
from goflypy.store.keys import message_key, new_id, pack_record

TEXT = "请问草莓今天能发货吗？我在上海浦东。"


def raw_lmdb(path: Path, count: int) -> float:
    env = lmdb.open(str(path), map_size=1 << 30, sync=True, metasync=True)
    conv = new_id()
    started = time.perf_counter()
    for seq in range(1, count + 1):
        record = Message(conv.hex(), seq, 0, "visitor", TEXT)
        with env.begin(write=True) as txn:
            txn.put(message_key(conv, seq), pack_record(record))
    elapsed = time.perf_counter() - started
    env.close()
    return count / elapsed


async def through_store(path: Path, count: int, senders: int, key: str) -> float:
    keyring = parse_keys(key, "bench") if key else None
    with Store(path, keyring=keyring) as store:
        conversations = []
        for _ in range(senders):
            visitor, _token = await store.create_visitor("web", "", "")
            conversations.append(visitor.conversation_id)
        per_sender = count // senders

        async def sender(cid: str) -> None:
            for i in range(per_sender):
                message = Message(cid, 0, 0, "visitor", TEXT, client_id=f"c{i}")
                await store.append_message(cid, message, dedupe_scope=cid)

        started = time.perf_counter()
        await asyncio.gather(*(sender(c) for c in conversations))
        return per_sender * senders / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--senders", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        raw = raw_lmdb(root / "raw", args.messages)
        plain = asyncio.run(through_store(root / "s1", args.messages, args.senders, ""))
        sealed = asyncio.run(
            through_store(root / "s2", args.messages, args.senders, "1:" + "ab" * 16)
        )
    rows = [
        ("raw LMDB, one put per durable commit", raw),
        ("store, group commit", plain),
        ("store, group commit, SM4 sealed", sealed),
    ]
    for label, value in rows:
        print(f"{label:38s} {value:9.0f} msg/s  x{value / raw:.1f}")


if __name__ == "__main__":
    main()
