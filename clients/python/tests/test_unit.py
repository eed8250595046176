"""The client's own logic, against scripted answers (httpx.MockTransport): retries and their
backoff, which calls are retried, batching, error classes, unknown fields, scopes and paths.
The behaviour against a real daemon is in the other test files."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import embedq
from embedq import (
    AsyncClient,
    BadRequestError,
    Client,
    ConflictError,
    DocumentType,
    EmbedqConnectionError,
    NotFoundError,
    Priority,
    RequestTimeoutError,
    ResponseError,
    RetryPolicy,
    ServerError,
    UnauthorizedError,
    UnavailableError,
    UnsupportedOperationError,
    chunk_id,
    scope_all,
    scope_context,
    scope_failed,
    scope_items,
)
from embedq._operations import ROUTES, Call, batches, normalise_items, segment
from embedq.models import Item, UpsertCounts

Handler = Callable[[httpx.Request], httpx.Response]

FAST = RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.002)


def error(status: int, code: str, reason: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "reason": reason}}, headers=headers)


class Recorder:
    """A transport that answers from a script and records every request."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer

    def client(self, retry: RetryPolicy = FAST, max_body_bytes: int = 16 * 1024 * 1024) -> Client:
        http = httpx.Client(transport=httpx.MockTransport(self))
        return Client(
            "http://embedq.test", http_client=http, retry=retry, max_body_bytes=max_body_bytes
        )


JOB = {
    "id": "019a0000-0000-7000-8000-000000000001",
    "kind": "embed",
    "scope": {"type": "all"},
    "model": "m",
    "state": "QUEUED",
    "priority": "normal",
    "tenant": None,
    "total": 0,
    "completed": 0,
    "failed": 0,
    "skipped": 0,
    "deleted": 0,
    "tokens": 0,
    "created_at": 1,
    "updated_at": 1,
    "planned": False,
    "done": 0,
    "cost": 0.0,
}
JOB_ID = str(JOB["id"])
ACCEPTED = {"job_id": JOB_ID, "status_url": "/v1/jobs/x", "state": "QUEUED", "created": True}


# --- retries -----------------------------------------------------------------------------


def test_reads_are_retried_on_503_then_succeed() -> None:
    rec = Recorder(
        error(503, "unavailable", "the database is unavailable; try again"),
        error(503, "unavailable", "the database is unavailable; try again"),
        httpx.Response(200, json={"status": "ok"}),
    )
    assert rec.client().health().status == "ok"
    assert len(rec.requests) == 3


def test_retries_stop_after_max_retries_with_the_last_error() -> None:
    rec = Recorder(error(503, "unavailable", "the queue (Redis) is unavailable"))
    with pytest.raises(UnavailableError) as info:
        rec.client().get_job("j")
    assert len(rec.requests) == 1 + FAST.max_retries
    assert (info.value.status, info.value.code) == (503, "unavailable")
    assert info.value.reason == "the queue (Redis) is unavailable"


def test_connection_errors_are_retried_for_reads() -> None:
    rec = Recorder(httpx.ConnectError("refused"), httpx.Response(200, json={"status": "ok"}))
    assert rec.client().health().status == "ok"
    assert len(rec.requests) == 2


def test_a_timeout_is_a_request_timeout_error_after_the_retries() -> None:
    rec = Recorder(httpx.ReadTimeout("slow"))
    with pytest.raises(RequestTimeoutError) as info:
        rec.client().get_item("a")
    assert isinstance(info.value, EmbedqConnectionError)
    assert info.value.method == "GET" and info.value.url == "http://embedq.test/v1/items/a"
    assert len(rec.requests) == 1 + FAST.max_retries


def test_create_job_without_idempotency_key_is_never_retried() -> None:
    for failure in (error(503, "unavailable", "redis"), httpx.ConnectError("reset")):
        rec = Recorder(failure, httpx.Response(202, json=ACCEPTED))
        with pytest.raises((UnavailableError, EmbedqConnectionError)):
            rec.client().create_job(scope_context("c"))
        assert len(rec.requests) == 1


def test_create_job_with_idempotency_key_is_retried_and_sends_the_key() -> None:
    rec = Recorder(httpx.ConnectError("reset"), httpx.Response(202, json=ACCEPTED))
    accepted = rec.client().create_job(scope_context("c"), idempotency_key="regen-c")
    assert accepted.job_id == JOB["id"]
    assert len(rec.requests) == 2
    assert all(r.headers["idempotency-key"] == "regen-c" for r in rec.requests)
    assert json.loads(rec.requests[0].content) == {"scope": {"type": "context", "context_id": "c"}}


def test_requeue_is_never_retried() -> None:
    rec = Recorder(error(503, "unavailable", "redis"))
    with pytest.raises(UnavailableError):
        rec.client().requeue_dead_letters(all=True)
    assert len(rec.requests) == 1


def test_client_errors_are_not_retried() -> None:
    rec = Recorder(error(422, "invalid", "k must be between 1 and 100"))
    with pytest.raises(BadRequestError):
        rec.client().search("c", "q", k=0)
    assert len(rec.requests) == 1


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(max_retries=5, base_delay=0.1, max_delay=1.0, _random=random.Random(7))
    for retry, cap in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (9, 1.0)]:
        delays = [policy.delay(retry) for _ in range(300)]
        assert all(0.0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8 and min(delays) < cap * 0.2  # spread over the range


def test_a_longer_retry_after_wins_but_is_capped() -> None:
    policy = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=2.0)
    asked = UnavailableError(503, "unavailable", "busy", retry_after=1.5)
    assert policy.delay(0, asked) == 1.5
    assert policy.delay(0, UnavailableError(503, "unavailable", "busy", retry_after=60)) == 2.0


# --- batching ----------------------------------------------------------------------------


def counts_of(request: httpx.Request) -> httpx.Response:
    """Every item counted created, every delete id deleted."""
    body = json.loads(request.content)
    return httpx.Response(
        200,
        json={
            "created": len(body.get("items", [])),
            "changed": 0,
            "metadata_changed": 0,
            "unchanged": 0,
            "deleted": len(body.get("delete", [])),
            "not_found": 0,
        },
    )


