"""The daemon's requests and answers, as pydantic models.

Each model lists the fields of one schema of the daemon's OpenAPI document (``GET
/openapi.json``), under the same names; :data:`SCHEMA_MODELS` and :data:`SCHEMA_ENUMS` at the
end of this module say which class stands for which schema, and ``embedq.contract`` compares
them with a live daemon's document in both directions. These classes are the one place that
lists fields: adding a field the daemon gained is one line in the model (optional, with a
default, for a field the daemon may leave out).

Answers (:class:`Answer` subclasses) keep fields this client does not know yet in
``model_extra`` instead of failing, so a newer daemon never breaks an older client; states,
statuses and priorities are plain strings for the same reason (compare them with
:class:`JobState`, :class:`ItemStatus` and :class:`Priority`, whose members are strings).
Requests (:class:`Body` subclasses) refuse unknown fields, except :class:`CreateJobRequest`,
which passes new job options through.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import Any, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "FINAL_JOB_STATES",
    "REQUEST_MODELS",
    "SCHEDULED_JOB_FIELDS",
    "SCHEMA_ENUMS",
    "SCHEMA_MODELS",
    "SCOPE_FIELDS",
    "Answer",
    "Body",
    "CreateJobRequest",
    "DeadLetter",
    "DeadLetterList",
    "DeleteAnswer",
    "DocumentIngested",
    "DocumentType",
    "ErrorBody",
    "ErrorCode",
    "ErrorDetail",
    "Estimate",
    "FilterValue",
    "Health",
    "HealthStatus",
    "Hit",
    "IntakeAnswer",
    "IntakeVerb",
    "Item",
    "ItemRecord",
    "ItemStatus",
    "JobAccepted",
    "JobKind",
    "JobList",
    "JobRecord",
    "JobScope",
    "JobState",
    "JobView",
    "MissedTicks",
    "Priority",
    "Readiness",
    "ReadinessCheck",
    "ReadinessChecks",
    "ReconcileFindings",
    "RequeueAnswer",
    "RequeueRequest",
    "ScheduleFiring",
    "ScheduleList",
    "ScheduleView",
    "ScheduledJob",
    "ScheduledJobType",
    "SchedulerFigures",
    "ScopeType",
    "SearchAnswer",
    "SearchFilter",
    "SearchRequest",
    "UpdateJobRequest",
    "UpsertCounts",
    "UpsertRequest",
    "chunk_id",
    "scope_all",
    "scope_context",
    "scope_failed",
    "scope_items",
    "scope_stale_model",
]


class _TextEnum(str, Enum):
    """A string enum whose members print as their value."""

    def __str__(self) -> str:
        return str(self.value)


class JobState(_TextEnum):
    """A job's states. ``COMPLETED``, ``FAILED`` and ``CANCELLED`` are final."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


#: The states a job never leaves.
FINAL_JOB_STATES: frozenset[str] = frozenset(
    {JobState.COMPLETED.value, JobState.FAILED.value, JobState.CANCELLED.value}
)


class ItemStatus(_TextEnum):
    """An item's statuses: changed content makes an item ``PENDING`` until it is embedded."""

    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class ScopeType(_TextEnum):
    """The kinds of job scope (the ``type`` of :class:`JobScope`)."""

    CONTEXT = "context"
    ITEMS = "items"
    ALL = "all"
    FAILED = "failed"
    STALE_MODEL = "stale_model"


class JobKind(_TextEnum):
    """What a job does: ``embed`` the items of its scope, or ``reconcile`` SQL with the vector
    store (find and repair points that are missing, stale or orphaned).
    """

    EMBED = "embed"
    RECONCILE = "reconcile"


class Priority(_TextEnum):
    """A job's priority: which work every daemon takes first. ``INTERACTIVE`` work (a few
    items someone waits for) goes before ``NORMAL``, ``NORMAL`` before ``BULK`` (large
    regenerations); within one priority jobs take turns.
    """

    INTERACTIVE = "interactive"
    NORMAL = "normal"
    BULK = "bulk"


