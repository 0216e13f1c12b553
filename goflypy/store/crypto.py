"""SM4-GCM encryption at rest: backends, key versions, sealed values.

A sealed value is ``0xC1 | key version (2 bytes BE) | nonce (12) | ciphertext
| tag (16)``. 0xC1 is the one byte msgpack never emits, so a sealed value can
never be mistaken for a plain record. The first three bytes and the record's
own key are authenticated as associated data: a value moved to another key,
or relabelled with another version, fails like any tampering does.

The key never lives in the config file: it comes from ``GOFLY_SM4_KEY`` or
from the file named by the ``encryption_key_file`` setting, one
``VERSION:HEX`` entry per line (or comma), the highest version current.
"""

from __future__ import annotations

import os
import secrets
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from gmssl import sm4 as gm_sm4

from ..errors import CorruptData, WrongKey
from ..log import store as log

KEY_ENV = "GOFLY_SM4_KEY"
SEALED = 0xC1
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 16
_HEADER = struct.Struct(">BH")
_CHECK_PLAINTEXT = b"goflypy key check v1"


class Sm4Gcm(Protocol):
    name: str

    def encrypt(self, key: bytes, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        """Ciphertext followed by the 16-byte tag."""
        ...

    def decrypt(self, key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
        """The plaintext; CorruptData when the tag does not verify."""
        ...

    def block(self, key: bytes, block: bytes) -> bytes:
        """One raw SM4 block encryption (for the standard test vector)."""
        ...


class CryptographySm4Gcm:
    """SM4-GCM from the ``cryptography`` package (OpenSSL)."""

    name = "cryptography"

    def encrypt(self, key: bytes, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        encryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(aad)
        body = encryptor.update(data) + encryptor.finalize()
        return body + encryptor.tag

    def decrypt(self, key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
        if len(sealed) < TAG_BYTES:
            raise CorruptData("sealed value is shorter than its tag")
        body, tag = sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
        decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, tag)).decryptor()
        decryptor.authenticate_additional_data(aad)
        try:
            return decryptor.update(body) + decryptor.finalize()
        except InvalidTag:
            raise CorruptData(
                "authentication failed: wrong key or tampered data"
            ) from None

    def block(self, key: bytes, block: bytes) -> bytes:
        encryptor = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()
        return encryptor.update(block) + encryptor.finalize()


_R = 0xE1 << 120


def _gf_mult(x: int, y: int) -> int:
    """Multiplication in GF(2^128) with GCM's bit order."""
    z = 0
    v = y
    for i in range(127, -1, -1):
        if (x >> i) & 1:
            z ^= v
        v = (v >> 1) ^ _R if v & 1 else v >> 1
    return z


class GmsslSm4Gcm:
    """GCM built over gmssl's pure-Python SM4 block: slow, for fallback and checks."""

    name = "gmssl"

    def block(self, key: bytes, block: bytes) -> bytes:
        cipher = gm_sm4.CryptSM4(gm_sm4.SM4_ENCRYPT, padding_mode=-1)
        cipher.set_key(key, gm_sm4.SM4_ENCRYPT)
        return bytes(cipher.crypt_ecb(block))

    def _blocks(self, key: bytes, data: bytes) -> bytes:
        cipher = gm_sm4.CryptSM4(gm_sm4.SM4_ENCRYPT, padding_mode=-1)
        cipher.set_key(key, gm_sm4.SM4_ENCRYPT)
        return bytes(cipher.crypt_ecb(data))

    def _ctr(self, key: bytes, nonce: bytes, data: bytes) -> bytes:
        count = (len(data) + 15) // 16
        counters = b"".join(nonce + (i + 2).to_bytes(4, "big") for i in range(count))
        stream = self._blocks(key, counters) if counters else b""
        return bytes(a ^ b for a, b in zip(data, stream, strict=False))

    def _tag(self, key: bytes, nonce: bytes, body: bytes, aad: bytes) -> bytes:
        h = int.from_bytes(self.block(key, bytes(16)), "big")
        lengths = struct.pack(">QQ", len(aad) * 8, len(body) * 8)
        ghash = 0
        for chunk in (aad, body):
            padded = chunk + bytes(-len(chunk) % 16)
            for i in range(0, len(padded), 16):
                ghash = _gf_mult(ghash ^ int.from_bytes(padded[i : i + 16], "big"), h)
        ghash = _gf_mult(ghash ^ int.from_bytes(lengths, "big"), h)
        mask = int.from_bytes(self.block(key, nonce + b"\x00\x00\x00\x01"), "big")
        return (ghash ^ mask).to_bytes(16, "big")

    def encrypt(self, key: bytes, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        body = self._ctr(key, nonce, data)
        return body + self._tag(key, nonce, body, aad)

    def decrypt(self, key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
        if len(sealed) < TAG_BYTES:
            raise CorruptData("sealed value is shorter than its tag")
        body, tag = sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
        if not secrets.compare_digest(self._tag(key, nonce, body, aad), tag):
            raise CorruptData("authentication failed: wrong key or tampered data")
        return self._ctr(key, nonce, body)


def choose_backend() -> Sm4Gcm:
    """``cryptography`` when its build has SM4-GCM and agrees with gmssl."""
    key = bytes.fromhex("0123456789abcdeffedcba9876543210")
    fallback = GmsslSm4Gcm()
    try:
        fast = CryptographySm4Gcm()
        sample = fast.encrypt(key, bytes(12), b"check", b"aad")
    except UnsupportedAlgorithm:
        log.warning("this cryptography build has no SM4; using gmssl (slow)")
        return fallback
    if fallback.encrypt(key, bytes(12), b"check", b"aad") != sample:
        log.warning("cryptography and gmssl disagree on SM4-GCM; using gmssl")
        return fallback
    return fast


# Keys


@dataclass(slots=True)
class Keyring:
    """Every key version this store may meet; the highest one seals."""

    keys: dict[int, bytes]
    source: str = ""

    @property
    def current(self) -> int:
        return max(self.keys)


def parse_keys(text: str, source: str) -> Keyring:
    """Read ``VERSION:HEX`` entries (a bare HEX is version 1)."""
    keys: dict[int, bytes] = {}
    for entry in text.replace(",", "\n").splitlines():
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        version_text, _, hex_key = entry.rpartition(":")
        try:
            version = int(version_text) if version_text else 1
            key = bytes.fromhex(hex_key)
        except ValueError:
            raise WrongKey(f"{source}: an entry is not VERSION:HEX") from None
        if len(key) != KEY_BYTES or not 1 <= version <= 0xFFFF:
            raise WrongKey(f"{source}: SM4 keys are 32 hex digits, versions 1-65535")
        keys[version] = key
    if not keys:
        raise WrongKey(f"{source}: holds no key")
    return Keyring(keys, source)


def load_keyring(
    key_file: str, environ: Mapping[str, str] | None = None
) -> Keyring | None:
    """The configured keys, or None when encryption is off."""
    environ = os.environ if environ is None else environ
    if environ.get(KEY_ENV):
        return parse_keys(environ[KEY_ENV], KEY_ENV)
    if not key_file:
        return None
    path = Path(key_file).expanduser()
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise WrongKey(f"key file {path} does not exist") from None
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("key file %s is readable by others; chmod 600 it", path)
    return parse_keys(text, f"key file {path}")


def new_key_line(version: int) -> str:
    return f"{version}:{secrets.token_hex(KEY_BYTES)}"


def write_key_file(path: Path, keyring: Keyring) -> None:
    """Write every version, owner-only, replacing the file atomically."""
    lines = [f"{v}:{k.hex()}" for v, k in sorted(keyring.keys.items())]
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write("\n".join(lines) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


# Sealing


@dataclass(slots=True)
class Codec:
    """Seals values when a keyring is set; passes plain values through."""

    keyring: Keyring | None = None
    backend: Sm4Gcm = field(default_factory=choose_backend)

    @property
    def enabled(self) -> bool:
        return self.keyring is not None

    def seal(self, aad: bytes, data: bytes) -> bytes:
        if self.keyring is None:
            return data
        return self.seal_with(self.keyring.current, aad, data)

    def seal_with(self, version: int, aad: bytes, data: bytes) -> bytes:
        assert self.keyring is not None
        header = _HEADER.pack(SEALED, version)
        nonce = os.urandom(NONCE_BYTES)
        key = self.keyring.keys[version]
        return header + nonce + self.backend.encrypt(key, nonce, data, header + aad)

    def open(
        self, aad: bytes | memoryview, value: bytes | memoryview
    ) -> bytes | memoryview:
        """The plain bytes of a stored value; CorruptData if it does not verify."""
        if not value or value[0] != SEALED:
            return value
        version = version_of(value)
        if self.keyring is None:
            raise WrongKey("this record is encrypted and no key is configured")
        key = self.keyring.keys.get(version)
        if key is None:
            raise WrongKey(f"key version {version} is not in {self.keyring.source}")
        raw = bytes(value)
        header, nonce = (
            raw[: _HEADER.size],
            raw[_HEADER.size : _HEADER.size + NONCE_BYTES],
        )
        sealed = raw[_HEADER.size + NONCE_BYTES :]
        return self.backend.decrypt(key, nonce, sealed, header + bytes(aad))

    def needs_reseal(self, value: bytes | memoryview) -> bool:
        """True when a value is sealed under a key that is no longer current."""
        if self.keyring is None:
            return False
        return version_of(value) != self.keyring.current


def version_of(value: bytes | memoryview) -> int:
    """The key version a value names; 0 for a plain value."""
    if len(value) < _HEADER.size or value[0] != SEALED:
        return 0
    return int(_HEADER.unpack(bytes(value[: _HEADER.size]))[1])


def key_check(codec: Codec, version: int) -> bytes:
    """A sealed known value that proves a key without exposing it."""
    return codec.seal_with(version, b"key-check", _CHECK_PLAINTEXT)


def verify_keys(codec: Codec, checks: Mapping[int, bytes]) -> list[int]:
    """Raise WrongKey unless the keyring opens every stored key check.

    Returns the keyring versions that have no check record yet.
    """
    if checks and codec.keyring is None:
        raise WrongKey(
            f"this store is encrypted: give its key in {KEY_ENV} or in the "
            "file named by encryption_key_file"
        )
    if codec.keyring is None:
        return []
    for version, sealed in sorted(checks.items()):
        if version not in codec.keyring.keys:
            raise WrongKey(
                f"key version {version} of this store is missing from "
                f"{codec.keyring.source}"
            )
        try:
            plain = codec.open(b"key-check", sealed)
        except CorruptData:
            plain = b""
        if bytes(plain) != _CHECK_PLAINTEXT:
            raise WrongKey(
                f"wrong key: version {version} in {codec.keyring.source} does "
                "not open this store"
            )
    return sorted(set(codec.keyring.keys) - set(checks))
