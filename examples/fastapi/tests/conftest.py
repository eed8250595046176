"""Fixtures: a real embedq daemon (``$EMBEDQ_BIN``) on a mock provider, a PostgreSQL schema of
its own (in the database ``test`` on 127.0.0.1:5432, dropped at the end), and the backend on
them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from backend.main import create_app
from backend.settings import Settings
from embedq import Client, RetryPolicy
from embedq.testing import Daemon, MockProvider, free_port, mock_provider_env

#: The database the tests make their schema in (trust auth, user postgres).
PG_URL = os.environ.get("EMBEDQ_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    with MockProvider(dimension=8) as mock, Daemon(mock_provider_env(mock)) as d:
        yield d


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """The SQLAlchemy URL of a new schema (a schema, not a database: dropping a database makes
    PostgreSQL checkpoint, which takes seconds)."""
    schema = f"embedq_pyexample_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{url}?options=-csearch_path%3D{schema}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="session")
def app_client(daemon: Daemon, database_url: str) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=database_url, embedq_url=daemon.url, embedq_token=""))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def embedq_client(daemon: Daemon) -> Iterator[Client]:
    """Direct access to the daemon, to check what the backend did there."""
    with Client(daemon.url, token="", retry=RetryPolicy(max_retries=1, base_delay=0.01)) as c:
        yield c


@pytest.fixture
def offline_app(database_url: str) -> Iterator[TestClient]:
    """The backend with embedq unreachable (a closed port)."""
    settings = Settings(
        database_url=database_url, embedq_url=f"http://127.0.0.1:{free_port()}", embedq_token=""
    )
    with TestClient(create_app(settings)) as client:
        yield client