def test_upsert_is_batched_by_count_and_counts_are_summed() -> None:
    rec = Recorder(counts_of)
    items = [{"id": f"i{n}", "content": f"text {n}"} for n in range(2345)]
    counts = rec.client().upsert_items("ctx", items)
    assert (counts.created, counts.changed, counts.unchanged) == (2345, 0, 0)
    sizes = [len(json.loads(r.content)["items"]) for r in rec.requests]
    assert sizes == [1000, 1000, 345]
    assert {r.url.path for r in rec.requests} == {"/v1/contexts/ctx/items"}


def test_upsert_batches_stay_under_the_body_limit() -> None:
    big = "x" * 60_000
    items = [Item(id=f"i{n}", content=big) for n in range(10)]
    sizes = [len(b.items) for b in batches(items, 1000, 200_000)]
    assert sizes == [3, 3, 3, 1]
    rec = Recorder(counts_of)
    rec.client(max_body_bytes=200_000).upsert_items("ctx", items)
    assert all(len(r.content) <= 200_000 for r in rec.requests)


def test_upsert_of_nothing_sends_nothing() -> None:
    rec = Recorder(counts_of)
    assert rec.client().upsert_items("ctx", []).total == 0
    assert rec.client().upsert_items("ctx", delete=[]) == UpsertCounts.zero()
    assert rec.requests == []


def test_deletes_ride_with_the_items_and_are_batched_too() -> None:
    rec = Recorder(counts_of)
    items = [{"id": f"i{n}", "content": "t"} for n in range(1500)]
    gone = [f"d{n}" for n in range(2500)]
    counts = rec.client().upsert_items("ctx", items, delete=gone)
    assert (counts.created, counts.deleted, counts.total, counts.total_deletes) == (
        1500,
        2500,
        1500,
        2500,
    )
    bodies = [json.loads(r.content) for r in rec.requests]
    shapes = [(len(b.get("items", [])), len(b.get("delete", []))) for b in bodies]
    assert shapes == [(1000, 0), (500, 1000), (0, 1000), (0, 500)]
    assert "delete" not in bodies[0] and "items" not in bodies[2]  # empty lists are not sent
    assert [d for b in bodies for d in b.get("delete", [])] == gone


def test_a_small_upsert_with_deletes_is_one_request() -> None:
    rec = Recorder(counts_of)
    rec.client().upsert_items("ctx", [{"id": "a", "content": "t"}], delete=["b", "c"])
    assert [json.loads(r.content) for r in rec.requests] == [
        {"items": [{"id": "a", "content": "t"}], "delete": ["b", "c"]}
    ]
    only = Recorder(counts_of)
    assert only.client().upsert_items("ctx", delete=("x",)).deleted == 1
    assert json.loads(only.requests[0].content) == {"delete": ["x"]}


def test_delete_ids_are_checked_before_sending() -> None:
    rec = Recorder(counts_of)
    with pytest.raises(ValueError, match="'a' is also among the items"):
        rec.client().upsert_items("ctx", [{"id": "a", "content": "t"}], delete=["a"])
    with pytest.raises(ValueError, match="'b' is given twice"):
        rec.client().upsert_items("ctx", delete=["b", "c", "b"])
    with pytest.raises(ValueError, match="non-empty string"):
        rec.client().upsert_items("ctx", delete=[""])
    with pytest.raises(TypeError):
        rec.client().upsert_items("ctx", delete="abc")
    assert rec.requests == []


def test_batches_count_the_delete_ids_against_the_body_limit() -> None:
    ids = [f"{n:0>100}" for n in range(100)]  # about 103 bytes each as JSON
    sizes = [len(b.delete) for b in batches([], 1000, 2000, ids)]
    assert sum(sizes) == 100 and max(sizes) <= 19 and len(sizes) == 6


def test_metadata_is_sent_as_given_and_left_out_when_none() -> None:
    rec = Recorder(counts_of)
    rec.client().upsert_items(
        "ctx",
        [
            {"id": "a", "content": "t", "metadata": {"tenant": "acme", "n": None, "y": (1, 2)}},
            {"id": "b", "content": "t", "metadata": {}},
            {"id": "c", "content": "t"},
            Item(id="d", content="t", metadata={"k": [True]}),
        ],
    )
    assert json.loads(rec.requests[0].content)["items"] == [
        {"id": "a", "content": "t", "metadata": {"tenant": "acme", "n": None, "y": [1, 2]}},
        {"id": "b", "content": "t", "metadata": {}},  # {} clears the metadata
        {"id": "c", "content": "t"},  # absent keeps it
        {"id": "d", "content": "t", "metadata": {"k": [True]}},
    ]
    with pytest.raises(ValueError):
        normalise_items([{"id": "e", "content": "t", "metadata": ["not", "an", "object"]}])


def test_counts_add_up() -> None:
    a = UpsertCounts(created=1, changed=2, metadata_changed=3, unchanged=4, deleted=5, not_found=6)
    total = a + a + UpsertCounts.zero()
    assert total.model_dump() == {
        "created": 2,
        "changed": 4,
        "metadata_changed": 6,
        "unchanged": 8,
        "deleted": 10,
        "not_found": 12,
    }
    assert (total.total, total.total_deletes, total.to_embed) == (20, 22, 6)


def test_upsert_refuses_an_id_given_twice_before_sending() -> None:
    rec = Recorder(counts_of)
    items = [{"id": f"i{n % 1500}", "content": "t"} for n in range(1501)]
    with pytest.raises(ValueError, match="i0"):
        rec.client().upsert_items("ctx", items)
    assert rec.requests == []


