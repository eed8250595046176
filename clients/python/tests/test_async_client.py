"""The asynchronous client against a real daemon: the same surface as the synchronous one
(checked), every method, and an error of each class."""

from __future__ import annotations

import asyncio
import inspect
import io

import pytest
from conftest import ADMIN_TOKEN, FAST_RETRY, adead_letters_of, afirings_of, uid

from embedq import (
    AsyncClient,
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
    ScheduledJobType,
    UnauthorizedError,
    UnavailableError,
    scope_all,
    scope_context,
    scope_failed,
    scope_items,
)
from embedq.testing import Daemon, free_port

pytestmark = pytest.mark.asyncio


def make_items(n: int, prefix: str) -> list[dict[str, str]]:
    return [{"id": f"{prefix}-{i:04d}", "content": f"async passage {prefix} {i}"} for i in range(n)]


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") and name not in ("close", "aclose")
    }


async def test_same_surface_as_the_sync_client() -> None:
    sync, asynchronous = public_methods(Client), public_methods(AsyncClient)
    assert sync.keys() == asynchronous.keys()
    for name, signature in sync.items():
        assert list(signature.parameters) == list(asynchronous[name].parameters), name
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name


async def test_health_ready_upsert_job_item_search(aclient: AsyncClient) -> None:
    assert (await aclient.health()).status == "ok"
    assert (await aclient.ready()).ready is True
    ctx = uid("actx")
    items = make_items(1200, ctx)
    counts = await aclient.upsert_items(ctx, items)
    assert (counts.created, counts.changed, counts.unchanged) == (1200, 0, 0)

    progress: list[JobView] = []

    async def report(job: JobView) -> None:
        progress.append(job)

    accepted = await aclient.create_job(scope_context(ctx), idempotency_key=uid("key"))
    job = await aclient.wait_for_job(accepted, timeout=30, poll_interval=0.05, on_progress=report)
    assert job.state == JobState.COMPLETED
    assert (job.total, job.completed, job.failed, job.skipped) == (1200, 1200, 0, 0)
    assert progress and progress[-1].done == 1200
    assert (await aclient.get_job(accepted.job_id)).state == JobState.COMPLETED

    item = await aclient.get_item(items[7]["id"])
    assert item.status == ItemStatus.COMPLETED and item.is_embedded

    answer = await aclient.search(ctx, items[7]["content"], k=2)
    assert answer.item_ids[0] == items[7]["id"]
    assert answer.hits[0].score == pytest.approx(1.0, abs=1e-4)

    listed = await aclient.list_jobs(state="completed", limit=200)
    assert accepted.job_id in {j.id for j in listed.jobs}

    # Concurrent calls share the client.
    records = await asyncio.gather(*(aclient.get_item(i["id"]) for i in items[:20]))
    assert {r.status for r in records} == {ItemStatus.COMPLETED}


