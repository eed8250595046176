"""The backend's routes.

* ``PUT /contexts/{context_id}/items`` saves items: the rows and embedq's copy change together
  (the rows are committed only once embedq has the content), then one job embeds them.
* ``DELETE /contexts/{context_id}/items/{item_id}`` deletes an item: the row and embedq's
  item (its record and vector) go together (the row's delete is committed only once embedq
  removed the item).
* ``GET /contexts/{context_id}/search?q=&k=`` searches a context.
* ``POST /admin/bulk-regenerate-embeddings`` answers 202 with a job id in milliseconds;
  ``GET /admin/bulk-regenerate-embeddings/{job_id}?wait=SECONDS`` reports (or waits for) it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Query,
    Request,
    Response,
    status,
)
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import embedq
from embedq import AsyncClient, scope_all, scope_context, scope_items

from . import db
from .schemas import (
    DeleteAnswer,
    JobStatus,
    RegenerateAccepted,
    RegenerateRequest,
    SaveAnswer,
    SaveRequest,
    SearchHit,
    SearchResults,
)
from .settings import Settings

log = logging.getLogger("backend")

#: Rows per INSERT statement when saving (the embedq client batches its upserts itself).
SAVE_CHUNK = 1000

router = APIRouter()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application, with its database engine and embedq client opened in its lifespan."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = db.make_engine(settings.database_url)
        await db.create_tables(engine)
        app.state.sessions = db.make_sessions(engine)
        app.state.settings = settings
        async with AsyncClient(settings.embedq_url, token=settings.embedq_token) as client:
            app.state.embedq = client
            yield
        await engine.dispose()

    app = FastAPI(title="example backend with embedq", lifespan=lifespan)
    app.add_exception_handler(embedq.EmbedqError, _embedq_error)  # type: ignore[arg-type]
    app.include_router(router)
    return app


async def _embedq_error(request: Request, exc: embedq.EmbedqError) -> JSONResponse:
    """embedq's errors, as this backend's: its outages are 503s, the rest keep their status."""
    if isinstance(exc, (embedq.UnavailableError, embedq.EmbedqConnectionError)):
        return JSONResponse({"detail": f"embedq is unavailable: {exc}"}, status_code=503)
    if isinstance(exc, embedq.ApiError) and 400 <= exc.status < 500 and exc.status != 401:
        return JSONResponse({"detail": exc.reason, "code": exc.code}, status_code=exc.status)
    log.error("embedq error: %s", exc)
    return JSONResponse({"detail": "embedq failed; see the logs"}, status_code=502)


def _client(request: Request) -> AsyncClient:
    client: AsyncClient = request.app.state.embedq
    return client


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        yield session


Embedq = Annotated[AsyncClient, Depends(_client)]
Session = Annotated[AsyncSession, Depends(_session)]


@router.put("/contexts/{context_id}/items", response_model=SaveAnswer)
async def save_items(
    context_id: str, body: SaveRequest, session: Session, client: Embedq
) -> SaveAnswer:
    """Saves items. The rows are committed only after embedq stored the content (an
    embedq error rolls them back), then one job embeds the saved items; if that job
    cannot be created now, ``job_id`` is null and the next bulk regeneration embeds them."""
    pairs = [(item.id, item.content) for item in body.items]
    for start in range(0, len(pairs), SAVE_CHUNK):
        await db.save_items(session, context_id, pairs[start : start + SAVE_CHUNK])
    counts = await client.upsert_items(context_id, [{"id": i, "content": c} for i, c in pairs])
    await session.commit()
    job_id: str | None = None
    if counts.created or counts.changed:
        try:
            job = await client.create_job(scope_items([i for i, _ in pairs]))
            job_id = job.job_id
        except (embedq.UnavailableError, embedq.EmbedqConnectionError) as e:
            log.warning("items saved, embedding job not created: %s", e)
    return SaveAnswer(
        saved=len(pairs),
        created=counts.created,
        changed=counts.changed,
        unchanged=counts.unchanged,
        job_id=job_id,
    )


@router.delete("/contexts/{context_id}/items/{item_id}", response_model=DeleteAnswer)
async def delete_item(
    context_id: str, item_id: str, session: Session, client: Embedq
) -> DeleteAnswer:
    """Deletes an item's row and removes the item from embedq. The row's delete is committed
    only once embedq removed the item (an embedq error rolls it back and answers 503), so
    the two never disagree; an item embedq did not hold is no error."""
    if not await db.delete_item(session, context_id, item_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no item {item_id} in {context_id}")
    try:
        await client.delete_item(item_id)
        removed = True
    except embedq.NotFoundError:
        removed = False
    await session.commit()
    return DeleteAnswer(deleted=item_id, removed_from_embedq=removed)


@router.get("/contexts/{context_id}/search", response_model=SearchResults)
async def search(
    context_id: str,
    session: Session,
    client: Embedq,
    q: Annotated[str, Query(min_length=1, max_length=8192)],
    k: Annotated[int, Query(ge=1, le=100)] = 5,
) -> SearchResults:
    """The items nearest to ``q``, with the content of the rows (a hit whose row is gone, a
    delete racing the search, is dropped)."""
    answer = await client.search(context_id, q, k=k)
    rows = await db.contents(session, context_id, answer.item_ids)
    hits = [
        SearchHit(id=hit.item_id, score=hit.score, content=rows[hit.item_id])
        for hit in answer.hits
        if hit.item_id in rows
    ]
    return SearchResults(context_id=context_id, query=q, hits=hits)


@router.post(
    "/admin/bulk-regenerate-embeddings",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RegenerateAccepted,
)
async def bulk_regenerate(
    response: Response,
    client: Embedq,
    body: RegenerateRequest | None = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> RegenerateAccepted:
    """Enqueues the regeneration of a context's embeddings (or of every item) and
    answers at once. Items already embedded from the same content are skipped. With an
    ``Idempotency-Key`` header, a repeated request returns the same job."""
    scope = scope_context(body.context_id) if body and body.context_id else scope_all()
    job = await client.create_job(scope, idempotency_key=idempotency_key)
    status_url = f"/admin/bulk-regenerate-embeddings/{job.job_id}"
    response.headers["Location"] = status_url
    return RegenerateAccepted(
        job_id=job.job_id, state=job.state, status_url=status_url, created=job.created
    )


@router.get("/admin/bulk-regenerate-embeddings/{job_id}", response_model=JobStatus)
async def regenerate_status(
    request: Request,
    job_id: str,
    client: Embedq,
    wait: Annotated[float, Query(ge=0)] = 0,
) -> JobStatus:
    """The job's state and counters. ``wait`` (seconds, at most ``max_wait_seconds``)
    holds the answer until the job ends or the time is up; ``finished`` tells which."""
    settings: Settings = request.app.state.settings
    wait = min(wait, settings.max_wait_seconds)
    try:
        if wait > 0:
            job = await client.wait_for_job(job_id, timeout=wait, poll_interval=0.1)
        else:
            job = await client.get_job(job_id)
    except embedq.JobTimeoutError as e:
        job = e.job
    except embedq.BadRequestError as e:
        raise HTTPException(status.HTTP_404_NOT_FOUND, e.reason) from e
    return JobStatus.of(job)
