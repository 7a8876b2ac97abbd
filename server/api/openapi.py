"""The OpenAPI 3.1 document served at ``/v1/openapi.json``.

It describes what the handlers accept and answer, no more and no less: every route and
method (``tests/server/test_openapi.py`` compares the document with the route table),
every request and response media type (answers follow ``Accept``, else the request's
type: MessagePack or JSON), and request schemas as strict as the handlers (unknown
fields are declared refused exactly where the handler refuses them). A schema-driven
run (``tests/server/test_schemathesis.py``) sends generated requests to a real server
and checks every answer against this document.
"""

from __future__ import annotations

from typing import Any

from server import __version__
from server.api.schemas import INT64_MAX, component_schemas, ref

MSGPACK = "application/msgpack"
JSON = "application/json"
OCTETS = "application/octet-stream"
BOTH = (MSGPACK, JSON)

# Why a status can come back, per status; each operation lists the ones it can answer.
ERRORS = {
    "400": "malformed body, field, path or query parameter",
    "401": "missing or invalid credential",
    "403": "valid credential, not for this resource (revoked device, another task)",
    "404": "unknown task, version or artifact",
    "409": "conflict: task exists, session used, upload in progress, too stale",
    "410": "the session's deadline has passed",
    "413": "body above the server's limit",
    "415": "unsupported Content-Type or Content-Encoding",
    "422": "update refused by validation (shape, dtype, NaN/Inf, norm) or export failed",
    "429": "rate limited (Retry-After)",
    "503": "starting, draining or a backend is down (Retry-After)",
}
DEVICE_ERRORS = ("400", "401", "403", "404", "429", "503")
BODY_ERRORS = ("413", "415")
ADMIN_ERRORS = ("400", "401", "404", "503")


def _content(schema: dict[str, Any], types: tuple[str, ...]) -> dict[str, Any]:
    return {t: {"schema": schema} for t in types}


def _body(schema: str, *, required: bool = True, types: tuple[str, ...] = BOTH) -> dict[str, Any]:
    return {"required": required, "content": _content(ref(schema), types)}


