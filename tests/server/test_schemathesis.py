"""Schemathesis against a real ``asyncfl serve`` and the document it serves.

Every operation of ``/v1/openapi.json`` gets generated requests, valid and invalid
(bounded examples each), with the credential its security scheme names. Every answer
must conform to the document (status, media type, body schema) and none may be a 5xx
(the document's 503s are for a starting, draining or broken backend; none of those
holds here). MessagePack request and response bodies go through the wire module.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from client_sdk.wire import pack
from server.api.openapi import openapi_document
from server.process import ServerProcess
from tests.server.fleet import create_task

EXAMPLES = int(os.environ.get("ASYNCFL_SCHEMATHESIS_EXAMPLES", "25"))
STATUSES: Counter[int] = Counter()


@schemathesis.serializer("application/msgpack")
def _to_msgpack(ctx: Any, value: Any) -> bytes:
    return msgpack.packb(_packable(value), use_bin_type=True)


@schemathesis.deserializer("application/msgpack")
def _from_msgpack(ctx: Any, response: Any) -> Any:
    return _as_json(msgpack.unpackb(response.content, raw=False))


def _as_json(value: Any) -> Any:
    """msgpack bin as the document spells it for JSON Schema: a string (its hex here)."""
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_json(v) for v in value]
    return value.hex() if isinstance(value, bytes) else value


def _packable(value: Any) -> Any:
    """Generated values msgpack cannot hold become ones it can (still of the wrong kind)."""
    if isinstance(value, dict):
        return {k: _packable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_packable(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return float(value)
    if hasattr(value, "data") and isinstance(value.data, bytes):  # schemathesis' Binary
        return value.data
    return value


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, exports_dir: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("schemathesis"),
        env={
            "ASYNCFL_EXPORTS_DIR": str(exports_dir),
            "ASYNCFL_MAX_BODY_BYTES": str(1 << 20),
            "ASYNCFL_DEVICE_RATE_PER_S": "100000",
            "ASYNCFL_DEVICE_RATE_BURST": "100000",
        },
    )
    server.start()
    asyncio.run(create_task(server, "t1"))
    yield server
    server.stop(timeout_s=10)
    by_status = dict(sorted(STATUSES.items()))
    print(f"schemathesis: {sum(STATUSES.values())} requests, by status {by_status}")


@pytest.fixture(scope="module")
def device_token(served: ServerProcess) -> str:
    import urllib.request

    request = urllib.request.Request(
        served.url + "/v1/devices/enroll",
        data=pack({"enrollment_key": served.enrollment_key}),
        headers={"Content-Type": "application/msgpack"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return str(msgpack.unpackb(r.read())["device_token"])


@pytest.fixture(scope="module")
def api_schema(served: ServerProcess) -> Any:
    return schemathesis.openapi.from_url(served.url + "/v1/openapi.json")


@schemathesis.hook
def map_body(ctx: Any, body: Any) -> Any:
    """Creating a task exports its zoo model in a child process: keep generated tasks on
    the one model the test exports dir has, and everything else as generated."""
    if ctx.operation.path != "/admin/v1/tasks" or not isinstance(body, dict) or "model" not in body:
        return body
    # only values of the right kind are replaced: a negative case that made one of them
    # the wrong type must stay invalid (rewriting it would make it valid)
    if isinstance(body.get("model"), str):
        body = {**body, "model": "logreg"}
    if isinstance(body.get("client_optimizer"), str) or "client_optimizer" not in body:
        body = {**body, "client_optimizer": "sgd"}
    return body


# The operations, from the document in code; each test loads the served copy of it.
# (schemathesis.pytest.from_fixture does not run under pytest 9: it reads Function._nodeid.)
# Invalid requests only exist for operations that take an input; operations on a task
# run once more on the task that exists (a random name is mostly a 404 before any parsing).
OPERATIONS = [
    (m.upper(), p, mode, task)
    for p, ops in openapi_document()["paths"].items()
    for m, op in ops.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    for task in ((None, "t1") if "{task}" in p else (None,))
    if mode is GenerationMode.POSITIVE or op.get("parameters") or op.get("requestBody")
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.mark.parametrize(("method", "path", "mode", "task"), OPERATIONS)
def test_every_operation_conforms_and_never_answers_5xx(
    api_schema: Any,
    served: ServerProcess,
    device_token: str,
    method: str,
    path: str,
    mode: GenerationMode,
    task: str | None,
) -> None:
    operation = api_schema.find_operation_by_label(f"{method} {path}")
    assert operation is not None, f"{method} {path} is not in the served document"
    names = {n for requirement in operation.definition.raw.get("security", []) for n in requirement}
    auth = {}
    if "adminToken" in names:
        auth["Authorization"] = f"Bearer {served.admin_token}"
    elif "deviceToken" in names:
        auth["Authorization"] = f"Bearer {device_token}"

    fixed = {"task": task} if task else None

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: Any) -> None:
        case.headers = {**(case.headers or {}), **auth}
        response = case.call_and_validate(checks=CHECKS, timeout=30)
        STATUSES[response.status_code] += 1

    run()
