"""The ``goflypy`` command.

Every subcommand takes --data-dir and --config; ``serve`` also takes a flag
for every setting in config.SETTINGS.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from . import __version__, opscli
from .config import BY_NAME, SETTINGS, Config, ConfigError, example_toml, load
from .errors import GoflyError
from .store import Store

DEMO_FAQ = "demo_faq.jsonl"
# Canned replies (title, text) for the demo shop's agents.
DEMO_CANNED = (
    ("欢迎语", "您好，欢迎光临！我是今天为您服务的客服，请问有什么可以帮您？"),
    ("请提供订单号", "麻烦您提供一下订单号（在“我的订单”里可以找到），马上为您查询。"),
    (
        "坏果售后",
        "非常抱歉给您带来不好的体验！请在签收后 48 小时内拍下坏果照片发给我们，"
        "核实后为您补发或退款。",
    ),
    ("发货时间", "每天 16:00 前下单当天发货，之后下单次日发货，全程冷链配送。"),
    ("结束语", "感谢您的耐心等待，祝您生活愉快！如还有其他问题，随时联系我们。"),
)
Command = Callable[[argparse.Namespace, Config], int]


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", dest="data_dir", help=BY_NAME["data_dir"].help)
    parser.add_argument("--config", help="TOML config file")


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for setting in SETTINGS:
        if setting.name == "data_dir":
            continue
        flag = "--" + setting.name.replace("_", "-")
        parser.add_argument(
            flag, dest=setting.name, help=f"{setting.help} [{setting.default!r}]"
        )


def _open_store(config: Config) -> Store:

    return Store.from_config(config)


def ensure_first_admin(store: Any) -> str | None:
    """Create the first admin with a one-time password, or renew that
    password while nobody has signed in with it; returns it, or None."""
    from .auth import generate_password, hash_password, new_account

    accounts = store.list_accounts()
    if not accounts:
        password = generate_password()
        account = new_account(
            "admin", password, "admin", "管理员", must_change_password=True
        )
        store.put_account_blocking(account, create=True)
        return password
    admin = next((a for a in accounts if a.username == "admin"), None)
    if len(accounts) == 1 and admin is not None and admin.must_change_password:
        password = generate_password()
        admin.password_hash = hash_password(password)
        store.put_account_blocking(admin, create=False)
        return password
    return None


# serve / init


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from . import log
    from .server import make_app, run

    log.configure(config.log_level)
    config.data_path.mkdir(parents=True, exist_ok=True)
    with _open_store(config) as store:
        if args.demo:
            _load_demo(store)
        password = ensure_first_admin(store)
    if args.check:
        from .opscli import cmd_check

        return cmd_check(args, config)

    app = make_app(config)
    run(app, config, first_password=password)
    return 0


def cmd_init(args: argparse.Namespace, config: Config) -> int:
    config.data_path.mkdir(parents=True, exist_ok=True)
    with _open_store(config) as store:
        if args.demo:
            _load_demo(store)
        password = ensure_first_admin(store)
    print(f"data directory: {config.data_path.resolve()}")
    if password:
        print(
            f"first sign-in: admin / {password}  (you must change it at first sign-in)"
        )
    return 0


# users


def cmd_user_add(args: argparse.Namespace, config: Config) -> int:
    from .auth import new_account

    password = _read_password(args)
    account = new_account(args.username, password, args.role, args.display_name or "")
    with _open_store(config) as store:
        store.put_account_blocking(account, create=True)
    print(f"created {args.role} {args.username}")
    return 0


def cmd_user_passwd(args: argparse.Namespace, config: Config) -> int:
    """Give an account a one-time password it must change at sign-in."""
    from .auth import generate_password, hash_password

    with _open_store(config) as store:
        account = store.get_account(args.username)
        if account is None:
            raise GoflyError(f"no account {args.username!r}")
        password = generate_password()
        account.password_hash = hash_password(password)
        account.must_change_password = True
        store.put_account_blocking(account, create=False)
        # Every browser of the account is signed out; an open console
        # stops acting at its next frame.
        asyncio.run(store.delete_sessions_of(args.username))
    print(f"one-time password for {args.username}: {password}")
    return 0


def cmd_user_disable(args: argparse.Namespace, config: Config) -> int:
    """Stop an account signing in, or let it again; its sessions end."""
    disable = args.user_command == "disable"
    with _open_store(config) as store:
        account = store.get_account(args.username)
        if account is None:
            raise GoflyError(f"no account {args.username!r}")
        if disable and account.role == "admin":
            admins = [
                other
                for other in store.list_accounts()
                if other.role == "admin" and not other.disabled
            ]
            if admins == [account]:
                raise GoflyError("refusing to disable the last enabled admin")
        account.disabled = disable
        store.put_account_blocking(account, create=False)
        if disable:
            asyncio.run(store.delete_sessions_of(args.username))
    print(f"{args.username} {'disabled' if disable else 'enabled'}")
    return 0


def cmd_user_list(args: argparse.Namespace, config: Config) -> int:
    with _open_store(config) as store:
        for account in store.list_accounts():
            flags = [
                label
                for label, on in (
                    ("must change password", account.must_change_password),
                    ("disabled", account.disabled),
                )
                if on
            ]
            flag = f" ({', '.join(flags)})" if flags else ""
            print(f"{account.username}\t{account.role}\t{account.display_name}{flag}")
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return str(args.password)
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    try:
        first = getpass.getpass("password: ")
        again = getpass.getpass("again: ")
    except EOFError:
        raise GoflyError(
            "no password given: type it at a terminal, or use --password-stdin"
        ) from None
    if first != again:
        raise GoflyError("the passwords differ")
    return first


# faq


def _load_demo(store: Store) -> None:
    """The demo shop's FAQ and canned replies, once per data directory.

    Each goes only where there is none yet, and never again afterwards: a
    shop that emptied its knowledge base keeps it empty through restarts.
    """
    if store.get_meta("demo_loaded", False):
        return
    if not store.list_faq():
        store.import_faq_blocking(_demo_entries(), replace=False)
    if not store.list_canned():
        from .handlers.canned import new_reply_id
        from .store import CannedReply

        store.seed_canned_blocking(
            [CannedReply(new_reply_id(), title, text) for title, text in DEMO_CANNED]
        )
    store.set_meta_blocking("demo_loaded", True)


def _demo_entries() -> list[Any]:
    from .faqfile import read_faq_file

    with resources.as_file(resources.files("goflypy.data") / DEMO_FAQ) as path:
        return read_faq_file(path)


def _entries(count: int) -> str:
    return f"{count} FAQ {'entry' if count == 1 else 'entries'}"


def cmd_faq_import(args: argparse.Namespace, config: Config) -> int:
    from .faqfile import read_faq_file

    entries = read_faq_file(Path(args.file))
    if not entries:
        raise GoflyError(
            f"{args.file} holds no FAQ entries; nothing imported"
            + (" and nothing replaced" if args.replace else "")
        )
    with _open_store(config) as store:
        count = store.import_faq_blocking(entries, replace=args.replace)
        store.set_meta_blocking("faq_changed", time.time_ns())
    print(f"imported {_entries(count)} from {args.file}")
    unanswered = sum(1 for entry in entries if not entry.answer)
    if unanswered:
        print(
            f"note: {_entries(unanswered)} without an answer; the robot hands"
            " their questions to a human until they have one"
        )
    return 0


def cmd_faq_export(args: argparse.Namespace, config: Config) -> int:
    from .faqfile import write_faq_file

    with _open_store(config) as store:
        entries = store.list_faq()
    write_faq_file(Path(args.file), entries)
    print(f"exported {_entries(len(entries))} to {args.file}")
    return 0


# robot


def cmd_robot_ask(args: argparse.Namespace, config: Config) -> int:
    from .server import make_robot

    with _open_store(config) as store:
        entries = store.list_faq()
    robot = make_robot(config)
    robot.rebuild(entries)
    decision = robot.decide(args.text)
    if args.json:
        print(json.dumps(decision.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(f"{decision.action}  score={decision.score:.3f}  faq={decision.faq_id}")
    print(f"reply: {decision.reply}")
    for candidate in decision.candidates:
        print(f"  {candidate.score:.3f}  {candidate.faq_id}  {candidate.question}")
    return 0


def cmd_robot_eval(args: argparse.Namespace, config: Config) -> int:
    """Load --faq into a scratch store (never the live one) and score --queries."""
    from .faqfile import read_faq_file
    from .nlp import evaluate
    from .server import make_robot

    entries = read_faq_file(Path(args.faq))
    queries = [
        json.loads(line)
        for line in Path(args.queries).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    with tempfile.TemporaryDirectory(prefix="goflypy-eval-") as scratch:
        scratch_config = Config(
            dict(config.values, data_dir=scratch), dict(config.sources)
        )
        with Store(Path(scratch) / "store") as store:
            store.import_faq_blocking(entries, replace=True)
            stored = store.list_faq()
        robot = make_robot(scratch_config)
        robot.warm_up()
        robot.rebuild(stored)
        if getattr(args, "calibrate", False):
            from .nlp.calibrate import calibrate, format_tradeoff

            report = calibrate(robot, queries)
            print(format_tradeoff(report))
            return 0
        result = evaluate(robot, queries)
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


def cmd_config_example(args: argparse.Namespace, config: Config) -> int:
    print(example_toml(), end="")
    return 0


# parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="goflypy",
        description="Self-hosted customer-service chat with an FAQ robot.",
    )
    parser.add_argument("--version", action="version", version=f"goflypy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server (the default)")
    _add_common(serve)
    _add_setting_flags(serve)
    serve.add_argument(
        "--demo",
        action="store_true",
        help="load the demo shop FAQ and canned replies where there are none",
    )
    serve.add_argument(
        "--check", action="store_true", help="verify the store and index, then exit"
    )
    serve.set_defaults(func=cmd_serve)

    init = commands.add_parser("init", help="create the data directory and first admin")
    _add_common(init)
    init.add_argument(
        "--demo", action="store_true", help="load the demo shop FAQ and canned replies"
    )
    init.set_defaults(func=cmd_init)

    opscli.register(commands, _add_common)

    user = commands.add_parser(
        "user", help="console accounts: add, passwd, disable, list"
    )
    user_commands = user.add_subparsers(
        dest="user_command", metavar="ACTION", required=True
    )
    add = user_commands.add_parser("add", help="create an agent or admin")
    _add_common(add)
    add.add_argument("username")
    add.add_argument("--role", choices=("agent", "admin"), default="agent")
    add.add_argument("--display-name", dest="display_name")
    add.add_argument("--password", help="the password (else prompted)")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    add.set_defaults(func=cmd_user_add)
    passwd = user_commands.add_parser("passwd", help="issue a one-time password")
    _add_common(passwd)
    passwd.add_argument("username")
    passwd.set_defaults(func=cmd_user_passwd)
    for action, text in (
        ("disable", "stop an account signing in; it is signed out everywhere"),
        ("enable", "let a disabled account sign in again"),
    ):
        toggle = user_commands.add_parser(action, help=text)
        _add_common(toggle)
        toggle.add_argument("username")
        toggle.set_defaults(func=cmd_user_disable)
    listing = user_commands.add_parser("list", help="list accounts")
    _add_common(listing)
    listing.set_defaults(func=cmd_user_list)

    faq = commands.add_parser("faq", help="knowledge base: import, export")
    faq_commands = faq.add_subparsers(
        dest="faq_command", metavar="ACTION", required=True
    )
    imp = faq_commands.add_parser("import", help="import a JSONL or CSV file")
    _add_common(imp)
    imp.add_argument("file")
    imp.add_argument(
        "--replace", action="store_true", help="drop entries not in the file"
    )
    imp.set_defaults(func=cmd_faq_import)
    exp = faq_commands.add_parser("export", help="export to .jsonl or .csv")
    _add_common(exp)
    exp.add_argument("file")
    exp.set_defaults(func=cmd_faq_export)

    robot = commands.add_parser("robot", help="the FAQ robot: ask, eval, calibrate")
    robot_commands = robot.add_subparsers(
        dest="robot_command", metavar="ACTION", required=True
    )
    ask = robot_commands.add_parser("ask", help="show the robot's decision for TEXT")
    _add_common(ask)
    ask.add_argument("text")
    ask.add_argument("--json", action="store_true")
    ask.set_defaults(func=cmd_robot_ask)
    ev = robot_commands.add_parser(
        "eval", help="score the robot on a labelled query file"
    )
    _add_common(ev)
    ev.add_argument("--faq", required=True, help="FAQ file (JSONL or CSV)")
    ev.add_argument(
        "--queries", required=True, help="JSONL: qid, query, gold_faq_id, type"
    )
    ev.set_defaults(func=cmd_robot_eval)
    cal = robot_commands.add_parser(
        "calibrate", help="pick thresholds from a labelled query file"
    )
    _add_common(cal)
    cal.add_argument("--faq", required=True, help="FAQ file (JSONL or CSV)")
    cal.add_argument(
        "--queries", required=True, help="JSONL: qid, query, gold_faq_id, type"
    )
    cal.set_defaults(func=cmd_robot_eval, calibrate=True)

    example = commands.add_parser("config-example", help="print a sample config file")
    _add_common(example)
    example.set_defaults(func=cmd_config_example)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if (
        not argv
        or argv[0].startswith("-")
        and argv[0] not in ("-h", "--help", "--version")
    ):
        argv.insert(0, "serve")
    parser = build_parser()
    args = parser.parse_args(argv)

    flags = {name: getattr(args, name, None) for name in BY_NAME}
    try:
        config = load(getattr(args, "config", None), flags)
        may_create = args.func in (
            cmd_serve,
            cmd_init,
            cmd_config_example,
            cmd_robot_eval,  # works in a scratch store
            opscli.cmd_restore,
            opscli.cmd_keys_init,
        )
        if not may_create and not config.data_path.is_dir():
            # A mistyped --data-dir must not quietly become a new, empty shop.
            raise GoflyError(
                f"no data directory at {config.data_path}; check --data-dir,"
                " or create one with `goflypy init`"
            )
        return int(args.func(args, config))
    except ConfigError as exc:
        print(f"goflypy: configuration error: {exc}", file=sys.stderr)
        return 2
    except (GoflyError, ValueError, OSError) as exc:
        print(f"goflypy: {exc}", file=sys.stderr)
        return 1