class MissedTicks(_TextEnum):
    """What a schedule does with ticks missed while no daemon could fire them (its
    ``missed``): ``CATCH_UP_ONCE`` fires the latest of them once, on start; ``SKIP`` goes on
    from the next tick.
    """

    CATCH_UP_ONCE = "catch_up_once"
    SKIP = "skip"


class ScheduledJobType(_TextEnum):
    """What a schedule does at each tick (the ``type`` of :class:`ScheduledJob`): an
    ``EMBED`` job of a scope, a ``RECONCILE`` job, or ``PURGE_DEAD_LETTERS`` (no job: the
    firing's ``result`` says how many dead letters went).
    """

    EMBED = "embed"
    RECONCILE = "reconcile"
    PURGE_DEAD_LETTERS = "purge_dead_letters"


class DocumentType(_TextEnum):
    """The types of document :meth:`Client.ingest_document` reads (schema ``DocumentKind``;
    the ``type`` of :class:`DocumentIngested`, and the ``document_type`` of each chunk's
    metadata). The daemon tells them from the bytes: ``PDF`` from ``%PDF-``, ``HTML`` from a
    doctype or an ``<html>``/``<head>``/``<body>`` tag; UTF-8 text is ``MARKDOWN`` when
    declared so or when it has Markdown's marks (headings, fences, lists, links), else
    ``TEXT``.
    """

    PDF = "pdf"
    HTML = "html"
    MARKDOWN = "markdown"
    TEXT = "text"


class IntakeVerb(_TextEnum):
    """What :meth:`Client.pause` and :meth:`Client.resume` set off."""

    PAUSING = "pausing"
    RESUMING = "resuming"


class HealthStatus(_TextEnum):
    """The liveness answer's status."""

    OK = "ok"


class ErrorCode(_TextEnum):
    """The daemon's error codes (:attr:`ApiError.code`)."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    TOO_LARGE = "too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    INVALID = "invalid"
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"


class Answer(BaseModel):
    """Base of the daemon's answers: immutable; unknown fields are kept in ``model_extra``."""

    model_config = ConfigDict(extra="allow", frozen=True)


class Body(BaseModel):
    """Base of request bodies: immutable; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> dict[str, Any]:
        """The body as sent: fields left unset (``None``) are not sent."""
        return self.model_dump(mode="json", exclude_none=True)


# --- items -------------------------------------------------------------------------------


class Item(Body):
    """One item to upsert: the producer's own id, its text and, optionally, its metadata
    (schema ``RawItem``).

    ``metadata`` is the item's own fields, a JSON object (at most the daemon's
    ``limits.max_metadata_bytes``, 4 KiB by default, as compact JSON): stored with the item,
    returned by :meth:`Client.get_item` and in search hits, and filterable in
    :meth:`Client.search`. ``None`` (the default) is not sent and keeps the metadata the item
    has; ``{}`` clears it. A change of metadata alone is counted in
    :attr:`UpsertCounts.metadata_changed` and embeds nothing again.
    """

    id: str
    content: str
    metadata: dict[str, Any] | None = None


class UpsertRequest(Body):
    """The body of ``POST /v1/contexts/{id}/items`` (schema ``UpsertBody``): items to upsert
    and ids of the context's items to delete, in one transaction (either may be empty, not
    both).
    """

    items: list[Item] = Field(default_factory=list)
    #: Ids of items of the context to delete; unknown ids are counted in ``not_found``.
    delete: list[str] = Field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The body as sent: an empty list is left out (so that a plain upsert is the body
        daemons without deletes take too).
        """
        return {key: value for key, value in super().to_json().items() if value != []}


