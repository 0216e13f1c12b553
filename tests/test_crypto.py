"""SM4-GCM at rest: both backends, key versions, wrong keys, rotation, tampering."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from goflypy.errors import CorruptData, WrongKey
from goflypy.models import Message
from goflypy.store import Store
from goflypy.store.backup import check_store
from goflypy.store.crypto import (
    Codec,
    CryptographySm4Gcm,
    GmsslSm4Gcm,
    Keyring,
    Sm4Gcm,
    load_keyring,
    parse_keys,
    version_of,
)
from goflypy.store.frames import list_segments
from goflypy.store.keys import message_key, now_ms

GM_T_0002 = bytes.fromhex("0123456789abcdeffedcba9876543210")
PLAINTEXTS = [
    b"",
    b"a",
    b"x" * 15,
    b"y" * 16,
    b"z" * 17,
    bytes(range(32)),
    "草莓怎么保存？🍓 退款多久到账".encode(),
]
KEY1 = "1:" + "11" * 16
KEY2 = "2:" + "22" * 16


@pytest.mark.parametrize("backend", [CryptographySm4Gcm(), GmsslSm4Gcm()])
def test_standard_vector(backend: CryptographySm4Gcm | GmsslSm4Gcm) -> None:
    assert (
        backend.block(GM_T_0002, GM_T_0002).hex() == "681edf34d206965e86b3e94f536e4246"
    )


@pytest.mark.parametrize("plain", PLAINTEXTS, ids=lambda p: f"{len(p)}B")
def test_backends_agree_and_open_each_other(plain: bytes) -> None:
    fast, slow = CryptographySm4Gcm(), GmsslSm4Gcm()
    nonce, aad = os.urandom(12), b"record-key"
    sealed_fast = fast.encrypt(GM_T_0002, nonce, plain, aad)
    sealed_slow = slow.encrypt(GM_T_0002, nonce, plain, aad)
    assert sealed_fast == sealed_slow
    assert slow.decrypt(GM_T_0002, nonce, sealed_fast, aad) == plain
    assert fast.decrypt(GM_T_0002, nonce, sealed_slow, aad) == plain


@pytest.mark.parametrize("backend", [CryptographySm4Gcm(), GmsslSm4Gcm()])
def test_tampering_raises_never_returns_garbage(
    backend: CryptographySm4Gcm | GmsslSm4Gcm,
) -> None:
    codec = Codec(parse_keys(KEY1, "test"), backend)
    sealed = bytearray(codec.seal(b"k", "你好".encode()))
    for position in (1, 5, len(sealed) - 20, len(sealed) - 1):
        forged = bytearray(sealed)
        forged[position] ^= 0x01
        with pytest.raises((CorruptData, WrongKey)):
            codec.open(b"k", bytes(forged))
    with pytest.raises(CorruptData):
        codec.open(b"another-key", bytes(sealed))  # moved to another record
    with pytest.raises(CorruptData):
        codec.open(b"k", bytes(sealed[:3]))  # cut short


def test_every_ciphertext_names_its_version() -> None:
    codec = Codec(parse_keys(f"{KEY1}\n{KEY2}", "test"))
    assert version_of(codec.seal(b"k", b"x")) == 2
    assert version_of(codec.seal_with(1, b"k", b"x")) == 1
    assert version_of(b"\x85plain msgpack") == 0


def test_keys_come_from_env_before_the_file(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(KEY1 + "\n", encoding="ascii")
    assert load_keyring(str(key_file), environ={}).current == 1  # type: ignore[union-attr]
    env = {"GOFLY_SM4_KEY": f"{KEY1},{KEY2}"}
    assert load_keyring(str(key_file), environ=env).current == 2  # type: ignore[union-attr]
    assert load_keyring("", environ={}) is None
    with pytest.raises(WrongKey, match="VERSION:HEX"):
        parse_keys("1:nothex", "test")


async def test_records_and_frames_hold_no_plaintext(tmp_path: Path) -> None:
    secret = "我的手机号是13800138000"
    with Store(tmp_path, keyring=parse_keys(KEY1, "test")) as store:
        visitor, _ = await store.create_visitor("web", "", "")
        cid = visitor.conversation_id
        await store.append_message(cid, Message(cid, 0, 0, "visitor", secret))
        assert store.list_messages(cid)[0].text == secret
        data = (tmp_path / "lmdb" / "data.mdb").read_bytes()
        assert secret.encode() not in data

        keys = store.find_idle(now_ms() + 1, 10)
        assert (await asyncio.to_thread(store.archive_blocking, keys)).archived == 1
        for path in list_segments(store.archive_dir).values():
            assert secret.encode()[:12] not in path.read_bytes()
        archived = store.read_archived(cid)
        assert archived is not None and archived[1][0].text == secret


async def test_wrong_or_missing_key_fails_at_once_and_writes_nothing(
    tmp_path: Path,
) -> None:
    with Store(tmp_path, keyring=parse_keys(KEY1, "test")) as store:
        visitor, _ = await store.create_visitor("web", "", "")
    data = tmp_path / "lmdb" / "data.mdb"
    before = hashlib.sha256(data.read_bytes()).hexdigest()

    with pytest.raises(WrongKey, match="wrong key: version 1"):
        Store(tmp_path, keyring=parse_keys("1:" + "99" * 16, "test"))
    with pytest.raises(WrongKey, match="this store is encrypted"):
        Store(tmp_path)
    with pytest.raises(WrongKey, match="version 1 of this store is missing"):
        Store(tmp_path, keyring=parse_keys(KEY2, "test"))
    assert hashlib.sha256(data.read_bytes()).hexdigest() == before


async def test_rotation_keeps_old_data_readable_and_reseals_it(
    tmp_path: Path,
) -> None:
    with Store(tmp_path, keyring=parse_keys(KEY1, "test")) as store:
        visitor, _ = await store.create_visitor("web", "", "")
        cid = visitor.conversation_id
        for i in range(5):
            await store.append_message(cid, Message(cid, 0, 0, "visitor", f"旧{i}"))
        other, _ = await store.create_visitor("web", "", "")
        ocid = other.conversation_id
        await store.append_message(ocid, Message(ocid, 0, 0, "visitor", "归档的"))
        keys = store.find_idle(now_ms() + 1, 10)
        keys = [k for k in keys if k.hex() == ocid]
        await asyncio.to_thread(store.archive_blocking, keys)

    rotated = parse_keys(f"{KEY1}\n{KEY2}", "test")
    with Store(tmp_path, keyring=rotated) as store:
        assert store.key_versions() == [1, 2]
        await store.append_message(cid, Message(cid, 0, 0, "visitor", "新"))
        assert [m.text for m in store.list_messages(cid)][-2:] == ["旧4", "新"]

        def version_of_message(seq: int) -> int:
            with store.env.read() as txn:
                raw = txn.get(
                    message_key(bytes.fromhex(cid), seq), db=store.env.dbs["msg"]
                )
                return version_of(raw)

        assert version_of_message(1) == 1 and version_of_message(6) == 2
        assert await asyncio.to_thread(store.reseal_blocking) >= 5
        assert version_of_message(1) == 2

        # Archived frames under key 1 are rewritten under key 2 by compaction.
        assert store.archive_entry(ocid).key_version == 1  # type: ignore[union-attr]
        assert await asyncio.to_thread(store.compact_blocking, 0.5) == 1
        assert store.archive_entry(ocid).key_version == 2  # type: ignore[union-attr]

    # Key 1 can go once nothing names it any more... but the store still
    # insists on every version it has recorded, so nothing is silently lost.
    with pytest.raises(WrongKey):
        Store(tmp_path, keyring=Keyring({2: rotated.keys[2]}, "test"))


@pytest.mark.parametrize(
    ("writer", "reader"),
    [(GmsslSm4Gcm, CryptographySm4Gcm), (CryptographySm4Gcm, GmsslSm4Gcm)],
    ids=["gmssl-then-cryptography", "cryptography-then-gmssl"],
)
async def test_each_backend_reads_the_others_store_and_archive(
    tmp_path: Path, writer: type[Sm4Gcm], reader: type[Sm4Gcm]
) -> None:
    """The store and archive end to end with one backend forced, reopened
    with the other: records, visitors, frames and key checks all open."""
    one = parse_keys(KEY1, "test")
    both = parse_keys(f"{KEY1}\n{KEY2}", "test")
    texts = ["", "a", "草莓怎么保存？🍓", "x" * 17]

    async def fill(store: Store, tag: str) -> tuple[str, str]:
        visitor, _ = await store.create_visitor("app", f"https://shop/{tag}", "")
        cid = visitor.conversation_id
        for text in texts:
            await store.append_message(cid, Message(cid, 0, 0, "visitor", text + tag))
        other, _ = await store.create_visitor("web", "", "")
        ocid = other.conversation_id
        await store.append_message(ocid, Message(ocid, 0, 0, "agent", f"归档{tag}"))
        keys = [bytes.fromhex(ocid)]
        assert (await asyncio.to_thread(store.archive_blocking, keys)).archived == 1
        return cid, ocid

    def read_back(store: Store, cid: str, ocid: str, tag: str) -> None:
        assert [m.text for m in store.list_messages(cid)] == [t + tag for t in texts]
        conversation = store.get_conversation(cid)
        assert conversation is not None
        assert store.get_visitor(conversation.visitor_id).page == f"https://shop/{tag}"  # type: ignore[union-attr]
        archived = store.read_archived(ocid)
        assert archived is not None and archived[1][0].text == f"归档{tag}"

    with Store(tmp_path, keyring=one, sm4=writer()) as store:
        assert store.codec.backend.name == writer.name
        first = await fill(store, "w")
    with Store(tmp_path, keyring=both, sm4=reader()) as store:
        assert store.codec.backend.name == reader.name
        read_back(store, *first, "w")
        second = await fill(store, "r")  # sealed under key 2 by the other side
        assert await store.ensure_hot(first[1])
        report = await asyncio.to_thread(check_store, store)
        assert report["ok"], report["problems"]
    with Store(tmp_path, keyring=both, sm4=writer()) as store:
        read_back(store, *second, "r")
        assert [m.text for m in store.list_messages(first[1])] == ["归档w"]
        report = await asyncio.to_thread(check_store, store)
        assert report["ok"], report["problems"]
        assert report["records"]["visitors"] == 4


async def test_visitor_records_are_sealed_and_old_plain_ones_resealed(
    tmp_path: Path,
) -> None:
    page = "https://shop.example/member/13800138000"
    with Store(tmp_path) as store:
        plain, _ = await store.create_visitor("web", page, "")
    with Store(tmp_path, keyring=parse_keys(KEY1, "test")) as store:
        assert store.get_visitor(plain.id).page == page  # type: ignore[union-attr]
        fresh, _ = await store.create_visitor("web", "https://shop/vip/Z9Q7", "")
        await store.touch_visitor(fresh.id, "app", "https://shop/vip/Z9Q7/2", "UA")

        def sealed(visitor_id: str) -> bool:
            with store.env.read() as txn:
                raw = txn.get(bytes.fromhex(visitor_id), db=store.env.dbs["visitor"])
                return version_of(raw) == 1

        assert sealed(fresh.id) and not sealed(plain.id)
        assert await asyncio.to_thread(store.reseal_blocking) >= 1
        assert sealed(plain.id)
        assert store.get_visitor(fresh.id).page == "https://shop/vip/Z9Q7/2"  # type: ignore[union-attr]
    assert b"Z9Q7" not in (tmp_path / "lmdb" / "data.mdb").read_bytes()


async def test_running_archiver_adopts_a_rotated_key_and_reencrypts(
    tmp_path: Path,
) -> None:
    """`goflypy keys rotate` in another process while the store is open: the
    archiver's next pass seals with the new key, re-encrypts hot records and
    rewrites archive frames, current segment included."""
    from goflypy.archiver import Archiver
    from tests.conftest import make_config
    from tests.test_backup import goflypy

    key_file = tmp_path / "keys"
    key_file.write_text(KEY1 + "\n", encoding="ascii")
    key_file.chmod(0o600)
    config_file = tmp_path / "goflypy.toml"
    config_file.write_text(f'encryption_key_file = "{key_file}"\n', "utf-8")
    config = make_config(
        tmp_path, encryption_key_file=str(key_file), archive_after_hours=0
    )
    with Store.from_config(config) as store:
        visitor, _ = await store.create_visitor("web", "", "")
        cid = visitor.conversation_id
        for i in range(3):
            await store.append_message(cid, Message(cid, 0, 0, "visitor", f"旧{i}"))
        other, _ = await store.create_visitor("web", "", "")
        ocid = other.conversation_id
        await store.append_message(ocid, Message(ocid, 0, 0, "visitor", "归档"))
        await asyncio.to_thread(store.archive_blocking, [bytes.fromhex(ocid)])

        rotated = await asyncio.to_thread(
            goflypy,
            "keys",
            "rotate",
            "--data-dir",
            str(config.data_path),
            "--config",
            str(config_file),
        )
        assert rotated.returncode == 0, rotated.stderr
        report = await Archiver(store, config).run_once()

        assert store.codec.keyring is not None and store.codec.keyring.current == 2
        assert report.resealed == 3 + 1 + 2  # messages, conversation, visitors
        for name in ("conv", "msg", "visitor"):
            with store.env.read() as txn:
                versions = {
                    version_of(v) for _k, v in txn.cursor(db=store.env.dbs[name])
                }
            assert versions == {2}, name
        entry = store.archive_entry(ocid)
        assert entry is not None and entry.key_version == 2
        archived = store.read_archived(ocid)
        assert archived is not None and archived[1][0].text == "归档"
        await store.append_message(cid, Message(cid, 0, 0, "visitor", "新"))
        assert [m.text for m in store.list_messages(cid)] == ["旧0", "旧1", "旧2", "新"]


def test_serve_with_a_wrong_key_stops_at_once_and_writes_nothing(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    from tests.test_crash import free_port

    data = tmp_path / "data"

    def goflypy(key: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "GOFLY_SM4_KEY": key}
        return subprocess.run(
            [sys.executable, "-m", "goflypy", *args, "--data-dir", str(data)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    assert goflypy(KEY1, "init").returncode == 0
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    port = str(free_port())
    refused = goflypy("1:" + "99" * 16, "serve", "--port", port)
    assert refused.returncode == 1
    assert "wrong key: version 1" in refused.stderr
    after = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    data_files = {p for p in after if p.name != "lock.mdb"}
    assert data_files == {p for p in before if p.name != "lock.mdb"}
    assert all(after[p] == before[p] for p in data_files)
