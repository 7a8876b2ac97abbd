"""The request and response schemas of the OpenAPI document (:mod:`server.api.openapi`).

Request schemas are as strict as the handlers: ``additionalProperties: false`` exactly
where a handler refuses unknown fields, bounds where it checks them.
"""

from __future__ import annotations

from typing import Any

INT64_MAX = 2**63 - 1
# msgpack bin inside a msgpack body: JSON Schema has no bytes type, so OpenAPI 3.1's
# spelling of raw bytes in a string (a body of its own is "format: binary").
BIN = {
    "type": "string",
    "contentMediaType": "application/octet-stream",
    "description": "msgpack bin",
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def component_schemas() -> dict[str, Any]:
    return {**_wire_schemas(), **_device_schemas(), **_admin_schemas()}


def _wire_schemas() -> dict[str, Any]:
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
                        "request_id": {"type": "string", "description": "on every 5xx"},
                    },
                }
            },
        },
        "Binary": {"type": "string", "format": "binary"},
        "Document": {"type": "object"},
        "Tensor": {
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
                "shape": {
                    "type": "array",
                    "maxItems": 8,
                    "items": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
                },
                "data": BIN | {"description": "msgpack bin, prod(shape) * itemsize bytes"},
            },
        },
        "Params": {"type": "array", "items": ref("Tensor")},
        "DeviceInfo": {
            "type": "object",
            "description": "JSON values (no bin, no NaN), at most 4 levels, 4096 bytes as JSON",
        },
    }


def _device_schemas() -> dict[str, Any]:
    return {
        "EnrollRequest": {
            "type": "object",
            "required": ["enrollment_key"],
            "properties": {"enrollment_key": {"type": "string"}, "device_info": ref("DeviceInfo")},
        },
        "EnrollResponse": {
            "type": "object",
            "required": ["device_id", "device_token"],
            "properties": {"device_id": {"type": "string"}, "device_token": {"type": "string"}},
        },
        "CheckinRequest": {
            "type": "object",
            "properties": {"sdk_version": {"type": "string"}, "device_info": ref("DeviceInfo")},
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
                "task": {"type": "string"},
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
                "evaluate": {"type": "boolean"},
                "train": {"type": "boolean"},
            },
        },
        "Update": {
            "type": "object",
            "required": ["session", "base_version", "num_examples", "tensors"],
            "additionalProperties": False,
            "properties": {
                "session": {"type": "string", "minLength": 1},
                "base_version": {"type": "integer", "minimum": 0, "maximum": INT64_MAX},
                "num_examples": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
                "encoding": {"type": "string", "enum": ["float32"]},
                "tensors": {"type": "array", "items": ref("Tensor")},
                "metrics": {
                    "type": "object",
                    "maxProperties": 32,
                    "additionalProperties": {"type": "number"},
                },
            },
        },
        "UpdateAck": {
            "type": "object",
            "required": ["status", "update_id"],
            "properties": {
                "status": {"type": "string", "enum": ["accepted"]},
                "update_id": {"type": "string"},
                "position": {"type": "string"},
                "staleness": {"type": "integer"},
                "duplicate": {"type": "boolean"},
            },
        },
        "EvaluationReport": {
            "type": "object",
            "required": ["session", "version", "metrics"],
            "properties": {
                "session": {"type": "string"},
                "version": {"type": "integer", "minimum": 0},
                "metrics": {
                    "type": "object",
                    "required": ["loss", "num_examples"],
                    "additionalProperties": False,
                    "properties": {
                        "loss": {"type": "number", "minimum": 0},
                        "accuracy": {"type": "number", "minimum": 0, "maximum": 1},
                        "num_examples": {"type": "number", "minimum": 1},
                    },
                },
            },
        },
        "EvaluationRecorded": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string"}, "duplicate": {"type": "boolean"}},
        },
        "ReleaseRequest": {
            "type": "object",
            "required": ["session"],
            "properties": {"session": {"type": "string"}},
        },
    }


