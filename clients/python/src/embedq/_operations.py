"""The API's operations without any I/O: each function builds a :class:`Call` (the route, the
body (JSON, or raw bytes with their content type), whether it is safe to retry, and how to read
the answer), which :class:`~embedq.Client`
and :class:`~embedq.AsyncClient` send. Both clients share this module, so they cannot drift
apart.

:data:`ROUTES` lists every route the client calls, written as the OpenAPI document writes its
paths; the contract check compares it with the document.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Generic, TypeAlias, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from .errors import ResponseError
from .models import (
    SCOPE_FIELDS,
    CreateJobRequest,
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
    RequeueRequest,
    ScheduleList,
    SearchAnswer,
    SearchFilter,
    SearchRequest,
    UpdateJobRequest,
    UpsertCounts,
    UpsertRequest,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Route:
    """A method and a path template, as the OpenAPI document writes them, and the query
    parameters the client may send (the contract check looks for each in the document).
    """

    method: str
    path: str
    query: tuple[str, ...] = ()


#: Every route the client calls, by operation.
ROUTES: Mapping[str, Route] = {
    "upsert_items": Route("POST", "/v1/contexts/{context_id}/items"),
    "get_item": Route("GET", "/v1/items/{item_id}"),
    "delete_item": Route("DELETE", "/v1/items/{item_id}"),
    "delete_context": Route("DELETE", "/v1/contexts/{context_id}"),
    "ingest_document": Route(
        "POST",
        "/v1/contexts/{context_id}/documents",
        query=("document_id", "type", "chunk_tokens", "overlap_tokens", "metadata"),
    ),
    "delete_document": Route("DELETE", "/v1/documents/{document_id}"),
    "create_job": Route("POST", "/v1/jobs"),
    "estimate_job": Route("POST", "/v1/jobs", query=("dry_run",)),
    "list_jobs": Route("GET", "/v1/jobs", query=("state", "before", "limit")),
    "get_job": Route("GET", "/v1/jobs/{job_id}"),
    "set_job_priority": Route("PATCH", "/v1/jobs/{job_id}"),
    "cancel_job": Route("POST", "/v1/jobs/{job_id}/cancel"),
    "dead_letters": Route("GET", "/v1/dead-letters", query=("before", "limit")),
    "requeue_dead_letters": Route("POST", "/v1/dead-letters/requeue"),
    "delete_dead_letter": Route("DELETE", "/v1/dead-letters/{id}"),
    "schedules": Route("GET", "/v1/schedules", query=("firings",)),
    "search": Route("POST", "/v1/contexts/{context_id}/search"),
    "pause": Route("POST", "/v1/pause"),
    "resume": Route("POST", "/v1/resume"),
    "ready": Route("GET", "/readyz"),
    "health": Route("GET", "/healthz"),
}

#: Operations whose route daemons are about to gain (none now): against a daemon without it
#: they raise :class:`~embedq.errors.UnsupportedOperationError`, and the contract check notes
#: (without failing) that the document does not have them yet, or that it has them now and the
#: operation should leave this set. The client's tests demand that nothing is pending.
PENDING_OPERATIONS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request to send, and how to read its answer.

    Attributes:
        operation: the key of its route in :data:`ROUTES`.
        path: the path with its parameters filled in.
        parse: reads a successful answer.
        body: the JSON body, if any.
        content: a raw body (bytes, sent as they are, with the ``Content-Type`` of
            ``headers``), if any; a call has a JSON body or a raw one, not both.
        params: the query string.
        headers: headers of this request.
        safe: whether sending it twice does no harm (then 503s and connection errors are
            retried).
        ok: the statuses that are answers rather than errors.

    """

    operation: str
    path: str
    parse: Callable[[httpx.Response], T]
    body: Any = None
    params: Mapping[str, str | int] | None = None
    headers: Mapping[str, str] | None = None
    safe: bool = True
    ok: frozenset[int] = field(default_factory=lambda: frozenset({200}))
    content: bytes | None = None

    def __post_init__(self) -> None:
        if self.body is not None and self.content is not None:
            raise ValueError("a call has a JSON body or a raw one, not both")

    @property
    def method(self) -> str:
        """The request's method."""
        return ROUTES[self.operation].method