class UpsertCounts(Answer):
    """What an upsert did, item by item: each item sent is counted once in ``created``,
    ``changed`` (new content: now ``PENDING``), ``metadata_changed`` (the same content, new
    metadata: written into the stored vector's payload, nothing embedded again) or
    ``unchanged``; each id of the delete list once in ``deleted`` or ``not_found``. Counts
    add up with ``+``.
    """

    created: int
    changed: int
    metadata_changed: int
    unchanged: int
    #: Ids of the delete list that were items (now gone, with their vectors).
    deleted: int
    #: Ids of the delete list that were not items.
    not_found: int

    def __add__(self, other: UpsertCounts) -> UpsertCounts:
        return UpsertCounts(
            created=self.created + other.created,
            changed=self.changed + other.changed,
            metadata_changed=self.metadata_changed + other.metadata_changed,
            unchanged=self.unchanged + other.unchanged,
            deleted=self.deleted + other.deleted,
            not_found=self.not_found + other.not_found,
        )

    @classmethod
    def zero(cls) -> UpsertCounts:
        """Counts of nothing (the start of a sum)."""
        return cls(created=0, changed=0, metadata_changed=0, unchanged=0, deleted=0, not_found=0)

    @property
    def total(self) -> int:
        """Items sent to upsert (``created + changed + metadata_changed + unchanged``)."""
        return self.created + self.changed + self.metadata_changed + self.unchanged

    @property
    def total_deletes(self) -> int:
        """Ids sent to delete (``deleted + not_found``)."""
        return self.deleted + self.not_found

    @property
    def to_embed(self) -> int:
        """Items a job has to embed now (``created + changed``)."""
        return self.created + self.changed


class ItemRecord(Answer):
    """An item's state as ``GET /v1/items/{id}`` shows it (without its content). Times are
    milliseconds since the Unix epoch.
    """

    id: str
    context_id: str
    #: One of :class:`ItemStatus`.
    status: str
    #: Attempts of the current content so far.
    attempts: int
    #: Why the last attempt failed.
    last_error: str | None = None
    #: Hex SHA-256 of the current content.
    content_hash: str
    #: The model of the stored vector, if any.
    embedded_model: str | None = None
    #: The content hash the stored vector was made from.
    embedded_hash: str | None = None
    #: Raised by every change of the item's content or metadata (and by its deletion: an id
    #: upserted again after a delete continues from there).
    version: int
    #: The item's metadata as stored (canonical: keys sorted); ``{}`` when it has none.
    metadata: dict[str, Any]
    created_at: int
    updated_at: int

    @property
    def is_embedded(self) -> bool:
        """True when the stored vector is of the current content."""
        return self.status == ItemStatus.COMPLETED and self.embedded_hash == self.content_hash


# --- jobs --------------------------------------------------------------------------------

#: The fields each kind of scope takes besides ``type``.
SCOPE_FIELDS: Mapping[str, frozenset[str]] = {
    ScopeType.CONTEXT.value: frozenset({"context_id"}),
    ScopeType.ITEMS.value: frozenset({"item_ids"}),
    ScopeType.ALL.value: frozenset(),
    ScopeType.FAILED.value: frozenset(),
    ScopeType.STALE_MODEL.value: frozenset(),
}


class JobScope(Answer):
    """Which items a job covers. Build one with :func:`scope_context`, :func:`scope_items`,
    :func:`scope_all`, :func:`scope_failed` or :func:`scope_stale_model`.

    One class for every kind (``type`` says which), so that a kind a newer daemon adds is read
    without error; :data:`SCOPE_FIELDS` says which fields each kind takes.
    """

    #: One of :class:`ScopeType`.
    type: str
    context_id: str | None = None
    item_ids: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        """The scope as sent: ``type`` and the fields that are set."""
        return self.model_dump(mode="json", exclude_none=True)


def scope_context(context_id: str) -> JobScope:
    """Every item of one context."""
    return JobScope(type=ScopeType.CONTEXT.value, context_id=context_id)


def scope_items(item_ids: Iterable[str]) -> JobScope:
    """An explicit list of items (at most ``limits.max_job_item_ids``, 10,000 by default)."""
    ids = list(item_ids)
    if not ids:
        raise ValueError("scope_items needs at least one item id")
    return JobScope(type=ScopeType.ITEMS.value, item_ids=ids)


