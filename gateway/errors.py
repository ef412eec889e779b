"""What can go wrong in the gateway, each with its HTTP status and a stable error code.

    GatewayError
    ├── InvalidInput          400  invalid_request      (also: filtered, prompt_too_long)
    ├── ValidationFailed      422  validation_error     (the body does not fit the schema)
    ├── Unauthorized          401  unauthorized         (+ WWW-Authenticate)
    ├── Forbidden             403  forbidden            (a scope is missing)
    ├── NotFound              404  model_not_found, not_found
    ├── PayloadTooLarge       413  payload_too_large
    ├── RateLimited           429  rate_limited         (+ Retry-After)
    ├── Unavailable           503  overloaded, unavailable (+ Retry-After)
    └── UpstreamTimeout       504  timeout

Services raise these; one handler table in `app.py` turns them into one JSON shape (and into
RFC 9457 problem documents under `/v2`). Messages are for humans and never carry a trace.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra: dict[str, Any] = {}  # more fields for the error body (e.g. `current`)
        if code is not None:
            self.code = code

    @property
    def headers(self) -> dict[str, str]:
        return {}


class InvalidInput(GatewayError):
    status, code = 400, "invalid_request"


class ValidationFailed(GatewayError):
    status, code = 422, "validation_error"


class Unauthorized(GatewayError):
    status, code = 401, "unauthorized"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="tollgate", error="invalid_token"'}


class Forbidden(GatewayError):
    status, code = 403, "forbidden"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="tollgate", error="insufficient_scope"'}


class NotFound(GatewayError):
    status, code = 404, "not_found"


class PayloadTooLarge(GatewayError):
    status, code = 413, "payload_too_large"


class _RetryLater(GatewayError):
    def __init__(self, message: str, *, retry_after_s: float = 1.0, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, int(-(-self.retry_after_s // 1))))}


class RateLimited(_RetryLater):
    status, code = 429, "rate_limited"


class Unavailable(_RetryLater):
    status, code = 503, "unavailable"


class UpstreamTimeout(GatewayError):
    status, code = 504, "timeout"
