"""Knowledge-base entries."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import lmdb

from ..models import FaqEntry
from .env import Env
from .keys import now_ms, pack_record, unpack_record


class FaqStore:
    """Mixin of Store; see store/__init__.py for the contract."""

    env: Env

    def list_faq(self) -> list[FaqEntry]:
        with self.env.read() as txn:
            cursor = txn.cursor(db=self.env.dbs["faq"])
            return [unpack_record(FaqEntry, value) for _key, value in cursor]

    def get_faq(self, faq_id: str) -> FaqEntry | None:
        with self.env.read() as txn:
            raw = txn.get(faq_id.encode("utf-8"), db=self.env.dbs["faq"])
            return None if raw is None else unpack_record(FaqEntry, raw)

    def import_faq_blocking(self, entries: Iterable[FaqEntry], *, replace: bool) -> int:
        """Store entries in one commit; ``replace`` drops all others first."""
        return self.env.write_blocking(self._faq_job(list(entries), replace))

    async def put_faq(
        self, entries: Iterable[FaqEntry], *, replace: bool = False
    ) -> int:
        return await self.env.write(self._faq_job(list(entries), replace))

    async def delete_faq(self, faq_id: str) -> bool:
        db = self.env.dbs["faq"]

        def job(txn: lmdb.Transaction) -> bool:
            return bool(txn.delete(faq_id.encode("utf-8"), db=db))

        return await self.env.write(job)

    def _faq_job(
        self, entries: list[FaqEntry], replace: bool
    ) -> Callable[[lmdb.Transaction], int]:
        db = self.env.dbs["faq"]

        def job(txn: lmdb.Transaction) -> int:
            if replace:
                txn.drop(db, delete=False)
            stamp = now_ms()
            for entry in entries:
                entry.updated = entry.updated or stamp
                txn.put(entry.faq_id.encode("utf-8"), pack_record(entry), db=db)
            return len(entries)

        return job
