"""The contract check: the client's models agree with a live daemon's /openapi.json, and every
kind of disagreement, in either direction, is caught."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from embedq import contract
from embedq._operations import PENDING_OPERATIONS
from embedq.contract import Finding, check_document, fetch_document, main
from embedq.models import SCHEMA_ENUMS, SCHEMA_MODELS
from embedq.testing import Daemon


@pytest.fixture(scope="module")
def document(daemon: Daemon) -> dict[str, Any]:
    return fetch_document(daemon.url, token="")


def fatal(findings: list[Finding]) -> list[str]:
    return [str(f) for f in findings if f.fatal]


def new_failures(document: dict[str, Any], changed: dict[str, Any]) -> list[str]:
    """The failures a change of the document adds (so that these tests do not depend on
    whether the live document matches; the first test checks that)."""
    before = set(fatal(check_document(document)))
    return sorted(f for f in fatal(check_document(changed)) if f not in before)


def test_the_client_matches_the_live_document(document: dict[str, Any]) -> None:
    findings = check_document(document)
    assert fatal(findings) == []
    assert set(SCHEMA_MODELS) <= set(document["components"]["schemas"])


def test_the_command_line_passes_against_the_daemon(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([daemon.url, "--token", ""]) == 0
    out = capsys.readouterr().out
    assert "0 failures" in out


def test_a_field_only_the_document_has_fails(document: dict[str, Any]) -> None:
    doc = copy.deepcopy(document)
    doc["components"]["schemas"]["ItemRecord"]["properties"]["priority"] = {"type": "integer"}
    assert new_failures(document, doc) == [
        "FAIL  ItemRecord (ItemRecord).priority: in the document, not in the client's model"
    ]


def test_a_field_only_the_client_has_fails(document: dict[str, Any]) -> None:
    doc = copy.deepcopy(document)
    del doc["components"]["schemas"]["Hit"]["properties"]["content"]
    assert new_failures(document, doc) == [
        "FAIL  Hit (Hit).content: in the client's model, not in the document"
    ]


def test_a_field_of_a_flattened_record_is_seen_in_its_view(document: dict[str, Any]) -> None:
    doc = copy.deepcopy(document)
    doc["components"]["schemas"]["JobRecord"]["properties"]["mode"] = {"type": "string"}
    assert new_failures(document, doc) == [
        "FAIL  JobRecord (JobRecord).mode: in the document, not in the client's model",
        "FAIL  JobView (JobView).mode: in the document, not in the client's model",
    ]


def test_a_new_request_field_fails(document: dict[str, Any]) -> None:
    doc = copy.deepcopy(document)
    doc["components"]["schemas"]["CreateJobBody"]["properties"]["deadline"] = {"type": "integer"}
    doc["components"]["schemas"]["CreateJobBody"].setdefault("required", []).append("deadline")
    assert new_failures(document, doc) == [
        "FAIL  CreateJobBody (CreateJobRequest).deadline: in the document, not in the client's "
        "model"
    ]


def test_a_required_request_field_must_be_required_in_the_client(
    document: dict[str, Any],
) -> None:
    doc = copy.deepcopy(document)
    doc["components"]["schemas"]["CreateJobBody"].setdefault("required", []).append("priority")
    assert new_failures(document, doc) == [
        "FAIL  CreateJobBody (CreateJobRequest).priority: the document requires it; the client "
        "may leave it out"
    ]


def test_priorities_and_the_priority_route_are_compared(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "priority" in schemas["JobRecord"]["properties"]
    assert "priority" in schemas["CreateJobBody"]["properties"]
    assert schemas["UpdateJobBody"]["required"] == ["priority"]
    assert "patch" in document["paths"]["/v1/jobs/{job_id}"]
    doc = copy.deepcopy(document)
    _enum_holder(doc["components"]["schemas"]["Priority"])["enum"].append("urgent")
    del doc["paths"]["/v1/jobs/{job_id}"]["patch"]
    assert new_failures(document, doc) == [
        "FAIL  PATCH /v1/jobs/{job_id}: the client calls it (set_job_priority); the document "
        "lacks it",
        "FAIL  Priority.urgent: a value in the document, not in the client's enum",
    ]


def test_tenants_are_compared(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "tenant" in schemas["JobRecord"]["properties"]
    assert "tenant" in schemas["CreateJobBody"]["properties"]
    assert "tenant" not in schemas["CreateJobBody"].get("required", [])
    doc = copy.deepcopy(document)
    del doc["components"]["schemas"]["JobRecord"]["properties"]["tenant"]
    del doc["components"]["schemas"]["CreateJobBody"]["properties"]["tenant"]
    assert new_failures(document, doc) == [
        "FAIL  CreateJobBody (CreateJobRequest).tenant: in the client's model, not in the document",
        "FAIL  JobRecord (JobRecord).tenant: in the client's model, not in the document",
        "FAIL  JobView (JobView).tenant: in the client's model, not in the document",
    ]


def test_optional_and_nullable_answers_must_be_optional_in_the_client(
    document: dict[str, Any],
) -> None:
    doc = copy.deepcopy(document)
    schema = doc["components"]["schemas"]["UpsertCounts"]
    schema["required"] = [r for r in schema["required"] if r != "changed"]
    schema["properties"]["created"] = {"type": ["integer", "null"]}
    assert new_failures(document, doc) == [
        "FAIL  UpsertCounts (UpsertCounts).changed: the document may leave it out; the client "
        "requires it",
        "FAIL  UpsertCounts (UpsertCounts).created: the document allows null; the client does not",
    ]


def test_enum_values_and_scope_kinds_are_compared(document: dict[str, Any]) -> None:
    doc = copy.deepcopy(document)
    schemas = doc["components"]["schemas"]
    _enum_holder(schemas["JobState"])["enum"].append("PAUSED")
    scope = copy.deepcopy(schemas["JobScope"]["oneOf"][0])
    scope["properties"]["type"] = {"type": "string", "enum": ["tagged"]}
    scope["required"] = ["type"]
    schemas["JobScope"]["oneOf"].append(scope)
    found = new_failures(document, doc)
    assert "FAIL  JobState.PAUSED: a value in the document, not in the client's enum" in found
    assert "FAIL  JobScope[tagged]: a kind of scope in the document, not in the client" in found


def test_the_schedules_route_and_its_schemas_are_compared(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    modelled = {"ScheduleList", "ScheduleView", "ScheduleFiring", "SchedulerFigures"}
    assert modelled | {"ScheduledJob"} <= set(SCHEMA_MODELS) & set(schemas)
    assert "MissedTicks" in SCHEMA_ENUMS and "MissedTicks" in schemas
    doc = copy.deepcopy(document)
    schemas = doc["components"]["schemas"]
    _enum_holder(schemas["MissedTicks"])["enum"].append("fire_all")
    schemas["SchedulerFigures"]["properties"]["lease_until_ms"] = {"type": "integer"}
    del schemas["ScheduleFiring"]["properties"]["fired_by"]
    operation = doc["paths"]["/v1/schedules"]["get"]
    operation["parameters"] = [p for p in operation["parameters"] if p["name"] != "firings"]
    assert new_failures(document, doc) == [
        "FAIL  GET /v1/schedules?firings: the client sends it (schedules); the document's "
        "operation lacks it",
        "FAIL  MissedTicks.fire_all: a value in the document, not in the client's enum",
        "FAIL  ScheduleFiring (ScheduleFiring).fired_by: in the client's model, not in the "
        "document",
        "FAIL  SchedulerFigures (SchedulerFigures).lease_until_ms: in the document, not in the "
        "client's model",
    ]
    del doc["paths"]["/v1/schedules"]
    assert "FAIL  GET /v1/schedules: the client calls it (schedules); the document lacks it" in (
        new_failures(document, doc)
    )


def test_kinds_of_scheduled_job_are_compared(document: dict[str, Any]) -> None:
    doc = copy.deepcopy(document)
    variants = doc["components"]["schemas"]["ScheduledJob"]["oneOf"]
    reconcile = next(v for v in variants if v["properties"]["type"]["enum"] == ["reconcile"])
    webhook = copy.deepcopy(reconcile)
    webhook["properties"]["type"] = {"type": "string", "enum": ["webhook"]}
    variants.append(webhook)
    reconcile["properties"]["older_than_days"] = {"type": "integer"}
    embed = next(v for v in variants if v["properties"]["type"]["enum"] == ["embed"])
    del embed["properties"]["tenant"]
    assert new_failures(document, doc) == [
        "FAIL  ScheduledJob (ScheduledJob).tenant: in the client's model, not in the document",
        "FAIL  ScheduledJob[embed].tenant: in SCHEDULED_JOB_FIELDS, not in the document",
        "FAIL  ScheduledJob[reconcile].older_than_days: in the document, not in "
        "SCHEDULED_JOB_FIELDS",
        "FAIL  ScheduledJob[webhook]: a kind of scheduled job in the document, not in the client",
    ]


def test_the_document_routes_and_their_schemas_are_compared(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "DocumentIngested" in set(SCHEMA_MODELS) & set(schemas)
    assert "DocumentKind" in set(SCHEMA_ENUMS) & set(schemas)
    assert schemas["DocumentId"]["type"] == "string"  # a string with a pattern: not compared
    doc = copy.deepcopy(document)
    schemas = doc["components"]["schemas"]
    _enum_holder(schemas["DocumentKind"])["enum"].append("epub")
    schemas["DocumentIngested"]["properties"]["language"] = {"type": "string"}
    del schemas["DocumentIngested"]["properties"]["removed"]
    operation = doc["paths"]["/v1/contexts/{context_id}/documents"]["post"]
    operation["parameters"] = [p for p in operation["parameters"] if p["name"] != "overlap_tokens"]
    del doc["paths"]["/v1/documents/{document_id}"]
    assert new_failures(document, doc) == [
        "FAIL  DELETE /v1/documents/{document_id}: the client calls it (delete_document); the "
        "document lacks it",
        "FAIL  DocumentIngested (DocumentIngested).language: in the document, not in the "
        "client's model",
        "FAIL  DocumentIngested (DocumentIngested).removed: in the client's model, not in the "
        "document",
        "FAIL  DocumentKind.epub: a value in the document, not in the client's enum",
        "FAIL  POST /v1/contexts/{context_id}/documents?overlap_tokens: the client sends it "
        "(ingest_document); the document's operation lacks it",
    ]


def test_new_schemas_and_routes_fail_until_the_client_knows_them(
    document: dict[str, Any],
) -> None:
    doc = copy.deepcopy(document)
    doc["components"]["schemas"]["DeleteAnswer"] = {
        "type": "object",
        "properties": {"deleted": {"type": "integer"}},
    }
    doc["paths"]["/v1/items/{item_id}"]["put"] = {"responses": {}}
    del doc["paths"]["/v1/pause"]
    assert new_failures(document, doc) == [
        "FAIL  DeleteAnswer: an object schema the client has no model for",
        "FAIL  POST /v1/pause: the client calls it (pause); the document lacks it",
        "FAIL  PUT /v1/items/{item_id}: in the document; the client neither calls nor lists it",
    ]


def test_nothing_is_pending_and_the_live_document_leaves_no_notes(
    document: dict[str, Any],
) -> None:
    assert not PENDING_OPERATIONS
    assert [str(f) for f in check_document(document) if not f.fatal] == []


def test_a_pending_route_is_a_note_until_served(
    document: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(contract, "PENDING_OPERATIONS", frozenset({"delete_item"}))
    served = [str(f) for f in check_document(document)]
    assert served == [
        "note  DELETE /v1/items/{item_id}: now served: drop 'delete_item' from PENDING_OPERATIONS"
    ]
    doc = copy.deepcopy(document)
    del doc["paths"]["/v1/items/{item_id}"]["delete"]
    assert [str(f) for f in check_document(doc)] == [
        "note  DELETE /v1/items/{item_id}: not served yet (delete_item raises "
        "UnsupportedOperationError)"
    ]


def test_a_query_parameter_the_document_lacks_fails(document: dict[str, Any]) -> None:
    doc = copy.deepcopy(document)
    operation = doc["paths"]["/v1/jobs"]["post"]
    operation["parameters"] = [p for p in operation["parameters"] if p["name"] != "dry_run"]
    assert new_failures(document, doc) == [
        "FAIL  POST /v1/jobs?dry_run: the client sends it (estimate_job); the document's "
        "operation lacks it"
    ]


def test_the_command_line_fails_on_a_difference(
    document: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = copy.deepcopy(document)
    doc["components"]["schemas"]["DeadLetter"]["properties"]["tenant"] = {"type": "string"}
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(doc))
    assert main(["--document", str(path)]) == 1
    assert "DeadLetter (DeadLetter).tenant" in capsys.readouterr().out
    assert main(["--document", str(tmp_path / "missing.json")]) == 2


def _enum_holder(schema: dict[str, Any]) -> dict[str, Any]:
    """The part of a string-enum schema that holds its values."""
    if "enum" in schema:
        return schema
    for part in schema.get("oneOf", []):
        if "enum" in part:
            return part  # type: ignore[no-any-return]
    raise AssertionError(f"no enum in {schema}")
