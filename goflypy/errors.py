"""Errors that carry their HTTP status and a short machine code.

GoflyError
 ├── BadRequest        400 bad_request
 ├── Unauthorized      401 unauthorized
 ├── Forbidden         403 forbidden
 ├── NotFound          404 not_found
 ├── Conflict          409 conflict
 ├── RateLimited       429 rate_limited
 └── StoreError        503 store_error
      ├── StorageFull  507 storage_full
      ├── CorruptData  503 corrupt_data
      └── WrongKey     503 wrong_key
"""

from __future__ import annotations


class GoflyError(Exception):
    status = 500
    code = "error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        if code is not None:
            self.code = code


class BadRequest(GoflyError):
    status = 400
    code = "bad_request"


class Unauthorized(GoflyError):
    status = 401
    code = "unauthorized"


class Forbidden(GoflyError):
    status = 403
    code = "forbidden"


class NotFound(GoflyError):
    status = 404
    code = "not_found"


class Conflict(GoflyError):
    status = 409
    code = "conflict"


class RateLimited(GoflyError):
    status = 429
    code = "rate_limited"

    def __init__(
        self,
        message: str = "",
        *,
        retry_after_ms: int = 1000,
        client_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms
        # The refused message or note, when a socket frame named one.
        self.client_id = client_id


class StoreError(GoflyError):
    status = 503
    code = "store_error"


class StorageFull(StoreError):
    status = 507
    code = "storage_full"


class CorruptData(StoreError):
    """A record or archive frame failed its checksum or authentication."""

    code = "corrupt_data"


class WrongKey(StoreError):
    """The encryption key given does not open this store."""

    code = "wrong_key"