def test_a_failed_later_batch_reports_what_was_stored() -> None:
    rec = Recorder(counts_of, error(422, "invalid", "items[3].content: must not be blank"))
    items = [{"id": f"i{n}", "content": "t"} for n in range(1500)]
    with pytest.raises(BadRequestError) as info:
        rec.client().upsert_items("ctx", items)
    assert info.value.partial_counts is not None
    assert info.value.partial_counts.created == 1000

    deletes = Recorder(counts_of, error(409, "conflict", "item d1500 belongs to context x"))
    with pytest.raises(ConflictError) as conflict:
        deletes.client().upsert_items("ctx", delete=[f"d{n}" for n in range(1600)])
    assert conflict.value.partial_counts is not None
    assert conflict.value.partial_counts.deleted == 1000

    first = Recorder(error(422, "invalid", "items[0].metadata: must be a JSON object"))
    with pytest.raises(BadRequestError) as nothing:
        first.client().upsert_items("ctx", [{"id": "a", "content": "t"}])
    assert nothing.value.partial_counts is None


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "cls"),
    [
        (error(400, "bad_request", "bad query string"), BadRequestError),
        (error(413, "too_large", "the body exceeds server.max_body_bytes"), BadRequestError),
        (error(415, "unsupported_media_type", "send JSON"), BadRequestError),
        (error(422, "invalid", "items must not be empty"), BadRequestError),
        (error(401, "unauthorized", "the bearer token is not valid"), UnauthorizedError),
        (error(404, "not_found", "no item a"), NotFoundError),
        (error(404, "not_found", "no such route"), UnsupportedOperationError),
        (
            error(405, "method_not_allowed", "this route does not take this method"),
            UnsupportedOperationError,
        ),
        (error(409, "conflict", "job j is already COMPLETED"), ConflictError),
        (error(503, "unavailable", "try again"), UnavailableError),
        (error(500, "internal", "internal database error (logged)"), ServerError),
        (httpx.Response(502, text="<html>Bad gateway</html>"), UnavailableError),
    ],
)
def test_each_status_has_its_error_class(response: httpx.Response, cls: type[Exception]) -> None:
    rec = Recorder(response)
    with pytest.raises(cls) as info:
        rec.client(retry=RetryPolicy(max_retries=0)).get_item("a")
    err = info.value
    assert isinstance(err, embedq.ApiError)
    assert err.status == response.status_code
    if response.headers.get("content-type") == "application/json":
        body = response.json()["error"]
        assert (err.code, err.reason) == (body["code"], body["reason"])
        assert body["reason"] in str(err)
    else:
        assert err.code is None and "Bad gateway" in err.reason


def test_deletes_answer_counts_and_missing_ids_are_reported() -> None:
    rec = Recorder(
        httpx.Response(200, json={"deleted": 1, "jobs_finished": 1}),
        error(404, "not_found", "no item b"),
        httpx.Response(200, json={"deleted": 1, "jobs_finished": 0}),
    )
    result = rec.client().delete_items(["a", "b", "c"])
    assert (result.deleted, result.missing, result.jobs_finished) == (("a", "c"), ("b",), 1)
    assert [(r.method, r.url.path) for r in rec.requests] == [
        ("DELETE", "/v1/items/a"),
        ("DELETE", "/v1/items/b"),
        ("DELETE", "/v1/items/c"),
    ]
    one = Recorder(httpx.Response(200, json={"deleted": 1, "jobs_finished": 0}))
    assert one.client().delete_item("x/y").deleted == 1
    assert one.requests[0].url.raw_path == b"/v1/items/x%2Fy"
    context = Recorder(httpx.Response(200, json={"deleted": 7, "jobs_finished": 2}))
    answer = context.client().delete_context("c")
    assert (answer.deleted, answer.jobs_finished) == (7, 2)
    assert (context.requests[0].method, context.requests[0].url.path) == (
        "DELETE",
        "/v1/contexts/c",
    )
    with pytest.raises(NotFoundError):
        Recorder(error(404, "not_found", "no item z")).client().delete_item("z")


def test_deletes_raise_unsupported_against_daemons_without_the_routes() -> None:
    old = Recorder(error(405, "method_not_allowed", "this route does not take this method"))
    with pytest.raises(UnsupportedOperationError):
        old.client().delete_items(["a"])
    old = Recorder(error(404, "not_found", "no such route"))
    with pytest.raises(UnsupportedOperationError):
        old.client().delete_context("c")
    with pytest.raises(UnsupportedOperationError):
        old.client().delete_item("a")


def test_search_sends_the_filter_as_given() -> None:
    answer = {"context_id": "c", "query": "q", "generation": 1, "model": "m", "hits": []}
    rec = Recorder(httpx.Response(200, json=answer))
    found = rec.client().search("c", "q", k=3, filter={"tenant": "acme", "year": (2024, 2025)})
    assert (found.generation, found.model, found.hits) == (1, "m", [])
    rec.client().search("c", "q")
    assert [json.loads(r.content) for r in rec.requests] == [
        {"query": "q", "k": 3, "filter": {"tenant": "acme", "year": [2024, 2025]}},
        {"query": "q", "k": 5},
    ]
    with pytest.raises(TypeError):
        rec.client().search("c", "q", filter=[("tenant", "acme")])  # type: ignore[arg-type]


def test_an_answer_that_is_not_json_is_a_response_error() -> None:
    rec = Recorder(httpx.Response(200, text="<html>hello</html>"))
    with pytest.raises(ResponseError) as info:
        rec.client().get_item("a")
    assert info.value.status == 200 and "hello" in info.value.body


def test_an_answer_missing_a_field_is_a_response_error() -> None:
    rec = Recorder(httpx.Response(200, json={"created": 1, "changed": 0}))
    with pytest.raises(ResponseError, match="UpsertCounts"):
        rec.client().upsert_items("c", [{"id": "a", "content": "t"}])


# --- forward compatibility ---------------------------------------------------------------


def test_unknown_answer_fields_and_values_are_kept_not_fatal() -> None:
    job = dict(
        JOB, deadline=7, state="PAUSED", priority="urgent", scope={"type": "tagged", "tag": "x"}
    )
    rec = Recorder(httpx.Response(200, json=job))
    view = rec.client().get_job("j")
    assert view.model_extra == {"deadline": 7}
    assert view.state == "PAUSED" and not view.is_final
    assert view.priority == "urgent"
    assert view.scope.type == "tagged" and view.scope.model_extra == {"tag": "x"}


