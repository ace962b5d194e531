"""The JSON API under /api/: the same dicts daemon.query gives `redline ... --json`, and the
OpenAPI 3 document that describes every endpoint."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from daemon import query
from daemon.errors import UsageError
from daemon.notify import ledger
from daemon.web.params import event_filter, int_param, text_param


class JSON(JSONResponse):
    """UTF-8 JSON as the CLI prints it (non-ASCII kept), compact."""

    def render(self, content: Any) -> bytes:
        import json

        return json.dumps(content, ensure_ascii=False, separators=(",", ":"),
                          default=str).encode("utf-8")


def _connect(request: Request) -> Any:
    return request.app.state.engine.connect()


async def api_index(request: Request) -> Response:
    """/api/ : where the endpoints are."""
    return JSON({"openapi": "/api/openapi.json",
                 "endpoints": sorted(p for p in OPENAPI["paths"] if p != "/api/")})


async def api_openapi(request: Request) -> Response:
    return JSON(OPENAPI)


def api_status(request: Request) -> Response:
    with _connect(request) as conn:
        return JSON(query.status(conn))


def api_statement_lookup(request: Request) -> Response:
    """/api/statements?url=... : redirect to the statement named by a URL (old ones too)."""
    ref = text_param(request.query_params, "url") or ""
    with _connect(request) as conn:
        sid = query.resolve_statement(conn, ref)
    return RedirectResponse(f"/api/statements/{sid}", status_code=303)


def api_statement(request: Request) -> Response:
    with _connect(request) as conn:
        return JSON(query.statement_summary(conn, request.path_params["statement_id"]))


def api_history(request: Request) -> Response:
    sid = request.path_params["statement_id"]
    with _connect(request) as conn:
        # the shape of `redline history --json`
        return JSON({"statement": query.statement_summary(conn, sid),
                     "revisions": query.history(conn, sid)})


def api_diff(request: Request) -> Response:
    params = request.query_params
    with _connect(request) as conn:
        return JSON(query.diff(conn, request.path_params["statement_id"],
                               text_param(params, "from"), text_param(params, "to")))


def api_search(request: Request) -> Response:
    params = request.query_params
    with _connect(request) as conn:
        return JSON(query.search(conn, text_param(params, "q") or "",
                                 limit=int_param(params, "limit", 20, 1, 1000),
                                 offset=int_param(params, "offset", 0, 0, 10_000_000)))


def api_events(request: Request) -> Response:
    params = request.query_params
    flt = event_filter(params)
    with _connect(request) as conn:
        return JSON(query.events(conn, flt.since_time, flt.kind, flt.tag,
                                 limit=int_param(params, "limit", 50, 1, 1000),
                                 offset=int_param(params, "offset", 0, 0, 10_000_000)))


def api_errors(request: Request) -> Response:
    with _connect(request) as conn:
        return JSON(query.errors(conn))


def api_deliveries(request: Request) -> Response:
    """The rows of `redline deliveries --json`."""
    params = request.query_params
    status = text_param(params, "status")
    if status is not None and status not in ledger.STATUSES:
        raise UsageError(f"status must be one of {', '.join(ledger.STATUSES)}, not {status!r}")
    with _connect(request) as conn:
        rows = ledger.list_deliveries(conn, status, text_param(params, "channel"),
                                      int_param(params, "limit", 50, 1, 1000),
                                      int_param(params, "offset", 0, 0, 10_000_000))
    return JSON([{k: query.iso(v) for k, v in r.items()} for r in rows])


# ---- the OpenAPI document -------------------------------------------------------------

def _param(name: str, where: str, description: str, schema: dict[str, Any],
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "description": description, "required": required,
            "schema": schema}


_ID = _param("statement_id", "path", "The statement's id.", {"type": "integer", "minimum": 1},
             required=True)
_LIMIT = _param("limit", "query", "At most this many rows.",
                {"type": "integer", "minimum": 1, "maximum": 1000})
_OFFSET = _param("offset", "query", "Skip this many rows (paging).",
                 {"type": "integer", "minimum": 0})
_TIME = {"type": "string", "format": "date-time"}
_NTIME = {"type": "string", "format": "date-time", "nullable": True}
_STR_LIST = {"type": "array", "items": {"type": "string"}}
_ERROR = {"description": "A one-line reason.", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _get(summary: str, op_id: str, ok: dict[str, Any], params: list[dict[str, Any]] | None = None,
         errors: tuple[str, ...] = ()) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok}
    for code in errors:
        responses[code] = _ERROR
    responses["401"] = {"description": "A token is configured and the request lacks it."}
    return {"get": {"summary": summary, "operationId": op_id, "parameters": params or [],
                    "responses": responses}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "redline",
        "version": "1",
        "description": "The read-only record of official statements: the same data as "
                       "`redline ... --json`. Times are UTC (ISO 8601 with Z).",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error"],
                      "properties": {"error": {"type": "string"}}},
            "Statement": {"type": "object", "properties": {
                "statement_id": {"type": "integer"}, "source_url": {"type": "string"},
                "title": {"type": "string"}, "date": {"type": "string", "nullable": True},
                "published_time": _NTIME, "modified_time": _NTIME, "tags": _STR_LIST,
                "revision_number": {"type": "integer"}, "revision_count": {"type": "integer"},
                "first_seen_at": _TIME, "last_changed_at": _TIME, "deleted_at": _NTIME,
                "urls": _STR_LIST}},
            "Revision": {"type": "object", "properties": {
                "revision_number": {"type": "integer"}, "kind": {"type": "string"},
                "changed_fields": _STR_LIST, "observed_at": _TIME,
                "title": {"type": "string"}, "source_url": {"type": "string"},
                "date": {"type": "string", "nullable": True},
                "published_time": _NTIME, "modified_time": _NTIME,
                "path": {"type": "string", "nullable": True,
                         "description": "The file this revision was read from."},
                "event_id": {"type": "integer", "nullable": True},
                "summary": {"type": "string", "nullable": True},
                "words_added": {"type": "integer", "nullable": True},
                "words_removed": {"type": "integer", "nullable": True}}},
            "Diff": {"type": "object", "properties": {
                "statement": _ref("Statement"),
                "from": {"type": "object", "nullable": True},
                "to": {"type": "object"},
                "changed_fields": _STR_LIST,
                "metadata_changes": {"type": "array", "items": {"type": "object", "properties": {
                    "field": {"type": "string"}, "old": {}, "new": {}}}},
                "unified": {"type": "string"},
                "words": {"type": "array", "items": {"type": "object", "properties": {
                    "op": {"type": "string", "enum": ["equal", "delete", "insert"]},
                    "text": {"type": "string"}}}},
                "stats": {"type": "object"}}},
            "Event": {"type": "object", "properties": {
                "event_id": {"type": "integer"}, "occurred_at": _TIME,
                "kind": {"type": "string", "enum": list(query.KINDS)},
                "statement_id": {"type": "integer"}, "source_url": {"type": "string"},
                "title": {"type": "string"},
                "from_revision": {"type": "integer", "nullable": True},
                "to_revision": {"type": "integer"}, "changed_fields": _STR_LIST,
                "summary": {"type": "string"}, "words_added": {"type": "integer"},
                "words_removed": {"type": "integer"}, "tags": _STR_LIST}},
            "SearchResult": {"type": "object", "properties": {
                "statement_id": {"type": "integer"}, "source_url": {"type": "string"},
                "title": {"type": "string"}, "deleted_at": _NTIME,
                "snippet": {"type": "string", "description":
                            "Matched words are between U+27E6 and U+27E7."},
                "rank": {"type": "number"}}},
            "IngestError": {"type": "object", "properties": {
                "path": {"type": "string"}, "reason": {"type": "string"},
                "detail": {"type": "string"}, "first_seen_at": _TIME, "last_seen_at": _TIME}},
            "Delivery": {"type": "object", "properties": {
                "event_id": {"type": "integer"}, "channel": {"type": "string"},
                "status": {"type": "string", "enum": list(query.DELIVERY_STATUSES)},
                "attempts": {"type": "integer"},
                "last_error": {"type": "string", "nullable": True},
                "next_attempt_at": _NTIME, "delivered_at": _NTIME,
                "kind": {"type": "string"}, "source_url": {"type": "string"}}},
            "Status": {"type": "object", "properties": {
                "statements": {"type": "object"}, "revisions": {"type": "object"},
                "last_change": {"type": "object", "nullable": True},
                "rejected_files": {"type": "integer"}, "deliveries": {"type": "object"},
                "waiting_by_channel": {"type": "object",
                                       "additionalProperties": {"type": "integer"}},
                "watcher": {"type": "object"}}},
        },
    },
    "security": [{}, {"bearer": []}],
    "paths": {
        "/api/": _get("Where the endpoints are", "index", _ok("Endpoint list", {
            "type": "object", "properties": {"openapi": {"type": "string"},
                                             "endpoints": _STR_LIST}})),
        "/api/openapi.json": _get("This document", "openapi",
                                  _ok("OpenAPI 3 document", {"type": "object"})),
        "/api/status": _get("Counts, the last change and the daemon's state (redline status)",
                            "status", _ok("Status", _ref("Status"))),
        "/api/statements": {"get": {
            "summary": "Find a statement by its URL or an old URL of it",
            "operationId": "statementByUrl",
            "parameters": [_param("url", "query", "A URL the statement has or had.",
                                  {"type": "string"}, required=True)],
            "responses": {"303": {"description": "Redirect to /api/statements/{id}."},
                          "400": _ERROR, "404": _ERROR,
                          "401": {"description": "A token is configured and the request "
                                                 "lacks it."}}}},
        "/api/statements/{statement_id}": _get(
            "One statement now, with every URL it had", "statement",
            _ok("Statement", _ref("Statement")), [_ID], ("404",)),
        "/api/statements/{statement_id}/history": _get(
            "The statement and every revision, oldest first (redline history --json)",
            "history", _ok("History", {"type": "object", "properties": {
                "statement": _ref("Statement"),
                "revisions": {"type": "array", "items": _ref("Revision")}}}), [_ID], ("404",)),
        "/api/statements/{statement_id}/diff": _get(
            "The diff between two revisions, default the last two (redline diff --format json)",
            "diff", _ok("Diff", _ref("Diff")),
            [_ID, _param("from", "query", "The older revision number.",
                         {"type": "integer", "minimum": 1}),
             _param("to", "query", "The newer revision number (default: the newest).",
                    {"type": "integer", "minimum": 1})], ("400", "404")),
        "/api/search": _get(
            "Full-text search over current statements, best first (redline search)", "search",
            _ok("Results", {"type": "array", "items": _ref("SearchResult")}),
            [_param("q", "query", "Words; \"a phrase\", OR, -word, prefix*.",
                    {"type": "string"}, required=True), _LIMIT, _OFFSET], ("400",)),
        "/api/events": _get(
            "The change log, newest first (redline events)", "events",
            _ok("Events", {"type": "array", "items": _ref("Event")}),
            [_param("kind", "query", "Only this kind of change.",
                    {"type": "string", "enum": list(query.KINDS)}),
             _param("tag", "query", "Only statements with this tag.", {"type": "string"}),
             _param("since", "query", "From this time: 2026-02-03, an ISO time, or 7d/12h/30m.",
                    {"type": "string"}), _LIMIT, _OFFSET], ("400",)),
        "/api/errors": _get("Files rejected now, and why (redline errors)", "errors",
                            _ok("Rejected files", {"type": "array",
                                                   "items": _ref("IngestError")})),
        "/api/deliveries": _get(
            "Notification deliveries, newest first (redline deliveries --json)", "deliveries",
            _ok("Deliveries", {"type": "array", "items": _ref("Delivery")}),
            [_param("status", "query", "Only this status.",
                    {"type": "string", "enum": list(query.DELIVERY_STATUSES)}),
             _param("channel", "query", "Only this channel.", {"type": "string"}),
             _LIMIT, _OFFSET], ("400",)),
    },
}
