"""The synchronous client, :class:`Client`. :class:`~embedq.AsyncClient` has the same methods,
as coroutines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from . import _operations as ops
from ._config import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BODY_BYTES, Settings
from ._transport import (
    check_wait,
    connection_error,
    is_transient,
    job_id_of,
    progress_key,
    request_arguments,
)
from .errors import EmbedqError, JobTimeoutError, NotFoundError, error_from_response
from .models import (
    DeadLetterList,
    DeleteAnswer,
    DocumentIngested,
    Estimate,
    Health,
    IntakeAnswer,
    Item,
    ItemRecord,
    JobAccepted,
    JobKind,
    JobList,
    JobScope,
    JobView,
    Readiness,
    RequeueAnswer,
    ScheduleList,
    SearchAnswer,
    SearchFilter,
    UpsertCounts,
)
from .results import DeleteResult
from .retry import RetryPolicy

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """A client of one embedq daemon.

    Args:
        base_url: the daemon's URL; default ``$EMBEDQ_URL``, else ``http://127.0.0.1:8080``.
        token: the admin token, sent as ``Authorization: Bearer``; default
            ``$EMBEDQ_ADMIN_TOKEN``. An empty string sends none.
        timeout: seconds per request (or an ``httpx.Timeout``); default 5 s to connect and
            30 s to read or write.
        retry: retries of safe requests (see :mod:`embedq.retry`); default 3 retries with
            backoff from 0.2 s up to 5 s.
        batch_size: items per upsert request, at most the daemon's 1,000.
        max_body_bytes: the daemon's ``server.max_body_bytes``; upsert batches stay under it.
        http_client: an ``httpx.Client`` to send with (its own settings apply, the client's
            URL, headers and timeout are given per request); closed by :meth:`close` only if
            the client made it.

    Use it as a context manager, or call :meth:`close`, to release its connections.

    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._settings = Settings.resolve(base_url, token, timeout, batch_size, max_body_bytes)
        self._retry = retry if retry is not None else RetryPolicy()
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client()

    @property
    def base_url(self) -> str:
        """The daemon's URL."""
        return self._settings.base_url

    def close(self) -> None:
        """Closes the connections (of an ``http_client`` only if the client made it)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    def _send(self, call: ops.Call[T]) -> T:
        """Sends a call, retrying it while that is safe and useful."""
        arguments = request_arguments(self._settings, call)
        retry = 0
        while True:
            error: EmbedqError
            try:
                response = self._http.request(**arguments)
            except httpx.TransportError as e:
                error = connection_error(e, call.method, arguments["url"])
                if not is_transient(e) or not self._retry.should_retry(call.safe, retry, error):
                    raise error from e
            else:
                if response.status_code in call.ok:
                    return call.parse(response)
                error = error_from_response(response)
                if not self._retry.should_retry(call.safe, retry, error):
                    raise error
            time.sleep(self._retry.delay(retry, error))
            retry += 1

    # --- items ---------------------------------------------------------------------------

    def upsert_items(
        self,
        context_id: str,
        items: Iterable[Item | Mapping[str, Any]] = (),
        *,
        delete: Iterable[str] = (),
    ) -> UpsertCounts:
        """Upserts items (``{"id", "content"}`` mappings, optionally with ``"metadata"``, or
        :class:`Item`) into a context, created when new, and deletes the ``delete`` ids of
        that context; in batches under the daemon's limits; returns the summed counts.

        Changed content makes an item PENDING (a job embeds it); changed metadata alone is
        written into the stored vector's payload and counted ``metadata_changed`` (nothing to
        embed); unchanged content and metadata leave the item as it is. An item without
        ``metadata`` keeps the metadata it has; ``{}`` clears it. Deleted items leave SQL and
        the vector store at once (search forgets them); ids that are not items are counted
        ``not_found``, and an id of another context raises :class:`~embedq.ConflictError`.

        What fits in one request (at most ``batch_size`` items and ``batch_size`` ids, under
        ``max_body_bytes``) is one transaction. Nothing to send sends nothing. An id given
        twice, or both upserted and deleted, raises ``ValueError`` before anything is sent.
        If a batch fails after others were stored, the error's ``partial_counts`` holds what
        was stored; sending everything again is safe.
        """
        normalised = ops.normalise_items(items)
        deletes = ops.normalise_deletes(delete, normalised)
        ops.segment(context_id, "context_id")
        total = UpsertCounts.zero()
        settings = self._settings
        for batch in ops.batches(normalised, settings.batch_size, settings.max_body_bytes, deletes):
            try:
                total = total + self._send(ops.upsert_batch(context_id, batch))
            except EmbedqError as e:
                if total.total or total.total_deletes:  # a batch was stored
                    e.partial_counts = total
                raise
        return total

    def get_item(self, item_id: str) -> ItemRecord:
        """An item's status, attempts, last error, content hash, embedded model, version and
        metadata. Raises :class:`~embedq.NotFoundError` for an unknown item.
        """
        return self._send(ops.get_item(item_id))

    def delete_item(self, item_id: str) -> DeleteAnswer:
        """Deletes one item (``DELETE /v1/items/{id}``): its record and vector go at once, an
        embedding in flight for it is dropped, and a job still holding it counts it
        ``deleted``. Raises :class:`~embedq.NotFoundError` for an unknown item (also when a
        retry follows a first attempt whose answer was lost).
        """
        return self._send(ops.delete_item(item_id))

    def delete_items(self, item_ids: Iterable[str]) -> DeleteResult:
        """Deletes items of any context, one ``DELETE /v1/items/{id}`` each; ids embedq does
        not know are reported as missing, not raised. For many items of one context,
        ``upsert_items(context_id, delete=ids)`` deletes up to ``batch_size`` per request.
        """
        deleted: list[str] = []
        missing: list[str] = []
        jobs_finished = 0
        for item_id in item_ids:
            try:
                answer = self._send(ops.delete_item(item_id))
            except NotFoundError:
                missing.append(item_id)
            else:
                deleted.append(item_id)
                jobs_finished += answer.jobs_finished
        return DeleteResult(
            deleted=tuple(deleted), missing=tuple(missing), jobs_finished=jobs_finished
        )

    def delete_context(self, context_id: str) -> DeleteAnswer:
        """Deletes a context with all its items (``DELETE /v1/contexts/{id}``); a job over
        them ends once nothing of it is left to do. Raises :class:`~embedq.NotFoundError` for
        an unknown context.
        """
        return self._send(ops.delete_context(context_id))

    # --- documents -----------------------------------------------------------------------

    def ingest_document(
        self,
        context_id: str,
        document_id: str,
        data: ops.DocumentData,
        *,
        type: str | None = None,
        content_type: str | None = None,
        chunk_tokens: int | None = None,
        overlap_tokens: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> DocumentIngested:
        """Ingests a document (``POST /v1/contexts/{id}/documents``): ``data``, the file's
        bytes or a file opened in binary mode (read to its end first), a PDF, HTML, Markdown or
        UTF-8 text document, is split into chunks of about ``chunk_tokens`` tokens (the
        provider's tokenizer; neighbours share ``overlap_tokens``; ``None``: the daemon's
        ``documents.chunk_tokens`` and ``documents.overlap_tokens``, 256 and 32 by default),
        each stored in the context (created when new) as the item ``{document_id}#{n}``
        (:func:`~embedq.models.chunk_id`) with metadata: ``document_id``, ``document_type``,
        ``chunk``, ``char_start``, ``char_end``, ``page`` (PDFs), ``heading_path`` (Markdown and
        HTML) and the fields of ``metadata`` (a JSON object for every chunk).

        The bytes decide the type; the declared one, ``type`` (one of
        :class:`~embedq.DocumentType`: ``"pdf"``, ``"html"``, ``"markdown"`` or ``"text"``) or
        else ``content_type`` (the MIME type sent as ``Content-Type``, default
        ``application/octet-stream``: none declared), tells Markdown from plain text, and must
        not contradict the bytes. The chunks replace the document's earlier ones: new and
        changed chunks are embedded by one job (the answer's ``job_id``), chunks that no
        longer exist are deleted with their vectors, unchanged ones cost nothing (``job_id``
        ``None``).

        Raises :class:`~embedq.BadRequestError` for a bad id or an unknown ``type`` (400), a
        document over ``documents.max_bytes`` (413), a ``content_type`` embedq does not read
        (415), and bytes that are not a document of a type embedq reads (binary that is not a
        PDF, text that is not UTF-8) or not of the declared type, a document that cannot be
        read (corrupt, encrypted), holds no text (an image-only PDF) or makes too many chunks,
        or bad settings or metadata (422); and
        :class:`~embedq.ConflictError` when the document's chunks are in another context
        (delete it there first). Nothing is changed then.

        Never retried by the client: a repeat's answer describes the repeat (the chunks a
        first attempt stored are ``unchanged``, with no job), so a blind retry would hide
        whether they are embedded, and after a timeout the daemon is most likely still at
        work. Ingesting the same document again is harmless, though; after an error, ingest
        it again and, to be sure every chunk gets embedded, follow with
        ``create_job(scope_items(answer.item_ids))``, which skips the chunks already up to
        date. A large PDF may need the client's ``timeout`` to be longer.
        """
        return self._send(
            ops.ingest_document(
                context_id,
                document_id,
                data,
                type=type,
                content_type=content_type,
                chunk_tokens=chunk_tokens,
                overlap_tokens=overlap_tokens,
                metadata=metadata,
            )
        )

    def delete_document(self, document_id: str) -> DeleteAnswer:
        """Deletes a document (``DELETE /v1/documents/{id}``): every chunk of it, with their
        vectors, whatever the context; a job still holding them counts them ``deleted``.
        Raises :class:`~embedq.NotFoundError` when the document has no chunks (also when a
        retry follows a first attempt whose answer was lost).
        """
        return self._send(ops.delete_document(document_id))

    # --- jobs ----------------------------------------------------------------------------

    def create_job(
        self,
        scope: JobScope | Mapping[str, Any] | str | None,
        *,
        kind: str | None = None,
        priority: str | None = None,
        tenant: str | None = None,
        idempotency_key: str | None = None,
        **extra_fields: Any,
    ) -> JobAccepted:
        """Creates a job over a scope (see :func:`~embedq.scope_context` and the other
        helpers; ``"all"``, ``"failed"`` and ``"stale_model"`` may be given by name). Answers
        in milliseconds whatever the scope's size; poll it with :meth:`get_job` or
        :meth:`wait_for_job`.

        ``kind`` is one of :class:`~embedq.JobKind`: ``"embed"`` (the daemon's default, which
        needs a scope: ``ValueError`` without one) or ``"reconcile"`` (scope ``None`` or
        :func:`~embedq.scope_all`; see :meth:`create_reconcile_job`).

        ``priority`` is one of :class:`~embedq.Priority`: every daemon takes ``"interactive"``
        work first, then ``"normal"``, then ``"bulk"``; within one priority jobs take turns.
        ``None`` is not sent: the daemon makes a job over at most
        ``planner.interactive_max_items`` (100 by default) item ids interactive and any other
        job normal. An unknown priority raises :class:`~embedq.BadRequestError` (422) and
        makes nothing. :meth:`set_job_priority` changes it later.

        ``tenant`` says whose work the job is (1 to 128 visible ASCII characters, no spaces):
        among jobs of one priority every daemon takes turns by tenant, then by job within a
        tenant, so one tenant's many jobs never starve another's one. ``None`` is not sent: the
        job is a tenant of its own. An invalid tenant raises :class:`~embedq.BadRequestError`
        (422) and makes nothing.

        With an ``idempotency_key`` the same key returns the same job (``created`` false),
        and the request is retried on 503 and connection errors; without one it is never
        retried, since a lost answer could otherwise make two jobs. ``extra_fields`` are
        sent in the body as they are (job options newer daemons take).
        """
        return self._send(
            ops.create_job(scope, kind, priority, tenant, idempotency_key, extra_fields)
        )

    def create_reconcile_job(self, *, idempotency_key: str | None = None) -> JobAccepted:
        """Creates a reconcile job (``{"kind": "reconcile"}``): it compares SQL with the
        vector store page by page, deletes points without an item, refreshes payloads that
        hold an older version or other metadata, and embeds again the COMPLETED items whose
        point is missing or stale (its counters count those). What it found is the finished
        job's :attr:`~embedq.JobView.findings`. ``idempotency_key`` as for :meth:`create_job`.
        """
        return self._send(
            ops.create_job(None, JobKind.RECONCILE.value, None, None, idempotency_key, {})
        )

    def estimate_job(self, scope: JobScope | Mapping[str, Any] | str) -> Estimate:
        """What an embed job over ``scope`` would cost (``POST /v1/jobs?dry_run=true``):
        items to embed and already up to date, tokens as the provider counts them, requests,
        cost and time at the daemon's quota. Makes nothing and calls no provider, so it is
        retried like a read. Raises :class:`~embedq.NotFoundError` for an unknown context or
        items, as :meth:`create_job` would.
        """
        return self._send(ops.estimate_job(scope))

    def get_job(self, job: str | JobAccepted | JobView) -> JobView:
        """A job's state and counters."""
        return self._send(ops.get_job(job_id_of(job)))

    def list_jobs(
        self, state: str | None = None, before: str | None = None, limit: int | None = None
    ) -> JobList:
        """One page of jobs, newest first, optionally in one state (:class:`~embedq.JobState`);
        pass the page's ``next_before`` as ``before`` for the next one. ``limit`` is 1 to
        200 (the daemon's default 50).
        """
        return self._send(ops.list_jobs(state, before, limit))

    def cancel_job(self, job: str | JobAccepted | JobView) -> JobView:
        """Cancels a job: its queued work is dropped, work in flight is finished and counted.
        Raises :class:`~embedq.ConflictError` if the job has already ended.
        """
        return self._send(ops.cancel_job(job_id_of(job)))

    def set_job_priority(self, job: str | JobAccepted | JobView, priority: str) -> JobView:
        """Changes the priority of a job that has not ended (``PATCH /v1/jobs/{id}``) to one
        of :class:`~embedq.Priority` and returns the job with it. Tasks planned from then on
        carry the new priority; tasks already queued keep theirs. Raises
        :class:`~embedq.ConflictError` if the job has already ended,
        :class:`~embedq.NotFoundError` for an unknown job and
        :class:`~embedq.BadRequestError` for an unknown priority.
        """
        return self._send(ops.set_job_priority(job_id_of(job), priority))

    def wait_for_job(
        self,
        job: str | JobAccepted | JobView,
        timeout: float = 300.0,
        poll_interval: float = 0.5,
        on_progress: Callable[[JobView], object] | None = None,
    ) -> JobView:
        """Polls a job until it is COMPLETED, FAILED or CANCELLED and returns it (check its
        ``state``: a FAILED job is returned, not raised).

        ``on_progress`` is called with the job each time its state or counters change
        (first with the state it is in). Raises :class:`~embedq.JobTimeoutError` (with the
        last state seen) when ``timeout`` seconds pass first; the job goes on in the daemon.
        """
        check_wait(timeout, poll_interval)
        job_id = job_id_of(job)
        deadline = time.monotonic() + timeout
        last: tuple[Any, ...] | None = None
        while True:
            view = self.get_job(job_id)
            key = progress_key(view)
            if on_progress is not None and key != last:
                on_progress(view)
            last = key
            if view.is_final:
                return view
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimeoutError(view, timeout)
            time.sleep(min(poll_interval, remaining))

    # --- dead letters --------------------------------------------------------------------

    def dead_letters(self, before: str | None = None, limit: int | None = None) -> DeadLetterList:
        """One page of dead letters, newest first, with the total; ``limit`` is 1 to 500
        (the daemon's default 50). A job's dead letters appear a moment after it ends FAILED
        (the daemon commits the outcomes first, then writes the dead letters to Redis).
        """
        return self._send(ops.dead_letters(before, limit))

    def requeue_dead_letters(
        self,
        *,
        ids: Sequence[str] | None = None,
        job_id: str | None = None,
        all: bool = False,
    ) -> RequeueAnswer:
        """Gives the items of some dead letters fresh attempts in new jobs and removes those
        dead letters: exactly one of ``ids`` (dead-letter ids), ``job_id`` (every item dead
        letter of a job) or ``all=True``. Never retried (each call makes new jobs).
        """
        return self._send(ops.requeue_dead_letters(ids, job_id, all))

    def delete_dead_letter(self, dead_letter_id: str) -> None:
        """Removes one dead letter. Raises :class:`~embedq.NotFoundError` if there is none
        with that id.
        """
        self._send(ops.delete_dead_letter(dead_letter_id))

    # --- schedules -----------------------------------------------------------------------

    def schedules(self, firings: int | None = None) -> ScheduleList:
        """The daemon's schedules (``GET /v1/schedules``): each ``[[schedules]]`` entry of its
        configuration (name, cron expression, what a missed tick does, the job it makes) with
        its next tick and its latest ``firings`` (0 to 100, newest first; ``None``: the
        daemon's default, 10), each with the job it made; and whether this daemon's scheduler
        is the one firing them (one daemon at a time holds the lease). A scheduled job is an
        ordinary job: follow it with :meth:`get_job`. ``firings`` outside 0 to 100 raises
        :class:`~embedq.BadRequestError` (400).
        """
        return self._send(ops.schedules(firings))

    # --- search, control, health ---------------------------------------------------------

    def search(
        self,
        context_id: str,
        query: str,
        k: int = 5,
        *,
        filter: SearchFilter | None = None,
    ) -> SearchAnswer:
        """The ``k`` (1 to 100) items of a context nearest to ``query``, nearest first, with
        their scores, content and metadata, and the model that answered.

        ``filter`` keeps only items whose metadata matches: ``{"tenant": "acme"}``, or
        ``{"year": [2024, 2025]}`` for any of several values; every key must match (see
        :data:`~embedq.models.SearchFilter`). Raises :class:`~embedq.NotFoundError` for an
        unknown context and :class:`~embedq.BadRequestError` for a bad query, ``k`` or filter.
        """
        return self._send(ops.search(context_id, query, k, filter))

    def pause(self) -> IntakeAnswer:
        """Pauses intake: no new jobs or tasks are taken until :meth:`resume`; work in flight
        finishes.
        """
        return self._send(ops.pause())

    def resume(self) -> IntakeAnswer:
        """Resumes intake (also after a pause caused by a bad key or an exhausted quota)."""
        return self._send(ops.resume())

    def ready(self) -> Readiness:
        """Readiness (``GET /readyz``): ``ready`` and each backend's check. A daemon that is
        not ready answers too (with the failing checks' errors); nothing is raised for it.
        """
        return self._send(ops.ready())

    def health(self) -> Health:
        """Liveness (``GET /healthz``)."""
        return self._send(ops.health())