def test_extra_job_fields_are_sent_as_given() -> None:
    rec = Recorder(httpx.Response(202, json=ACCEPTED))
    rec.client().create_job("all", deadline=5, metadata={"by": "test"})
    assert json.loads(rec.requests[0].content) == {
        "scope": {"type": "all"},
        "deadline": 5,
        "metadata": {"by": "test"},
    }


# --- priorities ----------------------------------------------------------------------------


def test_a_priority_is_sent_only_when_given() -> None:
    rec = Recorder(httpx.Response(202, json=ACCEPTED))
    rec.client().create_job(scope_context("c"), priority="bulk")
    rec.client().create_job(scope_items(["a"]), priority=Priority.INTERACTIVE)
    rec.client().create_job(scope_context("c"))
    rec.client().create_job(None, kind="reconcile", priority=Priority.BULK)
    rec.client().create_reconcile_job()
    rec.client().create_job("all", priority="urgent")  # the daemon judges it
    assert [json.loads(r.content) for r in rec.requests] == [
        {"scope": {"type": "context", "context_id": "c"}, "priority": "bulk"},
        {"scope": {"type": "items", "item_ids": ["a"]}, "priority": "interactive"},
        {"scope": {"type": "context", "context_id": "c"}},
        {"kind": "reconcile", "priority": "bulk"},
        {"kind": "reconcile"},
        {"scope": {"type": "all"}, "priority": "urgent"},
    ]


def test_an_unknown_priority_is_the_daemons_422() -> None:
    reason = 'priority: unknown priority "urgent"; the priorities are "interactive", ...'
    rec = Recorder(error(422, "invalid", reason))
    with pytest.raises(BadRequestError) as info:
        rec.client().create_job(scope_context("c"), priority="urgent", idempotency_key="k")
    assert (info.value.status, info.value.code, info.value.reason) == (422, "invalid", reason)
    with pytest.raises(BadRequestError):
        rec.client().set_job_priority(JOB_ID, "urgent")
    assert len(rec.requests) == 2  # neither is retried


def test_set_job_priority_patches_the_job_and_is_retried() -> None:
    changed = dict(JOB, priority="interactive", state="RUNNING")
    rec = Recorder(error(503, "unavailable", "the database"), httpx.Response(200, json=changed))
    view = rec.client().set_job_priority(JOB_ID, "interactive")
    assert (view.id, view.priority, view.state) == (JOB_ID, Priority.INTERACTIVE, "RUNNING")
    assert len(rec.requests) == 2
    for request in rec.requests:
        assert (request.method, request.url.path) == ("PATCH", f"/v1/jobs/{JOB_ID}")
        assert json.loads(request.content) == {"priority": "interactive"}
        assert request.headers["content-type"] == "application/json"

    ok = Recorder(httpx.Response(200, json=changed))
    accepted = embedq.JobAccepted.model_validate(ACCEPTED)
    ok.client().set_job_priority(accepted, Priority.BULK)
    ok.client().set_job_priority(view, "normal")
    ok.client().set_job_priority("a/b", "bulk")
    assert [(r.url.raw_path, json.loads(r.content)) for r in ok.requests] == [
        (f"/v1/jobs/{JOB_ID}".encode(), {"priority": "bulk"}),
        (f"/v1/jobs/{JOB_ID}".encode(), {"priority": "normal"}),
        (b"/v1/jobs/a%2Fb", {"priority": "bulk"}),
    ]
    with pytest.raises(ValueError):
        ok.client().set_job_priority("", "bulk")
    assert len(ok.requests) == 3


@pytest.mark.parametrize(
    ("response", "cls"),
    [
        (error(409, "conflict", "job j is already COMPLETED"), ConflictError),
        (error(404, "not_found", "no job j"), NotFoundError),
        (error(400, "bad_request", "not a UUID"), BadRequestError),
        (
            error(405, "method_not_allowed", "this route does not take this method"),
            UnsupportedOperationError,
        ),
    ],
)
def test_set_job_priority_errors(response: httpx.Response, cls: type[Exception]) -> None:
    rec = Recorder(response)
    with pytest.raises(cls):
        rec.client().set_job_priority("j", "bulk")
    assert len(rec.requests) == 1


def test_priorities_are_strings() -> None:
    assert [p.value for p in Priority] == ["interactive", "normal", "bulk"]
    assert isinstance(Priority.BULK, str) and str(Priority.BULK) == "bulk"
    assert Priority("interactive") is Priority.INTERACTIVE
    view = Recorder(httpx.Response(200, json=JOB)).client().get_job("j")
    assert view.priority == Priority.NORMAL


@pytest.mark.asyncio
async def test_the_async_client_sends_priorities_too() -> None:
    rec = Recorder(
        httpx.Response(202, json=ACCEPTED), httpx.Response(200, json=dict(JOB, priority="bulk"))
    )
    http = httpx.AsyncClient(transport=httpx.MockTransport(rec))
    async with AsyncClient("http://embedq.test", http_client=http, retry=FAST) as client:
        accepted = await client.create_job(scope_context("c"), priority="normal")
        view = await client.set_job_priority(accepted, "bulk")
    assert view.priority == Priority.BULK
    assert [(r.method, r.url.path, json.loads(r.content)) for r in rec.requests] == [
        (
            "POST",
            "/v1/jobs",
            {"scope": {"type": "context", "context_id": "c"}, "priority": "normal"},
        ),
        ("PATCH", f"/v1/jobs/{JOB_ID}", {"priority": "bulk"}),
    ]
    await http.aclose()


# --- tenants -------------------------------------------------------------------------------


