"""The example backend end to end: PostgreSQL rows, a real embedq daemon, the bulk
regeneration that answers at once, its status route, search, and delete."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
from fastapi.testclient import TestClient

from embedq import Client, ItemStatus, JobState, NotFoundError

N = 300


def new_context() -> str:
    return f"ctx-{uuid.uuid4().hex[:10]}"


def passages(ctx: str, n: int = N) -> list[dict[str, str]]:
    return [
        {"id": f"{ctx}-{i:04d}", "content": f"Passage {i} of {ctx}: notes on topic {i * 7 % 101}"}
        for i in range(n)
    ]


def rows(database_url: str, ctx: str) -> dict[str, str]:
    """The backend's rows of a context, read straight from PostgreSQL."""
    url, _, options = database_url.replace("postgresql+psycopg://", "postgresql://", 1).partition(
        "?"
    )
    with psycopg.connect(f"{url}?{options}") as conn:
        found = conn.execute(
            "SELECT id, content FROM context_items WHERE context_id = %s", (ctx,)
        ).fetchall()
    return dict(found)


def save(app: TestClient, ctx: str, items: list[dict[str, str]]) -> dict[str, object]:
    response = app.put(f"/contexts/{ctx}/items", json={"items": items})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def regenerate(app: TestClient, ctx: str | None, **headers: str) -> dict[str, object]:
    started = time.perf_counter()
    response = app.post(
        "/admin/bulk-regenerate-embeddings",
        json={"context_id": ctx} if ctx else None,
        headers=headers,
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 202, response.text
    assert elapsed < 2.0  # it only enqueues (the old endpoint took 100 x 300 ms)
    body: dict[str, object] = response.json()
    assert response.headers["location"] == body["status_url"]
    return body


def wait(app: TestClient, status_url: object) -> dict[str, object]:
    response = app.get(f"{status_url}?wait=20")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    assert body["finished"] is True, body
    return body


def test_save_regenerate_wait_and_search(
    app_client: TestClient, embedq_client: Client, database_url: str
) -> None:
    ctx = new_context()
    items = passages(ctx)
    saved = save(app_client, ctx, items)
    assert (saved["saved"], saved["created"], saved["changed"]) == (N, N, 0)
    assert len(rows(database_url, ctx)) == N
    first = embedq_client.wait_for_job(str(saved["job_id"]), timeout=20, poll_interval=0.05)
    assert (first.state, first.completed, first.failed) == (JobState.COMPLETED, N, 0)

    # Regenerating changes nothing that is up to date: every item is skipped.
    accepted = regenerate(app_client, ctx)
    assert accepted["state"] == "QUEUED" and accepted["created"] is True
    status = wait(app_client, accepted["status_url"])
    assert status["state"] == "COMPLETED" and status["progress"] == 1.0
    assert (status["total"], status["done"], status["skipped"], status["failed"]) == (N, N, N, 0)

    # An edit is embedded again; the others stay skipped.
    edited = dict(items[137], content="The lighthouse keeper logs the tides every night.")
    assert save(app_client, ctx, [edited])["changed"] == 1
    status = wait(app_client, regenerate(app_client, ctx)["status_url"])
    assert (status["total"], status["failed"]) == (N, 0)
    assert status["completed"] + status["skipped"] == N
    record = embedq_client.get_item(edited["id"])
    assert record.status == ItemStatus.COMPLETED and record.is_embedded

    found = app_client.get(f"/contexts/{ctx}/search", params={"q": edited["content"], "k": 3})
    assert found.status_code == 200
    hits = found.json()["hits"]
    assert hits[0]["id"] == edited["id"] and hits[0]["content"] == edited["content"]
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    other = app_client.get(f"/contexts/{ctx}/search", params={"q": items[5]["content"]})
    assert other.json()["hits"][0]["id"] == items[5]["id"]


def test_delete_removes_the_item_from_search(
    app_client: TestClient, embedq_client: Client, database_url: str
) -> None:
    ctx = new_context()
    items = passages(ctx, 20)
    saved = save(app_client, ctx, items)
    embedq_client.wait_for_job(str(saved["job_id"]), timeout=20, poll_interval=0.05)
    gone = items[3]

    assert embedq_client.search(ctx, gone["content"], k=1).item_ids == [gone["id"]]

    response = app_client.delete(f"/contexts/{ctx}/items/{gone['id']}")
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": gone["id"], "removed_from_embedq": True}
    assert app_client.delete(f"/contexts/{ctx}/items/{gone['id']}").status_code == 404
    assert gone["id"] not in rows(database_url, ctx) and len(rows(database_url, ctx)) == 19
    hits = app_client.get(f"/contexts/{ctx}/search", params={"q": gone["content"]}).json()["hits"]
    assert gone["id"] not in [h["id"] for h in hits] and len(hits) == 5

    # embedq forgot it too: its record and its vector are gone.
    with pytest.raises(NotFoundError):
        embedq_client.get_item(gone["id"])
    assert gone["id"] not in embedq_client.search(ctx, gone["content"], k=20).item_ids
    assert len(embedq_client.search(ctx, gone["content"], k=20).hits) == 19


def test_a_delete_without_embedq_is_rolled_back(
    offline_app: TestClient, app_client: TestClient, embedq_client: Client, database_url: str
) -> None:
    ctx = new_context()
    items = passages(ctx, 2)
    save(app_client, ctx, items)
    response = offline_app.delete(f"/contexts/{ctx}/items/{items[0]['id']}")
    assert response.status_code == 503 and "embedq is unavailable" in response.json()["detail"]
    assert len(rows(database_url, ctx)) == 2  # the row is still there, and so is the item
    assert embedq_client.get_item(items[0]["id"]).context_id == ctx


def test_regenerate_everything_and_idempotency(app_client: TestClient) -> None:
    ctx = new_context()
    save(app_client, ctx, passages(ctx, 5))
    key = f"regen-{uuid.uuid4().hex}"
    first = regenerate(app_client, ctx, **{"Idempotency-Key": key})
    again = regenerate(app_client, ctx, **{"Idempotency-Key": key})
    assert again["job_id"] == first["job_id"] and again["created"] is False
    everything = regenerate(app_client, None)
    status = wait(app_client, everything["status_url"])
    assert status["state"] == "COMPLETED" and status["total"] >= 5 and status["failed"] == 0


def test_status_without_wait_and_unknown_jobs(app_client: TestClient) -> None:
    ctx = new_context()
    save(app_client, ctx, passages(ctx, 3))
    accepted = regenerate(app_client, ctx)
    now = app_client.get(str(accepted["status_url"]))
    assert now.status_code == 200 and now.json()["job_id"] == accepted["job_id"]
    unknown = "/admin/bulk-regenerate-embeddings/019a0000-0000-7000-8000-000000000000"
    assert app_client.get(unknown).status_code == 404
    assert app_client.get("/admin/bulk-regenerate-embeddings/not-a-job").status_code == 404
    missing = app_client.post("/admin/bulk-regenerate-embeddings", json={"context_id": "nope"})
    assert missing.status_code == 404 and "no context nope" in missing.json()["detail"]


def test_a_save_embedq_refuses_changes_no_row(
    app_client: TestClient, embedq_client: Client, database_url: str
) -> None:
    a, b = new_context(), new_context()
    saved = save(app_client, a, [{"id": f"{a}-shared", "content": "first"}])
    embedq_client.wait_for_job(str(saved["job_id"]), timeout=20, poll_interval=0.05)
    moved = app_client.put(
        f"/contexts/{b}/items", json={"items": [{"id": f"{a}-shared", "content": "second"}]}
    )
    assert moved.status_code == 409
    assert rows(database_url, a) == {f"{a}-shared": "first"} and rows(database_url, b) == {}
    hits = app_client.get(f"/contexts/{a}/search", params={"q": "first"}).json()["hits"]
    assert hits == [
        {"id": f"{a}-shared", "score": pytest.approx(1.0, abs=1e-4), "content": "first"}
    ]


def test_a_save_with_a_repeated_id_is_refused(app_client: TestClient, database_url: str) -> None:
    ctx = new_context()
    twice = [{"id": f"{ctx}-a", "content": "one"}, {"id": f"{ctx}-a", "content": "two"}]
    response = app_client.put(f"/contexts/{ctx}/items", json={"items": twice})
    assert response.status_code == 422 and "given twice" in response.text
    assert rows(database_url, ctx) == {}


def test_a_save_without_embedq_is_rolled_back(
    offline_app: TestClient, app_client: TestClient, database_url: str
) -> None:
    ctx = new_context()
    response = offline_app.put(f"/contexts/{ctx}/items", json={"items": passages(ctx, 2)})
    assert response.status_code == 503 and "embedq is unavailable" in response.json()["detail"]
    assert rows(database_url, ctx) == {}  # nothing was committed
    assert save(app_client, ctx, passages(ctx, 2))["created"] == 2
    assert len(rows(database_url, ctx)) == 2