def scope_all() -> JobScope:
    """Every item of every context."""
    return JobScope(type=ScopeType.ALL.value)


def scope_failed() -> JobScope:
    """Items whose last attempt ended FAILED (they get fresh attempts)."""
    return JobScope(type=ScopeType.FAILED.value)


def scope_stale_model() -> JobScope:
    """Items never embedded, or embedded with a model other than the configured one."""
    return JobScope(type=ScopeType.STALE_MODEL.value)


class CreateJobRequest(Body):
    """The body of ``POST /v1/jobs`` (schema ``CreateJobBody``; also of its dry run,
    ``?dry_run=true``). Fields this client does not know yet (new job options) are passed
    through as given.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    #: Required for an ``embed`` job; a ``reconcile`` job covers every item (``None``: not
    #: sent, the daemon's default ``{"type": "all"}``).
    scope: JobScope | None = None
    #: One of :class:`JobKind`; ``None`` is not sent, and the daemon's default is ``embed``.
    kind: str | None = None
    #: One of :class:`Priority`; ``None`` is not sent, and the daemon makes a job over at most
    #: ``planner.interactive_max_items`` (100 by default) item ids ``interactive`` and any
    #: other job ``normal``.
    priority: str | None = None
    #: Whose work it is: 1 to 128 visible ASCII characters (no spaces); among jobs of one
    #: priority the daemon takes turns by tenant, then by job within a tenant. ``None`` is not
    #: sent, and the job is a tenant of its own.
    tenant: str | None = None


class UpdateJobRequest(Body):
    """The body of ``PATCH /v1/jobs/{id}`` (schema ``UpdateJobBody``): what may change on a
    job that has not ended.
    """

    #: The job's new priority, one of :class:`Priority`: tasks planned from now on (and their
    #: retries) carry it; tasks already queued keep the one they had.
    priority: str


class Estimate(Answer):
    """What an embed job over a scope would cost, answered by a dry run
    (``POST /v1/jobs?dry_run=true``, :meth:`Client.estimate_job`); nothing was made and the
    provider was not called.
    """

    #: The model the items would be embedded with.
    model: str
    #: Items of the scope.
    scope_items: int
    #: Items that would be embedded (not up to date).
    items: int
    #: Items already embedded from their content with this model (a job would skip them).
    up_to_date: int
    #: Items over the provider's per-input token limit, which would fail.
    too_long: int
    #: Tokens the items would send, as the provider's tokenizer counts them.
    tokens: int
    #: Requests they would pack into, within the provider's per-request limits.
    requests: int
    #: The daemon's ``embedding.price_per_million_tokens``.
    price_per_million_tokens: float
    #: ``tokens / 1,000,000 × price_per_million_tokens``.
    cost: float
    #: Seconds the requests and tokens take at the daemon's ``rate_limit`` quota.
    seconds_at_quota: float


class ReconcileFindings(Answer):
    """What a reconcile job found and repaired (its :attr:`JobRecord.result`; the document
    leaves that object open, so this model is not checked against a schema).
    """

    #: Points of the vector store compared with SQL.
    points_scanned: int
    #: Points without an item (or of another context): deleted.
    orphans_deleted: int
    #: COMPLETED items compared with their points.
    items_checked: int
    #: COMPLETED items without a point: embedded again (counted in the job's counters).
    points_missing: int
    #: COMPLETED items whose point holds another content hash, model, dimension or
    #: generation: embedded again (counted in the job's counters).
    points_stale: int
    #: Points whose payload held an older version or other metadata: refreshed, nothing
    #: embedded.
    payloads_refreshed: int


class JobAccepted(Answer):
    """A job was recorded and enqueued (or an idempotency key matched an existing one)."""

    job_id: str
    #: Where to poll the job's progress (a path on the daemon).
    status_url: str
    #: One of :class:`JobState`.
    state: str
    #: False when an ``Idempotency-Key`` matched an existing job.
    created: bool


class JobRecord(Answer):
    """A job with its counters (times in milliseconds since the Unix epoch)."""

    id: str
    #: What the job does: one of :class:`JobKind`.
    kind: str
    scope: JobScope
    #: The embedding model the job uses.
    model: str
    #: One of :class:`JobState`.
    state: str
    #: Which work every daemon takes first: one of :class:`Priority`.
    priority: str
    #: Whose work it is: among jobs of one priority the daemon takes turns by tenant, then by
    #: job within a tenant; ``None`` when the job has none (it is a tenant of its own).
    tenant: str | None = None
    #: Items in the scope (final once ``planned`` is true).
    total: int
    #: Items embedded by this job.
    completed: int
    #: Items that ended FAILED (each with its reason, in the item and the dead letters).
    failed: int
    #: Items already up to date.
    skipped: int
    #: Items deleted before the job reached them. Once the job ends,
    #: ``completed + failed + skipped + deleted == total``.
    deleted: int
    #: Tokens the provider billed for the job's requests so far (its own count when it gives
    #: one), every request paid for included, retried ones too.
    tokens: int
    #: Where planning stands (internal).
    planning_cursor: str | None = None
    planned_at: int | None = None
    idempotency_key: str | None = None
    #: Why the job failed as a whole, if it did.
    error: str | None = None
    #: What the job found and did beyond its counters: a reconcile job's findings (see
    #: :attr:`findings`); ``None`` for an embed job.
    result: dict[str, Any] | None = None
    created_at: int
    updated_at: int
    started_at: int | None = None
    finished_at: int | None = None

    @property
    def findings(self) -> ReconcileFindings | None:
        """A reconcile job's :attr:`result` as :class:`ReconcileFindings` (``None`` for other
        jobs, and before the first page is compared).
        """
        if self.kind != JobKind.RECONCILE or self.result is None:
            return None
        return ReconcileFindings.model_validate(self.result)


class JobView(JobRecord):
    """A job as ``GET /v1/jobs/{id}`` shows it: the record, whether planning is over, and how
    many items have a final outcome.
    """

    #: True once every item of the scope is planned (the total is final).
    planned: bool
    #: Items with a final outcome so far (``completed + failed + skipped + deleted``).
    done: int
    #: What :attr:`tokens` cost at the daemon's ``embedding.price_per_million_tokens`` (0 when
    #: no price is set).
    cost: float

    @property
    def is_final(self) -> bool:
        """True once the job is COMPLETED, FAILED or CANCELLED."""
        return self.state in FINAL_JOB_STATES

    @property
    def progress(self) -> float | None:
        """Fraction of the items done (0 to 1), or ``None`` while the total is not known."""
        if not self.planned and self.total == 0:
            return None
        return 1.0 if self.total == 0 else min(1.0, self.done / self.total)


class JobList(Answer):
    """One page of jobs, newest first."""

    jobs: list[JobView]
    #: Pass as ``before`` for the next page; ``None`` on the last page.
    next_before: str | None = None


class DeleteAnswer(Answer):
    """What ``DELETE /v1/items/{id}``, ``DELETE /v1/contexts/{id}`` or ``DELETE
    /v1/documents/{id}`` did (schema ``Deleted``).
    """

    #: Items deleted (their records and vectors are gone).
    deleted: int
    #: Jobs that ended because their last open items were deleted.
    jobs_finished: int


# --- documents ---------------------------------------------------------------------------


def chunk_id(document_id: str, n: int) -> str:
    """The item id of a document's chunk ``n`` (from 0): ``{document_id}#{n}``."""
    return f"{document_id}#{n}"


