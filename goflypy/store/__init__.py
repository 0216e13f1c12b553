"""The store: every record goflypy keeps, in one LMDB environment.

Only this package imports lmdb. Reads run inline and are short; every write
goes through one writer thread with group commit, so an awaited write has
been durably committed when it returns.

Contract of ``Store`` (methods live in the mixins named beside them):

Visitors and conversations (conversations.py)
    create_visitor(channel, page, user_agent) -> (Visitor, token)   async
    find_visitor(token) -> Visitor | None                            inline
    get_visitor(visitor_id) -> Visitor | None                        inline
    touch_visitor(visitor_id, channel, page, user_agent) -> Visitor  async
    get_conversation(id) -> Conversation | None                      inline
    list_open_conversations() -> list[Conversation]                  inline
    update_conversation(id, change) -> Conversation                  async
        ``change(conv)`` runs on the writer thread; raising a GoflyError
        refuses the update and writes nothing. NotFound for an unknown id.
    append_message(id, message, dedupe_scope, change) -> Appended    async
        Gives the message the next seq; a repeated (scope, client_id)
        returns the first stored message with ``duplicate`` set.
    list_messages(id, after_seq=0, limit=None) -> list[Message]     inline

Accounts, sessions, meta (accounts.py)
    get_account, list_accounts, count_accounts                       inline
    put_account(account, create=) / put_account_blocking             async / blocking
        Conflict when creating a name that exists, NotFound on update of
        a missing one.
    create_session(username, ttl_ms) -> token, get_session(token),
    delete_session(token), delete_sessions_of(username)
    get_meta(name, default), set_meta_blocking(name, value)

FAQ (faq.py)
    list_faq, get_faq                                                inline
    put_faq(entries, replace=), delete_faq(id)                       async
    import_faq_blocking(entries, replace=)                           blocking

Writes raise StorageFull when the disk is full (nothing is written, reads
keep working) and StoreError after close(). "async" methods must be awaited
on the event loop; "blocking" ones are for the command line and threads.
"""

from __future__ import annotations

from pathlib import Path

from .accounts import AccountStore
from .conversations import Appended, ConversationStore
from .env import Env
from .faq import FaqStore

__all__ = ["Appended", "Store"]

SCHEMA_VERSION = 1


class Store(ConversationStore, AccountStore, FaqStore):
    """All records of one data directory."""

    def __init__(
        self, data_dir: Path, map_size_mb: int = 64, commit_batch: int = 256
    ) -> None:
        self.data_dir = data_dir
        self.env = Env(data_dir / "lmdb", map_size_mb * 1024 * 1024, commit_batch)
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta_blocking("schema_version", SCHEMA_VERSION)
        elif version > SCHEMA_VERSION:
            self.env.close()
            raise RuntimeError(
                f"the store in {data_dir} has schema {version}; this goflypy "
                f"reads up to {SCHEMA_VERSION}. Upgrade goflypy."
            )

    def close(self) -> None:
        """Finish queued writes and close; safe to call twice."""
        self.env.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
