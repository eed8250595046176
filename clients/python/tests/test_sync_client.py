"""Every method of the synchronous client against a real daemon (mock provider), with the
outcomes it must have: counts, item states, job counters, search hits, dead letters, and an
error of each class."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time

import httpx
import pytest
from conftest import ADMIN_TOKEN, FAST_RETRY, dead_letters_of, firings_of, uid

from embedq import (
    BadRequestError,
    Client,
    ConflictError,
    DocumentType,
    EmbedqConnectionError,
    ItemStatus,
    JobKind,
    JobState,
    JobTimeoutError,
    JobView,
    MissedTicks,
    NotFoundError,
    Priority,
    ReconcileFindings,
    RequestTimeoutError,
    ScheduledJobType,
    UnauthorizedError,
    UnavailableError,
    scope_all,
    scope_context,
    scope_failed,
    scope_items,
    scope_stale_model,
)
from embedq.testing import Daemon, MockProvider, free_port, mock_provider_env


def make_items(n: int, prefix: str, text: str = "passage") -> list[dict[str, str]]:
    return [{"id": f"{prefix}-{i:05d}", "content": f"{text} {prefix} number {i}"} for i in range(n)]


def counting(url: str, **kwargs: object) -> tuple[Client, list[httpx.Request]]:
    """A client whose requests are recorded (to count batches and retries)."""
    sent: list[httpx.Request] = []
    http = httpx.Client(event_hooks={"request": [sent.append]})
    return Client(url, http_client=http, **kwargs), sent  # type: ignore[arg-type]


def test_health_and_readiness(client: Client) -> None:
    assert client.health().status == "ok"
    ready = client.ready()
    assert ready.ready is True
    assert ready.checks.database.ok and ready.checks.database.details["backend"] == "sqlite"
    assert ready.checks.redis.ok and ready.checks.pipeline.ok
    assert ready.checks.pipeline.details["model"] == "text-embedding-3-small"


def test_upsert_batches_and_counts(daemon: Daemon) -> None:
    ctx = uid("ctx")
    items = make_items(2100, ctx)
    client, sent = counting(daemon.url, retry=FAST_RETRY)
    with client:
        counts = client.upsert_items(ctx, items)
        assert (counts.created, counts.changed, counts.unchanged) == (2100, 0, 0)
        assert len(sent) == 3  # 1000 + 1000 + 100
        again = client.upsert_items(ctx, items)
        assert (again.created, again.changed, again.unchanged) == (0, 0, 2100)
        edited = [dict(i, content=i["content"] + " (edited)") for i in items[:10]]
        changed = client.upsert_items(ctx, edited)
        assert (changed.created, changed.changed, changed.unchanged) == (0, 10, 0)
        record = client.get_item(edited[0]["id"])
    assert record.context_id == ctx and record.status == ItemStatus.PENDING
    assert record.content_hash == hashlib.sha256(edited[0]["content"].encode()).hexdigest()
    assert record.embedded_model is None and record.attempts == 0
    assert record.version == 2 and record.metadata == {}  # created at 1, changed once


def test_job_lifecycle_counters_items_and_search(client: Client, mock: MockProvider) -> None:
    ctx = uid("ctx")
    items = make_items(150, ctx)
    client.upsert_items(ctx, items)
    accepted = client.create_job(scope_context(ctx))
    assert accepted.created and accepted.state == JobState.QUEUED
    assert accepted.status_url == f"/v1/jobs/{accepted.job_id}"

    seen: list[JobView] = []
    job = client.wait_for_job(accepted, timeout=20, poll_interval=0.05, on_progress=seen.append)
    assert job.state == JobState.COMPLETED and job.is_final and job.planned
    assert (job.total, job.completed, job.failed, job.skipped, job.done) == (150, 150, 0, 0, 150)
    assert job.scope.type == "context" and job.scope.context_id == ctx
    assert job.finished_at is not None and job.progress == 1.0
    assert job.kind == JobKind.EMBED and job.result is None and job.findings is None
    assert seen and seen[-1].state == JobState.COMPLETED
    assert [v.done for v in seen] == sorted(v.done for v in seen)
    keys = [(v.state, v.planned, v.total, v.completed, v.failed, v.skipped) for v in seen]
    assert len(set(keys)) == len(keys)  # reported on a change only

    record = client.get_item(items[42]["id"])
    assert record.status == ItemStatus.COMPLETED and record.is_embedded
    assert record.embedded_model == "text-embedding-3-small" and record.attempts >= 1

    answer = client.search(ctx, items[42]["content"], k=3)
    assert answer.context_id == ctx and answer.query == items[42]["content"]
    assert len(answer.hits) == 3
    assert answer.hits[0].item_id == items[42]["id"]
    assert answer.hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert answer.hits[0].content == items[42]["content"]
    assert answer.hits[0].metadata == {}
    assert (answer.generation, answer.model) == (1, "text-embedding-3-small")
    assert answer.hits[0].score >= answer.hits[1].score >= answer.hits[2].score

    # Nothing changed: a job over the same items skips them all.
    again = client.wait_for_job(client.create_job(scope_items([i["id"] for i in items[:20]])), 20)
    assert (again.total, again.completed, again.skipped) == (20, 0, 20)
    assert again.state == JobState.COMPLETED


def test_every_scope_kind(fresh_daemon: Daemon) -> None:
    with Client(fresh_daemon.url, token="", retry=FAST_RETRY) as client:
        a, b = uid("ctx"), uid("ctx")
        client.upsert_items(a, make_items(3, a))
        client.upsert_items(b, [*make_items(2, b), {"id": f"{b}-bad", "content": "POISON"}])

        def run(scope: object) -> JobView:
            accepted = client.create_job(scope)  # type: ignore[arg-type]
            return client.wait_for_job(accepted, timeout=20, poll_interval=0.05)

        def counts(job: JobView) -> tuple[int, int, int, int]:
            return (job.total, job.completed, job.skipped, job.failed)

        assert counts(run(scope_context(a))) == (3, 3, 0, 0)
        stale = run(scope_stale_model())  # never embedded: b's three
        assert (counts(stale), stale.state) == ((3, 2, 0, 1), JobState.FAILED)
        every = run(scope_all())
        assert (counts(every), every.state) == ((6, 0, 5, 1), JobState.FAILED)
        assert counts(run(scope_failed())) == (1, 0, 0, 1)  # fresh attempts, fails again
        assert counts(run("all")) == (6, 0, 5, 1)
        assert counts(run({"type": "items", "item_ids": [f"{a}-00000", f"{b}-00001"]})) == (
            2,
            0,
            2,
            0,
        )
        assert client.get_item(f"{b}-bad").status == ItemStatus.FAILED


def test_idempotency_key_returns_the_same_job(client: Client) -> None:
    ctx = uid("ctx")
    client.upsert_items(ctx, make_items(5, ctx))
    key = uid("regen")
    first = client.create_job(scope_context(ctx), idempotency_key=key)
    second = client.create_job(scope_context(ctx), idempotency_key=key)
    assert first.created and not second.created
    assert first.job_id == second.job_id
    assert client.get_job(first.job_id).idempotency_key == key


def test_list_jobs_pages_and_filters(client: Client) -> None:
    ctx = uid("ctx")
    client.upsert_items(ctx, make_items(2, ctx))
    ids = [client.create_job(scope_context(ctx)).job_id for _ in range(3)]
    for job_id in ids:
        client.wait_for_job(job_id, timeout=20, poll_interval=0.05)
    first = client.list_jobs(limit=2)
    assert [j.id for j in first.jobs] == ids[::-1][:2]  # newest first
    assert first.next_before == ids[1]
    second = client.list_jobs(before=first.next_before, limit=2)
    assert second.jobs[0].id == ids[0]
    completed = client.list_jobs(state=JobState.COMPLETED, limit=200)
    assert set(ids) <= {j.id for j in completed.jobs}
    assert all(j.state == JobState.COMPLETED for j in completed.jobs)


@pytest.mark.usefixtures("paused")
def test_pause_cancel_and_resume(client: Client) -> None:
    ready = client.ready()
    assert ready.checks.pipeline.details["paused"] == "paused by an operator"
    ctx = uid("ctx")
    client.upsert_items(ctx, make_items(4, ctx))
    job = client.create_job(scope_context(ctx))
    with pytest.raises(JobTimeoutError) as info:
        client.wait_for_job(job, timeout=0.3, poll_interval=0.05)
    assert info.value.job.state == JobState.QUEUED and info.value.job.id == job.job_id
    cancelled = client.cancel_job(job)
    assert cancelled.state == JobState.CANCELLED and cancelled.is_final
    with pytest.raises(ConflictError) as conflict:
        client.cancel_job(job.job_id)
    assert conflict.value.status == 409 and conflict.value.code == "conflict"
    assert "already CANCELLED" in conflict.value.reason
    assert client.resume().intake == "resuming"
    assert client.ready().checks.pipeline.details["paused"] is None
    assert client.pause().intake == "pausing"


@pytest.mark.usefixtures("paused")
def test_job_priorities_default_change_and_refuse(client: Client) -> None:
    ctx = uid("ctx")
    items = make_items(3, ctx)
    client.upsert_items(ctx, items)
    # Without a priority: a short list of items is interactive, any other job normal.
    few = client.create_job(scope_items([items[0]["id"]]))
    whole = client.create_job(scope_context(ctx))
    assert client.get_job(few).priority == Priority.INTERACTIVE
    assert client.get_job(whole).priority == Priority.NORMAL

    # Intake is paused, so the job is still QUEUED and its priority may change.
    bulk = client.create_job(scope_context(ctx), priority="bulk")
    view = client.get_job(bulk)
    assert (view.state, view.priority) == (JobState.QUEUED, Priority.BULK)
    changed = client.set_job_priority(bulk, Priority.INTERACTIVE)
    assert (changed.id, changed.state, changed.priority) == (
        bulk.job_id,
        JobState.QUEUED,
        "interactive",
    )
    assert client.get_job(bulk.job_id).priority == "interactive"
    listed = {j.id: j.priority for j in client.list_jobs(limit=10).jobs}
    assert listed[bulk.job_id] == "interactive" and listed[few.job_id] == "interactive"

    # An unknown priority is refused, and nothing is made or changed.
    newest = client.list_jobs(limit=1).jobs[0].id
    with pytest.raises(BadRequestError) as info:
        client.create_job(scope_context(ctx), priority="urgent")
    assert (info.value.status, info.value.code) == (422, "invalid")
    assert "priority" in info.value.reason and "urgent" in info.value.reason
    assert client.list_jobs(limit=1).jobs[0].id == newest
    with pytest.raises(BadRequestError) as info:
        client.set_job_priority(bulk, "urgent")
    assert (info.value.status, info.value.code) == (422, "invalid")
    assert client.get_job(bulk).priority == "interactive"

    # A tenant is kept with the job; a job without one has none.
    acme = client.create_job(scope_context(ctx), priority="bulk", tenant="acme")
    view = client.get_job(acme)
    assert (view.state, view.priority, view.tenant) == (JobState.QUEUED, "bulk", "acme")
    assert client.get_job(few).tenant is None and changed.tenant is None
    tenants = {j.id: j.tenant for j in client.list_jobs(limit=10).jobs}
    assert tenants[acme.job_id] == "acme" and tenants[bulk.job_id] is None
    # An invalid tenant is refused, and nothing is made.
    newest = client.list_jobs(limit=1).jobs[0].id
    with pytest.raises(BadRequestError) as info:
        client.create_job(scope_context(ctx), tenant="has space")
    assert (info.value.status, info.value.code) == (422, "invalid")
    assert "tenant" in info.value.reason
    assert client.list_jobs(limit=1).jobs[0].id == newest == acme.job_id
    assert client.cancel_job(acme).tenant == "acme"

    # A job that ended keeps the priority it had: changing it is a conflict.
    cancelled = client.cancel_job(bulk)
    assert (cancelled.state, cancelled.priority) == (JobState.CANCELLED, "interactive")
    with pytest.raises(ConflictError) as conflict:
        client.set_job_priority(bulk, "bulk")
    assert conflict.value.status == 409 and "already CANCELLED" in conflict.value.reason
    assert client.get_job(bulk).priority == "interactive"
    with pytest.raises(NotFoundError):
        client.set_job_priority("019a0000-0000-7000-8000-000000000000", "bulk")
    with pytest.raises(BadRequestError) as info:
        client.set_job_priority("not-a-uuid", "bulk")
    assert info.value.status == 400
    for job in (few, whole):
        client.cancel_job(job)


def test_a_running_jobs_priority_changes_for_what_is_left(
    client: Client, mock: MockProvider
) -> None:
    ctx = uid("ctx")
    marker = f"HOLD{uid('m')}"
    client.upsert_items(ctx, [*make_items(3, ctx), {"id": f"{ctx}-slow", "content": marker}])
    mock.hold(marker)
    try:
        job = client.create_job(scope_context(ctx), priority=Priority.BULK)
        mock.wait_held(1)
        changed = client.set_job_priority(job, "interactive")
        assert (changed.state, changed.priority) == (JobState.RUNNING, Priority.INTERACTIVE)
    finally:
        mock.release()
    done = client.wait_for_job(job, timeout=20, poll_interval=0.05)
    assert (done.state, done.priority, done.completed) == (JobState.COMPLETED, "interactive", 4)
    with pytest.raises(ConflictError) as conflict:
        client.set_job_priority(done, "bulk")
    assert "already COMPLETED" in conflict.value.reason


def test_dead_letters_requeue_and_delete(client: Client) -> None:
    ctx = uid("ctx")
    items = make_items(6, ctx)
    items[1]["content"] = "this one holds the POISON"
    items[4]["content"] = "so does this POISON one"
    client.upsert_items(ctx, items)
    job = client.wait_for_job(client.create_job(scope_context(ctx)), timeout=20, poll_interval=0.05)
    assert job.state == JobState.FAILED
    assert (job.total, job.completed, job.failed) == (6, 4, 2)
    failed = client.get_item(items[1]["id"])
    assert failed.status == ItemStatus.FAILED and failed.last_error

    mine = dead_letters_of(client, job.id, 2)
    page = client.dead_letters(limit=500)
    assert sorted(d.item_id or "" for d in mine) == [items[1]["id"], items[4]["id"]]
    assert all(d.kind == "item" and d.reason and d.at_ms for d in mine)
    assert page.total >= 2

    requeued = client.requeue_dead_letters(job_id=job.id)
    assert (requeued.requeued, requeued.removed, len(requeued.jobs)) == (2, 2, 1)
    assert client.get_item(items[1]["id"]).attempts == 0  # fresh attempts
    retry = client.wait_for_job(requeued.jobs[0], timeout=20, poll_interval=0.05)
    assert (retry.total, retry.failed, retry.state) == (2, 2, JobState.FAILED)

    letters = dead_letters_of(client, retry.id, 2)
    assert len(letters) == 2
    by_id = client.requeue_dead_letters(ids=[letters[0].id])
    assert (by_id.requeued, by_id.removed) == (1, 1)
    client.delete_dead_letter(letters[1].id)
    remaining = {d.id for d in client.dead_letters(limit=500).dead_letters}
    assert letters[0].id not in remaining and letters[1].id not in remaining
    with pytest.raises(NotFoundError) as info:
        client.delete_dead_letter(letters[1].id)
    assert info.value.code == "not_found"
    with pytest.raises(NotFoundError):
        client.requeue_dead_letters(ids=[letters[1].id])

    # The requeued one fails again; requeue everything left, then clear them.
    client.wait_for_job(by_id.jobs[0], timeout=20, poll_interval=0.05)
    dead_letters_of(client, by_id.jobs[0], 1)
    before = client.dead_letters(limit=500).total
    everything = client.requeue_dead_letters(all=True)
    assert everything.removed == before and everything.requeued >= 1
    for job_id in everything.jobs:
        done = client.wait_for_job(job_id, timeout=20, poll_interval=0.05)
        assert done.failed >= 1
        dead_letters_of(client, job_id, done.failed)
    for letter in client.dead_letters(limit=500).dead_letters:
        client.delete_dead_letter(letter.id)
    assert client.dead_letters().total == 0


def test_a_daemon_without_schedules_lists_none(client: Client) -> None:
    answer = client.schedules()
    assert answer.schedules == []
    assert answer.get("anything") is None
    scheduler = answer.scheduler
    assert scheduler.active is False  # no schedules: it never takes the lease
    assert (scheduler.fence, scheduler.fired, scheduler.stood_down) == (None, 0, 0)
    assert scheduler.last_error is None
    assert client.schedules(firings=0).schedules == []
    assert client.schedules(firings=100).scheduler.active is False
    with pytest.raises(BadRequestError) as info:
        client.schedules(firings=101)
    assert (info.value.status, info.value.code) == (400, "bad_request")
    assert info.value.reason == "firings must be between 0 and 100"
    with pytest.raises(BadRequestError) as info:
        client.schedules(firings=-1)
    assert (info.value.status, info.value.code) == (400, "bad_request")


def test_schedules_fire_jobs_and_purges(scheduled_daemon: Daemon) -> None:
    with Client(scheduled_daemon.url, token="", retry=FAST_RETRY) as client:
        every = firings_of(client, "every-second", 2)
        assert every.cron == "* * * * * *"
        assert every.missed == MissedTicks.CATCH_UP_ONCE
        assert every.job.type == ScheduledJobType.EMBED
        assert every.job.scope == scope_failed()
        assert (every.job.priority, every.job.tenant, every.job.older_than_days) == (None,) * 3
        newest, older = every.firings[:2]
        assert older.tick_ms < newest.tick_ms  # newest first
        assert newest.tick_ms % 1000 == 0 and older.tick_ms % 1000 == 0
        assert every.next_tick_ms is not None and every.next_tick_ms > newest.tick_ms
        assert newest.job_id is not None and newest.result is None
        assert newest.fence >= 1 and newest.fired_by
        assert newest.fired_at >= newest.tick_ms

        # Each tick made an ordinary job, under a key of the schedule and the tick.
        job = client.get_job(newest.job_id)
        assert job.id == newest.job_id
        assert job.kind == JobKind.EMBED and job.scope == scope_failed()
        assert job.priority == Priority.NORMAL and job.tenant is None
        assert job.idempotency_key == f"schedule:every-second:{newest.tick_ms}"
        assert older.job_id is not None and older.job_id != newest.job_id
        done = client.wait_for_job(job, timeout=20, poll_interval=0.05)
        assert done.state == JobState.COMPLETED and done.total == 0  # no FAILED item

        answer = client.schedules()
        assert [s.name for s in answer.schedules] == ["every-second", "purge", "nightly-reconcile"]
        purge = firings_of(client, "purge", 1)
        assert purge.missed == MissedTicks.SKIP
        assert purge.job.type == ScheduledJobType.PURGE_DEAD_LETTERS
        assert purge.job.older_than_days == 7 and purge.job.scope is None
        assert purge.firings[0].job_id is None  # a purge makes no job
        assert purge.firings[0].result == {"dead_letters_removed": 0}
        nightly = answer.get("nightly-reconcile")
        assert nightly is not None and nightly.job.type == ScheduledJobType.RECONCILE
        assert nightly.next_tick_ms is not None
        assert nightly.next_tick_ms % 86_400_000 == 3 * 3_600_000  # 03:00 UTC

        scheduler = client.schedules().scheduler
        assert scheduler.active is True  # the only daemon of its prefix holds the lease
        assert scheduler.fence == newest.fence
        assert scheduler.fired >= 3 and scheduler.stood_down == 0
        assert scheduler.last_error is None

        one = client.schedules(firings=1)
        assert [len(s.firings) for s in one.schedules][:2] == [1, 1]
        assert all(s.firings == [] for s in client.schedules(firings=0).schedules)


def test_bad_input_errors_carry_code_and_reason(client: Client) -> None:
    ctx = uid("ctx")
    client.upsert_items(ctx, make_items(1, ctx))
    with pytest.raises(BadRequestError) as info:
        client.search(ctx, "anything", k=0)
    assert (info.value.status, info.value.code) == (422, "invalid")
    assert info.value.reason == "k must be between 1 and 100"
    with pytest.raises(BadRequestError) as info:
        client.upsert_items(ctx, [{"id": "blank", "content": "   "}])
    assert (info.value.status, info.value.code) == (422, "invalid")
    assert "content" in info.value.reason
    with pytest.raises(BadRequestError) as info:
        client.list_jobs(state="BOGUS")
    assert (info.value.status, info.value.code) == (400, "bad_request")
    with pytest.raises(BadRequestError) as info:
        client.get_job("not-a-uuid")
    assert info.value.status == 400 and "not a UUID" in info.value.reason
    with pytest.raises(BadRequestError) as info:
        client.create_job(scope_context(ctx), idempotency_key="has spaces")
    assert info.value.status == 400 and "Idempotency-Key" in info.value.reason


def test_not_found_and_conflict_errors(client: Client) -> None:
    missing = uid("missing")
    with pytest.raises(NotFoundError) as info:
        client.get_item(missing)
    assert (info.value.status, info.value.code, info.value.reason) == (
        404,
        "not_found",
        f"no item {missing}",
    )
    with pytest.raises(NotFoundError) as info:
        client.create_job(scope_context(missing))
    assert info.value.reason == f"no context {missing}"
    with pytest.raises(NotFoundError):
        client.get_job("019a0000-0000-7000-8000-000000000000")
    with pytest.raises(NotFoundError):
        client.search(missing, "q")
    a, b = uid("ctx"), uid("ctx")
    client.upsert_items(a, [{"id": f"{a}-shared", "content": "x"}])
    with pytest.raises(ConflictError) as conflict:
        client.upsert_items(b, [{"id": f"{a}-shared", "content": "x"}])
    assert (conflict.value.status, conflict.value.code) == (409, "conflict")


def embed(client: Client, ctx: str) -> JobView:
    """Runs a job over a context and waits for it."""
    return client.wait_for_job(
        client.create_job(scope_context(ctx)), timeout=20, poll_interval=0.05
    )


def test_delete_items_and_context(client: Client) -> None:
    ctx = uid("ctx")
    items = make_items(4, ctx)
    client.upsert_items(ctx, items)
    assert embed(client, ctx).completed == 4
    assert items[0]["id"] in client.search(ctx, items[0]["content"], k=4).item_ids

    never = uid("never-there")
    result = client.delete_items([items[0]["id"], never])
    assert (result.deleted, result.missing, result.jobs_finished) == (
        (items[0]["id"],),
        (never,),
        0,
    )
    with pytest.raises(NotFoundError):
        client.get_item(items[0]["id"])
    hits = client.search(ctx, items[0]["content"], k=4)
    assert items[0]["id"] not in hits.item_ids and len(hits.hits) == 3

    answer = client.delete_item(items[1]["id"])
    assert (answer.deleted, answer.jobs_finished) == (1, 0)
    with pytest.raises(NotFoundError) as info:
        client.delete_item(items[1]["id"])
    assert info.value.reason == f"no item {items[1]['id']}"

    gone = client.delete_context(ctx)
    assert (gone.deleted, gone.jobs_finished) == (2, 0)
    for item in items:
        with pytest.raises(NotFoundError):
            client.get_item(item["id"])
    with pytest.raises(NotFoundError):
        client.search(ctx, items[2]["content"])
    with pytest.raises(NotFoundError) as info:
        client.delete_context(ctx)
    assert info.value.reason == f"no context {ctx}"


#: A small Markdown document: at 40 tokens a chunk, each section is a chunk of its own.
GUIDE = (
    b"# Guide\n\n## Install\n\n"
    b"Download the archive from the releases page. Unpack it into a directory of your choice. "
    b"Run the installer and follow the prompts on the screen.\n\n"
    b"## Use\n\n"
    b"Start the daemon with the serve command. Point your client at its address. "
    b"Upsert items and create a job to embed them.\n"
)


def test_ingest_a_document_embed_its_chunks_and_delete_it(client: Client) -> None:
    ctx, doc = uid("ctx"), uid("guide")
    settings = {"chunk_tokens": 40, "overlap_tokens": 0}
    answer = client.ingest_document(ctx, doc, GUIDE, metadata={"lang": "en"}, **settings)
    assert (answer.document_id, answer.context_id, answer.type, answer.pages) == (
        doc,
        ctx,
        DocumentType.MARKDOWN,  # told from its headings: nothing was declared
        None,
    )
    assert answer.chunks == 2 and answer.item_ids == [f"{doc}#0", f"{doc}#1"]
    assert (answer.created, answer.changed, answer.metadata_changed) == (2, 0, 0)
    assert (answer.unchanged, answer.removed) == (0, 0)
    assert answer.job_id is not None

    first = client.get_item(f"{doc}#0")
    assert (first.id, first.context_id, first.status) == (f"{doc}#0", ctx, ItemStatus.PENDING)
    assert first.metadata["document_id"] == doc
    assert first.metadata["document_type"] == "markdown"
    assert (first.metadata["chunk"], first.metadata["char_start"]) == (0, 0)
    assert first.metadata["lang"] == "en" and first.metadata["heading_path"][0] == "Guide"
    last = client.get_item(answer.item_ids[-1])
    assert last.metadata["heading_path"] == ["Guide", "Use"]
    assert last.metadata["char_start"] >= first.metadata["char_end"]  # no overlap
    assert "page" not in last.metadata  # pages are a PDF's

    # The answer's job embeds the chunks (the mock provider embeds like any other).
    job = client.wait_for_job(answer.job_id, timeout=20, poll_interval=0.05)
    assert (job.state, job.kind, job.total, job.completed) == (JobState.COMPLETED, "embed", 2, 2)
    assert job.scope.type == "items" and sorted(job.scope.item_ids or []) == answer.item_ids
    assert client.get_item(f"{doc}#1").is_embedded
    hits = client.search(ctx, "how do I install it", k=10, filter={"document_id": doc})
    assert sorted(hits.item_ids) == answer.item_ids
    assert {hit.metadata["lang"] for hit in hits.hits} == {"en"}

    # The same document again: nothing changed, nothing to embed.
    again = client.ingest_document(ctx, doc, GUIDE, metadata={"lang": "en"}, **settings)
    assert (again.chunks, again.unchanged, again.created, again.changed) == (2, 2, 0, 0)
    assert (again.removed, again.job_id) == (0, None)
    # New metadata alone: written into the points' payloads, nothing embedded again.
    relabelled = client.ingest_document(ctx, doc, GUIDE, metadata={"lang": "de"}, **settings)
    assert (relabelled.metadata_changed, relabelled.to_embed, relabelled.job_id) == (2, 0, None)
    assert client.get_item(f"{doc}#0").metadata["lang"] == "de"

    # Its chunks belong to this context: another one may not take the document.
    with pytest.raises(ConflictError) as conflict:
        client.ingest_document(uid("ctx"), doc, GUIDE)
    assert (
        conflict.value.reason == f"document {doc} belongs to context {ctx}; delete it there first"
    )

    gone = client.delete_document(doc)
    assert (gone.deleted, gone.jobs_finished) == (2, 0)
    for item_id in answer.item_ids:
        with pytest.raises(NotFoundError):
            client.get_item(item_id)
    with pytest.raises(NotFoundError) as info:
        client.delete_document(doc)
    assert (info.value.status, info.value.reason) == (404, f"no document {doc}")


def test_documents_the_daemon_refuses(client: Client) -> None:
    ctx, doc = uid("ctx"), uid("doc")
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)
    with pytest.raises(BadRequestError) as info:
        client.ingest_document(ctx, doc, png, content_type="image/png")
    assert (info.value.status, info.value.code) == (415, "unsupported_media_type")
    assert "image/png" in info.value.reason
    with pytest.raises(BadRequestError) as info:
        client.ingest_document(ctx, doc, png)  # nothing declared: the bytes are not a document
    assert (info.value.status, info.value.code) == (422, "invalid")
    assert "binary data that is not a PDF" in info.value.reason
    with pytest.raises(BadRequestError) as info:
        client.ingest_document(ctx, doc, GUIDE, type="pdf")  # contradicts the bytes
    assert (info.value.status, info.value.code) == (422, "invalid")
    assert "declared pdf but the content is markdown" in info.value.reason
    with pytest.raises(BadRequestError) as info:
        client.ingest_document(ctx, doc, GUIDE, type="epub")  # sent as given
    assert (info.value.status, info.value.code) == (400, "bad_request")
    with pytest.raises(BadRequestError) as info:
        client.ingest_document(ctx, doc, GUIDE, chunk_tokens=40, overlap_tokens=40)
    assert (info.value.status, info.value.code) == (422, "invalid")
    assert info.value.reason == "overlap_tokens must be below chunk_tokens"
    with pytest.raises(BadRequestError) as info:
        client.ingest_document(ctx, doc, b"   \n\n  ")
    assert info.value.status == 422
    with pytest.raises(BadRequestError) as info:
        client.ingest_document(ctx, f"{doc}#1", GUIDE)  # a chunk's id is not a document's
    assert (info.value.status, info.value.code) == (400, "bad_request")
    with pytest.raises(BadRequestError) as info:
        client.ingest_document(ctx, doc, b"x" * (16 * 1024 * 1024 + 1))
    assert (info.value.status, info.value.code) == (413, "too_large")
    # Nothing of them was stored.
    with pytest.raises(NotFoundError):
        client.get_item(f"{doc}#0")
    with pytest.raises(NotFoundError):
        client.delete_document(doc)


def test_metadata_is_stored_returned_and_changed_alone(client: Client) -> None:
    ctx = uid("ctx")
    a, b = f"{ctx}-a", f"{ctx}-b"
    counts = client.upsert_items(
        ctx,
        [
            {"id": a, "content": "the red fox", "metadata": {"tenant": "acme", "nested": {"y": 1}}},
            {"id": b, "content": "the blue whale"},
        ],
    )
    assert (counts.created, counts.metadata_changed) == (2, 0)
    record = client.get_item(a)
    assert record.metadata == {"nested": {"y": 1}, "tenant": "acme"} and record.version == 1
    assert client.get_item(b).metadata == {}
    assert embed(client, ctx).completed == 2
    embedded = client.get_item(a)

    # The same metadata in another key order is no change.
    same = client.upsert_items(
        ctx,
        [{"id": a, "content": "the red fox", "metadata": {"nested": {"y": 1}, "tenant": "acme"}}],
    )
    assert (same.unchanged, same.metadata_changed) == (1, 0)

    # New metadata alone: counted metadata_changed, a new version, nothing to embed again.
    relabel = client.upsert_items(
        ctx, [{"id": a, "content": "the red fox", "metadata": {"tenant": "globex"}}]
    )
    assert (relabel.metadata_changed, relabel.changed, relabel.unchanged, relabel.to_embed) == (
        1,
        0,
        0,
        0,
    )
    record = client.get_item(a)
    assert record.metadata == {"tenant": "globex"} and record.version == embedded.version + 1
    assert record.status == ItemStatus.COMPLETED and record.is_embedded
    assert record.attempts == embedded.attempts
    again = client.wait_for_job(client.create_job(scope_items([a])), timeout=20, poll_interval=0.05)
    assert (again.skipped, again.completed) == (1, 0)  # the vector is still current
    hit = client.search(ctx, "the red fox", k=1).hits[0]
    assert (hit.item_id, hit.metadata) == (a, {"tenant": "globex"})
    assert client.search(ctx, "the red fox", k=2, filter={"tenant": "globex"}).item_ids == [a]
    assert client.search(ctx, "the red fox", k=2, filter={"tenant": "acme"}).hits == []

    # Without metadata an upsert keeps it, even when the content changes; {} clears it.
    kept = client.upsert_items(ctx, [{"id": a, "content": "the red fox jumps"}])
    assert kept.changed == 1 and client.get_item(a).metadata == {"tenant": "globex"}
    cleared = client.upsert_items(ctx, [{"id": a, "content": "the red fox jumps", "metadata": {}}])
    assert cleared.metadata_changed == 1 and client.get_item(a).metadata == {}


def test_search_filter(client: Client) -> None:
    ctx = uid("ctx")
    rows = [
        ("acme", 2024, True, ["news", "en"]),
        ("acme", 2025, False, ["blog"]),
        ("globex", 2024, True, ["news"]),
        ("globex", 2023, False, []),
        ("initech", 2025, True, ["en"]),
    ]
    items = [
        {
            "id": f"{ctx}-{n}",
            "content": f"report {n} of {tenant}",
            "metadata": {"tenant": tenant, "year": year, "public": public, "tags": tags},
        }
        for n, (tenant, year, public, tags) in enumerate(rows)
    ]
    client.upsert_items(ctx, [*items, {"id": f"{ctx}-plain", "content": "no metadata"}])
    embed(client, ctx)

    def found(**filter: object) -> set[str]:
        answer = client.search(ctx, "report", k=10, filter=filter)  # type: ignore[arg-type]
        assert all(hit.content and isinstance(hit.metadata, dict) for hit in answer.hits)
        return {hit.item_id.rsplit("-", 1)[1] for hit in answer.hits}

    assert len(client.search(ctx, "report", k=10).hits) == 6
    assert found(tenant="acme") == {"0", "1"}
    assert found(tenant=["acme", "initech"]) == {"0", "1", "4"}
    assert found(tenant="acme", year=2025) == {"1"}  # every key must match
    assert found(year=[2023, 2024]) == {"0", "2", "3"}
    assert found(public=True) == {"0", "2", "4"}
    assert found(tags="en") == {"0", "4"}  # a list-valued field matches any of its values
    assert found(tags=["blog", "news"]) == {"0", "1", "2"}
    assert found(tenant="nobody") == set()
    assert found() == {"0", "1", "2", "3", "4", "plain"}  # an empty filter keeps all
    hit = client.search(ctx, "report 2 of globex", k=1, filter={"year": 2024}).hits[0]
    assert hit.metadata == {"public": True, "tags": ["news"], "tenant": "globex", "year": 2024}

    for bad, reason in [
        ({"year": 2024.5}, "numbers must be integers"),
        ({"tenant": []}, "the list of values is empty"),
        ({"a.b": "x"}, "a key is 1 to 64 letters"),
        ({"tenant": {"x": 1}}, "values are strings, integers or booleans"),
    ]:
        with pytest.raises(BadRequestError) as info:
            client.search(ctx, "report", filter=bad)  # type: ignore[arg-type]
        assert (info.value.status, info.value.code) == (422, "invalid")
        assert info.value.reason.startswith("filter: ") and reason in info.value.reason


def test_upsert_with_a_delete_list(client: Client) -> None:
    ctx, other = uid("ctx"), uid("ctx")
    items = make_items(6, ctx)
    client.upsert_items(ctx, items)
    client.upsert_items(other, [{"id": f"{other}-x", "content": "elsewhere"}])
    embed(client, ctx)

    new = {"id": f"{ctx}-new", "content": "a fresh passage"}
    edited = dict(items[5], content="an edited passage")
    unknown = uid("unknown")
    counts = client.upsert_items(
        ctx, [new, edited, items[4]], delete=[items[0]["id"], items[1]["id"], unknown]
    )
    assert counts.model_dump() == {
        "created": 1,
        "changed": 1,
        "metadata_changed": 0,
        "unchanged": 1,
        "deleted": 2,
        "not_found": 1,
    }
    for gone in items[:2]:
        with pytest.raises(NotFoundError):
            client.get_item(gone["id"])
        assert gone["id"] not in client.search(ctx, gone["content"], k=10).item_ids
    assert client.get_item(new["id"]).status == ItemStatus.PENDING

    only = client.upsert_items(ctx, delete=[items[2]["id"]])
    assert (only.deleted, only.total, only.total_deletes) == (1, 0, 1)

    # An id of another context refuses the whole request: nothing of it is stored.
    with pytest.raises(ConflictError) as info:
        client.upsert_items(
            ctx, [{"id": f"{ctx}-late", "content": "late"}], delete=[f"{other}-x", items[3]["id"]]
        )
    assert info.value.reason == f"item {other}-x belongs to context {other}, not {ctx}"
    assert client.get_item(f"{other}-x").context_id == other
    assert client.get_item(items[3]["id"]).context_id == ctx
    with pytest.raises(NotFoundError):
        client.get_item(f"{ctx}-late")

    with pytest.raises(ValueError):
        client.upsert_items(ctx, [new], delete=[new["id"]])
    many = client.upsert_items(ctx, delete=[f"{ctx}-missing-{n}" for n in range(2500)])
    assert (many.deleted, many.not_found) == (0, 2500)


def test_deletes_during_an_embedding(client: Client, mock: MockProvider) -> None:
    """Deletes while the provider holds the embedding: the job counts the item deleted, the
    vector that comes back is dropped, and a job whose last open items go ends at once."""
    ctx = uid("ctx")
    marker = f"HOLD{uid('m')}"
    items = make_items(5, ctx)
    slow = {"id": f"{ctx}-slow", "content": f"{marker} the slow one"}
    client.upsert_items(ctx, [*items, slow])
    mock.hold(marker)
    try:
        job = client.create_job(scope_context(ctx))
        mock.wait_held(1)
        answer = client.delete_item(slow["id"])
        assert answer.deleted == 1
        view = client.get_job(job)
        assert view.deleted == 1 and view.planned and view.total == 6
    finally:
        mock.release()
    done = client.wait_for_job(job, timeout=20, poll_interval=0.05)
    assert done.state == JobState.COMPLETED
    assert (done.total, done.completed, done.failed, done.skipped, done.deleted) == (6, 5, 0, 0, 1)
    assert done.completed + done.failed + done.skipped + done.deleted == done.total == done.done
    assert slow["id"] not in client.search(ctx, slow["content"], k=10).item_ids

    # The id made again continues its version (created at 1, deleted at 2), and is not found
    # until it is embedded again.
    assert answer.jobs_finished == 0
    client.upsert_items(ctx, [slow])
    record = client.get_item(slow["id"])
    assert record.version == 3 and record.status == ItemStatus.PENDING
    assert record.embedded_hash is None
    assert slow["id"] not in client.search(ctx, slow["content"], k=10).item_ids

    # Deleting the last open items of a job finishes it.
    last = uid("ctx")
    client.upsert_items(last, [{"id": f"{last}-only", "content": f"{marker} alone"}])
    mock.hold(marker)
    try:
        lone = client.create_job(scope_context(last))
        mock.wait_held(1)
        gone = client.delete_context(last)
        assert (gone.deleted, gone.jobs_finished) == (1, 1)
        ended = client.get_job(lone)
        assert ended.state == JobState.COMPLETED and ended.is_final
        assert (ended.total, ended.deleted, ended.completed) == (1, 1, 0)
    finally:
        mock.release()


def test_unauthorized_without_or_with_a_wrong_token(auth_daemon: Daemon) -> None:
    with Client(auth_daemon.url, token="") as anonymous:
        assert anonymous.health().status == "ok"  # public
        with pytest.raises(UnauthorizedError) as info:
            anonymous.list_jobs()
        assert (info.value.status, info.value.code) == (401, "unauthorized")
        assert "Bearer" in info.value.reason
    with Client(auth_daemon.url, token="not-the-right-token-at-all") as wrong:
        with pytest.raises(UnauthorizedError) as info:
            wrong.pause()
        assert info.value.reason == "the bearer token is not valid"


def test_token_and_url_from_the_environment(
    auth_daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBEDQ_URL", auth_daemon.url)
    monkeypatch.setenv("EMBEDQ_ADMIN_TOKEN", ADMIN_TOKEN)
    with Client() as c:
        ctx = uid("ctx")
        assert c.upsert_items(ctx, make_items(2, ctx)).created == 2
        job = c.wait_for_job(c.create_job(scope_context(ctx)), timeout=20, poll_interval=0.05)
        assert job.completed == 2
        assert c.get_item(f"{ctx}-00000").status == ItemStatus.COMPLETED


def test_unavailable_when_redis_is_down(redis_down_daemon: Daemon) -> None:
    client, sent = counting(redis_down_daemon.url, token="", retry=FAST_RETRY)
    with client:
        ctx = uid("ctx")
        assert client.upsert_items(ctx, make_items(2, ctx)).created == 2  # SQL only
        sent.clear()
        with pytest.raises(UnavailableError) as info:
            client.create_job(scope_context(ctx))
        assert (info.value.status, info.value.code) == (503, "unavailable")
        assert "Redis" in info.value.reason
        assert len(sent) == 1  # no key: never retried
        sent.clear()
        with pytest.raises(UnavailableError):
            client.create_job(scope_context(ctx), idempotency_key=uid("key"))
        assert len(sent) == 1 + FAST_RETRY.max_retries
        assert client.list_jobs(limit=200).jobs == []  # no half-made job is left
        assert client.ready().ready is False
        assert client.ready().checks.redis.ok is False


def test_connection_errors_are_retried_then_raised() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client, sent = counting(url, retry=FAST_RETRY)
    with client, pytest.raises(EmbedqConnectionError) as info:
        client.health()
    assert len(sent) == 1 + FAST_RETRY.max_retries
    assert info.value.url == url + "/healthz"


def test_timeouts_are_request_timeout_errors(silent_port: int) -> None:
    started = time.monotonic()
    url = f"http://127.0.0.1:{silent_port}"
    with Client(url, timeout=0.2, retry=FAST_RETRY) as c, pytest.raises(RequestTimeoutError):
        c.get_item("a")
    assert time.monotonic() - started < 3


def test_a_dry_run_estimates_and_makes_nothing(mock: MockProvider) -> None:
    env = {
        "EMBEDQ__EMBEDDING__PRICE_PER_MILLION_TOKENS": "0.02",
        "EMBEDQ__RATE_LIMIT__TOKENS_PER_MINUTE": "6000",
    }
    with (
        Daemon(mock_provider_env(mock), env=env) as daemon,
        Client(daemon.url, token="", retry=FAST_RETRY) as client,
    ):
        ctx = uid("ctx")
        items = make_items(40, ctx, text="a longer passage with several words in it")
        client.upsert_items(ctx, items)
        requests = mock.requests
        estimate = client.estimate_job(scope_context(ctx))
        assert estimate.model == "text-embedding-3-small"
        assert (estimate.scope_items, estimate.items, estimate.up_to_date) == (40, 40, 0)
        assert estimate.too_long == 0 and estimate.requests >= 1
        assert estimate.tokens >= 40 * 8  # at least a token a word
        assert estimate.price_per_million_tokens == pytest.approx(0.02)
        assert estimate.cost == pytest.approx(estimate.tokens / 1e6 * 0.02)
        # 6,000 tokens a minute: the tokens take longer than the requests (and the job below,
        # paced a request of at most 100 tokens at a time, takes a few seconds).
        assert estimate.seconds_at_quota == pytest.approx(estimate.tokens / 6000 * 60)

        # Nothing was made: no job, no provider call, the items untouched.
        assert client.list_jobs().jobs == []
        assert mock.requests == requests
        assert client.get_item(items[0]["id"]).status == ItemStatus.PENDING
        assert client.estimate_job(scope_items([items[0]["id"], items[1]["id"]])).items == 2
        assert client.estimate_job("all").scope_items == 40

        job = embed(client, ctx)
        assert job.completed == 40 and mock.requests > requests
        after = client.estimate_job(scope_context(ctx))
        assert (after.scope_items, after.items, after.up_to_date) == (40, 0, 40)
        assert (after.tokens, after.requests, after.cost, after.seconds_at_quota) == (0, 0, 0, 0)
        edited = [dict(i, content=i["content"] + " (edited)") for i in items[:3]]
        client.upsert_items(ctx, edited)
        assert client.estimate_job(scope_context(ctx)).items == 3
        assert [j.id for j in client.list_jobs().jobs] == [job.id]  # still only the one job

        with pytest.raises(NotFoundError) as info:
            client.estimate_job(scope_context("no-such-context"))
        assert info.value.reason == "no context no-such-context"
        # A reconcile job has no dry run: what it repairs is known only once it ran.
        refused = httpx.post(f"{daemon.url}/v1/jobs?dry_run=true", json={"kind": "reconcile"})
        assert refused.status_code == 422 and "cannot be estimated" in refused.text


def behind_embedqs_back(daemon: Daemon, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Changes the daemon's SQLite database directly, as an operator's script or a restored
    backup might (the vector store is left as it is)."""
    with sqlite3.connect(daemon.workdir / "embedq.db", timeout=10) as db:
        for sql, args in statements:
            db.execute(sql, args)
    db.close()