def test_a_tenant_is_sent_only_when_given() -> None:
    rec = Recorder(httpx.Response(202, json=ACCEPTED))
    rec.client().create_job(scope_context("c"), tenant="acme")
    rec.client().create_job(scope_items(["a"]), priority=Priority.BULK, tenant="acme/eu-1")
    rec.client().create_job(scope_context("c"))
    rec.client().create_job(scope_context("c"), tenant=None)
    rec.client().create_reconcile_job()
    rec.client().create_job("all", tenant="has space")  # the daemon judges it
    assert [json.loads(r.content) for r in rec.requests] == [
        {"scope": {"type": "context", "context_id": "c"}, "tenant": "acme"},
        {"scope": {"type": "items", "item_ids": ["a"]}, "priority": "bulk", "tenant": "acme/eu-1"},
        {"scope": {"type": "context", "context_id": "c"}},
        {"scope": {"type": "context", "context_id": "c"}},
        {"kind": "reconcile"},
        {"scope": {"type": "all"}, "tenant": "has space"},
    ]


def test_an_invalid_tenant_is_the_daemons_422() -> None:
    reason = "tenant: 1 to 128 visible ASCII characters (no spaces or control characters)"
    rec = Recorder(error(422, "invalid", reason))
    with pytest.raises(BadRequestError) as info:
        rec.client().create_job(scope_context("c"), tenant="has space", idempotency_key="k")
    assert (info.value.status, info.value.code, info.value.reason) == (422, "invalid", reason)
    with pytest.raises(BadRequestError):
        rec.client().create_job(scope_context("c"), tenant="")
    assert len(rec.requests) == 2  # neither is retried
    assert json.loads(rec.requests[1].content)["tenant"] == ""


def test_a_jobs_tenant_is_read_and_may_be_null() -> None:
    view = Recorder(httpx.Response(200, json=dict(JOB, tenant="acme"))).client().get_job("j")
    assert view.tenant == "acme" and view.model_extra == {}
    assert Recorder(httpx.Response(200, json=JOB)).client().get_job("j").tenant is None
    older = {k: v for k, v in JOB.items() if k != "tenant"}  # a daemon without tenants
    assert Recorder(httpx.Response(200, json=older)).client().get_job("j").tenant is None
    page = {"jobs": [dict(JOB, tenant="acme"), JOB], "next_before": None}
    listed = Recorder(httpx.Response(200, json=page)).client().list_jobs()
    assert [j.tenant for j in listed.jobs] == ["acme", None]


@pytest.mark.asyncio
async def test_the_async_client_sends_tenants_too() -> None:
    rec = Recorder(
        httpx.Response(202, json=ACCEPTED),
        httpx.Response(202, json=ACCEPTED),
        httpx.Response(200, json=dict(JOB, tenant="acme")),
    )
    http = httpx.AsyncClient(transport=httpx.MockTransport(rec))
    async with AsyncClient("http://embedq.test", http_client=http, retry=FAST) as client:
        accepted = await client.create_job(scope_context("c"), tenant="acme")
        await client.create_job(scope_context("c"))
        assert (await client.get_job(accepted)).tenant == "acme"
    assert [json.loads(r.content) for r in rec.requests[:2]] == [
        {"scope": {"type": "context", "context_id": "c"}, "tenant": "acme"},
        {"scope": {"type": "context", "context_id": "c"}},
    ]
    await http.aclose()


# --- job kinds and dry runs ----------------------------------------------------------------

ESTIMATE = {
    "model": "m",
    "scope_items": 10,
    "items": 7,
    "up_to_date": 3,
    "too_long": 0,
    "tokens": 70,
    "requests": 1,
    "price_per_million_tokens": 0.02,
    "cost": 0.0000014,
    "seconds_at_quota": 0.02,
}


def test_job_kinds_are_sent_and_an_embed_job_needs_a_scope() -> None:
    rec = Recorder(httpx.Response(202, json=ACCEPTED))
    rec.client().create_reconcile_job(idempotency_key="nightly")
    rec.client().create_job(None, kind=embedq.JobKind.RECONCILE)
    rec.client().create_job(scope_all(), kind="reconcile")
    rec.client().create_job(scope_context("c"), kind=embedq.JobKind.EMBED)
    assert [json.loads(r.content) for r in rec.requests] == [
        {"kind": "reconcile"},
        {"kind": "reconcile"},
        {"scope": {"type": "all"}, "kind": "reconcile"},
        {"scope": {"type": "context", "context_id": "c"}, "kind": "embed"},
    ]
    assert rec.requests[0].headers["idempotency-key"] == "nightly"
    assert "idempotency-key" not in rec.requests[1].headers
    with pytest.raises(ValueError, match="needs a scope"):
        rec.client().create_job(None)
    with pytest.raises(ValueError, match="needs a scope"):
        rec.client().create_job(None, kind="embed")
    assert len(rec.requests) == 4


def test_a_reconcile_job_without_a_key_is_never_retried() -> None:
    rec = Recorder(error(503, "unavailable", "redis"), httpx.Response(202, json=ACCEPTED))
    with pytest.raises(UnavailableError):
        rec.client().create_reconcile_job()
    assert len(rec.requests) == 1


def test_estimate_is_a_dry_run_retried_like_a_read() -> None:
    rec = Recorder(error(503, "unavailable", "the database"), httpx.Response(200, json=ESTIMATE))
    estimate = rec.client().estimate_job(scope_context("c"))
    assert (estimate.items, estimate.up_to_date, estimate.tokens) == (7, 3, 70)
    assert estimate.cost == pytest.approx(0.0000014)
    assert len(rec.requests) == 2
    for request in rec.requests:
        assert (request.method, request.url.path) == ("POST", "/v1/jobs")
        assert request.url.params["dry_run"] == "true"
        assert "idempotency-key" not in request.headers
        assert json.loads(request.content) == {"scope": {"type": "context", "context_id": "c"}}
    with pytest.raises(ValueError, match="context_id"):
        rec.client().estimate_job("context")


