"""Operator commands: check, backup, restore, export, keys, archive."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .config import Config
from .errors import GoflyError, WrongKey
from .runlock import ServerLock
from .store import Store
from .store.backup import backup, check_store, restore
from .store.crypto import (
    KEY_ENV,
    Keyring,
    load_keyring,
    new_key_line,
    parse_keys,
    write_key_file,
)

AddCommon = Callable[[argparse.ArgumentParser], None]


def _print(report: dict[str, Any]) -> None:
    print(json.dumps(report, ensure_ascii=False, indent=2, default=str))


# check


def cmd_check(args: argparse.Namespace, config: Config) -> int:
    """Verify records, archive index, segments and the robot index."""
    from .server import make_robot

    with Store.from_config(config) as store:
        entries = store.list_faq()
        robot = make_robot(config)
        robot.rebuild(entries)
        report = {
            "data_dir": str(config.data_path.resolve()),
            "faq_entries": len(entries),
            "accounts": store.count_accounts(),
            "open_conversations": len(store.list_open_conversations()),
            "store": store.env.info(),
            "encrypted": store.codec.enabled,
        }
        report.update(check_store(store))
    _print(report)
    return 0 if report["ok"] else 1


# backup / restore


def cmd_backup(args: argparse.Namespace, config: Config) -> int:
    with Store.from_config(config) as store:
        manifest = backup(store, Path(args.dest))
    print(
        f"backup written to {args.dest}: {len(manifest['files'])} files "
        f"in {manifest['seconds']} s"
    )
    return 0


def cmd_restore(args: argparse.Namespace, config: Config) -> int:
    # A server still running would keep writing to the store moved aside.
    with ServerLock(config.data_path):
        moved = restore(Path(args.src), config.data_path, force=args.force)
        if moved is not None:
            print(f"the previous store was moved to {moved}")
        with Store.from_config(config) as store:
            report = check_store(store)
    print(f"restored {args.src} into {config.data_path}")
    _print(report)
    return 0 if report["ok"] else 1


# export


def cmd_export(args: argparse.Namespace, config: Config) -> int:
    from .export import parse_day, select, write_jsonl, write_transcript

    if not args.conversation and not args.since:
        raise GoflyError("name --conversation ID or a range with --since DAY")
    since = parse_day(args.since) if args.since else 0
    until = parse_day(args.until) if args.until else None
    count = 0
    with Store.from_config(config) as store, ExitStack() as files:
        jsonl = (
            files.enter_context(open(args.out, "w", encoding="utf-8"))
            if args.out
            else sys.stdout
        )
        transcript = (
            files.enter_context(open(args.transcript, "w", encoding="utf-8"))
            if args.transcript
            else None
        )
        for conversation, messages, archived in select(
            store, args.conversation or [], since, until
        ):
            write_jsonl(jsonl, conversation, messages, archived)
            if transcript is not None:
                write_transcript(transcript, conversation, messages)
            count += 1
    print(f"exported {count} conversations", file=sys.stderr)
    return 0


# keys


def _key_file(args: argparse.Namespace, config: Config) -> Path:
    name = args.key_file or config.encryption_key_file
    if not name:
        raise GoflyError("name the key file with --key-file or encryption_key_file")
    return Path(name).expanduser()


def cmd_keys_init(args: argparse.Namespace, config: Config) -> int:
    path = _key_file(args, config)
    if path.exists():
        raise GoflyError(f"{path} exists; use `goflypy keys rotate` to add a key")
    keyring = parse_keys(new_key_line(1), str(path))
    with Store.from_config(config) as store:
        if store.key_versions():
            raise WrongKey("this store already has keys; restore its key file")
        write_key_file(path, keyring)
        store.use_keyring(keyring)
    print(f"wrote key version 1 to {path} (mode 600). Set encryption_key_file to it")
    print("and keep a copy apart from the data directory and its backups.")
    return 0


def cmd_keys_rotate(args: argparse.Namespace, config: Config) -> int:
    """Add a new current key; a running server adopts it within one pass."""
    from_env = KEY_ENV in __import__("os").environ
    keyring = load_keyring(config.encryption_key_file)
    if keyring is None:
        raise GoflyError("encryption is off: run `goflypy keys init` first")
    version = keyring.current + 1
    line = new_key_line(version)
    rotated = Keyring({**keyring.keys, **parse_keys(line, "new key").keys})
    rotated.source = keyring.source
    if not from_env:
        write_key_file(_key_file(args, config), rotated)
    with Store.from_config(config) as store:
        store.use_keyring(rotated)
    if from_env:
        print(f"add this entry to {KEY_ENV}, then restart: {line}")
    print(f"key version {version} is now current; old data is re-encrypted in the")
    print("background by the server's archiver (or by `goflypy archive run`).")
    return 0


# archive


def cmd_archive_run(args: argparse.Namespace, config: Config) -> int:
    from .archiver import Archiver

    if args.idle_hours is not None:
        config = Config(dict(config.values, archive_after_hours=args.idle_hours))
    with Store.from_config(config) as store:
        report = Archiver(store, config).pass_blocking()
    _print({name: getattr(report, name) for name in report.__slots__})
    return 0


# parser


def register(commands: Any, add_common: AddCommon) -> None:
    """Add the operator subcommands to the ``goflypy`` parser."""
    check = commands.add_parser("check", help="verify store, archive and index")
    add_common(check)
    check.set_defaults(func=cmd_check)

    save = commands.add_parser("backup", help="hot copy of the store to DEST")
    add_common(save)
    save.add_argument("dest")
    save.set_defaults(func=cmd_backup)

    load = commands.add_parser("restore", help="bring back a backup (server stopped)")
    add_common(load)
    load.add_argument("src")
    load.add_argument("--force", action="store_true", help="replace a store")
    load.set_defaults(func=cmd_restore)

    export = commands.add_parser("export", help="conversations as JSONL/transcript")
    add_common(export)
    export.add_argument("--conversation", action="append", help="id (repeatable)")
    export.add_argument("--since", help="YYYY-MM-DD (UTC) or epoch ms")
    export.add_argument("--until", help="YYYY-MM-DD (UTC, exclusive) or epoch ms")
    export.add_argument("--out", help="JSONL file (default: standard output)")
    export.add_argument("--transcript", help="printable transcript file")
    export.set_defaults(func=cmd_export)

    keys = commands.add_parser("keys", help="encryption keys: init, rotate")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    for name, func, text in (
        ("init", cmd_keys_init, "create a key file and encrypt from now on"),
        ("rotate", cmd_keys_rotate, "make a new key current"),
    ):
        sub = key_commands.add_parser(name, help=text)
        add_common(sub)
        sub.add_argument("--key-file", dest="key_file", help="key file path")
        sub.set_defaults(func=func)

    archive = commands.add_parser("archive", help="archive: run one pass now")
    archive_commands = archive.add_subparsers(dest="archive_command", required=True)
    run = archive_commands.add_parser("run", help="archive idle conversations now")
    add_common(run)
    run.add_argument("--idle-hours", dest="idle_hours", type=float)
    run.set_defaults(func=cmd_archive_run)
