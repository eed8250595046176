"""The backend's settings, from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """Where the database and embedq are.

    Attributes:
        database_url: SQLAlchemy URL of PostgreSQL, with the psycopg driver.
        embedq_url: the embedq daemon (``None``: the client's default, ``$EMBEDQ_URL``).
        embedq_token: its admin token (``None``: ``$EMBEDQ_ADMIN_TOKEN``).
        max_wait_seconds: the longest a status request may wait for a job to end.
    """

    database_url: str
    embedq_url: str | None = None
    embedq_token: str | None = None
    max_wait_seconds: float = 30.0

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get(
                "DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
            ),
            embedq_url=os.environ.get("EMBEDQ_URL"),
            embedq_token=os.environ.get("EMBEDQ_ADMIN_TOKEN"),
        )
