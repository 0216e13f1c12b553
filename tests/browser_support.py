"""Helpers for the browser tests: a real goflypy server and Debian's Chromium."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0


def require_chromium() -> str:
    """Return the browser path; without one, fail on CI and skip elsewhere."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    reason = f"{CHROMIUM} is missing (apt-get install chromium fonts-wqy-microhei)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_cli(*args: str, data_dir: Path) -> None:
    """Run one `python -m goflypy` command against data_dir; raise on failure."""
    cmd = [sys.executable, "-m", "goflypy", *args, "--data-dir", str(data_dir)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr}")


def _is_healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(base_url + "/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextmanager
def running_server(data_dir: Path, *extra: str) -> Iterator[str]:
    """Serve data_dir on a free loopback port; yield the base URL."""
    port = free_port()
    log_path = data_dir.parent / f"server-{port}.log"
    cmd = [
        sys.executable, "-m", "goflypy", "serve",
        "--host", "127.0.0.1", "--port", str(port),
        "--data-dir", str(data_dir), *extra,
    ]  # fmt: skip
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_healthy(proc, base_url, log_path)
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _wait_until_healthy(
    proc: subprocess.Popen[bytes], base_url: str, log_path: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = log_path.read_text(errors="replace")
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log}")
        if _is_healthy(base_url):
            return
        time.sleep(0.2)
    raise RuntimeError(
        f"server not healthy after {START_TIMEOUT_S} s:\n{log_path.read_text()}"
    )
