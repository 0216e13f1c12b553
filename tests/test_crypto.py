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
from goflypy.store.crypto import (
    Codec,
    CryptographySm4Gcm,
    GmsslSm4Gcm,
    Keyring,
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
