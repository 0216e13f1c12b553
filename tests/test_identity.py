"""Signing and verifying shopper identity, and loading the shared secret."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from goflypy.config import ConfigError
from goflypy.identity import (
    SECRET_ENV,
    IdentityError,
    IdentityVerifier,
    load_secret,
    sign,
    sign_order_request,
)

SECRET = b"k7Qw-shared-secret-for-goflypy"
NOW = 1_764_857_000_000
HOUR_MS = 3_600_000
# The worked example of docs/protocol.md, "Verified identity".
DOC_SIGNATURE = "4864d603879c19efe4946d1a523979f8a199af233ec027856ba6e4b11647eff5"


def identity(shopper_id: str = "u-1001", ts: int = NOW, **extra: Any) -> Any:
    fields = {"shopper_id": shopper_id, "ts": ts, "sig": sign(SECRET, shopper_id, ts)}
    fields.update(extra)
    return fields


@pytest.fixture
def verifier() -> IdentityVerifier:
    return IdentityVerifier(SECRET, max_age_s=24 * 3600)


def test_documented_example_signature() -> None:
    assert sign(SECRET, "u-1001", NOW) == DOC_SIGNATURE


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_documented_shell_command_gives_the_same_signature() -> None:
    command = (
        'printf \'%s:%s\' "$SHOPPER_ID" "$TS"'
        " | openssl dgst -sha256 -hmac \"$SECRET\" -r | cut -d' ' -f1"
    )
    env = {"SHOPPER_ID": "u-1001", "TS": str(NOW), "SECRET": SECRET.decode()}
    env["PATH"] = "/usr/bin:/bin"
    out = subprocess.run(
        ["sh", "-c", command], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == DOC_SIGNATURE


def test_good_identity_verifies(verifier: IdentityVerifier) -> None:
    checked = verifier.verify(identity(), NOW + HOUR_MS)
    assert checked.shopper_id == "u-1001" and checked.ts == NOW


def test_upper_case_hex_is_accepted(verifier: IdentityVerifier) -> None:
    raw = identity()
    raw["sig"] = raw["sig"].upper()
    assert verifier.verify(raw, NOW).shopper_id == "u-1001"


def test_unicode_shopper_id(verifier: IdentityVerifier) -> None:
    assert verifier.verify(identity("会员:张三"), NOW).shopper_id == "会员:张三"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda raw: raw.update(shopper_id="u-1002"),
        lambda raw: raw.update(ts=raw["ts"] + 1),
        lambda raw: raw.update(sig="0" * 64),
        lambda raw: raw.update(sig=sign(b"another-secret-of-16+", "u-1001", NOW)),
    ],
)
def test_tampered_identity_is_refused(verifier: IdentityVerifier, tamper: Any) -> None:
    raw = identity()
    tamper(raw)
    with pytest.raises(IdentityError) as caught:
        verifier.verify(raw, NOW)
    assert caught.value.reason == "signature"


def test_expired_identity_is_refused(verifier: IdentityVerifier) -> None:
    verifier.verify(identity(), NOW + 24 * HOUR_MS)
    with pytest.raises(IdentityError) as caught:
        verifier.verify(identity(), NOW + 24 * HOUR_MS + 1)
    assert caught.value.reason == "expired"


def test_identity_from_the_future_is_refused(verifier: IdentityVerifier) -> None:
    verifier.verify(identity(ts=NOW + 60_000), NOW)  # a little clock skew is fine
    with pytest.raises(IdentityError) as caught:
        verifier.verify(identity(ts=NOW + HOUR_MS), NOW)
    assert caught.value.reason == "future"


def test_forged_and_expired_is_told_signature(verifier: IdentityVerifier) -> None:
    raw = identity(ts=NOW - 48 * HOUR_MS, sig="a" * 64)
    with pytest.raises(IdentityError) as caught:
        verifier.verify(raw, NOW)
    assert caught.value.reason == "signature"


@pytest.mark.parametrize(
    "raw",
    [
        "u-1001",
        ["u-1001"],
        {},
        identity(shopper_id=""),
        identity(shopper_id="x" * 129),
        identity(shopper_id="u\n1001"),
        identity(shopper_id=" u-1001"),
        {"shopper_id": "u-1001", "ts": "1764857000000", "sig": "a" * 64},
        {"shopper_id": "u-1001", "ts": True, "sig": "a" * 64},
        {"shopper_id": "u-1001", "ts": 1_764_857_000, "sig": "a" * 64},
        {"shopper_id": "u-1001", "ts": NOW, "sig": "z" * 64},
        {"shopper_id": "u-1001", "ts": NOW, "sig": "ａ" * 64},
        {"shopper_id": "u-1001", "ts": NOW},
    ],
)
def test_malformed_identity_is_refused(verifier: IdentityVerifier, raw: Any) -> None:
    with pytest.raises(IdentityError) as caught:
        verifier.verify(raw, NOW)
    assert caught.value.reason == "malformed"


def test_seconds_instead_of_milliseconds_is_named(verifier: IdentityVerifier) -> None:
    with pytest.raises(IdentityError, match="milliseconds"):
        verifier.verify(identity(ts=NOW // 1000), NOW)


def test_order_requests_are_signed_apart_from_identities(
    verifier: IdentityVerifier,
) -> None:
    headers = verifier.order_request_headers("1234", "u-1001", NOW)
    assert headers == {
        "X-Goflypy-Timestamp": str(NOW),
        "X-Goflypy-Signature": sign_order_request(SECRET, "1234", "u-1001", NOW),
    }
    # The documented example (docs/protocol.md, "Order questions").
    assert headers["X-Goflypy-Signature"] == (
        "a05d5ef2941aa8654cdcb0a7beca8ba8eec0a7b6d55c6a36da6a7185e8ba4b7a"
    )
    assert headers["X-Goflypy-Signature"] != sign(SECRET, "u-1001", NOW)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        IdentityVerifier(b"short", 60)


# The secret


def test_no_secret_means_identity_off() -> None:
    assert load_secret("", environ={}) is None


def test_secret_file_without_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "identity.secret"
    path.write_bytes(SECRET + b"\n")
    path.chmod(0o600)
    assert load_secret(str(path), environ={}) == SECRET


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "identity.secret"
    path.write_bytes(SECRET)
    other = "an-other-secret-from-env"
    assert load_secret(str(path), environ={SECRET_ENV: other}) == other.encode()


def test_missing_file_fails_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="identity_secret_file"):
        load_secret(str(tmp_path / "absent"), environ={})


def test_short_secret_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "identity.secret"
    path.write_text("tooshort\n")
    with pytest.raises(ConfigError, match="16 bytes"):
        load_secret(str(path), environ={})