def test_findings_are_read_from_a_reconcile_jobs_result() -> None:
    findings = {
        "points_scanned": 9,
        "orphans_deleted": 1,
        "items_checked": 8,
        "points_missing": 2,
        "points_stale": 3,
        "payloads_refreshed": 4,
    }
    reconcile = dict(JOB, kind="reconcile", result=findings)
    view = Recorder(httpx.Response(200, json=reconcile)).client().get_job("j")
    assert view.findings == embedq.ReconcileFindings(**findings)
    assert view.result == findings
    assert Recorder(httpx.Response(200, json=JOB)).client().get_job("j").findings is None
    queued = dict(JOB, kind="reconcile")  # before its first page: no result yet
    assert Recorder(httpx.Response(200, json=queued)).client().get_job("j").findings is None


# --- schedules ---------------------------------------------------------------------------

FIRING = {
    "tick_ms": 1_796_349_335_000,
    "job_id": JOB_ID,
    "result": None,
    "fence": 3,
    "fired_by": "host-1",
    "fired_at": 1_796_349_335_077,
}
SCHEDULES: dict[str, Any] = {
    "schedules": [
        {
            "name": "requeue-failed",
            "cron": "0 0 3 * * *",
            "missed": "catch_up_once",
            "job": {
                "type": "embed",
                "scope": {"type": "failed"},
                "priority": "bulk",
                "tenant": None,
            },
            "next_tick_ms": 1_796_353_200_000,
            "firings": [FIRING],
        },
        {
            "name": "purge",
            "cron": "0 0 * * * *",
            "missed": "skip",
            "job": {"type": "purge_dead_letters", "older_than_days": 7},
            "next_tick_ms": None,
            "firings": [dict(FIRING, job_id=None, result={"dead_letters_removed": 2})],
        },
        {
            "name": "nightly",
            "cron": "0 30 2 * * *",
            "missed": "catch_up_once",
            "job": {"type": "reconcile"},
            "next_tick_ms": 1_796_351_400_000,
            "firings": [],
        },
    ],
    "scheduler": {"active": True, "fence": 3, "fired": 12, "stood_down": 1, "last_error": None},
}


def test_schedules_is_a_read_retried_with_an_optional_firings_count() -> None:
    rec = Recorder(error(503, "unavailable", "the database"), httpx.Response(200, json=SCHEDULES))
    client = rec.client()
    answer = client.schedules()
    assert len(rec.requests) == 2  # retried like a read
    client.schedules(firings=0)
    client.schedules(firings=25)
    assert [(r.method, r.url.path, dict(r.url.params)) for r in rec.requests] == [
        ("GET", "/v1/schedules", {}),
        ("GET", "/v1/schedules", {}),
        ("GET", "/v1/schedules", {"firings": "0"}),
        ("GET", "/v1/schedules", {"firings": "25"}),
    ]
    assert [s.name for s in answer.schedules] == ["requeue-failed", "purge", "nightly"]
    embed_job = answer.schedules[0]
    assert embed_job.missed == embedq.MissedTicks.CATCH_UP_ONCE
    assert embed_job.job.type == embedq.ScheduledJobType.EMBED
    assert embed_job.job.scope == scope_failed() and embed_job.job.priority == Priority.BULK
    assert embed_job.firings == [embedq.ScheduleFiring(**FIRING)]
    purge = answer.get("purge")
    assert purge is not None and purge.missed == embedq.MissedTicks.SKIP
    assert purge.job.older_than_days == 7 and purge.next_tick_ms is None
    assert purge.firings[0].job_id is None
    assert purge.firings[0].result == {"dead_letters_removed": 2}
    assert answer.get("nightly") is not None and answer.get("missing") is None
    assert answer.scheduler == embedq.SchedulerFigures(
        active=True, fence=3, fired=12, stood_down=1, last_error=None
    )


def test_firings_out_of_range_are_the_daemons_400_not_retried() -> None:
    rec = Recorder(error(400, "bad_request", "firings must be between 0 and 100"))
    with pytest.raises(BadRequestError) as info:
        rec.client().schedules(firings=101)
    assert (info.value.status, info.value.reason) == (400, "firings must be between 0 and 100")
    assert len(rec.requests) == 1
    assert rec.requests[0].url.params["firings"] == "101"  # sent as given


def test_unknown_schedule_kinds_and_fields_are_kept() -> None:
    schedule = dict(
        SCHEDULES["schedules"][2],
        missed="fire_all",
        job={"type": "webhook", "url": "https://example.test"},
        paused=True,
    )
    answer = {"schedules": [schedule], "scheduler": {"active": False, "fired": 0, "stood_down": 0}}
    view = Recorder(httpx.Response(200, json=answer)).client().schedules().schedules[0]
    assert view.missed == "fire_all" and view.model_extra == {"paused": True}
    assert view.job.type == "webhook" and view.job.model_extra == {"url": "https://example.test"}
    with pytest.raises(ResponseError, match="ScheduleList"):
        Recorder(httpx.Response(200, json={"schedules": []})).client().schedules()


@pytest.mark.asyncio
async def test_the_async_client_reads_schedules_too() -> None:
    rec = Recorder(httpx.Response(200, json=SCHEDULES))
    http = httpx.AsyncClient(transport=httpx.MockTransport(rec))
    async with AsyncClient("http://embedq.test", http_client=http, retry=FAST) as client:
        answer = await client.schedules(firings=3)
    assert answer.scheduler.active and answer.schedules[1].job.type == "purge_dead_letters"
    assert [(r.method, r.url.path, dict(r.url.params)) for r in rec.requests] == [
        ("GET", "/v1/schedules", {"firings": "3"})
    ]
    await http.aclose()


# --- documents ---------------------------------------------------------------------------

GUIDE = b"# Guide\n\n## Install\n\nUnpack it.\n\n## Use\n\nRun it.\n"
INGESTED: dict[str, Any] = {
    "document_id": "guide",
    "context_id": "ctx",
    "type": "markdown",
    "pages": None,
    "chunks": 3,
    "created": 2,
    "changed": 1,
    "metadata_changed": 0,
    "unchanged": 0,
    "removed": 1,
    "job_id": JOB_ID,
}


