"""How long ``POST /admin/bulk-regenerate-embeddings`` takes for a context of 10,000 items.

Starts what it needs (unless given): an embedq daemon on a mock provider (binary from
``$EMBEDQ_BIN``), a PostgreSQL schema of its own (database ``test`` on 127.0.0.1:5432), and
the backend under uvicorn on a free port. It seeds one context through the backend's save
route, waits until embedq has embedded it, then times the endpoint over real HTTP and prints
the percentiles.
Nothing is asserted; everything it started is stopped and removed at the end.

    python time_endpoint.py [--items 10000] [--calls 100] [--embedq-url URL --database-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backend.main import create_app
from backend.settings import Settings
from embedq import Client, JobState
from embedq.testing import Daemon, MockProvider, free_port, mock_provider_env

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
#: What the old synchronous endpoint spent per item (one OpenAI call, one Qdrant write).
OLD_SECONDS_PER_ITEM = 0.3


@contextlib.contextmanager
def embedq_daemon(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with MockProvider(dimension=8) as mock, Daemon(mock_provider_env(mock)) as daemon:
        yield daemon.url


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    schema = f"embedq_pyexample_timing_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield "postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D" + schema
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.contextmanager
def backend(settings: Settings) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the backend did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


#: Seeding retries of a chunk the backend refused with a 5xx, and how many were needed.
SEED_ATTEMPTS = 5
seed_retries = 0


def seed_chunk(http: httpx.Client, ctx: str, chunk: list[dict[str, str]]) -> str:
    """Saves one chunk through the backend; the job id. A save is all or nothing, so a 5xx is
    retried: on SQLite, an upsert that meets the pipeline's status writes can fail with
    "database is locked" (answered 500 by the daemon, 502 by the backend)."""
    global seed_retries
    for attempt in range(SEED_ATTEMPTS):
        saved = http.put(f"/contexts/{ctx}/items", json={"items": chunk})
        if saved.status_code < 500 or attempt == SEED_ATTEMPTS - 1:
            saved.raise_for_status()
            job_id: str = saved.json()["job_id"]
            return job_id
        seed_retries += 1
        time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank)."""
    ordered = sorted(values)
    rank = max(1, round(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000, help="items in the context")
    parser.add_argument("--calls", type=int, default=100, help="timed calls")
    parser.add_argument("--embedq-url", help="an embedq daemon to use instead of starting one")
    parser.add_argument("--database-url", help="a SQLAlchemy URL to use instead of a new schema")
    args = parser.parse_args()

    with embedq_daemon(args.embedq_url) as embedq_url, database(args.database_url) as db_url:
        settings = Settings(database_url=db_url, embedq_url=embedq_url)
        with backend(settings) as base, httpx.Client(base_url=base, timeout=30) as http:
            ctx = f"timing-{uuid.uuid4().hex[:8]}"
            started = time.perf_counter()
            jobs = []
            for start in range(0, args.items, 1000):
                chunk = [
                    {"id": f"{ctx}-{i:06d}", "content": f"Item {i} of the timing context {ctx}."}
                    for i in range(start, min(start + 1000, args.items))
                ]
                jobs.append(seed_chunk(http, ctx, chunk))
            with Client(embedq_url) as client:
                for job_id in jobs:
                    job = client.wait_for_job(job_id, timeout=300, poll_interval=0.2)
                    if job.state != JobState.COMPLETED:
                        raise RuntimeError(f"seeding job {job_id} ended {job.state}")
            print(
                f"seeded {args.items} items into {ctx} and embedded them in "
                f"{time.perf_counter() - started:.1f} s ({seed_retries} saves retried after a 5xx)"
            )

            body = {"context_id": ctx}
            for _ in range(3):  # warm-up: connections, caches
                http.post("/admin/bulk-regenerate-embeddings", json=body).raise_for_status()
            timings: list[float] = []
            for _ in range(args.calls):
                t0 = time.perf_counter()
                response = http.post("/admin/bulk-regenerate-embeddings", json=body)
                timings.append((time.perf_counter() - t0) * 1000)
                if response.status_code != 202:
                    raise RuntimeError(f"{response.status_code}: {response.text}")

    old_minutes = args.items * OLD_SECONDS_PER_ITEM / 60
    print(
        f"POST /admin/bulk-regenerate-embeddings, context of {args.items} items, "
        f"{args.calls} calls: p50 {percentile(timings, 50):.2f} ms, "
        f"p99 {percentile(timings, 99):.2f} ms, max {max(timings):.2f} ms, "
        f"mean {statistics.fmean(timings):.2f} ms"
    )
    print(
        f"(the old synchronous endpoint: {args.items} x ~{OLD_SECONDS_PER_ITEM * 1000:.0f} ms "
        f"= ~{old_minutes:.0f} min per call)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
