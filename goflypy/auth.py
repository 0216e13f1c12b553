"""Passwords (Argon2id, memory-hard) and console accounts."""

from __future__ import annotations

import contextlib
import secrets

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from .errors import BadRequest
from .models import ROLES, Account
from .store.keys import now_ms

# argon2-cffi's RFC 9106 low-memory profile: 64 MiB, 3 passes.
_HASHER = argon2.PasswordHasher.from_parameters(argon2.profiles.RFC_9106_LOW_MEMORY)
MIN_PASSWORD_CHARS = 10
# A dummy hash so an unknown user name costs as much time as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(account: Account | None, password: str) -> bool:
    """True when ``password`` is the account's; constant work for no account."""
    if account is None or account.disabled:
        with contextlib.suppress(VerificationError):
            _HASHER.verify(_DUMMY_HASH, password)
        return False
    try:
        return _HASHER.verify(account.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def check_new_password(password: str, username: str) -> None:
    """Refuse passwords that are too weak; BadRequest says why."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise BadRequest(f"密码至少 {MIN_PASSWORD_CHARS} 个字符")
    if password.strip().lower() == username.strip().lower():
        raise BadRequest("密码不能与用户名相同")
    if len(set(password)) < 4:
        raise BadRequest("密码过于简单")


def check_username(username: str) -> None:
    if not (1 <= len(username) <= 32) or not all(
        ch.isalnum() or ch in "._-" for ch in username
    ):
        raise BadRequest("用户名只能包含字母、数字和 . _ -，最长 32 个字符")


def new_account(
    username: str,
    password: str,
    role: str,
    display_name: str = "",
    must_change_password: bool = False,
) -> Account:
    """A validated account record with its password hashed."""
    check_username(username)
    if role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}")
    if not must_change_password:
        check_new_password(password, username)
    return Account(
        username=username,
        display_name=display_name or username,
        role=role,
        password_hash=hash_password(password),
        created=now_ms(),
        must_change_password=must_change_password,
    )


def generate_password() -> str:
    """A one-time password for a first sign-in."""
    return secrets.token_urlsafe(12)