class DocumentIngested(Answer):
    """What ``POST /v1/contexts/{id}/documents`` (:meth:`Client.ingest_document`) did.

    The document's chunks are the items ``{document_id}#0`` to ``{document_id}#{chunks-1}``
    (:attr:`item_ids`); each chunk is counted once in ``created``, ``changed`` (new content:
    embedded by ``job_id``), ``metadata_changed`` (the same text, new metadata: written into
    the stored vector's payload) or ``unchanged``, and the chunks of an earlier version that
    no longer exist in ``removed``.
    """

    document_id: str
    context_id: str
    #: One of :class:`DocumentType`.
    type: str
    #: Pages of a PDF (``None`` for other types).
    pages: int | None = None
    #: Chunks the document has now.
    chunks: int
    created: int
    changed: int
    metadata_changed: int
    unchanged: int
    #: Chunks of the earlier version that no longer exist: deleted, with their vectors.
    removed: int
    #: The job embedding the new and changed chunks; ``None`` when none changed (an
    #: unchanged document costs nothing).
    job_id: str | None = None

    @property
    def item_ids(self) -> list[str]:
        """The chunks' item ids, in the document's order."""
        return [chunk_id(self.document_id, n) for n in range(self.chunks)]

    @property
    def to_embed(self) -> int:
        """Chunks the job embeds (``created + changed``)."""
        return self.created + self.changed


