"""The OpenAPI 3.1 document served at ``/v1/openapi.json``."""

from __future__ import annotations

from typing import Any

from server import __version__

MSGPACK = "application/msgpack"


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _body(schema: str, *types: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {t: {"schema": {"$ref": f"#/components/schemas/{schema}"}} for t in types},
    }


def _ok(schema: str, *types: str, description: str = "OK") -> dict[str, Any]:
    return {
        "description": description,
        "content": {t: {"schema": {"$ref": f"#/components/schemas/{schema}"}} for t in types},
    }


TASK = {"name": "task", "in": "path", "required": True, "schema": {"type": "string"}}
VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "description": "integer or 'latest'"},
}
COMMON_ERRORS = {
    "400": _error("malformed body or field"),
    "401": _error("missing or invalid credential"),
    "404": _error("unknown task, version or artifact"),
    "429": _error("rate limited (Retry-After)"),
    "503": _error("starting, draining or a backend is down (Retry-After)"),
}


def openapi_document() -> dict[str, Any]:
    device: list[dict[str, list[str]]] = [{"deviceToken": []}]
    admin: list[dict[str, list[str]]] = [{"adminToken": []}]
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
                    "requestBody": _body("EnrollRequest", MSGPACK, "application/json"),
                    "responses": {
                        "201": _ok("EnrollResponse", MSGPACK, "application/json"),
                        **COMMON_ERRORS,
                    },
                }
            },
            "/v1/tasks/{task}/checkin": {
                "post": {
                    "summary": "Ask for a training session",
                    "security": device,
                    "parameters": [TASK],
                    "requestBody": _body("CheckinRequest", MSGPACK),
                    "responses": {"200": _ok("CheckinResponse", MSGPACK), **COMMON_ERRORS},
                }
            },
            "/v1/artifacts/{digest}": {
                "get": {
                    "summary": "A graph or manifest by sha256 (ETag, If-None-Match -> 304)",
                    "security": device,
                    "parameters": [
                        {
                            "name": "digest",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {"description": "the bytes"},
                        "304": {"description": "not modified"},
                        **COMMON_ERRORS,
                    },
                }
            },
            "/v1/tasks/{task}/versions/{version}/params": {
                "get": {
                    "summary": "Parameters of a committed version (msgpack wire tensors)",
                    "security": device,
                    "parameters": [TASK, VERSION],
                    "responses": {
                        "200": {"description": "msgpack list of tensors"},
                        "304": {"description": "not modified"},
                        **COMMON_ERRORS,
                    },
                }
            },
            "/v1/tasks/{task}/updates": {
                "post": {
                    "summary": "Upload a delta; answered once durable; idempotent per session",
                    "parameters": [TASK],
                    "requestBody": _body("Update", MSGPACK),
                    "responses": {
                        "200": _ok("UpdateAck", MSGPACK),
                        **COMMON_ERRORS,
                        "403": _error("session of another task"),
                        "409": _error("session used, upload in progress, too stale"),
                        "410": _error("session deadline passed"),
                        "413": _error("body too large"),
                        "422": _error("update refused by validation (shape, dtype, NaN/Inf, norm)"),
                    },
                }
            },
            "/admin/v1/tasks": {
                "post": {
                    "summary": "Create a task (zoo model or uploaded bundle)",
                    "security": admin,
                    "requestBody": _body("CreateTask", "application/json", MSGPACK),
                    "responses": {
                        "201": _ok("TaskStatus", "application/json"),
                        **COMMON_ERRORS,
                        "409": _error("task exists"),
                    },
                },
                "get": {
                    "summary": "List tasks with their status",
                    "security": admin,
                    "responses": {"200": {"description": "{tasks: [TaskStatus]}"}, **COMMON_ERRORS},
                },
            },
            "/admin/v1/tasks/{task}": {
                "get": {
                    "summary": "Task status",
                    "security": admin,
                    "parameters": [TASK],
                    "responses": {"200": _ok("TaskStatus", "application/json"), **COMMON_ERRORS},
                }
            },
            "/admin/v1/tasks/{task}/pause": {
                "post": {
                    "summary": "Stop admitting devices",
                    "security": admin,
                    "parameters": [TASK],
                    "responses": {"200": _ok("TaskStatus", "application/json"), **COMMON_ERRORS},
                }
            },
            "/admin/v1/tasks/{task}/resume": {
                "post": {
                    "summary": "Admit devices again",
                    "security": admin,
                    "parameters": [TASK],
                    "responses": {"200": _ok("TaskStatus", "application/json"), **COMMON_ERRORS},
                }
            },
            "/admin/v1/tasks/{task}/versions": {
                "get": {
                    "summary": "Versions with their evaluation metrics",
                    "security": admin,
                    "parameters": [TASK],
                    "responses": {"200": {"description": "{versions: [...]}"}, **COMMON_ERRORS},
                }
            },
            "/admin/v1/tasks/{task}/versions/{version}/model.onnx": {
                "get": {
                    "summary": "A version as a deployable ONNX inference model",
                    "security": admin,
                    "parameters": [TASK, VERSION],
                    "responses": {"200": {"description": "ONNX model bytes"}, **COMMON_ERRORS},
                }
            },
            "/admin/v1/devices/{device}/revoke": {
                "post": {
                    "summary": "Revoke a device",
                    "security": admin,
                    "parameters": [
                        {
                            "name": "device",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {"200": {"description": "revoked"}, **COMMON_ERRORS},
                }
            },
            "/healthz": {
                "get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness",
                    "responses": {
                        "200": {"description": "ready"},
                        "503": {"description": "not ready"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text exposition"}},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "deviceToken": {"type": "http", "scheme": "bearer"},
                "adminToken": {"type": "http", "scheme": "bearer"},
            },
            "schemas": _schemas(),
        },
    }


def _schemas() -> dict[str, Any]:
    tensor = {
        "type": "object",
        "required": ["dtype", "shape", "data"],
        "properties": {
            "dtype": {
                "type": "string",
                "enum": [
                    "float32",
                    "float64",
                    "float16",
                    "int64",
                    "int32",
                    "int8",
                    "uint8",
                    "bool",
                ],
            },
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "data": {
                "type": "string",
                "format": "binary",
                "description": "msgpack bin, prod(shape) * itemsize bytes",
            },
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {"type": "object"},
                    },
                }
            },
        },
        "Tensor": tensor,
        "EnrollRequest": {
            "type": "object",
            "required": ["enrollment_key"],
            "properties": {"enrollment_key": {"type": "string"}, "device_info": {"type": "object"}},
        },
        "EnrollResponse": {
            "type": "object",
            "properties": {"device_id": {"type": "string"}, "device_token": {"type": "string"}},
        },
        "CheckinRequest": {
            "type": "object",
            "properties": {"sdk_version": {"type": "string"}, "device_info": {"type": "object"}},
        },
        "CheckinResponse": {
            "type": "object",
            "required": ["admitted"],
            "properties": {
                "admitted": {"type": "boolean"},
                "reason": {"type": "string"},
                "retry_after": {"type": "number"},
                "session": {"type": "string"},
                "session_id": {"type": "string"},
                "version": {"type": "integer"},
                "deadline": {"type": "number"},
                "deadline_s": {"type": "number"},
                "plan": {
                    "type": "object",
                    "properties": {
                        "lr": {"type": "number"},
                        "batch_size": {"type": "integer"},
                        "epochs": {"type": "integer"},
                        "max_steps": {"type": ["integer", "null"]},
                        "time_budget_s": {"type": ["number", "null"]},
                    },
                },
                "artifacts": {"type": "object", "additionalProperties": {"type": "string"}},
                "params": {
                    "type": "object",
                    "properties": {"version": {"type": "integer"}, "url": {"type": "string"}},
                },
                "encoding": {"type": "string"},
            },
        },
        "Update": {
            "type": "object",
            "required": ["session", "base_version", "num_examples", "tensors"],
            "additionalProperties": False,
            "properties": {
                "session": {"type": "string"},
                "base_version": {"type": "integer", "minimum": 0},
                "num_examples": {"type": "integer", "minimum": 1},
                "encoding": {"type": "string", "enum": ["float32"]},
                "tensors": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
                "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
            },
        },
        "UpdateAck": {
            "type": "object",
            "properties": {
                "status": {"type": "string"},
                "update_id": {"type": "string"},
                "position": {"type": "string"},
                "staleness": {"type": "integer"},
                "duplicate": {"type": "boolean"},
            },
        },
        "CreateTask": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"},
                "model": {"type": "string"},
                "client_optimizer": {"type": "string", "enum": ["sgd", "momentum", "adam"]},
                "bundle": {"type": "object"},
                "config": {"type": "object"},
                "evaluation": {"type": "object"},
            },
        },
        "TaskStatus": {
            "type": "object",
            "properties": {
                k: {}
                for k in (
                    "id",
                    "status",
                    "model",
                    "mode",
                    "version",
                    "concurrency",
                    "aggregation_goal",
                    "active_sessions",
                    "updates_accepted",
                    "updates_applied",
                    "updates_buffered",
                    "updates_dropped",
                    "updates_rejected",
                    "mean_staleness",
                    "last_eval",
                    "config",
                    "artifacts",
                )
            },
        },
    }