def test_a_reconcile_job_finds_and_repairs_what_changed_behind_its_back(
    fresh_daemon: Daemon, mock: MockProvider
) -> None:
    with Client(fresh_daemon.url, token="", retry=FAST_RETRY) as client:
        ctx = uid("ctx")
        items = [
            {"id": f"{ctx}-{n}", "content": f"text number {n}", "metadata": {"n": n}}
            for n in range(5)
        ]
        client.upsert_items(ctx, items)
        assert embed(client, ctx).completed == 5

        # Nothing to repair: every point is scanned, every item checked, nothing else.
        accepted = client.create_reconcile_job()
        clean = client.wait_for_job(accepted, timeout=20, poll_interval=0.05)
        assert (clean.kind, clean.state, clean.scope.type) == ("reconcile", "COMPLETED", "all")
        assert (clean.total, clean.completed, clean.done) == (0, 0, 0)
        assert clean.findings == ReconcileFindings(
            points_scanned=5,
            orphans_deleted=0,
            items_checked=5,
            points_missing=0,
            points_stale=0,
            payloads_refreshed=0,
        )
        assert clean.result == clean.findings.model_dump()

        # Behind embedq's back: item 0's row goes (its point is an orphan), item 1's content
        # changes (its point is stale), item 2's metadata changes (its payload is old), and
        # a COMPLETED row appears that has no point.
        def sha(text: str) -> str:
            return hashlib.sha256(text.encode()).hexdigest()

        now = int(time.time() * 1000)
        lost = f"{ctx}-lost"
        behind_embedqs_back(
            fresh_daemon,
            ("DELETE FROM items WHERE id = ?", (f"{ctx}-0",)),
            (
                "UPDATE items SET content = ?, content_hash = ? WHERE id = ?",
                ("a whale song", sha("a whale song"), f"{ctx}-1"),
            ),
            (
                "UPDATE items SET metadata = ?, version = version + 1 WHERE id = ?",
                (json.dumps({"n": 99}), f"{ctx}-2"),
            ),
            (
                "INSERT INTO items (id, context_id, content, content_hash, status, attempts, "
                "embedded_model, embedded_hash, created_at, updated_at, version) "
                "VALUES (?, ?, ?, ?, 'COMPLETED', 1, ?, ?, ?, ?, 1)",
                (lost, ctx, "a lost point", sha("a lost point"), mock.model,
                 sha("a lost point"), now, now),
            ),
        )  # fmt: skip
        # The points still hold the old state: search filters on their payloads.
        assert lost not in client.search(ctx, "a lost point", k=10).item_ids
        assert client.search(ctx, "a whale song", k=1).hits[0].score < 0.99
        assert client.search(ctx, "x", k=10, filter={"n": 99}).hits == []
        assert client.search(ctx, "x", k=10, filter={"n": 2}).item_ids == [f"{ctx}-2"]

        key = uid("reconcile")
        first = client.create_job(None, kind=JobKind.RECONCILE, idempotency_key=key)
        assert client.create_reconcile_job(idempotency_key=key).job_id == first.job_id
        repaired = client.wait_for_job(first, timeout=20, poll_interval=0.05)
        assert (repaired.kind, repaired.state) == (JobKind.RECONCILE, JobState.COMPLETED)
        assert repaired.findings == ReconcileFindings(
            points_scanned=5,
            orphans_deleted=1,
            items_checked=5,
            points_missing=1,
            points_stale=1,
            payloads_refreshed=1,
        )
        # The missing and the stale point were embedded again, as the job's own items.
        assert (repaired.total, repaired.completed, repaired.failed) == (2, 2, 0)
        for item_id in (lost, f"{ctx}-1"):
            record = client.get_item(item_id)
            assert record.status == ItemStatus.COMPLETED and record.is_embedded
        assert client.search(ctx, "a lost point", k=1).hits[0].item_id == lost
        whale = client.search(ctx, "a whale song", k=1).hits[0]
        assert (whale.item_id, whale.score) == (f"{ctx}-1", pytest.approx(1.0, abs=1e-4))
        assert client.search(ctx, "x", k=10, filter={"n": 99}).item_ids == [f"{ctx}-2"]
        assert client.search(ctx, "x", k=10, filter={"n": 2}).hits == []
        assert client.search(ctx, "x", k=10, filter={"n": 0}).hits == []

        # Repaired: a second reconcile finds nothing, over the 5 points of the 5 items.
        again = client.wait_for_job(client.create_reconcile_job(), timeout=20, poll_interval=0.05)
        assert again.findings is not None and again.total == 0
        assert again.findings.model_dump() == {
            "points_scanned": 5,
            "orphans_deleted": 0,
            "items_checked": 5,
            "points_missing": 0,
            "points_stale": 0,
            "payloads_refreshed": 0,
        }
        listed = client.list_jobs(limit=10).jobs
        assert [j.kind for j in listed] == ["reconcile", "reconcile", "reconcile", "embed"]

        # A reconcile job covers every item: another scope is refused, and nothing is made.
        with pytest.raises(BadRequestError) as info:
            client.create_job(scope_context(ctx), kind="reconcile")
        assert (info.value.status, info.value.code) == (422, "invalid")
        assert "a reconcile job covers every item" in info.value.reason
        with pytest.raises(ValueError, match="needs a scope"):
            client.create_job(None)
        assert len(client.list_jobs(limit=10).jobs) == 4
