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
    find_shopper(shopper_id) -> Visitor | None                       inline
    link_shopper(shopper_id, current, channel, page, ua)             async
        -> (Visitor, new token | None): the verified shopper's visitor,
        adopting ``current`` or creating one when the shopper has none.
    get_conversation(id) -> Conversation | None                      inline
    list_open_conversations() -> list[Conversation]                  inline
    update_conversation(id, change) -> Conversation                  async
        ``change(conv)`` runs on the writer thread; raising a GoflyError
        refuses the update and writes nothing. NotFound for an unknown id.
    append_message(id, message, dedupe_scope, change) -> Appended    async
        Gives the message the next seq; a repeated (scope, client_id)
        returns the first stored message with ``duplicate`` set.
    list_messages(id, after_seq=0, limit=None) -> list[Message]     inline
    add_note(id, note, max_notes, max_chars) -> NoteAdded            async
        An agent's internal note, kept in the conversation record (so it
        archives and restores with it) and never in the message sequence;
        a repeated (agent, client_id) returns the first note stored.
        BadRequest ``notes_full`` past either limit.

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

Knowledge-base vocabulary, canned replies, unanswered questions (kb.py)
    list_synonyms, list_words                                        inline
    put_synonym_group(group, replaces=), delete_synonym_group(word),
    put_word(word), delete_word(word)                                async
    list_categories                                                  inline
    put_category_rule(rule, replaces=), delete_category_rule(topic)  async
        Validation is the caller's (goflypy.kb); the store keeps what it
        is given.
    list_canned, get_canned(reply_id)                                inline
    put_canned(reply, create=, limit=), delete_canned(reply_id)      async
    seed_canned_blocking(replies, limit=)                            blocking
        Canned replies for agents (same database, own key prefix). A new
        reply past ``limit`` is a BadRequest; an update of a missing one
        NotFound. Text checks are the caller's (handlers/canned.py).
    record_unanswered(text, normalized, action=, score=, candidates=,
        conversation_id=, limit=)                                    async
        One record per distinct normalised question, counting repeats;
        beyond ``limit`` the least recently asked are dropped.
    list_unanswered(limit), get_unanswered(key), count_unanswered    inline
    delete_unanswered(key) -> bool                                   async

Archive (archive.py, upkeep.py; frames.py holds the file format)
    ensure_hot(id) -> bool                                           async
        Restores an archived conversation (file read in a worker thread,
        one writer job); True if it is hot afterwards, False if unknown.
        append_message and update_conversation call it by themselves when
        the archiver took their conversation meanwhile.
    ensure_readable(id) -> bool                                      async
        ensure_hot, but on a full disk the conversation stays archived
        and is read once so read_conversation/read_messages serve it.
    read_conversation(id), read_messages(id, after_seq, limit)       inline
        Hot records, else the archived ones read-only (never restored).
    list_history(limit, before) -> [ConversationRef]                 inline
        Closed and archived conversations, newest first.
    archive_entry(id) -> ArchiveEntry | None, iter_archive()         inline
    activity_since(since_ms) -> Activity                             inline
        One read snapshot for reports: hot conversations touched since
        then with their messages since then, and the index entries of
        archived conversations started since then (no frame is read).
    read_archived(id) -> (Conversation, [Message]) | None            blocking
    restore_blocking(id) -> bool                                     blocking
    find_idle(idle_before_ms, limit, is_busy) -> [key]               blocking
    archive_blocking(keys) -> ArchiveResult                          blocking
        Both archive steps; a conversation touched between them stays hot.
    compact_blocking(dead_ratio, small_bytes) -> segments removed    blocking
    expire_blocking(cutoff_ms) -> archived conversations deleted     blocking
    reseal_blocking() -> records re-encrypted under the current key  blocking
    CorruptData when a frame fails its checksum, exceeds the maximum
    size, or fails authentication.

Encryption (crypto.py)
    Store(..., keyring=) seals conversation, message and visitor records
    and archive frames with SM4-GCM (``sm4=`` forces a backend). Opening
    with a wrong or missing key raises WrongKey before anything is written.
    use_keyring(keyring) switches to a rotated keyring at run time.

