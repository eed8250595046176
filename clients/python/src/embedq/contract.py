"""The contract check: compares the client with a daemon's OpenAPI document, both ways.

It fails on any difference that would make the client wrong:

* a field of a schema that only one side has (the document's schemas against the classes of
  :data:`embedq.models.SCHEMA_MODELS`), a field the document may leave out or send as null
  that the client requires or cannot hold, a field the document requires in a request that the
  client may leave out;
* a value of a string enum that only one side has (:data:`embedq.models.SCHEMA_ENUMS`), and
  a kind of job scope or of scheduled job, or a field of one, that only one side has
  (:data:`embedq.models.SCOPE_FIELDS`, :data:`embedq.models.SCHEDULED_JOB_FIELDS`);
* a schema of the document that the client neither models nor lists in
  :data:`UNMODELLED_SCHEMAS`;
* a route the client calls that the document does not have (unless it is pending, see
  :data:`embedq._operations.PENDING_OPERATIONS`), a query parameter the client sends that the
  document's operation does not take, and an operation of the document that the client
  neither calls nor lists in :data:`NOT_WRAPPED`.

Run it against a live daemon (exit status 1 on a difference, 2 when the document cannot be
read)::

    embedq-contract-check http://127.0.0.1:8080      # or: python -m embedq.contract URL
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel

from ._config import DEFAULT_URL, TOKEN_ENV, URL_ENV
from ._operations import PENDING_OPERATIONS, ROUTES
from .models import (
    REQUEST_MODELS,
    SCHEDULED_JOB_FIELDS,
    SCHEMA_ENUMS,
    SCHEMA_MODELS,
    SCOPE_FIELDS,
)

__all__ = [
    "NOT_WRAPPED",
    "UNMODELLED_SCHEMAS",
    "Finding",
    "check_document",
    "fetch_document",
    "main",
]

#: Schemas of the document the client has no class for, each with the reason.
UNMODELLED_SCHEMAS: Mapping[str, str] = {
    "ActorTree": "GET /v1/actors is not wrapped",
    "SupervisorView": "GET /v1/actors is not wrapped",
    "SupervisorState": "GET /v1/actors is not wrapped",
    "ChildView": "GET /v1/actors is not wrapped",
    "ServerSentEvent": "GET /v1/events is not wrapped",
}

#: Operations of the document the client does not call, each with the reason.
NOT_WRAPPED: Mapping[tuple[str, str], str] = {
    ("GET", "/v1/actors"): "the operator's view of the supervision tree",
    ("GET", "/v1/events"): "a server-sent event stream for the dashboard",
    ("GET", "/metrics"): "Prometheus text, for a scraper",
    ("GET", "/"): "the dashboard page",
    ("GET", "/docs"): "the document's browsable page",
    ("GET", "/openapi.json"): "read by this contract check itself",
}

_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


@dataclass(frozen=True)
class Finding:
    """One difference between the client and the document.

    Attributes:
        where: what it is about (``"ItemRecord.priority"``, ``"DELETE /v1/items/{item_id}"``).
        message: what differs.
        fatal: whether it fails the check (notes do not).

    """

    where: str
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        return f"{'FAIL' if self.fatal else 'note'}  {self.where}: {self.message}"


# --- the document's side -----------------------------------------------------------------


class _Document:
    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc
        self.schemas: Mapping[str, Any] = doc.get("components", {}).get("schemas", {})

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        """Follows ``$ref``s to local schemas."""
        seen: set[str] = set()
        while "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/components/schemas/"):
                raise ValueError(f"unsupported $ref {ref!r}")
            name = ref.rsplit("/", 1)[1]
            if name in seen:
                raise ValueError(f"$ref cycle through {name}")
            seen.add(name)
            schema = self.schemas[name]
        return schema

    def parts(self, schema: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
        """The schema and, through ``allOf``/``oneOf``/``anyOf``, every schema it is made of."""
        schema = self.resolve(schema)
        yield schema
        for key in ("allOf", "oneOf", "anyOf"):
            for part in schema.get(key, ()):
                yield from self.parts(part)

    def properties(self, schema: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
        """Every property the schema may have, from all its parts."""
        props: dict[str, Mapping[str, Any]] = {}
        for part in self.parts(schema):
            for name, prop in part.get("properties", {}).items():
                props.setdefault(name, prop)
        return props

    def required(self, schema: Mapping[str, Any]) -> set[str] | None:
        """The properties an instance always has, or ``None`` for a choice (``oneOf``,
        ``anyOf``), where that depends on the branch.
        """
        required: set[str] = set()
        for part in self.parts(schema):
            if "oneOf" in part or "anyOf" in part:
                return None
            required.update(part.get("required", ()))
        return required

    def nullable(self, prop: Mapping[str, Any]) -> bool:
        """Whether a property may be ``null``."""
        for part in self.parts(prop):
            kind = part.get("type")
            if kind == "null" or (isinstance(kind, list) and "null" in kind):
                return True
            if part.get("nullable") is True:
                return True
            if None in part.get("enum", ()):
                return True
        return False

    def is_object(self, schema: Mapping[str, Any]) -> bool:
        return any(
            part.get("type") == "object" or "properties" in part for part in self.parts(schema)
        )

    def string_enum(self, schema: Mapping[str, Any]) -> set[str] | None:
        """The values of a string enum (also written as ``oneOf`` of enums), else ``None``."""
        values: set[str] = set()
        found = False
        for part in self.parts(schema):
            if "enum" in part:
                found = True
                values.update(v for v in part["enum"] if isinstance(v, str))
            elif "const" in part and isinstance(part["const"], str):
                found = True
                values.add(part["const"])
        return values if found and not self.is_object(schema) else None

    def query_parameters(self, method: str, path: str) -> set[str]:
        """The names of the query parameters of one operation (and of its path)."""
        item = self.doc.get("paths", {}).get(path, {})
        names: set[str] = set()
        for param in [
            *item.get("parameters", ()),
            *item.get(method.lower(), {}).get("parameters", ()),
        ]:
            if "$ref" in param:
                ref = param["$ref"]
                if not isinstance(ref, str) or not ref.startswith("#/components/parameters/"):
                    raise ValueError(f"unsupported $ref {ref!r}")
                param = self.doc.get("components", {}).get("parameters", {})[ref.rsplit("/", 1)[1]]
            if param.get("in") == "query":
                names.add(param["name"])
        return names

    def operations(self) -> set[tuple[str, str]]:
        return {
            (method.upper(), path)
            for path, item in self.doc.get("paths", {}).items()
            for method in item
            if method in _METHODS
        }


# --- the client's side -------------------------------------------------------------------


def _json_names(model: type[BaseModel]) -> dict[str, Any]:
    """The model's fields by their JSON name."""
    return {(f.alias or name): f for name, f in model.model_fields.items()}