# --- dead letters ------------------------------------------------------------------------


class DeadLetter(Answer):
    """An item that ended FAILED (``kind`` "item") or a stream entry that could not be
    decoded (``kind`` "entry").
    """

    #: The dead letter's own id, ``MILLISECONDS-SEQUENCE``.
    id: str
    kind: str
    job_id: str | None = None
    item_id: str | None = None
    attempts: int | None = None
    #: Why it ended here.
    reason: str
    #: For entries: the stream and entry id they came from, and their fields.
    stream: str | None = None
    entry_id: str | None = None
    payload: str | None = None
    #: When it was written, in milliseconds since the Unix epoch.
    at_ms: int | None = None


class DeadLetterList(Answer):
    """One page of dead letters, newest first."""

    dead_letters: list[DeadLetter]
    #: Dead letters in all.
    total: int
    #: Pass as ``before`` for the next page; ``None`` on the last page.
    next_before: str | None = None


class RequeueRequest(Body):
    """The body of ``POST /v1/dead-letters/requeue``: exactly one of ``ids``, ``job_id`` or
    ``all=True`` (schema ``RequeueBody``).
    """

    ids: list[str] | None = None
    job_id: str | None = None
    all: bool | None = None


class RequeueAnswer(Answer):
    """What a requeue did."""

    #: Items given fresh attempts and put in new jobs.
    requeued: int
    #: The jobs that embed them.
    jobs: list[str]
    #: Dead letters removed.
    removed: int


# --- schedules ---------------------------------------------------------------------------

#: The fields each kind of scheduled job takes besides ``type`` (``priority`` and ``tenant``
#: of an embed job may be null or left out).
SCHEDULED_JOB_FIELDS: Mapping[str, frozenset[str]] = {
    ScheduledJobType.EMBED.value: frozenset({"scope", "priority", "tenant"}),
    ScheduledJobType.RECONCILE.value: frozenset(),
    ScheduledJobType.PURGE_DEAD_LETTERS.value: frozenset({"older_than_days"}),
}


class ScheduledJob(Answer):
    """What a schedule makes at each tick, as the daemon's configuration says
    (``job = {type = ...}`` of a ``[[schedules]]`` entry).

    One class for every kind (``type``, one of :class:`ScheduledJobType`, says which), as
    for :class:`JobScope`, so that a kind a newer daemon adds is read without error;
    :data:`SCHEDULED_JOB_FIELDS` says which fields each kind takes.
    """

    #: One of :class:`ScheduledJobType`.
    type: str
    #: An embed job's scope: ``context``, ``all``, ``failed`` or ``stale_model`` (never a
    #: list of items).
    scope: JobScope | None = None
    #: An embed job's priority, one of :class:`Priority` (``None``: ``normal``).
    priority: str | None = None
    #: An embed job's tenant (``None``: a tenant of its own).
    tenant: str | None = None
    #: A dead-letter purge removes the dead letters older than this many days.
    older_than_days: int | None = None


