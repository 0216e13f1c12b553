"""Verified shopper identity: the shop's backend vouches for a shopper id.

The shop signs ``"<shopper_id>:<ts>"`` (UTF-8; ``ts`` is epoch milliseconds
at signing) with HMAC-SHA256 under a secret it shares with goflypy, and the
visitor's client passes ``{"shopper_id", "ts", "sig"}`` in ``hello``. A
signature is good for ``identity_max_age_s`` after ``ts`` and may run a few
minutes ahead of the server's clock. The secret never lives in the config
file: it comes from ``GOFLY_IDENTITY_SECRET`` or from the file named by the
``identity_secret_file`` setting (docs/protocol.md, "Verified identity").
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, ConfigError
from .log import server as log

SECRET_ENV = "GOFLY_IDENTITY_SECRET"
MIN_SECRET_BYTES = 16
MAX_SHOPPER_ID = 128
# A shop server's clock may run a little ahead of ours.
FUTURE_SKEW_MS = 5 * 60 * 1000
# Below this a ``ts`` is in seconds, not milliseconds (this is 1973 in ms).
_MS_FLOOR = 10**11
_SIG = re.compile(r"[0-9a-fA-F]{64}")


class IdentityError(Exception):
    """A ``hello`` identity that cannot be trusted; ``reason`` is machine-readable.

    Reasons: ``malformed``, ``signature``, ``expired``, ``future``, ``disabled``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Identity:
    """A shopper id whose signature checked out."""

    shopper_id: str
    ts: int


def signed_text(shopper_id: str, ts: int) -> bytes:
    """The bytes the shop's backend signs."""
    return f"{shopper_id}:{ts}".encode()


def sign(secret: bytes, shopper_id: str, ts: int) -> str:
    """Return the lowercase hex HMAC-SHA256 signature of ``shopper_id`` at ``ts``."""
    return hmac.new(secret, signed_text(shopper_id, ts), hashlib.sha256).hexdigest()


def sign_order_request(secret: bytes, order_id: str, shopper_id: str, ts: int) -> str:
    """The signature goflypy puts on a request to the shop's order endpoint.

    Lines separate the fields; a shopper id holds no line break, so this can
    never be mistaken for a shopper identity.
    """
    text = f"goflypy-order\n{order_id}\n{shopper_id}\n{ts}".encode()
    return hmac.new(secret, text, hashlib.sha256).hexdigest()


class IdentityVerifier:
    """Checks ``hello.identity`` objects against the shop's shared secret."""

    def __init__(self, secret: bytes, max_age_s: int) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the secret must be {MIN_SECRET_BYTES} bytes or more")
        self._secret = secret
        self.max_age_ms = max_age_s * 1000

    @classmethod
    def from_config(
        cls, config: Config, environ: Mapping[str, str] | None = None
    ) -> IdentityVerifier | None:
        """The configured verifier, or None when identity is off (blocking read)."""
        secret = load_secret(config.identity_secret_file, environ)
        if secret is None:
            return None
        return cls(secret, config.identity_max_age_s)

    def order_request_headers(
        self, order_id: str, shopper_id: str, now: int
    ) -> dict[str, str]:
        """Headers that let the shop's order endpoint check goflypy is asking."""
        return {
            "X-Goflypy-Timestamp": str(now),
            "X-Goflypy-Signature": sign_order_request(
                self._secret, order_id, shopper_id, now
            ),
        }

    def verify(self, raw: Any, now: int) -> Identity:
        """Return the identity in ``raw`` (a decoded JSON value) or raise IdentityError.

        ``now`` is the server's epoch milliseconds. The signature is checked
        before the age, so a forged identity is always told "signature".
        """
        shopper_id, ts, sig = _fields(raw)
        expected = sign(self._secret, shopper_id, ts).encode("ascii")
        if not hmac.compare_digest(expected, sig.lower().encode("ascii")):
            raise IdentityError("signature", "identity signature does not match")
        if now - ts > self.max_age_ms:
            raise IdentityError("expired", "identity has expired; sign it again")
        if ts - now > FUTURE_SKEW_MS:
            raise IdentityError("future", "identity 'ts' is in the future")
        return Identity(shopper_id, ts)


def _fields(raw: Any) -> tuple[str, int, str]:
    """Pull ``shopper_id``, ``ts`` and ``sig`` out of ``raw``, checking types."""
    if not isinstance(raw, dict):
        raise IdentityError("malformed", "'identity' must be an object")
    shopper_id = raw.get("shopper_id")
    if (
        not isinstance(shopper_id, str)
        or not 1 <= len(shopper_id) <= MAX_SHOPPER_ID
        or not shopper_id.isprintable()
        or shopper_id != shopper_id.strip()
    ):
        raise IdentityError(
            "malformed",
            f"'shopper_id' must be 1 to {MAX_SHOPPER_ID} printable characters",
        )
    ts = raw.get("ts")
    if not isinstance(ts, int) or isinstance(ts, bool) or ts <= 0:
        raise IdentityError("malformed", "'ts' must be a positive integer")
    if ts < _MS_FLOOR:
        raise IdentityError("malformed", "'ts' must be epoch milliseconds")
    sig = raw.get("sig")
    if not isinstance(sig, str) or not _SIG.fullmatch(sig):
        raise IdentityError("malformed", "'sig' must be 64 hex digits")
    return shopper_id, ts, sig


def load_secret(
    secret_file: str, environ: Mapping[str, str] | None = None
) -> bytes | None:
    """The shared secret from the environment or the file, or None when off.

    Surrounding whitespace (a trailing newline) is not part of the secret.
    Raises ConfigError for a missing file or a secret that is too short.
    """
    environ = os.environ if environ is None else environ
    if environ.get(SECRET_ENV):
        return _checked(environ[SECRET_ENV].strip().encode(), SECRET_ENV)
    if not secret_file:
        return None

    path = Path(secret_file).expanduser()
    source = f"identity secret file {path}"
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError:
        raise ConfigError(
            f"setting 'identity_secret_file': {path} does not exist"
        ) from None
    except OSError as error:
        raise ConfigError(f"setting 'identity_secret_file': {error}") from None
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s is readable by others; chmod 600 it", source)
    return _checked(data, source)


def _checked(secret: bytes, source: str) -> bytes:
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{source}: the identity secret must be {MIN_SECRET_BYTES} bytes or more"
        )
    return secret