def segment(value: str, what: str) -> str:
    """A path parameter, percent-encoded (``.`` and ``..`` included, which would otherwise
    name another path).
    """
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    encoded = quote(value, safe="")
    if encoded in (".", ".."):
        encoded = encoded.replace(".", "%2E")
    return encoded


def _path(operation: str, **params: str) -> str:
    template = ROUTES[operation].path
    return template.format(**{name: segment(v, name) for name, v in params.items()})


def _query(**params: str | int | None) -> dict[str, str | int]:
    return {k: v for k, v in params.items() if v is not None}


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as e:
        raise ResponseError(
            f"{response.status_code} answer is not JSON: {e}",
            status=response.status_code,
            body=response.text[:500],
        ) from e


def parse_model(model: type[M]) -> Callable[[httpx.Response], M]:
    """Reads an answer as ``model``; a body that does not fit raises
    :class:`~embedq.errors.ResponseError`.
    """

    def parse(response: httpx.Response) -> M:
        try:
            return model.model_validate(_json(response))
        except ValidationError as e:
            raise ResponseError(
                f"the answer does not fit {model.__name__}: {e}",
                status=response.status_code,
                body=response.text[:500],
            ) from e

    return parse


def _no_body(response: httpx.Response) -> None:
    return None


# --- items -------------------------------------------------------------------------------


def normalise_items(items: Iterable[Item | Mapping[str, Any]]) -> list[Item]:
    """The items as :class:`Item` models; an id given twice raises ``ValueError`` (the daemon
    refuses a repeated id within a request, and batches must not change that).
    """
    out: list[Item] = []
    seen: set[str] = set()
    for i, raw in enumerate(items):
        item = raw if isinstance(raw, Item) else Item.model_validate(dict(raw))
        if item.id in seen:
            raise ValueError(f"items[{i}]: item id {item.id!r} is given twice")
        seen.add(item.id)
        out.append(item)
    return out


def normalise_deletes(item_ids: Iterable[str], items: Sequence[Item]) -> list[str]:
    """The ids to delete as a list; an id given twice, or also among the items to upsert,
    raises ``ValueError`` (the daemon refuses both, and batches must not hide that).
    """
    if isinstance(item_ids, str):
        raise TypeError("delete takes a list of item ids, not one string")
    upserted = {item.id for item in items}
    out: list[str] = []
    seen: set[str] = set()
    for i, item_id in enumerate(item_ids):
        if not isinstance(item_id, str) or not item_id:
            raise ValueError(f"delete[{i}]: an item id is a non-empty string, not {item_id!r}")
        if item_id in seen:
            raise ValueError(f"delete[{i}]: item id {item_id!r} is given twice")
        if item_id in upserted:
            raise ValueError(
                f"delete[{i}]: item id {item_id!r} is also among the items to upsert; an item is "
                "either upserted or deleted"
            )
        seen.add(item_id)
        out.append(item_id)
    return out


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode()) + 1  # and a comma


def batches(
    items: Sequence[Item],
    batch_size: int,
    max_body_bytes: int,
    delete: Sequence[str] = (),
) -> Iterator[UpsertRequest]:
    """Packs items, then ids to delete, into requests of at most ``batch_size`` items and
    ``batch_size`` ids each (the daemon's limit applies to each list) and about
    ``max_body_bytes`` of JSON (an item larger than that goes alone, for the daemon to judge).
    Whatever fits in one request is sent as one, so that it is one transaction.
    """
    budget = max_body_bytes - 64  # {"items":[...],"delete":[...]}
    batch_items: list[Item] = []
    batch_delete: list[str] = []
    size = 0
    for item in items:
        item_size = _json_size(item.to_json())
        if batch_items and (len(batch_items) >= batch_size or size + item_size > budget):
            yield UpsertRequest(items=batch_items, delete=batch_delete)
            batch_items, batch_delete, size = [], [], 0
        batch_items.append(item)
        size += item_size
    for item_id in delete:
        id_size = _json_size(item_id)
        full = len(batch_delete) >= batch_size or size + id_size > budget
        if (batch_items or batch_delete) and full:
            yield UpsertRequest(items=batch_items, delete=batch_delete)
            batch_items, batch_delete, size = [], [], 0
        batch_delete.append(item_id)
        size += id_size
    if batch_items or batch_delete:
        yield UpsertRequest(items=batch_items, delete=batch_delete)