class ScheduleFiring(Answer):
    """One tick a schedule fired (times in milliseconds since the Unix epoch)."""

    #: The tick fired.
    tick_ms: int
    #: The job it made; ``None`` for a dead-letter purge (see :attr:`result`).
    job_id: str | None = None
    #: What an action that is not a job did: a purge's ``{"dead_letters_removed": n}`` (or
    #: ``{"error": ...}``); ``None`` for a job.
    result: dict[str, Any] | None = None
    #: The fencing token of the scheduler that fired it.
    fence: int
    #: The consumer name of the daemon that fired it.
    fired_by: str
    fired_at: int


class ScheduleView(Answer):
    """A schedule as the daemon's configuration has it, with its next tick and latest
    firings.
    """

    #: Unique among the schedules: 1 to 64 ASCII letters, digits, ``-`` or ``_``.
    name: str
    #: The cron expression (UTC; seconds first, or a five-field crontab line).
    cron: str
    #: One of :class:`MissedTicks`.
    missed: str
    job: ScheduledJob
    #: The next tick, in milliseconds since the Unix epoch; ``None`` when it never fires again.
    next_tick_ms: int | None = None
    #: The latest firings, newest first (as many as ``firings`` asked for).
    firings: list[ScheduleFiring]


class SchedulerFigures(Answer):
    """What the answering daemon's scheduler did. One daemon at a time holds the
    scheduler's lease and fires every schedule; a daemon without schedules never takes it.
    """

    #: Whether this daemon holds the scheduler's lease (it is the one firing).
    active: bool
    #: Its fencing token while it does.
    fence: int | None = None
    #: Ticks this daemon fired.
    fired: int
    #: Times it found its lease gone in SQL (a higher token was shown) and stood down.
    stood_down: int
    last_error: str | None = None


class ScheduleList(Answer):
    """The daemon's ``[[schedules]]`` (``GET /v1/schedules``), in the configuration's order,
    and its scheduler.
    """

    schedules: list[ScheduleView]
    scheduler: SchedulerFigures

    def get(self, name: str) -> ScheduleView | None:
        """The schedule of this name, if there is one."""
        return next((s for s in self.schedules if s.name == name), None)


# --- search ------------------------------------------------------------------------------

#: A value a search filter compares a metadata field with.
FilterValue: TypeAlias = str | int | bool
#: A search filter: top-level metadata keys (1 to 64 letters, digits, ``_`` or ``-``), each
#: with a value or a non-empty list of values, any of which may match; every key must match
#: (``{"tenant": "acme", "year": [2024, 2025]}``). An item whose field holds a list matches
#: when one of its values does. The daemon takes at most 16 keys and 64 values per key.
SearchFilter: TypeAlias = Mapping[str, FilterValue | Sequence[FilterValue]]


class SearchRequest(Body):
    """The body of ``POST /v1/contexts/{id}/search`` (schema ``SearchBody``)."""

    query: str
    #: How many nearest items, 1 to 100 (the daemon's default is 5).
    k: int | None = None
    #: Only items whose metadata matches (see :data:`SearchFilter`); ``None`` is not sent.
    #: Sent as given, for the daemon to judge.
    filter: dict[str, Any] | None = None


class Hit(Answer):
    """One item near the query."""

    item_id: str
    #: Similarity to the query (higher is nearer).
    score: float
    #: The item's current text.
    content: str
    #: The item's current metadata (``{}`` when it has none).
    metadata: dict[str, Any]


class SearchAnswer(Answer):
    """The nearest items of a context, nearest first (at most ``k``; fewer when the context
    or the filter holds fewer, or when an item was deleted a moment before).
    """

    context_id: str
    query: str
    #: The generation (model and collection) that answered.
    generation: int
    #: The model of that generation (the one the query was embedded with).
    model: str
    hits: list[Hit]

    @property
    def item_ids(self) -> list[str]:
        """The hits' item ids, nearest first."""
        return [hit.item_id for hit in self.hits]


