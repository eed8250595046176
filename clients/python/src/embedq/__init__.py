"""Python client for embedq, the daemon that keeps a web backend's text items embedded.

::

    from embedq import Client, scope_context

    with Client() as embedq:  # $EMBEDQ_URL, $EMBEDQ_ADMIN_TOKEN
        embedq.upsert_items("docs", [{"id": "a1", "content": "Open Settings to change your login"}])
        job = embedq.wait_for_job(embedq.create_job(scope_context("docs")), timeout=60)
        print(job.state, embedq.search("docs", "How do I change my login?", k=3).item_ids)

:class:`AsyncClient` has the same methods as coroutines. Errors are in :mod:`embedq.errors`,
the models in :mod:`embedq.models`, and the contract check against a live daemon's OpenAPI
document in :mod:`embedq.contract`.
"""

from ._version import __version__
from .async_client import AsyncClient
from .client import Client
from .errors import (
    ApiError,
    BadRequestError,
    ConflictError,
    EmbedqConnectionError,
    EmbedqError,
    JobTimeoutError,
    NotFoundError,
    RequestTimeoutError,
    ResponseError,
    ServerError,
    UnauthorizedError,
    UnavailableError,
    UnsupportedOperationError,
)
from .models import (
    DeadLetter,
    DeadLetterList,
    DeleteAnswer,
    DocumentIngested,
    DocumentType,
    Estimate,
    Health,
    Hit,
    IntakeAnswer,
    Item,
    ItemRecord,
    ItemStatus,
    JobAccepted,
    JobKind,
    JobList,
    JobScope,
    JobState,
    JobView,
    MissedTicks,
    Priority,
    Readiness,
    ReadinessCheck,
    ReconcileFindings,
    RequeueAnswer,
    ScheduledJob,
    ScheduledJobType,
    ScheduleFiring,
    ScheduleList,
    SchedulerFigures,
    ScheduleView,
    ScopeType,
    SearchAnswer,
    SearchFilter,
    UpsertCounts,
    chunk_id,
    scope_all,
    scope_context,
    scope_failed,
    scope_items,
    scope_stale_model,
)
from .results import DeleteResult
from .retry import RetryPolicy

__all__ = [
    "ApiError",
    "AsyncClient",
    "BadRequestError",
    "Client",
    "ConflictError",
    "DeadLetter",
    "DeadLetterList",
    "DeleteAnswer",
    "DeleteResult",
    "DocumentIngested",
    "DocumentType",
    "EmbedqConnectionError",
    "EmbedqError",
    "Estimate",
    "Health",
    "Hit",
    "IntakeAnswer",
    "Item",
    "ItemRecord",
    "ItemStatus",
    "JobAccepted",
    "JobKind",
    "JobList",
    "JobScope",
    "JobState",
    "JobTimeoutError",
    "JobView",
    "MissedTicks",
    "NotFoundError",
    "Priority",
    "Readiness",
    "ReadinessCheck",
    "ReconcileFindings",
    "RequestTimeoutError",
    "RequeueAnswer",
    "ResponseError",
    "RetryPolicy",
    "ScheduleFiring",
    "ScheduleList",
    "ScheduleView",
    "ScheduledJob",
    "ScheduledJobType",
    "SchedulerFigures",
    "ScopeType",
    "SearchAnswer",
    "SearchFilter",
    "ServerError",
    "UnauthorizedError",
    "UnavailableError",
    "UnsupportedOperationError",
    "UpsertCounts",
    "__version__",
    "chunk_id",
    "scope_all",
    "scope_context",
    "scope_failed",
    "scope_items",
    "scope_stale_model",
]
