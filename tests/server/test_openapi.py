"""The OpenAPI document describes the routes the server has, with their parameters."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web

from server.api import admin, device, ops, sessions
from server.api.openapi import openapi_document

DOC = openapi_document()
ROUTES = device.routes() + sessions.routes() + admin.routes() + ops.routes()


def _resolve(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = DOC["components"]["schemas"][name]
    return node


def test_every_route_is_documented_and_nothing_else() -> None:
    served = {(r.method.lower(), r.path) for r in ROUTES if isinstance(r, web.RouteDef)}
    documented = {(m, p) for p, ops_ in DOC["paths"].items() for m in ops_}
    assert served == documented


@pytest.mark.parametrize(("path", "method"), [(p, m) for p, o in DOC["paths"].items() for m in o])
def test_path_parameters_match_the_route(path: str, method: str) -> None:
    operation = DOC["paths"][path][method]
    in_path = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
    assert in_path == set(re.findall(r"\{(\w+)\}", path))
    assert operation["responses"], path


def test_versions_are_an_integer_or_latest() -> None:
    operation = DOC["paths"]["/v1/tasks/{task}/versions/{version}/params"]["get"]
    (version,) = [p for p in operation["parameters"] if p["name"] == "version"]
    kinds = version["schema"]["oneOf"]
    assert {"type": "integer", "minimum": 0, "maximum": 2**63 - 1} in kinds
    assert {"type": "string", "const": "latest"} in kinds


def test_create_task_takes_exactly_one_of_model_or_bundle() -> None:
    schema = _resolve(
        DOC["paths"]["/admin/v1/tasks"]["post"]["requestBody"]["content"]["application/json"][
            "schema"
        ]
    )
    assert schema["oneOf"] == [{"required": ["model"]}, {"required": ["bundle"]}]
    assert schema["additionalProperties"] is False


def test_the_checkin_body_is_optional_and_the_upload_body_is_msgpack() -> None:
    paths = DOC["paths"]
    assert paths["/v1/tasks/{task}/checkin"]["post"]["requestBody"]["required"] is False
    upload = paths["/v1/tasks/{task}/updates"]["post"]["requestBody"]
    assert set(upload["content"]) == {"application/msgpack"}


def test_every_response_and_request_declares_its_media_types() -> None:
    for path, operations in DOC["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody")
            if body is not None:
                assert body["content"], (method, path)
            for status, response in operation["responses"].items():
                if status not in ("204", "304"):
                    assert response.get("content"), (method, path, status)
                if status.startswith(("4", "5")) and path != "/readyz":
                    assert set(response["content"]) == {"application/json", "application/msgpack"}


def test_every_reference_resolves() -> None:
    refs = re.findall(r"'\$ref': '#/components/schemas/(\w+)'", repr(DOC))
    assert refs and set(refs) <= set(DOC["components"]["schemas"])
