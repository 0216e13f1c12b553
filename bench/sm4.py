"""SM4-GCM throughput of the chosen backend against AES-128-GCM.

Baseline, beside it: AES-128-GCM from the same library (``cryptography``),
same message sizes, same associated data, one fresh nonce per message. The
pure-Python gmssl fallback is timed on fewer messages for scale.

    PYTHONPATH=. .venv/bin/python bench/sm4.py [--count 20000]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from goflypy.store.crypto import GmsslSm4Gcm, choose_backend

KEY = bytes(range(16))
AAD = b"0123456789abcdef01234567"


def rate(encrypt: Callable[[bytes, bytes], bytes], size: int, count: int) -> float:
    data = os.urandom(size)
    nonces = [os.urandom(12) for _ in range(count)]
    started = time.perf_counter()
    for nonce in nonces:
        encrypt(nonce, data)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20000)
    args = parser.parse_args()
    backend = choose_backend()
    aes = AESGCM(KEY)
    slow = GmsslSm4Gcm()
    print(f"chosen SM4 backend: {backend.name}")
    print("bytes   AES-GCM/s (baseline)   SM4-GCM/s   ratio   gmssl/s")
    for size in (64, 256, 1024, 16384):
        base = rate(lambda n, d: aes.encrypt(n, d, AAD), size, args.count)
        sm4 = rate(lambda n, d: backend.encrypt(KEY, n, d, AAD), size, args.count)
        fallback = rate(lambda n, d: slow.encrypt(KEY, n, d, AAD), size, 20)
        print(
            f"{size:5d}  {base:18.0f}  {sm4:12.0f}  {sm4 / base:6.2f}  {fallback:8.1f}"
        )


if __name__ == "__main__":
    main()
