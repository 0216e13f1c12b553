"""Console accounts, sign-in sessions and small settings records."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import lmdb

from ..errors import Conflict, NotFound
from ..models import Account
from .env import Env
from .keys import now_ms, pack, pack_record, token_key, unpack, unpack_record


class AccountStore:
    """Mixin of Store; see store/__init__.py for the contract."""

    env: Env

    def get_account(self, username: str) -> Account | None:
        with self.env.read() as txn:
            raw = txn.get(username.encode("utf-8"), db=self.env.dbs["account"])
            return None if raw is None else unpack_record(Account, raw)

    def list_accounts(self) -> list[Account]:
        with self.env.read() as txn:
            cursor = txn.cursor(db=self.env.dbs["account"])
            return [unpack_record(Account, value) for _key, value in cursor]

    def count_accounts(self) -> int:
        with self.env.read() as txn:
            return int(txn.stat(self.env.dbs["account"])["entries"])

    async def put_account(self, account: Account, *, create: bool) -> Account:
        """Store an account; with ``create`` an existing name is a Conflict."""
        return await self.env.write(self._account_job(account, create))

    def put_account_blocking(self, account: Account, *, create: bool) -> Account:
        return self.env.write_blocking(self._account_job(account, create))

    def _account_job(
        self, account: Account, create: bool
    ) -> Callable[[lmdb.Transaction], Account]:
        db = self.env.dbs["account"]
        key = account.username.encode("utf-8")

        def job(txn: lmdb.Transaction) -> Account:
            exists = txn.get(key, db=db) is not None
            if create and exists:
                raise Conflict(f"account {account.username!r} already exists")
            if not create and not exists:
                raise NotFound(f"no account {account.username!r}")
            txn.put(key, pack_record(account), db=db)
            return account

        return job

    # Sessions

    async def create_session(self, username: str, ttl_ms: int) -> str:
        """A new sign-in session; returns its secret token."""
        token = secrets.token_urlsafe(32)
        record = {
            "username": username,
            "created": now_ms(),
            "expires": now_ms() + ttl_ms,
        }
        db = self.env.dbs["session"]

        def job(txn: lmdb.Transaction) -> None:
            txn.put(token_key(token), pack(record), db=db)

        await self.env.write(job)
        return token

    def get_session(self, token: str) -> dict[str, Any] | None:
        """The live session of a token, or None when unknown or expired."""
        with self.env.read() as txn:
            raw = txn.get(token_key(token), db=self.env.dbs["session"])
            record = None if raw is None else unpack(raw)
        if record is None or record["expires"] <= now_ms():
            return None
        return record  # type: ignore[no-any-return]

    async def delete_session(self, token: str) -> None:
        db = self.env.dbs["session"]

        def job(txn: lmdb.Transaction) -> None:
            txn.delete(token_key(token), db=db)

        await self.env.write(job)

    async def delete_sessions_of(self, username: str) -> int:
        """Sign a user out everywhere; returns how many sessions ended."""
        db = self.env.dbs["session"]

        def job(txn: lmdb.Transaction) -> int:
            doomed = [
                bytes(key)
                for key, value in txn.cursor(db=db)
                if unpack(value)["username"] == username
            ]
            for key in doomed:
                txn.delete(key, db=db)
            return len(doomed)

        return await self.env.write(job)

    # Small named values

    def get_meta(self, name: str, default: Any = None) -> Any:
        with self.env.read() as txn:
            raw = txn.get(name.encode("utf-8"), db=self.env.dbs["meta"])
            return default if raw is None else unpack(raw)

    def set_meta_blocking(self, name: str, value: Any) -> None:
        db = self.env.dbs["meta"]

        def job(txn: lmdb.Transaction) -> None:
            txn.put(name.encode("utf-8"), pack(value), db=db)

        self.env.write_blocking(job)