Writes raise StorageFull when the disk is full (nothing is written, reads
keep working) and StoreError after close(). "async" methods must be awaited
on the event loop; "blocking" ones are for the command line and threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .accounts import AccountStore
from .archive import ArchiveEntry, ArchiveResult, ArchiveStore, ConversationRef
from .conversations import Appended, ConversationStore, NoteAdded
from .crypto import Codec, Keyring, Sm4Gcm, key_check, load_keyring, verify_keys
from .env import Env
from .faq import FaqStore
from .frames import SegmentWriter
from .kb import (
    CannedReply,
    CategoryRule,
    DictWord,
    KbStore,
    SynonymGroup,
    Unanswered,
)
from .upkeep import UpkeepStore

__all__ = [
    "Appended",
    "ArchiveEntry",
    "ArchiveResult",
    "CannedReply",
    "CategoryRule",
    "ConversationRef",
    "DictWord",
    "Keyring",
    "NoteAdded",
    "Store",
    "SynonymGroup",
    "Unanswered",
]

SCHEMA_VERSION = 1
MB = 1024 * 1024


class Store(
    ArchiveStore, UpkeepStore, ConversationStore, AccountStore, FaqStore, KbStore
):
    """All records of one data directory."""

    def __init__(
        self,
        data_dir: Path,
        map_size_mb: int = 64,
        commit_batch: int = 256,
        *,
        keyring: Keyring | None = None,
        max_map_mb: int = 0,
        archive_max_frame_mb: int = 64,
        segment_mb: int = 64,
        sm4: Sm4Gcm | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.archive_dir = data_dir / "archive"
        self.max_frame_bytes = archive_max_frame_mb * MB
        self.segments = SegmentWriter(self.archive_dir, segment_mb * MB)
        self.codec = Codec(keyring) if sm4 is None else Codec(keyring, sm4)
        self.env = Env(
            data_dir / "lmdb", map_size_mb * MB, commit_batch, max_map_mb * MB
        )
        try:
            missing = self._check_keys(self.codec)
        except BaseException:
            self.env.close()
            raise
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta_blocking("schema_version", SCHEMA_VERSION)
        elif version > SCHEMA_VERSION:
            self.env.close()
            raise RuntimeError(
                f"the store in {data_dir} has schema {version}; this goflypy "
                f"reads up to {SCHEMA_VERSION}. Upgrade goflypy."
            )
        if missing:
            self._record_keys(self.codec, missing)

    @classmethod
    def from_config(cls, config: Any) -> Store:
        """Open the store a goflypy configuration describes, keys included."""
        return cls(
            config.data_path,
            config.map_size_mb,
            config.commit_batch,
            keyring=load_keyring(config.encryption_key_file),
            max_map_mb=config.max_map_mb,
            archive_max_frame_mb=config.archive_max_frame_mb,
        )

    def _check_keys(self, codec: Codec) -> list[int]:
        """WrongKey unless ``codec`` opens every key check of this store."""
        checks = {
            int(v): bytes(sealed) for v, sealed in self.get_meta("key_checks", [])
        }
        return verify_keys(codec, checks)

    def _record_keys(self, codec: Codec, versions: list[int]) -> None:
        checks = [list(pair) for pair in self.get_meta("key_checks", [])]
        checks += [[v, key_check(codec, v)] for v in versions]
        self.set_meta_blocking("key_checks", checks)

    def use_keyring(self, keyring: Keyring) -> None:
        """Adopt a rotated keyring (it must open every stored key check)."""
        codec = Codec(keyring, self.codec.backend)
        missing = self._check_keys(codec)
        if missing:
            self._record_keys(codec, missing)
        self.codec.keyring = keyring

    def key_versions(self) -> list[int]:
        """Key versions this store has check records for."""
        return sorted(int(v) for v, _sealed in self.get_meta("key_checks", []))

    def close(self) -> None:
        """Finish queued writes and close; safe to call twice."""
        self.env.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