def upsert_batch(context_id: str, request: UpsertRequest) -> Call[UpsertCounts]:
    """One upsert request (safe to repeat: the same body gives the same state; the counts of
    a repeat describe the repeat, so an item created by a lost first attempt is counted
    ``unchanged`` and a deleted one ``not_found``).
    """
    return Call(
        "upsert_items",
        _path("upsert_items", context_id=context_id),
        parse_model(UpsertCounts),
        body=request.to_json(),
    )


def get_item(item_id: str) -> Call[ItemRecord]:
    return Call("get_item", _path("get_item", item_id=item_id), parse_model(ItemRecord))


def delete_item(item_id: str) -> Call[DeleteAnswer]:
    """Retried like the other safe calls: a repeat after a lost answer finds nothing and
    answers 404.
    """
    return Call("delete_item", _path("delete_item", item_id=item_id), parse_model(DeleteAnswer))


def delete_context(context_id: str) -> Call[DeleteAnswer]:
    return Call(
        "delete_context",
        _path("delete_context", context_id=context_id),
        parse_model(DeleteAnswer),
    )


# --- documents ---------------------------------------------------------------------------

#: A document's bytes: ``bytes`` (or a ``bytearray``, a ``memoryview``), or a file opened in
#: binary mode (``open(path, "rb")``), read to its end before anything is sent.
DocumentData: TypeAlias = bytes | bytearray | memoryview | IO[bytes]

#: The ``Content-Type`` of a document sent without one: "no declaration" to the daemon,
#: which then goes by ``type`` and the bytes alone.
OCTET_STREAM = "application/octet-stream"