async def pause_and_settle(client: AsyncClient) -> None:
    """Pauses intake and waits until both intakes say so (a read already blocking when the
    pause came may still deliver one batch)."""
    assert (await client.pause()).intake == "pausing"
    for _ in range(100):
        checks = (await client.ready()).checks
        if checks.job_intake.details.get("paused") and checks.task_intake.details.get("paused"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("intake did not pause")


async def test_pause_cancel_resume(aclient: AsyncClient) -> None:
    await pause_and_settle(aclient)
    try:
        ctx = uid("actx")
        await aclient.upsert_items(ctx, make_items(2, ctx))
        job = await aclient.create_job(scope_items([f"{ctx}-0000"]))
        with pytest.raises(JobTimeoutError) as info:
            await aclient.wait_for_job(job, timeout=0.2, poll_interval=0.05)
        assert info.value.job.state == JobState.QUEUED
        cancelled = await aclient.cancel_job(job)
        assert cancelled.state == JobState.CANCELLED
        with pytest.raises(ConflictError):
            await aclient.cancel_job(job)
    finally:
        assert (await aclient.resume()).intake == "resuming"


async def test_priorities(aclient: AsyncClient) -> None:
    await pause_and_settle(aclient)
    try:
        ctx = uid("actx")
        await aclient.upsert_items(ctx, make_items(2, ctx))
        job = await aclient.create_job(scope_context(ctx), priority=Priority.BULK)
        view = await aclient.get_job(job)
        assert (view.state, view.priority) == (JobState.QUEUED, "bulk")
        changed = await aclient.set_job_priority(job, "interactive")
        assert (changed.state, changed.priority) == (JobState.QUEUED, Priority.INTERACTIVE)
        with pytest.raises(BadRequestError) as info:
            await aclient.set_job_priority(job, "urgent")
        assert (info.value.status, info.value.code) == (422, "invalid")
        with pytest.raises(BadRequestError):
            await aclient.create_job(scope_context(ctx), priority="urgent")
        assert view.tenant is None
        acme = await aclient.create_job(scope_context(ctx), tenant="acme")
        assert (await aclient.get_job(acme)).tenant == "acme"
        with pytest.raises(BadRequestError) as info:
            await aclient.create_job(scope_context(ctx), tenant="has space")
        assert (info.value.status, info.value.code) == (422, "invalid")
        assert (await aclient.list_jobs(limit=1)).jobs[0].id == acme.job_id
        assert (await aclient.cancel_job(acme)).tenant == "acme"
        assert (await aclient.cancel_job(job)).priority == "interactive"
        with pytest.raises(ConflictError):
            await aclient.set_job_priority(job, "normal")
    finally:
        assert (await aclient.resume()).intake == "resuming"


async def test_dead_letters(aclient: AsyncClient) -> None:
    ctx = uid("actx")
    await aclient.upsert_items(
        ctx, [{"id": f"{ctx}-ok", "content": "fine"}, {"id": f"{ctx}-bad", "content": "POISON"}]
    )
    job = await aclient.wait_for_job(
        await aclient.create_job(scope_context(ctx)), timeout=20, poll_interval=0.05
    )
    assert (job.state, job.completed, job.failed) == (JobState.FAILED, 1, 1)
    letters = await adead_letters_of(aclient, job.id, 1)
    assert [d.item_id for d in letters] == [f"{ctx}-bad"]
    requeued = await aclient.requeue_dead_letters(ids=[letters[0].id])
    assert (requeued.requeued, requeued.removed) == (1, 1)
    again = await aclient.wait_for_job(requeued.jobs[0], timeout=20, poll_interval=0.05)
    assert again.failed == 1
    for letter in await adead_letters_of(aclient, again.id, 1):
        await aclient.delete_dead_letter(letter.id)
    remaining = (await aclient.dead_letters(limit=500)).dead_letters
    assert all(d.job_id != again.id for d in remaining)


async def test_errors(aclient: AsyncClient) -> None:
    with pytest.raises(NotFoundError) as missing:
        await aclient.get_item(uid("nope"))
    assert missing.value.code == "not_found"
    with pytest.raises(BadRequestError) as bad:
        await aclient.search(uid("nope"), " ", k=3)
    assert (bad.value.status, bad.value.code) == (422, "invalid")
    ctx = uid("actx")
    await aclient.upsert_items(ctx, [{"id": f"{ctx}-x", "content": "x"}])
    with pytest.raises(ConflictError):
        await aclient.upsert_items(uid("other"), [{"id": f"{ctx}-x", "content": "x"}])
    result = await aclient.delete_items([f"{ctx}-x"])
    assert (result.deleted, result.missing) == ((f"{ctx}-x",), ())
    with pytest.raises(NotFoundError):
        await aclient.get_item(f"{ctx}-x")
    with pytest.raises(NotFoundError):
        await aclient.delete_item(f"{ctx}-x")
    with pytest.raises(ValueError, match="needs a scope"):
        await aclient.create_job(None)


async def test_schedules(aclient: AsyncClient) -> None:
    answer = await aclient.schedules(firings=5)
    assert answer.schedules == []
    assert answer.scheduler.active is False and answer.scheduler.fence is None
    with pytest.raises(BadRequestError) as bad:
        await aclient.schedules(firings=101)
    assert (bad.value.status, bad.value.code) == (400, "bad_request")


async def test_a_schedules_firing_is_a_job(scheduled_daemon: Daemon) -> None:
    async with AsyncClient(scheduled_daemon.url, token="", retry=FAST_RETRY) as c:
        every = await afirings_of(c, "every-second", 1)
        assert every.missed == MissedTicks.CATCH_UP_ONCE
        assert every.job.type == ScheduledJobType.EMBED and every.job.scope == scope_failed()
        firing = every.firings[0]
        assert firing.job_id is not None
        job = await c.get_job(firing.job_id)
        assert job.kind == JobKind.EMBED and job.scope == scope_failed()
        assert job.idempotency_key == f"schedule:every-second:{firing.tick_ms}"
        assert (await c.schedules()).scheduler.active is True


async def test_documents(aclient: AsyncClient) -> None:
    ctx, doc = uid("actx"), uid("aguide")
    text = (
        "# Guide\n\n## Install\n\nDownload the archive from the releases page and unpack it. "
        "Run the installer and follow the prompts on the screen.\n\n## Use\n\nStart the "
        "daemon with the serve command, point a client at it, and upsert items to embed.\n"
    )
    answer = await aclient.ingest_document(
        ctx,
        doc,
        io.BytesIO(text.encode()),
        content_type="text/markdown",
        chunk_tokens=40,
        overlap_tokens=0,
        metadata={"source": "async"},
    )
    assert (answer.type, answer.chunks, answer.created, answer.unchanged) == (
        DocumentType.MARKDOWN,
        2,
        2,
        0,
    )
    assert answer.job_id is not None
    record = await aclient.get_item(answer.item_ids[0])
    assert record.metadata["document_id"] == doc and record.metadata["source"] == "async"
    job = await aclient.wait_for_job(answer.job_id, timeout=20, poll_interval=0.05)
    assert (job.state, job.completed) == (JobState.COMPLETED, 2)

    again = await aclient.ingest_document(
        ctx,
        doc,
        text.encode(),
        type="markdown",
        chunk_tokens=40,
        overlap_tokens=0,
        metadata={"source": "async"},
    )
    assert (again.unchanged, again.to_embed, again.job_id) == (2, 0, None)
    with pytest.raises(BadRequestError) as refused:
        await aclient.ingest_document(
            ctx, uid("img"), b"\x89PNG\r\n\x1a\n" + bytes(32), content_type="image/png"
        )
    assert (refused.value.status, refused.value.code) == (415, "unsupported_media_type")

    gone = await aclient.delete_document(doc)
    assert (gone.deleted, gone.jobs_finished) == (2, 0)
    with pytest.raises(NotFoundError):
        await aclient.delete_document(doc)
    with pytest.raises(NotFoundError):
        await aclient.get_item(answer.item_ids[0])


async def test_unauthorized_and_token(auth_daemon: Daemon) -> None:
    async with AsyncClient(auth_daemon.url, token="") as anonymous:
        with pytest.raises(UnauthorizedError) as info:
            await anonymous.get_item("a")
        assert info.value.status == 401
    async with AsyncClient(auth_daemon.url, token=ADMIN_TOKEN) as admin:
        with pytest.raises(NotFoundError):  # through the token check, then a real 404
            await admin.get_item(uid("a"))


async def test_unavailable_and_connection_errors(redis_down_daemon: Daemon) -> None:
    async with AsyncClient(redis_down_daemon.url, token="", retry=FAST_RETRY) as c:
        ctx = uid("actx")
        await c.upsert_items(ctx, make_items(1, ctx))
        with pytest.raises(UnavailableError) as info:
            await c.create_job(scope_context(ctx), idempotency_key=uid("key"))
        assert info.value.code == "unavailable"
    async with AsyncClient(f"http://127.0.0.1:{free_port()}", retry=FAST_RETRY) as gone:
        with pytest.raises(EmbedqConnectionError):
            await gone.health()


async def test_deletes_metadata_filter_dry_run_and_reconcile(fresh_daemon: Daemon) -> None:
    async with AsyncClient(fresh_daemon.url, token="", retry=FAST_RETRY) as c:
        ctx = uid("actx")
        items = [
            {"id": f"{ctx}-{n}", "content": f"async passage {n}", "metadata": {"tenant": t}}
            for n, t in enumerate(["acme", "acme", "globex", "initech"])
        ]
        counts = await c.upsert_items(ctx, items)
        assert (counts.created, counts.metadata_changed) == (4, 0)
        estimate = await c.estimate_job(scope_context(ctx))
        assert (estimate.scope_items, estimate.items, estimate.up_to_date) == (4, 4, 0)
        assert estimate.tokens > 0 and (await c.list_jobs()).jobs == []

        job = await c.wait_for_job(
            await c.create_job(scope_context(ctx), kind=JobKind.EMBED), timeout=20
        )
        assert (job.kind, job.state, job.completed, job.result) == ("embed", "COMPLETED", 4, None)
        assert (await c.estimate_job(scope_all())).up_to_date == 4

        acme = await c.search(ctx, "async passage", k=10, filter={"tenant": "acme"})
        assert sorted(acme.item_ids) == [f"{ctx}-0", f"{ctx}-1"]
        assert all(hit.metadata == {"tenant": "acme"} for hit in acme.hits)

        # One request: a relabel (metadata alone, nothing to embed) and a delete.
        both = await c.upsert_items(
            ctx,
            [{"id": f"{ctx}-1", "content": "async passage 1", "metadata": {"tenant": "globex"}}],
            delete=[f"{ctx}-0", uid("unknown")],
        )
        assert (both.metadata_changed, both.deleted, both.not_found, both.to_embed) == (1, 1, 1, 0)
        record = await c.get_item(f"{ctx}-1")
        assert (record.metadata, record.version, record.is_embedded) == (
            {"tenant": "globex"},
            2,
            True,
        )
        acme = await c.search(ctx, "async passage", k=10, filter={"tenant": "acme"})
        assert acme.hits == []
        globex = await c.search(ctx, "async passage", k=10, filter={"tenant": ["globex"]})
        assert sorted(globex.item_ids) == [f"{ctx}-1", f"{ctx}-2"]

        one = await c.delete_item(f"{ctx}-3")
        assert (one.deleted, one.jobs_finished) == (1, 0)
        reconciled = await c.wait_for_job(await c.create_reconcile_job(), timeout=20)
        assert reconciled.kind == JobKind.RECONCILE and reconciled.findings is not None
        assert reconciled.findings.points_scanned == reconciled.findings.items_checked == 2
        assert reconciled.findings.orphans_deleted == reconciled.findings.points_missing == 0
        assert reconciled.findings.payloads_refreshed == 0  # the relabel reached the point

        gone = await c.delete_context(ctx)
        assert (gone.deleted, gone.jobs_finished) == (2, 0)
        with pytest.raises(NotFoundError):
            await c.search(ctx, "async passage")
        with pytest.raises(NotFoundError):
            await c.estimate_job(scope_context(ctx))
