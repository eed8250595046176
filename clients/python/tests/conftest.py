"""Fixtures: real ``embedq serve`` daemons (from ``$EMBEDQ_BIN``) against a mock OpenAI-compatible
provider, each with its own SQLite file, vector directory and Redis key prefix, all stopped and
removed at the end of the session."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from embedq import AsyncClient, Client, DeadLetter, RetryPolicy, ScheduleView
from embedq.testing import Daemon, MockProvider, free_port, mock_provider_env

#: A token of the length the daemon demands (16 characters or more).
ADMIN_TOKEN = "pytest-admin-token-0123456789"
#: Short backoff, so that tests of retries are fast.
FAST_RETRY = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.05)


def uid(prefix: str = "t") -> str:
    """A fresh id, so that tests sharing a daemon never share contexts or items."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def mock() -> Iterator[MockProvider]:
    with MockProvider(dimension=8) as provider:
        yield provider


@pytest.fixture(scope="session")
def daemon(mock: MockProvider) -> Iterator[Daemon]:
    """The daemon most tests use: no token (loopback only), the mock provider."""
    with Daemon(mock_provider_env(mock)) as d:
        yield d


@pytest.fixture
def fresh_daemon(mock: MockProvider) -> Iterator[Daemon]:
    """A daemon of the test's own, for counts over every item (scopes all, failed, ...)."""
    with Daemon(mock_provider_env(mock)) as d:
        yield d


@pytest.fixture(scope="session")
def auth_daemon(mock: MockProvider) -> Iterator[Daemon]:
    """A daemon started with ``EMBEDQ_ADMIN_TOKEN``."""
    with Daemon(mock_provider_env(mock), token=ADMIN_TOKEN) as d:
        yield d


@pytest.fixture(scope="session")
def redis_down_daemon(mock: MockProvider) -> Iterator[Daemon]:
    """A daemon whose Redis is a closed port: job creation answers 503."""
    env = {"EMBEDQ__REDIS__CONNECT_TIMEOUT_MS": "200", "EMBEDQ__REDIS__COMMAND_TIMEOUT_MS": "200"}
    d = Daemon(mock_provider_env(mock), redis_url=f"redis://127.0.0.1:{free_port()}", env=env)
    d.start(ready=False)
    yield d
    d.stop()


#: A configuration with schedules (the daemon reads it through ``EMBEDQ_CONFIG``): an embed
#: job of the FAILED items every second, a dead-letter purge every second, and a reconcile job
#: at 03:00 UTC; a scheduler that polls often and whose lease is short.
SCHEDULES_CONFIG = """
[scheduler]
poll_ms = 100
lease_ms = 1000
misfire_grace_ms = 5000

[[schedules]]
name = "every-second"
cron = "* * * * * *"
job = { type = "embed", scope = { type = "failed" } }

[[schedules]]
name = "purge"
cron = "* * * * * *"
missed = "skip"
job = { type = "purge_dead_letters", older_than_days = 7 }

[[schedules]]
name = "nightly-reconcile"
cron = "0 0 3 * * *"
job = { type = "reconcile" }
"""


@pytest.fixture
def scheduled_daemon(mock: MockProvider) -> Iterator[Daemon]:
    """A daemon of the test's own with :data:`SCHEDULES_CONFIG` (its schedules fire a job a
    second, so it is stopped as soon as the test is done)."""
    with Daemon(mock_provider_env(mock), config=SCHEDULES_CONFIG) as d:
        yield d


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Client]:
    with Client(daemon.url, token="", retry=FAST_RETRY) as c:
        yield c


@pytest_asyncio.fixture
async def aclient(daemon: Daemon) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(daemon.url, token="", retry=FAST_RETRY) as c:
        yield c


def dead_letters_of(
    client: Client, job_id: str, count: int, timeout: float = 10.0
) -> list[DeadLetter]:
    """A job's dead letters, once there are ``count`` of them. A job ends FAILED in SQL a
    moment before its dead letters reach Redis (the status writer commits, then acknowledges
    the entries with their dead letters), so a test that reads them right after the job ended
    waits for them."""
    deadline = time.monotonic() + timeout
    while True:
        page = client.dead_letters(limit=500)
        letters = [d for d in page.dead_letters if d.job_id == job_id]
        if len(letters) >= count:
            return letters
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(letters)} dead letters of job {job_id}, not {count}")
        time.sleep(0.05)


async def adead_letters_of(
    client: AsyncClient, job_id: str, count: int, timeout: float = 10.0
) -> list[DeadLetter]:
    """:func:`dead_letters_of` for the asynchronous client."""
    deadline = time.monotonic() + timeout
    while True:
        page = await client.dead_letters(limit=500)
        letters = [d for d in page.dead_letters if d.job_id == job_id]
        if len(letters) >= count:
            return letters
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(letters)} dead letters of job {job_id}, not {count}")
        await asyncio.sleep(0.05)


def firings_of(client: Client, name: str, count: int, timeout: float = 15.0) -> ScheduleView:
    """A schedule once it has fired ``count`` times (its first tick is the one after the
    daemon started, and its scheduler takes the lease first)."""
    deadline = time.monotonic() + timeout
    while True:
        view = client.schedules(firings=count).get(name)
        assert view is not None, f"no schedule {name}"
        if len(view.firings) >= count:
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"schedule {name} fired {len(view.firings)} times, not {count}")
        time.sleep(0.1)


async def afirings_of(
    client: AsyncClient, name: str, count: int, timeout: float = 15.0
) -> ScheduleView:
    """:func:`firings_of` for the asynchronous client."""
    deadline = time.monotonic() + timeout
    while True:
        view = (await client.schedules(firings=count)).get(name)
        assert view is not None, f"no schedule {name}"
        if len(view.firings) >= count:
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"schedule {name} fired {len(view.firings)} times, not {count}")
        await asyncio.sleep(0.1)


def pause_and_settle(client: Client, timeout: float = 5.0) -> None:
    """Pauses intake and waits until both intakes say so: a read already blocking when the
    pause came may still deliver one batch."""
    client.pause()
    deadline = time.monotonic() + timeout
    while True:
        checks = client.ready().checks
        if checks.job_intake.details.get("paused") and checks.task_intake.details.get("paused"):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"intake did not pause: {checks}")
        time.sleep(0.05)


@pytest.fixture
def paused(client: Client) -> Iterator[None]:
    """Intake paused for the test (jobs stay QUEUED), resumed after it."""
    pause_and_settle(client)
    yield
    client.resume()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (for timeouts)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()