def _responses(
    ok: dict[str, Any], *codes: str, status: str = "200", extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    out = {status: ok, **(extra or {})}
    for code in sorted(set(codes)):
        out[code] = {"description": ERRORS[code], "content": _content(ref("Error"), BOTH)}
    return out


def _ok(schema: str, types: tuple[str, ...] = BOTH, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": _content(ref(schema), types)}


def _path(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


TASK = _path("task")
VERSION = _path(
    "version",
    {
        "oneOf": [
            {"type": "integer", "minimum": 0, "maximum": INT64_MAX},
            {"type": "string", "const": "latest"},
        ],
        "description": "a committed version number, or latest",
    },
)
NOT_MODIFIED = {"304": {"description": "not modified (If-None-Match matched the ETag)"}}


def openapi_document() -> dict[str, Any]:
    device: list[dict[str, list[str]]] = [{"deviceToken": []}]
    admin: list[dict[str, list[str]]] = [{"adminToken": []}]
    session: list[dict[str, list[str]]] = []  # the session token travels in the body
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "asyncfl",
            "version": __version__,
            "description": "Asynchronous federated learning server (FedBuff).",
        },
        "paths": {
            "/v1/devices/enroll": {
                "post": {
                    "summary": "Enroll a device with the deployment's enrollment key",
                    "security": session,
                    "requestBody": _body("EnrollRequest"),
                    "responses": _responses(
                        _ok("EnrollResponse"), "400", "401", "503", *BODY_ERRORS, status="201"
                    ),
                }
            },
            "/v1/tasks/{task}/checkin": {
                "post": {
                    "summary": "Ask for a training session (the body is optional)",
                    "security": device,
                    "parameters": [TASK],
                    "requestBody": _body("CheckinRequest", required=False),
                    "responses": _responses(_ok("CheckinResponse"), *DEVICE_ERRORS, *BODY_ERRORS),
                }
            },
            "/v1/artifacts/{digest}": {
                "get": {
                    "summary": "A graph or manifest by sha256 (ETag, If-None-Match -> 304)",
                    "security": device,
                    "parameters": [_path("digest")],
                    "responses": _responses(
                        _ok("Binary", (OCTETS,), "the bytes"), *DEVICE_ERRORS, extra=NOT_MODIFIED
                    ),
                }
            },
            "/v1/tasks/{task}/versions/{version}/params": {
                "get": {
                    "summary": "Parameters of a published version (msgpack list of tensors; 404 "
                    "params_not_kept for a version superseded in the commit that made it)",
                    "security": device,
                    "parameters": [TASK, VERSION],
                    "responses": _responses(
                        _ok("Params", (MSGPACK,), "the parameters"),
                        *DEVICE_ERRORS,
                        extra=NOT_MODIFIED,
                    ),
                }
            },
            "/v1/tasks/{task}/updates": {
                "post": {
                    "summary": "Upload a delta; answered once durable; idempotent per session",
                    "security": session,
                    "parameters": [TASK],
                    "requestBody": _body("Update", types=(MSGPACK,)),
                    "responses": _responses(
                        _ok("UpdateAck"), *DEVICE_ERRORS, *BODY_ERRORS, "409", "410", "422"
                    ),
                }
            },
            "/v1/tasks/{task}/evaluations": {
                "post": {
                    "summary": "Report on-device metrics of the session's version",
                    "security": session,
                    "parameters": [TASK],
                    "requestBody": _body("EvaluationReport"),
                    "responses": _responses(
                        _ok("EvaluationRecorded", description="recorded"),
                        *DEVICE_ERRORS,
                        *BODY_ERRORS,
                        "409",
                        "410",
                        status="201",
                        extra={"200": _ok("EvaluationRecorded", description="already recorded")},
                    ),
                }
            },
            "/v1/tasks/{task}/sessions/release": {
                "post": {
                    "summary": "Give a session's concurrency slot back before its deadline",
                    "security": session,
                    "parameters": [TASK],
                    "requestBody": _body("ReleaseRequest"),
                    "responses": _responses(
                        {"description": "released (or already finished)"},
                        *DEVICE_ERRORS,
                        *BODY_ERRORS,
                        status="204",
                    ),
                }
            },
            "/admin/v1/tasks": {
                "post": {
                    "summary": "Create a task (a zoo model or an uploaded bundle)",
                    "security": admin,
                    "requestBody": _body("CreateTask", types=(JSON, MSGPACK)),
                    "responses": _responses(
                        _ok("TaskStatus"), *ADMIN_ERRORS, *BODY_ERRORS, "409", "422", status="201"
                    ),
                },
                "get": {
                    "summary": "List tasks with their status",
                    "security": admin,
                    "responses": _responses(_ok("TaskList"), *ADMIN_ERRORS),
                },
            },
            "/admin/v1/tasks/{task}": {
                "get": {
                    "summary": "Task status",
                    "security": admin,
                    "parameters": [TASK],
                    "responses": _responses(_ok("TaskStatus"), *ADMIN_ERRORS),
                }
            },
            "/admin/v1/tasks/{task}/pause": {
                "post": {
                    "summary": "Stop admitting devices",
                    "security": admin,
                    "parameters": [TASK],
                    "responses": _responses(_ok("TaskStatus"), *ADMIN_ERRORS),
                }
            },
            "/admin/v1/tasks/{task}/resume": {
                "post": {
                    "summary": "Admit devices again",
                    "security": admin,
                    "parameters": [TASK],
                    "responses": _responses(_ok("TaskStatus"), *ADMIN_ERRORS),
                }
            },
            "/admin/v1/tasks/{task}/versions": {
                "get": {
                    "summary": "Versions with their evaluation metrics, newest first",
                    "security": admin,
                    "parameters": [
                        TASK,
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 10_000},
                        },
                        {
                            "name": "before",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "maximum": INT64_MAX},
                        },
                    ],
                    "responses": _responses(_ok("VersionList"), *ADMIN_ERRORS),
                }
            },
            "/admin/v1/tasks/{task}/versions/{version}/model.onnx": {
                "get": {
                    "summary": "A published version as a deployable ONNX inference model",
                    "security": admin,
                    "parameters": [TASK, VERSION],
                    "responses": _responses(
                        _ok("Binary", (OCTETS,), "ONNX model bytes"), *ADMIN_ERRORS
                    ),
                }
            },
            "/admin/v1/devices/{device}/revoke": {
                "post": {
                    "summary": "Revoke a device",
                    "security": admin,
                    "parameters": [_path("device")],
                    "responses": _responses(_ok("Revoked"), *ADMIN_ERRORS),
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "security": session,
                    "responses": {"200": _ok("Health", (JSON,), "alive")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness",
                    "security": session,
                    "responses": {
                        "200": _ok("Readiness", (JSON,), "ready"),
                        "503": _ok("Readiness", (JSON,), "not ready"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": session,
                    "responses": {
                        "200": {
                            "description": "text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": session,
                    "responses": {"200": _ok("Document", (JSON,), "the OpenAPI document")},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "deviceToken": {"type": "http", "scheme": "bearer"},
                "adminToken": {"type": "http", "scheme": "bearer"},
            },
            "schemas": component_schemas(),
        },
    }