def test_a_document_is_sent_as_raw_bytes_with_its_query_and_content_type() -> None:
    rec = Recorder(httpx.Response(200, json=INGESTED))
    client = rec.client()
    answer = client.ingest_document(
        "ctx",
        "guide",
        GUIDE,
        type=DocumentType.MARKDOWN,
        chunk_tokens=40,
        overlap_tokens=0,
        metadata={"lang": "en", "tags": ("a", "b"), "title": "Über"},
    )
    request = rec.requests[0]
    assert (request.method, request.url.path) == ("POST", "/v1/contexts/ctx/documents")
    assert dict(request.url.params) == {
        "document_id": "guide",
        "type": "markdown",
        "chunk_tokens": "40",
        "overlap_tokens": "0",
        "metadata": '{"lang":"en","tags":["a","b"],"title":"Über"}',
    }
    assert request.content == GUIDE  # as it is: not JSON, not a form
    assert request.headers["content-type"] == "application/octet-stream"
    assert request.headers["content-length"] == str(len(GUIDE))
    assert request.headers["accept"] == "application/json"

    assert (answer.document_id, answer.context_id, answer.type) == ("guide", "ctx", "markdown")
    assert answer.type == DocumentType.MARKDOWN and answer.pages is None
    assert (answer.chunks, answer.to_embed, answer.removed, answer.job_id) == (3, 3, 1, JOB_ID)
    assert answer.item_ids == ["guide#0", "guide#1", "guide#2"]
    assert chunk_id("guide", 7) == "guide#7"


def test_a_document_without_settings_sends_only_its_id_and_the_declared_type() -> None:
    rec = Recorder(httpx.Response(200, json=INGESTED))
    client = rec.client()
    client.ingest_document("ctx", "guide", GUIDE)
    client.ingest_document("ctx", "guide", GUIDE, content_type="text/markdown; charset=utf-8")
    client.ingest_document("ctx", "a/b", GUIDE, type="text", metadata={})
    assert [dict(r.url.params) for r in rec.requests] == [
        {"document_id": "guide"},
        {"document_id": "guide"},
        {"document_id": "a/b", "type": "text", "metadata": "{}"},
    ]
    assert [r.headers["content-type"] for r in rec.requests] == [
        "application/octet-stream",
        "text/markdown; charset=utf-8",
        "application/octet-stream",
    ]
    assert rec.requests[2].url.raw_path.startswith(b"/v1/contexts/ctx/documents?document_id=a%2Fb")


def test_a_document_may_be_any_bytes_like_value_or_a_binary_file() -> None:
    rec = Recorder(httpx.Response(200, json=INGESTED))
    client = rec.client()
    pdf = b"%PDF-1.7\n" + bytes(range(256))
    client.ingest_document("ctx", "d", bytearray(pdf))
    client.ingest_document("ctx", "d", memoryview(pdf))
    client.ingest_document("ctx", "d", io.BytesIO(pdf))
    client.ingest_document("ctx", "d", io.BufferedReader(io.BytesIO(pdf)))
    assert [r.content for r in rec.requests] == [pdf] * 4