def document_bytes(data: object) -> bytes:
    """The document's bytes; a file is read to its end here, before anything is sent. A
    ``str`` (or a file opened in text mode) raises ``TypeError``: a document is bytes
    (``text.encode()`` for text).
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):
        raise TypeError("a document is bytes, not str: send text.encode() (UTF-8)")
    read = getattr(data, "read", None)
    if not callable(read):
        raise TypeError(f"a document is bytes or a binary file object, not {type(data).__name__}")
    content = read()
    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"the file gave {type(content).__name__}, not bytes: open it in binary mode ('rb')"
        )
    return bytes(content)


def ingest_document(
    context_id: str,
    document_id: str,
    data: DocumentData,
    *,
    type: str | None = None,
    content_type: str | None = None,
    chunk_tokens: int | None = None,
    overlap_tokens: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Call[DocumentIngested]:
    """The document is the raw body, with ``content_type`` (default
    ``application/octet-stream``, no declaration) as its ``Content-Type``; ``type``,
    ``chunk_tokens`` and ``overlap_tokens`` go in the query string as given, and
    ``metadata``, a mapping, as one compact JSON object (``metadata=...``). ``None`` is not
    sent (the daemon's defaults). The daemon judges the document id, the type and the
    numbers; a ``metadata`` that is not a mapping raises ``TypeError``.

    Never retried, although ingesting the same bytes with the same settings again is
    harmless (the same chunks: nothing new is stored and no job is made). A repeat's answer
    describes the repeat, so a blind retry would hide what the first attempt did: after a
    lost answer, or a 503 from Redis once the chunks were stored (the job could not be
    enqueued), the repeat counts the chunks ``unchanged`` with ``job_id`` ``None`` although
    none may be embedded; and after a timeout (a large PDF) the daemon is most likely still
    at work on the first attempt, which a retry would only double. The caller decides (see
    :meth:`~embedq.Client.ingest_document`).
    """
    segment(document_id, "document_id")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping (a JSON object), not {metadata!r}")
    params = _query(
        document_id=document_id,
        type=str(type) if type is not None else None,
        chunk_tokens=chunk_tokens,
        overlap_tokens=overlap_tokens,
        metadata=(
            json.dumps(dict(metadata), ensure_ascii=False, separators=(",", ":"))
            if metadata is not None
            else None
        ),
    )
    return Call(
        "ingest_document",
        _path("ingest_document", context_id=context_id),
        parse_model(DocumentIngested),
        content=document_bytes(data),
        params=params,
        headers={"Content-Type": content_type if content_type is not None else OCTET_STREAM},
        safe=False,
    )


def delete_document(document_id: str) -> Call[DeleteAnswer]:
    """Retried like the other deletes: a repeat after a lost answer finds nothing and
    answers 404.
    """
    return Call(
        "delete_document",
        _path("delete_document", document_id=document_id),
        parse_model(DeleteAnswer),
    )


# --- jobs --------------------------------------------------------------------------------


def as_scope(scope: JobScope | Mapping[str, Any] | str) -> JobScope:
    """A scope from a :class:`JobScope`, its JSON form, or the name of a kind without fields
    (``"all"``, ``"failed"``, ``"stale_model"``). A known kind given the wrong fields raises
    ``ValueError``; an unknown kind is sent as it is, for the daemon to judge.
    """
    if isinstance(scope, str):
        parsed = JobScope(type=scope)
    elif isinstance(scope, JobScope):
        parsed = scope
    else:
        parsed = JobScope.model_validate(dict(scope))
    expected = SCOPE_FIELDS.get(parsed.type)
    if expected is not None:
        given = set(parsed.to_json()) - {"type"}
        if given != expected:
            want = ", ".join(sorted(expected)) or "no other field"
            raise ValueError(f"a {parsed.type!r} scope takes {want}; got {sorted(given)}")
    return parsed


def job_body(
    scope: JobScope | Mapping[str, Any] | str | None,
    kind: str | None,
    extra_fields: Mapping[str, Any],
    priority: str | None = None,
    tenant: str | None = None,
) -> CreateJobRequest:
    """The body of a job: an embed job (the default kind) needs a scope (``ValueError``
    without one); a reconcile job may leave it out. An unknown kind or priority, and a tenant
    the daemon refuses, are sent as they are, for the daemon to judge.
    """
    kind = str(kind) if kind is not None else None
    priority = str(priority) if priority is not None else None
    if scope is None and kind in (None, JobKind.EMBED.value):
        raise ValueError("an embed job needs a scope (scope_context(...), scope_all(), ...)")
    return CreateJobRequest(
        scope=as_scope(scope) if scope is not None else None,
        kind=kind,
        priority=priority,
        tenant=tenant,
        **extra_fields,
    )


def create_job(
    scope: JobScope | Mapping[str, Any] | str | None,
    kind: str | None,
    priority: str | None,
    tenant: str | None,
    idempotency_key: str | None,
    extra_fields: Mapping[str, Any],
) -> Call[JobAccepted]:
    """Creating a job is retried only with an idempotency key: without one, a request whose
    answer was lost could make two jobs.
    """
    body = job_body(scope, kind, extra_fields, priority, tenant)
    return Call(
        "create_job",
        ROUTES["create_job"].path,
        parse_model(JobAccepted),
        body=body.to_json(),
        headers={"Idempotency-Key": idempotency_key} if idempotency_key is not None else None,
        safe=idempotency_key is not None,
        ok=frozenset({200, 201, 202}),
    )


def estimate_job(scope: JobScope | Mapping[str, Any] | str) -> Call[Estimate]:
    """A dry run of an embed job (``?dry_run=true``): it makes nothing, so it is retried like
    a read. Only embed jobs are estimated (the daemon answers 422 for a reconcile job).
    """
    body = job_body(scope, None, {})
    return Call(
        "estimate_job",
        ROUTES["estimate_job"].path,
        parse_model(Estimate),
        body=body.to_json(),
        params={"dry_run": "true"},
    )


def get_job(job_id: str) -> Call[JobView]:
    return Call("get_job", _path("get_job", job_id=job_id), parse_model(JobView))


def list_jobs(state: str | None, before: str | None, limit: int | None) -> Call[JobList]:
    return Call(
        "list_jobs",
        ROUTES["list_jobs"].path,
        parse_model(JobList),
        params=_query(state=str(state) if state is not None else None, before=before, limit=limit),
    )


def cancel_job(job_id: str) -> Call[JobView]:
    """Cancelling is retried: once the job is CANCELLED, a repeat answers 409."""
    return Call("cancel_job", _path("cancel_job", job_id=job_id), parse_model(JobView))


def set_job_priority(job_id: str, priority: str) -> Call[JobView]:
    """Setting a priority is retried: setting it twice is setting it once (a repeat after the
    job ended answers 409). An unknown priority is sent as it is, for the daemon to judge.
    """
    body = UpdateJobRequest(priority=str(priority))
    return Call(
        "set_job_priority",
        _path("set_job_priority", job_id=job_id),
        parse_model(JobView),
        body=body.to_json(),
    )


# --- dead letters ------------------------------------------------------------------------


def dead_letters(before: str | None, limit: int | None) -> Call[DeadLetterList]:
    return Call(
        "dead_letters",
        ROUTES["dead_letters"].path,
        parse_model(DeadLetterList),
        params=_query(before=before, limit=limit),
    )


def requeue_dead_letters(
    ids: Sequence[str] | None, job_id: str | None, all: bool
) -> Call[RequeueAnswer]:
    """Never retried: each requeue makes new jobs."""
    chosen = sum([ids is not None, job_id is not None, all])
    if chosen != 1:
        raise ValueError("give exactly one of ids=[...], job_id=... or all=True")
    body = RequeueRequest(
        ids=list(ids) if ids is not None else None, job_id=job_id, all=all or None
    )
    return Call(
        "requeue_dead_letters",
        ROUTES["requeue_dead_letters"].path,
        parse_model(RequeueAnswer),
        body=body.to_json(),
        safe=False,
        ok=frozenset({200, 202}),
    )


def delete_dead_letter(dead_letter_id: str) -> Call[None]:
    return Call(
        "delete_dead_letter",
        _path("delete_dead_letter", id=dead_letter_id),
        _no_body,
        ok=frozenset({200, 204}),
    )


# --- schedules ---------------------------------------------------------------------------


def schedules(firings: int | None) -> Call[ScheduleList]:
    """``firings`` is sent as given (the daemon takes 0 to 100 and answers 400 otherwise);
    ``None`` is not sent (the daemon's default, 10).
    """
    return Call(
        "schedules",
        ROUTES["schedules"].path,
        parse_model(ScheduleList),
        params=_query(firings=firings),
    )


# --- search, control, health -------------------------------------------------------------


def search(
    context_id: str, query: str, k: int | None, filter: SearchFilter | None
) -> Call[SearchAnswer]:
    """A filter is sent as given (lists and tuples as JSON arrays), for the daemon to judge;
    one that is not a mapping raises ``TypeError``.
    """
    if filter is not None and not isinstance(filter, Mapping):
        raise TypeError(f"filter must be a mapping of metadata keys to values, not {filter!r}")
    body = SearchRequest(query=query, k=k, filter=dict(filter) if filter is not None else None)
    return Call(
        "search",
        _path("search", context_id=context_id),
        parse_model(SearchAnswer),
        body=body.to_json(),
    )


def pause() -> Call[IntakeAnswer]:
    return Call("pause", ROUTES["pause"].path, parse_model(IntakeAnswer), ok=frozenset({200, 202}))


def resume() -> Call[IntakeAnswer]:
    return Call(
        "resume", ROUTES["resume"].path, parse_model(IntakeAnswer), ok=frozenset({200, 202})
    )


def ready() -> Call[Readiness]:
    """A 503 from ``/readyz`` is an answer (not ready, with the reasons), not an error."""
    return Call("ready", ROUTES["ready"].path, parse_model(Readiness), ok=frozenset({200, 503}))


def health() -> Call[Health]:
    return Call("health", ROUTES["health"].path, parse_model(Health))