def _accepts_none(annotation: Any) -> bool:
    if annotation is None or annotation is type(None) or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_accepts_none(arg) for arg in typing.get_args(annotation))
    return False


# --- the checks --------------------------------------------------------------------------


def _check_model(doc: _Document, name: str, model: type[BaseModel]) -> Iterator[Finding]:
    schema = doc.schemas[name]
    documented = doc.properties(schema)
    fields = _json_names(model)
    label = f"{name} ({model.__name__})"
    for prop in sorted(set(documented) - set(fields)):
        yield Finding(f"{label}.{prop}", "in the document, not in the client's model")
    for prop in sorted(set(fields) - set(documented)):
        yield Finding(f"{label}.{prop}", "in the client's model, not in the document")
    required = doc.required(schema)
    for prop in sorted(set(documented) & set(fields)):
        field = fields[prop]
        if model in REQUEST_MODELS:
            if required is not None and prop in required and not field.is_required():
                yield Finding(
                    f"{label}.{prop}", "the document requires it; the client may leave it out"
                )
            continue
        if required is not None and prop not in required and field.is_required():
            yield Finding(
                f"{label}.{prop}", "the document may leave it out; the client requires it"
            )
        if doc.nullable(documented[prop]) and not _accepts_none(field.annotation):
            yield Finding(f"{label}.{prop}", "the document allows null; the client does not")


def _check_enum(doc: _Document, name: str, values: set[str]) -> Iterator[Finding]:
    documented = doc.string_enum(doc.schemas[name])
    if documented is None:
        yield Finding(name, "the client has an enum for it; the document's is not a string enum")
        return
    for value in sorted(documented - values):
        yield Finding(f"{name}.{value}", "a value in the document, not in the client's enum")
    for value in sorted(values - documented):
        yield Finding(f"{name}.{value}", "a value in the client's enum, not in the document")


def _check_variants(
    doc: _Document, name: str, fields: Mapping[str, frozenset[str]], what: str, table: str
) -> Iterator[Finding]:
    """The kinds of a tagged union (the ``oneOf`` of schema ``name``, told apart by
    ``type``) and the fields of each, against the client's table of them.
    """
    schema = doc.schemas.get(name)
    if schema is None:
        return
    variants: dict[str, set[str]] = {}
    for variant in doc.resolve(schema).get("oneOf", ()):
        props = doc.properties(variant)
        kinds = doc.string_enum(props.get("type", {})) or set()
        for kind in kinds:
            variants[kind] = set(props) - {"type"}
    for kind in sorted(set(variants) - set(fields)):
        yield Finding(f"{name}[{kind}]", f"a kind of {what} in the document, not in the client")
    for kind in sorted(set(fields) - set(variants)):
        yield Finding(f"{name}[{kind}]", f"a kind of {what} in the client, not in the document")
    for kind in sorted(set(variants) & set(fields)):
        for prop in sorted(variants[kind] - fields[kind]):
            yield Finding(f"{name}[{kind}].{prop}", f"in the document, not in {table}")
        for prop in sorted(fields[kind] - variants[kind]):
            yield Finding(f"{name}[{kind}].{prop}", f"in {table}, not in the document")