# --- control and health ------------------------------------------------------------------


class IntakeAnswer(Answer):
    """What pause or resume set off (``intake`` is one of :class:`IntakeVerb`)."""

    intake: str


class Health(Answer):
    """Liveness: the process answers."""

    status: str


class ReadinessCheck(Answer):
    """One backend's state (schema ``Check``). The backend's own details (the database's
    kind, an intake's counters, the pipeline's pause, ...) are in :attr:`details`.
    """

    ok: bool
    #: Why it is not ok; ``None`` when it is.
    error: str | None = None

    @property
    def details(self) -> dict[str, Any]:
        """The check's other fields, as the daemon sent them."""
        return dict(self.model_extra or {})


class ReadinessChecks(Answer):
    """Each backend's check (schema ``Checks``)."""

    database: ReadinessCheck
    redis: ReadinessCheck
    job_intake: ReadinessCheck
    task_intake: ReadinessCheck
    pipeline: ReadinessCheck
    #: What the reconciler repaired of what Redis lost; never failing.
    reconciler: ReadinessCheck
    supervision: ReadinessCheck


class Readiness(Answer):
    """Readiness (``GET /readyz``): whether every check is ok, and each check."""

    ready: bool
    checks: ReadinessChecks


class ErrorDetail(Answer):
    """What went wrong: a stable code and a reason meant for people."""

    code: str
    reason: str


class ErrorBody(Answer):
    """The body of every error answer."""

    error: ErrorDetail


#: The client's class for each object schema of the daemon's OpenAPI document (the contract
#: check compares their fields both ways; a schema in neither this nor
#: ``embedq.contract.UNMODELLED_SCHEMAS`` fails it).
SCHEMA_MODELS: Mapping[str, type[BaseModel]] = {
    "RawItem": Item,
    "UpsertBody": UpsertRequest,
    "UpsertCounts": UpsertCounts,
    "ItemRecord": ItemRecord,
    "JobScope": JobScope,
    "CreateJobBody": CreateJobRequest,
    "UpdateJobBody": UpdateJobRequest,
    "Estimate": Estimate,
    "JobAccepted": JobAccepted,
    "JobRecord": JobRecord,
    "JobView": JobView,
    "JobList": JobList,
    "Deleted": DeleteAnswer,
    "DocumentIngested": DocumentIngested,
    "DeadLetter": DeadLetter,
    "DeadLetterList": DeadLetterList,
    "RequeueBody": RequeueRequest,
    "RequeueAnswer": RequeueAnswer,
    "ScheduledJob": ScheduledJob,
    "ScheduleFiring": ScheduleFiring,
    "ScheduleView": ScheduleView,
    "SchedulerFigures": SchedulerFigures,
    "ScheduleList": ScheduleList,
    "SearchBody": SearchRequest,
    "Hit": Hit,
    "SearchAnswer": SearchAnswer,
    "IntakeAnswer": IntakeAnswer,
    "Health": Health,
    "Check": ReadinessCheck,
    "Checks": ReadinessChecks,
    "Readiness": Readiness,
    "ErrorDetail": ErrorDetail,
    "ErrorBody": ErrorBody,
}

#: The client's enum for each string-enum schema of the document (values compared both ways).
SCHEMA_ENUMS: Mapping[str, type[Enum]] = {
    "JobState": JobState,
    "ItemStatus": ItemStatus,
    "JobKind": JobKind,
    "Priority": Priority,
    "MissedTicks": MissedTicks,
    "DocumentKind": DocumentType,
    "IntakeVerb": IntakeVerb,
    "HealthStatus": HealthStatus,
    "ErrorCode": ErrorCode,
}

#: Request bodies: every field the document requires must be required here too.
REQUEST_MODELS: frozenset[type[BaseModel]] = frozenset(
    {Item, UpsertRequest, CreateJobRequest, UpdateJobRequest, RequeueRequest, SearchRequest}
)