def _admin_schemas() -> dict[str, Any]:
    number_or_null = {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 2_592_000}
    return {
        "CreateTask": {
            "type": "object",
            "required": ["id"],
            "additionalProperties": False,
            "oneOf": [{"required": ["model"]}, {"required": ["bundle"]}],
            "properties": {
                "id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"},
                "model": {
                    "type": "string",
                    "description": "a zoo name (logreg, mlp, cnn, embedding) or module:factory",
                },
                "client_optimizer": {"type": "string", "enum": ["sgd", "momentum", "adam"]},
                "bundle": ref("Bundle"),
                "config": ref("TaskConfig"),
                "evaluation": ref("Evaluation"),
            },
        },
        "Bundle": {
            "type": "object",
            "required": ["manifest", "graphs", "params"],
            "properties": {
                "manifest": BIN,
                "params": BIN,
                "graphs": {
                    "type": "object",
                    "required": ["train_step", "eval_step", "infer"],
                    "additionalProperties": False,
                    "properties": {"train_step": BIN, "eval_step": BIN, "infer": BIN},
                },
            },
        },
        "Evaluation": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["dataset"],
                    "additionalProperties": False,
                    "properties": {"dataset": {"type": "string"}},
                },
                {
                    "type": "object",
                    "required": ["x", "y"],
                    "additionalProperties": False,
                    "properties": {"x": ref("Tensor"), "y": ref("Tensor")},
                },
            ]
        },
        "TaskConfig": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "concurrency": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
                "session_deadline_s": number_or_null,
                "eval_every": {"type": "integer", "minimum": 0, "maximum": 10**9},
                "federated_eval_fraction": {"type": "number", "minimum": 0, "maximum": 1},
                "plan": ref("ClientPlan"),
                "aggregation": {
                    "type": "object",
                    "description": "see the README's aggregation config reference",
                },
            },
        },
        "ClientPlan": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "lr": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
                "batch_size": {"type": "integer", "minimum": 1, "maximum": 65536},
                "epochs": {"type": "integer", "minimum": 1, "maximum": 1000},
                "max_steps": {"type": ["integer", "null"], "minimum": 1, "maximum": 10**9},
                "time_budget_s": number_or_null,
            },
        },
        "TaskStatus": {
            "type": "object",
            "required": ["id", "status", "version"],
            "properties": {
                "id": {"type": "string"},
                "status": {"type": "string", "enum": ["active", "paused"]},
                "model": {"type": ["string", "null"]},
                "mode": {"type": "string", "enum": ["async", "sync"]},
                "version": {"type": "integer"},
                "concurrency": {"type": "integer"},
                "aggregation_goal": {"type": "integer"},
                "active_sessions": {"type": "integer"},
                "updates_accepted": {"type": "integer"},
                "updates_applied": {"type": "integer"},
                "updates_buffered": {"type": "integer"},
                "aggregated_here": {"type": "boolean"},
                "updates_dropped": {"type": "integer"},
                "updates_rejected": {"type": "object", "additionalProperties": {"type": "integer"}},
                "mean_staleness": {"type": ["number", "null"]},
                "last_eval": {"type": ["object", "null"]},
                "federated_eval": {},
                "created_at": {"type": "number"},
                "config": {"type": "object"},
                "artifacts": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "TaskList": {
            "type": "object",
            "required": ["tasks"],
            "properties": {"tasks": {"type": "array", "items": ref("TaskStatus")}},
        },
        "VersionList": {
            "type": "object",
            "required": ["task", "versions"],
            "properties": {
                "task": {"type": "string"},
                "versions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["version"],
                        "properties": {
                            "version": {"type": "integer"},
                            "created_at": {"type": "number"},
                            "num_updates": {"type": "integer"},
                            "mean_staleness": {"type": ["number", "null"]},
                            "metrics": {"type": ["object", "null"]},
                            "params_sha256": {"type": "string"},
                        },
                    },
                },
            },
        },
        "Revoked": {
            "type": "object",
            "required": ["device_id", "revoked"],
            "properties": {"device_id": {"type": "string"}, "revoked": {"type": "boolean"}},
        },
        "Health": {"type": "object", "properties": {"status": {"type": "string"}}},
        "Readiness": {
            "type": "object",
            "required": ["ready"],
            "properties": {"ready": {"type": "boolean"}, "checks": {"type": "object"}},
        },
    }