def _check_scopes(doc: _Document) -> Iterator[Finding]:
    yield from _check_variants(doc, "JobScope", SCOPE_FIELDS, "scope", "SCOPE_FIELDS")
    yield from _check_variants(
        doc, "ScheduledJob", SCHEDULED_JOB_FIELDS, "scheduled job", "SCHEDULED_JOB_FIELDS"
    )


def _check_routes(doc: _Document) -> Iterator[Finding]:
    served = doc.operations()
    called: set[tuple[str, str]] = set()
    for operation, route in sorted(ROUTES.items()):
        key = (route.method, route.path)
        called.add(key)
        where = f"{route.method} {route.path}"
        if key in served:
            taken = doc.query_parameters(route.method, route.path)
            for name in route.query:
                if name not in taken:
                    yield Finding(
                        f"{where}?{name}",
                        f"the client sends it ({operation}); the document's operation lacks it",
                    )
            if operation in PENDING_OPERATIONS:
                yield Finding(
                    where,
                    f"now served: drop {operation!r} from PENDING_OPERATIONS",
                    fatal=False,
                )
        elif operation in PENDING_OPERATIONS:
            yield Finding(
                where,
                f"not served yet ({operation} raises UnsupportedOperationError)",
                fatal=False,
            )
        else:
            yield Finding(where, f"the client calls it ({operation}); the document lacks it")
    for method, path in sorted(served - called - set(NOT_WRAPPED)):
        yield Finding(f"{method} {path}", "in the document; the client neither calls nor lists it")


def check_document(document: Mapping[str, Any]) -> list[Finding]:
    """Every difference between the client and an OpenAPI document (fatal ones and notes)."""
    doc = _Document(document)
    findings: list[Finding] = []
    for name in sorted(doc.schemas):
        if name in SCHEMA_MODELS:
            findings.extend(_check_model(doc, name, SCHEMA_MODELS[name]))
        elif name in SCHEMA_ENUMS:
            values = {str(member.value) for member in SCHEMA_ENUMS[name]}
            findings.extend(_check_enum(doc, name, values))
        elif name in UNMODELLED_SCHEMAS:
            continue
        elif doc.is_object(doc.schemas[name]):
            findings.append(Finding(name, "an object schema the client has no model for"))
        elif doc.string_enum(doc.schemas[name]) is not None:
            findings.append(Finding(name, "a string enum the client has no enum for"))
    for name in sorted((set(SCHEMA_MODELS) | set(SCHEMA_ENUMS)) - set(doc.schemas)):
        findings.append(Finding(name, "the client models it; the document has no such schema"))
    for name in sorted(set(UNMODELLED_SCHEMAS) - set(doc.schemas)):
        findings.append(
            Finding(name, "listed in UNMODELLED_SCHEMAS, not in the document", fatal=False)
        )
    findings.extend(_check_scopes(doc))
    findings.extend(_check_routes(doc))
    return findings


def fetch_document(
    base_url: str | None = None, *, token: str | None = None, timeout: float = 10.0
) -> dict[str, Any]:
    """``GET /openapi.json`` of a daemon (no token is needed; one is sent if given)."""
    url = (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/") + "/openapi.json"
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(url, headers=headers, timeout=timeout)
    response.raise_for_status()
    document = response.json()
    if not isinstance(document, dict) or "paths" not in document:
        raise ValueError(f"{url} is not an OpenAPI document")
    return document


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: prints every finding; 0 when none fails, 1 when one does, 2 when
    the document cannot be read.
    """
    parser = argparse.ArgumentParser(
        prog="embedq-contract-check",
        description="Compare the embedq Python client with a daemon's OpenAPI document.",
    )
    parser.add_argument(
        "url", nargs="?", help=f"the daemon's URL (default ${URL_ENV}, else {DEFAULT_URL})"
    )
    parser.add_argument("--document", help="read the document from this file instead")
    parser.add_argument("--token", help=f"bearer token (default ${TOKEN_ENV})")
    args = parser.parse_args(argv)
    try:
        if args.document:
            with open(args.document, encoding="utf-8") as f:
                document = json.load(f)
        else:
            document = fetch_document(args.url, token=args.token)
    except (OSError, ValueError, httpx.HTTPError) as e:
        print(f"embedq-contract-check: cannot read the OpenAPI document: {e}", file=sys.stderr)
        return 2
    findings = check_document(document)
    for finding in findings:
        print(finding)
    failures = sum(f.fatal for f in findings)
    version = document.get("info", {}).get("version", "?")
    models = len(SCHEMA_MODELS) + len(SCHEMA_ENUMS)
    print(
        f"embedq-contract-check: daemon {version}: {models} models and enums, "
        f"{len(ROUTES)} routes checked; {failures} failures, {len(findings) - failures} notes"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
