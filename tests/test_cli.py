"""The goflypy command, run as a separate process like an operator would."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

from aiohttp.test_utils import TestClient

from tests.conftest import add_agent, desk_of, sign_in

FAQ_JSONL = [
    {
        "faq_id": "cherry",
        "question": "樱桃怎么保存",
        "answer": "樱桃不要洗，装保鲜袋冷藏，三天内吃完。",
        "alternatives": ["车厘子怎么存放"],
        "category": "storage",
    },
    {
        "faq_id": "invoice",
        "question": "怎么开发票",
        "answer": "下单时勾选开具发票，电子发票发到您的邮箱。",
        "alternatives": ["可以开发票吗"],
        "category": "invoice",
    },
]


def goflypy(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "goflypy", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_faq(path: Path) -> Path:
    path.write_text(
        "\n".join(json.dumps(row, ensure_ascii=False) for row in FAQ_JSONL) + "\n",
        encoding="utf-8",
    )
    return path


def test_help_lists_every_command() -> None:
    out = goflypy("--help").stdout
    for command in ("serve", "init", "user", "faq", "robot", "check"):
        assert command in out


def test_bad_setting_fails_naming_setting_and_source(tmp_path: Path) -> None:
    result = goflypy("serve", "--data-dir", str(tmp_path), "--port", "http")
    assert result.returncode == 2
    assert "'port' from command line" in result.stderr
    config = tmp_path / "bad.toml"
    config.write_text("heartbeat_s = 1\n", encoding="utf-8")
    result = goflypy("serve", "--data-dir", str(tmp_path), "--config", str(config))
    assert result.returncode == 2
    assert f"'heartbeat_s' from config file {config}" in result.stderr


def test_init_makes_a_first_admin_who_must_change_password(tmp_path: Path) -> None:
    result = goflypy("init", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "admin /" in result.stdout and "must change" in result.stdout
    listing = goflypy("user", "list", "--data-dir", str(tmp_path)).stdout
    assert "admin\tadmin" in listing and "must change password" in listing


def test_user_add_refuses_weak_passwords(tmp_path: Path) -> None:
    weak = goflypy(
        "user", "add", "zoe", "--password", "123", "--data-dir", str(tmp_path)
    )
    assert weak.returncode == 1 and "密码至少" in weak.stderr
    ok = goflypy(
        "user",
        "add",
        "zoe",
        "--password-stdin",
        "--data-dir",
        str(tmp_path),
        stdin="Zoe-strong-pass\n",
    )
    assert ok.returncode == 0, ok.stderr


def test_user_disable_signs_out_and_enable_restores(tmp_path: Path) -> None:
    data = ("--data-dir", str(tmp_path))
    assert goflypy("init", *data).returncode == 0
    last = goflypy("user", "disable", "admin", *data)
    assert last.returncode == 1 and "last enabled admin" in last.stderr
    added = goflypy(
        "user", "add", "zoe", "--password-stdin", *data, stdin="Zoe-strong-pass\n"
    )
    assert added.returncode == 0, added.stderr
    assert goflypy("user", "disable", "zoe", *data).returncode == 0
    assert "zoe\tagent\tzoe (disabled)" in goflypy("user", "list", *data).stdout
    assert goflypy("user", "enable", "zoe", *data).returncode == 0
    assert "(disabled)" not in goflypy("user", "list", *data).stdout
    missing = goflypy("user", "disable", "nobody", *data)
    assert missing.returncode == 1 and "no account" in missing.stderr


async def test_a_disabled_agent_cannot_sign_in(client: TestClient) -> None:
    await add_agent(client, "amy")
    store = desk_of(client).store
    account = store.get_account("amy")
    assert account is not None
    account.disabled = True
    await store.put_account(account, create=False)
    response = await sign_in(client, "amy")
    assert response.status == 401
    assert "gofly_session" not in response.cookies


def test_a_mistyped_data_dir_is_refused_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    for command in (("check",), ("user", "list"), ("robot", "ask", "运费")):
        result = goflypy(*command, "--data-dir", str(missing))
        assert result.returncode == 1 and "no data directory" in result.stderr
    assert not missing.exists()


def test_user_add_without_a_terminal_says_how(tmp_path: Path) -> None:
    assert goflypy("init", "--data-dir", str(tmp_path)).returncode == 0
    result = goflypy("user", "add", "zoe", "--data-dir", str(tmp_path), stdin="")
    assert result.returncode == 1 and "--password-stdin" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_empty_file_never_replaces_the_faq(tmp_path: Path) -> None:
    data = ("--data-dir", str(tmp_path))
    faq = write_faq(tmp_path / "faq.jsonl")
    assert goflypy("faq", "import", str(faq), *data).returncode == 0
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    refused = goflypy("faq", "import", str(empty), "--replace", *data)
    assert refused.returncode == 1 and "no FAQ entries" in refused.stderr
    kept = json.loads(goflypy("robot", "ask", "樱桃怎么保存", "--json", *data).stdout)
    assert kept["faq_id"] == "cherry"


def test_faq_import_then_robot_ask(tmp_path: Path) -> None:
    faq = write_faq(tmp_path / "faq.jsonl")
    data = str(tmp_path / "data")
    assert goflypy("init", "--data-dir", data).returncode == 0
    imported = goflypy("faq", "import", str(faq), "--data-dir", data)
    assert imported.returncode == 0, imported.stderr
    assert "imported 2" in imported.stdout
    asked = goflypy("robot", "ask", "车厘子怎么保存", "--json", "--data-dir", data)
    assert asked.returncode == 0, asked.stderr
    decision = json.loads(asked.stdout)
    assert decision["action"] == "answer" and decision["faq_id"] == "cherry"

    exported = tmp_path / "out.csv"
    assert goflypy("faq", "export", str(exported), "--data-dir", data).returncode == 0
    assert "樱桃怎么保存" in exported.read_text(encoding="utf-8")


def test_robot_eval_never_touches_the_live_store(tmp_path: Path) -> None:
    faq = write_faq(tmp_path / "faq.jsonl")
    queries = tmp_path / "queries.jsonl"
    rows = [
        {
            "qid": "1",
            "query": "车厘子怎么存放",
            "gold_faq_id": "cherry",
            "type": "in_kb",
        },
        {"qid": "2", "query": "能开发票吗", "gold_faq_id": "invoice", "type": "in_kb"},
        {
            "qid": "3",
            "query": "太阳离地球多远",
            "gold_faq_id": None,
            "type": "out_of_domain",
        },
    ]
    queries.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8"
    )
    live = tmp_path / "live"
    result = goflypy(
        "robot",
        "eval",
        "--faq",
        str(faq),
        "--queries",
        str(queries),
        "--data-dir",
        str(live),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["in_kb_top1"] == 1.0
    assert {"in_kb_recall3", "correct_action", "handoff_rate"} <= set(report)
    assert not live.exists()


async def test_running_server_follows_an_import(
    client: TestClient, tmp_path: Path
) -> None:
    desk = desk_of(client)
    assert desk.robot.decide("车厘子怎么保存").faq_id != "cherry"
    faq = write_faq(tmp_path / "more.jsonl")
    data_dir = str(desk.config.data_path)
    result = await asyncio.to_thread(
        goflypy, "faq", "import", str(faq), "--data-dir", data_dir
    )
    assert result.returncode == 0, result.stderr
    for _ in range(100):
        if desk.robot.decide("车厘子怎么保存").faq_id == "cherry":
            break
        await asyncio.sleep(0.1)
    assert desk.robot.decide("车厘子怎么保存").faq_id == "cherry"


async def test_restore_and_a_second_server_refuse_a_served_data_dir(
    client: TestClient, tmp_path: Path
) -> None:
    data_dir = str(desk_of(client).config.data_path)
    backup_dir = str(tmp_path / "backup")
    taken = await asyncio.to_thread(
        goflypy, "backup", backup_dir, "--data-dir", data_dir
    )
    assert taken.returncode == 0, taken.stderr
    restored = await asyncio.to_thread(
        goflypy, "restore", backup_dir, "--force", "--data-dir", data_dir
    )
    assert restored.returncode == 1 and "stop it first" in restored.stderr
    assert not list(Path(data_dir).glob("replaced-*"))  # nothing was moved
    second = await asyncio.to_thread(
        goflypy, "serve", "--port", str(free_port()), "--data-dir", data_dir
    )
    assert second.returncode == 1 and "stop it first" in second.stderr


def test_a_malformed_request_is_one_quiet_log_line(tmp_path: Path) -> None:
    from tests.browser_support import run_cli, running_server

    data_dir = tmp_path / "data"
    run_cli("init", data_dir=data_dir)
    typed = "榴莲怎么保存".encode().hex() * 400  # a request line over 8 KB
    with running_server(data_dir) as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(f"GET /api/kb/entries?q={typed} HTTP/1.1\r\n\r\n".encode())
            assert b" 400 " in conn.recv(64)
    [log_path] = tmp_path.glob("server-*.log")
    log = log_path.read_text("utf-8")
    assert "WARNING aiohttp.server: malformed HTTP request refused: LineTooLong" in log
    assert typed[:64] not in log and "Traceback" not in log
