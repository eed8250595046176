"""Where the daemon is and how to authenticate: arguments first, then the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

import httpx

from ._version import __version__

#: The daemon's address when neither an argument nor ``EMBEDQ_URL`` gives one.
DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "EMBEDQ_URL"
TOKEN_ENV = "EMBEDQ_ADMIN_TOKEN"
#: The daemon's limit of items per upsert request (``limits.max_items_per_request``).
DEFAULT_BATCH_SIZE = 1000
#: The daemon's default body limit (``server.max_body_bytes``, 16 MiB).
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
#: Seconds: 5 to connect, 30 for the rest (a search embeds its query through the provider).
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


@dataclass(frozen=True)
class Settings:
    """The client's resolved settings."""

    base_url: str
    token: str | None
    timeout: httpx.Timeout
    batch_size: int
    max_body_bytes: int

    @classmethod
    def resolve(
        cls,
        base_url: str | None,
        token: str | None,
        timeout: float | httpx.Timeout | None,
        batch_size: int,
        max_body_bytes: int,
    ) -> Settings:
        """Arguments win; ``None`` falls back to ``EMBEDQ_URL`` / ``EMBEDQ_ADMIN_TOKEN``, then
        to the defaults. An empty token (argument or variable) means no token.
        """
        url = base_url or os.environ.get(URL_ENV) or DEFAULT_URL
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the daemon's URL must start with http:// or https://: {url!r}")
        resolved_token = token if token is not None else os.environ.get(TOKEN_ENV)
        if not 1 <= batch_size <= DEFAULT_BATCH_SIZE:
            raise ValueError(f"batch_size must be between 1 and {DEFAULT_BATCH_SIZE}")
        if max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")
        if timeout is None:
            resolved_timeout = DEFAULT_TIMEOUT
        elif isinstance(timeout, httpx.Timeout):
            resolved_timeout = timeout
        else:
            resolved_timeout = httpx.Timeout(timeout)
        return cls(
            base_url=url.rstrip("/"),
            token=resolved_token or None,
            timeout=resolved_timeout,
            batch_size=batch_size,
            max_body_bytes=max_body_bytes,
        )

    def headers(self) -> dict[str, str]:
        """Headers sent with every request."""
        headers = {"User-Agent": f"embedq-python/{__version__}", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers
