"""Archive size against raw msgpack, and restore time by conversation size.

Baseline, beside it: the raw msgpack size of the same records (what the hot
store holds, before LMDB's own overhead). For each size a conversation is
written, archived (frame fsync'd, index committed, hot records deleted) and
restored on demand, which is what a returning shopper waits for.

    PYTHONPATH=. .venv/bin/python bench/archive_restore.py [--sizes 100,1000,20000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from goflypy.models import Message
from goflypy.store import Store
from goflypy.store.crypto import parse_keys
from goflypy.store.keys import now_ms, pack_record

LINES = [
    "你好，请问草莓今天能发货吗？",
    "可以的，下午四点前下单当天发顺丰冷链。",
    "那运费怎么算？我买了两盒。",
    "满 99 元包邮，两盒是 118 元，所以免运费。",
    "好的，谢谢！收到以后怎么保存比较好？",
    "草莓请冷藏，不要清洗，尽快食用。",
]


async def one(path: Path, size: int, key: str) -> tuple[int, int, float, float]:
    keyring = parse_keys(key, "bench") if key else None
    with Store(path, keyring=keyring) as store:
        visitor, _ = await store.create_visitor("web", "", "")
        cid = visitor.conversation_id
        await asyncio.gather(
            *(
                store.append_message(
                    cid, Message(cid, 0, 0, "visitor", f"{LINES[i % 6]} #{i}")
                )
                for i in range(size)
            )
        )
        conversation = store.get_conversation(cid)
        raw = len(pack_record(conversation)) + sum(
            len(pack_record(m)) for m in store.list_messages(cid)
        )
        keys = store.find_idle(now_ms() + 1, 10)
        started = time.perf_counter()
        result = await asyncio.to_thread(store.archive_blocking, keys)
        archive_s = time.perf_counter() - started
        started = time.perf_counter()
        assert await store.ensure_hot(cid)
        restore_s = time.perf_counter() - started
        assert len(store.list_messages(cid)) == size
        return raw, result.bytes, archive_s, restore_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,100,1000,20000")
    args = parser.parse_args()
    print("messages  mode     msgpack B   frame B  ratio  archive ms  restore ms")
    for size in (int(s) for s in args.sizes.split(",")):
        for mode, key in (("plain", ""), ("sm4", "1:" + "cd" * 16)):
            with tempfile.TemporaryDirectory() as scratch:
                raw, frame, archive_s, restore_s = asyncio.run(
                    one(Path(scratch), size, key)
                )
            print(
                f"{size:8d}  {mode:5s} {raw:12d} {frame:9d}  {frame / raw:5.2f}"
                f"  {archive_s * 1000:10.1f}  {restore_s * 1000:10.1f}"
            )


if __name__ == "__main__":
    main()