def test_what_is_not_a_document_is_refused_before_sending() -> None:
    rec = Recorder(httpx.Response(200, json=INGESTED))
    client = rec.client()
    with pytest.raises(TypeError, match="encode"):
        client.ingest_document("ctx", "d", "# text, not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="binary mode"):
        client.ingest_document("ctx", "d", io.StringIO("# text"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="binary file object"):
        client.ingest_document("ctx", "d", 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mapping"):
        client.ingest_document("ctx", "d", GUIDE, metadata=[("lang", "en")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="document_id"):
        client.ingest_document("ctx", "", GUIDE)
    with pytest.raises(ValueError, match="context_id"):
        client.ingest_document("", "d", GUIDE)
    with pytest.raises(ValueError, match="document_id"):
        client.delete_document("")
    assert rec.requests == []
    with pytest.raises(ValueError, match="not both"):
        Call("ingest_document", "/", lambda r: r, body={}, content=b"x")


def test_ingesting_is_never_retried() -> None:
    for failure in (
        error(503, "unavailable", "the queue (Redis) is unavailable"),
        httpx.ReadTimeout("still extracting"),
        httpx.ConnectError("reset"),
    ):
        rec = Recorder(failure, httpx.Response(200, json=INGESTED))
        with pytest.raises((UnavailableError, EmbedqConnectionError)):
            rec.client().ingest_document("ctx", "guide", io.BytesIO(GUIDE))
        assert len(rec.requests) == 1


@pytest.mark.parametrize(
    ("response", "cls"),
    [
        (error(400, "bad_request", "document id \"a#1\" contains '#'"), BadRequestError),
        (error(409, "conflict", "document guide belongs to context c1"), ConflictError),
        (
            error(413, "too_large", "the document is larger than documents.max_bytes"),
            BadRequestError,
        ),
        (
            error(415, "unsupported_media_type", 'unsupported document type: "image/png"'),
            BadRequestError,
        ),
        (error(422, "invalid", "the document holds no text"), BadRequestError),
        (error(404, "not_found", "no such route"), UnsupportedOperationError),
    ],
)
def test_document_errors_have_their_classes(response: httpx.Response, cls: type[Exception]) -> None:
    rec = Recorder(response)
    with pytest.raises(cls) as info:
        rec.client().ingest_document("ctx", "guide", GUIDE)
    assert isinstance(info.value, embedq.ApiError)
    assert (info.value.status, info.value.reason) == (
        response.status_code,
        response.json()["error"]["reason"],
    )
    assert len(rec.requests) == 1


def test_delete_document_is_retried_and_a_missing_one_is_not_found() -> None:
    rec = Recorder(
        error(503, "unavailable", "the database"),
        httpx.Response(200, json={"deleted": 3, "jobs_finished": 1}),
    )
    answer = rec.client().delete_document("guide")
    assert (answer.deleted, answer.jobs_finished) == (3, 1)
    assert [(r.method, r.url.raw_path) for r in rec.requests] == [
        ("DELETE", b"/v1/documents/guide"),
        ("DELETE", b"/v1/documents/guide"),
    ]
    assert rec.requests[0].content == b""
    missing = Recorder(error(404, "not_found", "no document guide"))
    with pytest.raises(NotFoundError) as info:
        missing.client().delete_document("guide")
    assert info.value.reason == "no document guide" and len(missing.requests) == 1


def test_chunk_ids_are_encoded_in_paths() -> None:
    assert segment("guide#3", "item_id") == "guide%233"
    record = Recorder(error(404, "not_found", "no item guide#3"))
    with pytest.raises(NotFoundError):
        record.client().get_item(chunk_id("guide", 3))
    with pytest.raises(NotFoundError):
        record.client().delete_item("guide#3")
    assert [r.url.raw_path for r in record.requests] == [b"/v1/items/guide%233"] * 2
    assert all(r.url.fragment == "" for r in record.requests)  # not cut off as a fragment


def test_unknown_document_types_and_fields_are_kept() -> None:
    newer = dict(INGESTED, type="epub", pages=12, language="en")
    answer = Recorder(httpx.Response(200, json=newer)).client().ingest_document("c", "d", b"x")
    assert (answer.type, answer.pages, answer.model_extra) == ("epub", 12, {"language": "en"})
    older = {k: v for k, v in INGESTED.items() if k not in ("pages", "job_id")}
    answer = Recorder(httpx.Response(200, json=older)).client().ingest_document("c", "d", b"x")
    assert answer.pages is None and answer.job_id is None
    with pytest.raises(ResponseError, match="DocumentIngested"):
        Recorder(httpx.Response(200, json={"chunks": 1})).client().ingest_document("c", "d", b"x")
    assert [t.value for t in DocumentType] == ["pdf", "html", "markdown", "text"]
    assert ROUTES["ingest_document"].query == (
        "document_id",
        "type",
        "chunk_tokens",
        "overlap_tokens",
        "metadata",
    )


@pytest.mark.asyncio
async def test_the_async_client_ingests_and_deletes_documents_too() -> None:
    rec = Recorder(
        httpx.Response(200, json=INGESTED),
        httpx.Response(200, json={"deleted": 3, "jobs_finished": 0}),
    )
    http = httpx.AsyncClient(transport=httpx.MockTransport(rec))
    async with AsyncClient("http://embedq.test", http_client=http, retry=FAST) as client:
        answer = await client.ingest_document(
            "ctx", "guide", io.BytesIO(GUIDE), content_type="text/markdown", chunk_tokens=64
        )
        gone = await client.delete_document(answer.document_id)
    assert (answer.chunks, gone.deleted) == (3, 3)
    assert [(r.method, r.url.path, dict(r.url.params)) for r in rec.requests] == [
        ("POST", "/v1/contexts/ctx/documents", {"document_id": "guide", "chunk_tokens": "64"}),
        ("DELETE", "/v1/documents/guide", {}),
    ]
    assert rec.requests[0].content == GUIDE
    assert rec.requests[0].headers["content-type"] == "text/markdown"
    await http.aclose()


# --- arguments ---------------------------------------------------------------------------


def test_scopes_are_checked_for_known_kinds() -> None:
    assert scope_items(["a", "b"]).to_json() == {"type": "items", "item_ids": ["a", "b"]}
    with pytest.raises(ValueError):
        scope_items([])
    rec = Recorder(httpx.Response(202, json=ACCEPTED))
    with pytest.raises(ValueError, match="context_id"):
        rec.client().create_job("context")
    with pytest.raises(ValueError, match="item_ids"):
        rec.client().create_job({"type": "items", "context_id": "c"})
    rec.client().create_job({"type": "newer_kind", "x": 1})
    assert json.loads(rec.requests[-1].content) == {"scope": {"type": "newer_kind", "x": 1}}


def test_requeue_takes_exactly_one_choice() -> None:
    rec = Recorder(httpx.Response(202, json={"requeued": 0, "jobs": [], "removed": 0}))
    with pytest.raises(ValueError):
        rec.client().requeue_dead_letters()
    with pytest.raises(ValueError):
        rec.client().requeue_dead_letters(ids=["1-0"], all=True)
    rec.client().requeue_dead_letters(job_id="j")
    assert json.loads(rec.requests[0].content) == {"job_id": "j"}


def test_path_parameters_are_encoded() -> None:
    assert segment("a/b c", "id") == "a%2Fb%20c"
    assert segment("..", "id") == "%2E%2E"
    with pytest.raises(ValueError):
        segment("", "item_id")
    rec = Recorder(error(404, "not_found", "no item"))
    with pytest.raises(NotFoundError):
        rec.client().get_item("..")
    assert rec.requests[0].url.raw_path == b"/v1/items/%2E%2E"


def test_token_and_url_come_from_arguments_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMBEDQ_URL", "http://from-env:9")
    monkeypatch.setenv("EMBEDQ_ADMIN_TOKEN", "token-from-the-environment")
    rec = Recorder(httpx.Response(200, json={"status": "ok"}))
    http = httpx.Client(transport=httpx.MockTransport(rec))
    Client(http_client=http).health()
    Client("http://arg:1", token="token-from-an-argument", http_client=http).health()
    Client(token="", http_client=http).health()
    assert [str(r.url) for r in rec.requests] == [
        "http://from-env:9/healthz",
        "http://arg:1/healthz",
        "http://from-env:9/healthz",
    ]
    assert [r.headers.get("authorization") for r in rec.requests] == [
        "Bearer token-from-the-environment",
        "Bearer token-from-an-argument",
        None,
    ]
    monkeypatch.delenv("EMBEDQ_URL")
    assert Client().base_url == "http://127.0.0.1:8080"


def test_normalise_items_takes_models_and_mappings() -> None:
    items = normalise_items([Item(id="a", content="x"), {"id": "b", "content": "y"}])
    assert [i.id for i in items] == ["a", "b"]
