"""The exceptions the client raises.

Every error answered by the daemon is an :class:`ApiError` carrying the HTTP ``status`` and the
daemon's ``code`` and ``reason`` (its errors are JSON ``{"error": {"code", "reason"}}``); the
subclass says what kind of error it is, so callers catch what they can handle::

    EmbedqError
    ├── ApiError                    the daemon answered with an error status
    │   ├── BadRequestError         400, 413, 415, 422 and other 4xx: bad input, nothing changed
    │   ├── UnauthorizedError       401 (and 403): the admin token is missing or wrong
    │   ├── NotFoundError           404: no such item, job, context or dead letter
    │   ├── UnsupportedOperationError  404 "no such route", 405: this daemon lacks the route
    │   ├── ConflictError           409: conflicts with the resource's state
    │   ├── UnavailableError        503 (and 429, 502, 504): a backend is down; try again
    │   └── ServerError             500 and other 5xx
    ├── EmbedqConnectionError       no answer: refused, reset, timed out
    │   └── RequestTimeoutError     the request timed out
    ├── ResponseError               an answer the client could not read
    └── JobTimeoutError             wait_for_job gave up (also a built-in TimeoutError)
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from .models import JobView, UpsertCounts

__all__ = [
    "ApiError",
    "BadRequestError",
    "ConflictError",
    "EmbedqConnectionError",
    "EmbedqError",
    "JobTimeoutError",
    "NotFoundError",
    "RequestTimeoutError",
    "ResponseError",
    "ServerError",
    "UnauthorizedError",
    "UnavailableError",
    "UnsupportedOperationError",
    "error_from_response",
]


class EmbedqError(Exception):
    """Base class of every exception this package raises."""

    #: For :meth:`Client.upsert_items` only: the summed counts of the batches the daemon had
    #: already stored when this error stopped the call (``None`` when nothing was stored, and
    #: for every other method). Upserting is idempotent, so sending all the items again is safe.
    partial_counts: UpsertCounts | None = None


class ApiError(EmbedqError):
    """The daemon answered with an error status.

    Attributes:
        status: the HTTP status code.
        code: the daemon's stable, machine-readable error code (``"invalid"``,
            ``"not_found"``, ...), or ``None`` when the body was not an embedq error (a proxy's
            page, say).
        reason: what was wrong, meant for people (safe to show).
        method: the request's method.
        url: the request's URL.
        retry_after: seconds the server asked to wait (``Retry-After``), if it did.

    """

    def __init__(
        self,
        status: int,
        code: str | None,
        reason: str,
        *,
        method: str = "",
        url: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, reason)
        self.status = status
        self.code = code
        self.reason = reason
        self.method = method
        self.url = url
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" ({self.method} {self.url})" if self.method else ""
        code = f" {self.code}" if self.code else ""
        return f"{self.status}{code}: {self.reason}{where}"


class BadRequestError(ApiError):
    """400, 413, 415, 422 (or another 4xx): the request was refused as it is; nothing changed."""


class UnauthorizedError(ApiError):
    """401 (or 403): send ``Authorization: Bearer $EMBEDQ_ADMIN_TOKEN`` with the right token."""


class NotFoundError(ApiError):
    """404: the item, job, context or dead letter does not exist."""


class UnsupportedOperationError(ApiError):
    """The daemon does not serve this route (404 "no such route", or 405): it is older than
    this client (for instance :meth:`Client.delete_item` against a daemon from before
    ``DELETE /v1/items/{id}``).
    """


class ConflictError(ApiError):
    """409: the request conflicts with the resource's state (an item id that belongs to
    another context, cancelling a job that already ended); nothing changed.
    """


class UnavailableError(ApiError):
    """503 (or 429, 502, 504): a backend of the daemon (database, Redis, the provider) is
    unavailable; nothing changed, try again. Retried automatically where that is safe.
    """


class ServerError(ApiError):
    """500 or another 5xx: an internal error, logged by the daemon."""


class EmbedqConnectionError(EmbedqError):
    """The daemon could not be reached or did not answer (refused, reset, DNS, timeout).

    Attributes:
        method: the request's method.
        url: the request's URL.

    """

    def __init__(self, message: str, *, method: str = "", url: str = "") -> None:
        super().__init__(message)
        self.method = method
        self.url = url


class RequestTimeoutError(EmbedqConnectionError):
    """The request timed out (connecting, writing or waiting for the answer)."""


class ResponseError(EmbedqError):
    """The daemon's answer could not be read (not JSON, or not the expected shape).

    Attributes:
        status: the HTTP status code of the answer.
        body: the start of the body (at most 500 characters).

    """

    def __init__(self, message: str, *, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class JobTimeoutError(EmbedqError, TimeoutError):
    """:meth:`Client.wait_for_job` did not see the job end within its timeout.

    The job goes on in the daemon; ``job`` is its last state seen.
    """

    def __init__(self, job: JobView, timeout: float) -> None:
        super().__init__(
            f"job {job.id} still {job.state} after {timeout:g} s "
            f"({job.done} of {job.total} items done)"
        )
        self.job = job
        self.timeout = timeout


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None  # An HTTP date: the daemon never sends one; ignored.
    return seconds if seconds >= 0 else None


def _code_and_reason(response: httpx.Response) -> tuple[str | None, str]:
    text = response.text
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            reason = error.get("reason")
            if isinstance(code, str) and isinstance(reason, str):
                return code, reason
    snippet = text.strip()[:200]
    return None, snippet or (response.reason_phrase or f"HTTP {response.status_code}")


def error_from_response(response: httpx.Response) -> ApiError:
    """The :class:`ApiError` subclass that fits an error answer."""
    status = response.status_code
    code, reason = _code_and_reason(response)
    cls: type[ApiError]
    if status == 405 or (status == 404 and code == "not_found" and reason == "no such route"):
        cls = UnsupportedOperationError
    elif status in (401, 403):
        cls = UnauthorizedError
    elif status == 404:
        cls = NotFoundError
    elif status == 409:
        cls = ConflictError
    elif status in (429, 502, 503, 504):
        cls = UnavailableError
    elif 400 <= status < 500:
        cls = BadRequestError
    else:
        cls = ServerError
    request = response.request
    return cls(
        status,
        code,
        reason,
        method=request.method,
        url=str(request.url),
        retry_after=_retry_after(response),
    )
