"""Hostile input against a real ``asyncfl serve``: every class of input that reached a
500 before gets a 4xx in the project's error shape, and nothing is counted as a 5xx.

Then a bounded hypothesis run throws arbitrary bodies, headers and path segments at
every endpoint, with and without credentials: no answer may be a 5xx.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client_sdk.wire import pack
from server.admin_client import AdminClient
from server.process import ServerProcess
from tests.server.fleet import create_task
from tests.strategies import trees

MSGPACK = "application/msgpack"
JSON = "application/json"
LIMIT = 1 << 20


@dataclass
class Api:
    server: ServerProcess
    http: aiohttp.ClientSession
    device: str  # a device token

    async def call(
        self,
        method: str,
        path: str,
        body: bytes | io.BytesIO | None = None,
        *,
        content_type: str = MSGPACK,
        auth: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        sent = {"Content-Type": content_type, **(headers or {})}
        if auth is not None:
            sent["Authorization"] = f"Bearer {auth}"
        async with self.http.request(
            method, self.server.url + path, data=body, headers=sent, skip_auto_headers=["Accept"]
        ) as r:
            return r.status, _decode(await r.read(), r.content_type), r

    @property
    def admin(self) -> str:
        return self.server.admin_token


def _decode(raw: bytes, content_type: str) -> Any:
    if content_type == JSON:
        return json.loads(raw)
    if content_type == MSGPACK and raw:
        return msgpack.unpackb(raw, raw=False)
    return raw


def _error_shape(status: int, doc: Any, *codes: str) -> None:
    assert 400 <= status < 500, (status, doc)
    assert isinstance(doc["error"]["code"], str) and isinstance(doc["error"]["message"], str)
    if codes:
        assert doc["error"]["code"] in codes, doc


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory, exports_dir: Any) -> Any:
    server = ServerProcess(
        tmp_path_factory.mktemp("hostile"),
        env={
            "ASYNCFL_EXPORTS_DIR": str(exports_dir),
            "ASYNCFL_MAX_BODY_BYTES": str(LIMIT),
            "ASYNCFL_DEVICE_RATE_PER_S": "100000",
            "ASYNCFL_DEVICE_RATE_BURST": "100000",
        },
    )
    server.start()
    yield server
    server.stop(timeout_s=10)


@pytest.fixture
async def api(hostile_server: ServerProcess) -> AsyncIterator[Api]:
    if not await _has_task(hostile_server, "t1"):
        await create_task(hostile_server, "t1")
    async with aiohttp.ClientSession() as http:
        async with http.post(
            hostile_server.url + "/v1/devices/enroll",
            data=pack({"enrollment_key": hostile_server.enrollment_key}),
            headers={"Content-Type": MSGPACK},
        ) as r:
            token = msgpack.unpackb(await r.read())["device_token"]
        yield Api(hostile_server, http, token)


async def _has_task(server: ServerProcess, task: str) -> bool:
    async with AdminClient(server.url, server.admin_token) as admin:
        return any(
            t["id"] == task for t in (await admin.request("GET", "/admin/v1/tasks"))["tasks"]
        )


def _deep_json(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


def _deep_msgpack(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


POSTS = [
    "/v1/devices/enroll",
    "/v1/tasks/t1/checkin",
    "/v1/tasks/t1/evaluations",
    "/v1/tasks/t1/sessions/release",
    "/v1/tasks/t1/updates",
    "/admin/v1/tasks",
]


@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize("kind", ["json", "msgpack"])
async def test_deep_bodies_are_a_400_on_every_endpoint(api: Api, path: str, kind: str) -> None:
    body = _deep_json(5000) if kind == "json" else _deep_msgpack(5000)
    auth = api.admin if path.startswith("/admin") else api.device
    content_type = JSON if kind == "json" else MSGPACK
    for token in (None, auth):
        status, doc, _ = await api.call("POST", path, body, content_type=content_type, auth=token)
        _error_shape(status, doc)
        assert status in (400, 401), (path, status, doc)


async def test_a_gzip_header_on_a_plain_body_is_a_400_and_real_gzip_works(api: Api) -> None:
    plain = json.dumps({"enrollment_key": api.server.enrollment_key}).encode()
    headers = {"Content-Encoding": "gzip"}
    bad = await api.call("POST", "/v1/devices/enroll", plain, content_type=JSON, headers=headers)
    good = await api.call(
        "POST", "/v1/devices/enroll", gzip.compress(plain), content_type=JSON, headers=headers
    )
    odd = await api.call(
        "POST", "/v1/devices/enroll", plain, content_type=JSON, headers={"Content-Encoding": "zz"}
    )
    _error_shape(bad[0], bad[1], "bad_content_encoding")
    assert good[0] == 201 and good[1]["device_token"]
    assert odd[0] == 415 and odd[1]["error"]["code"] == "unsupported_content_encoding"


@pytest.mark.parametrize("raw", ["²", "%C2%B2", "1" * 30, str(2**64), str(2**63), "-1", "1.0"])
async def test_path_and_query_integers_are_strict(api: Api, raw: str) -> None:
    params = await api.call("GET", f"/v1/tasks/t1/versions/{raw}/params", auth=api.device)
    model = await api.call("GET", f"/admin/v1/tasks/t1/versions/{raw}/model.onnx", auth=api.admin)
    before = await api.call("GET", f"/admin/v1/tasks/t1/versions?before={raw}", auth=api.admin)
    limit = await api.call("GET", f"/admin/v1/tasks/t1/versions?limit={raw}", auth=api.admin)
    for status, doc, _ in (params, model):
        _error_shape(status, doc, "bad_version")
    for status, doc, _ in (before, limit):
        _error_shape(status, doc, "bad_parameter")


async def test_the_largest_version_number_is_a_404_not_a_database_error(api: Api) -> None:
    status, doc, _ = await api.call(
        "GET", f"/admin/v1/tasks/t1/versions/{2**63 - 1}/model.onnx", auth=api.admin
    )
    assert status == 404 and doc["error"]["code"] == "unknown_version"


@pytest.mark.parametrize(
    "info",
    [
        {"serial": b"\x00\x01"},
        {"n": float("nan")},
        "not a map",
        {"a": {"b": {"c": {"d": {"e": 1}}}}},
    ],
)
async def test_device_info_must_be_small_json(api: Api, info: Any) -> None:
    enroll = await api.call(
        "POST",
        "/v1/devices/enroll",
        pack({"enrollment_key": api.server.enrollment_key, "device_info": info}),
    )
    checkin = await api.call(
        "POST", "/v1/tasks/t1/checkin", pack({"device_info": info}), auth=api.device
    )
    for status, doc, _ in (enroll, checkin):
        _error_shape(status, doc, "bad_field")


async def test_admin_bodies_honour_the_body_limit(api: Api) -> None:
    body = io.BytesIO(json.dumps({"id": "big", "model": "logreg", "pad": "x" * (3 << 20)}).encode())
    status, doc, _ = await api.call(
        "POST", "/admin/v1/tasks", body, content_type=JSON, auth=api.admin
    )
    assert status == 413 and doc["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"id": "t9\n", "model": "logreg"}, "bad_task_id"),
        (
            {"id": "t9", "model": "logreg", "config": {"session_deadline_s": float("nan")}},
            "invalid_config",
        ),
        (
            {"id": "t9", "model": "logreg", "config": {"plan": {"lr": float("inf")}}},
            "invalid_config",
        ),
        ({"id": "t9", "model": "logreg", b"x": 1}, "malformed_body"),
        ({"id": "t9", "model": "logreg", "client_optimizer": ["sgd"]}, "bad_field"),
        (
            {
                "id": "t9",
                "model": "logreg",
                "evaluation": {
                    "x": {"dtype": "float32", "shape": [0, 2**62], "data": b""},
                    "y": {},
                },
            },
            "bad_evaluation",
        ),
    ],
)
async def test_admin_create_refuses_hostile_fields(api: Api, body: Any, code: str) -> None:
    status, doc, _ = await api.call("POST", "/admin/v1/tasks", pack(body), auth=api.admin)
    _error_shape(status, doc, code)


async def test_json_nan_tokens_are_refused(api: Api) -> None:
    body = b'{"id": "t9", "model": "logreg", "config": {"session_deadline_s": NaN}}'
    status, doc, _ = await api.call(
        "POST", "/admin/v1/tasks", body, content_type=JSON, auth=api.admin
    )
    _error_shape(status, doc, "malformed_body")


async def _raw(server: ServerProcess, data: bytes, *, read: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 10) if read else b""
    finally:
        writer.close()


def _split(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /v1/devices/enroll HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /v1/devices/enroll HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
        b"Content-Length: 6\r\n\r\nhello",
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
        b"G@T /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
)
async def test_malformed_http_is_answered_in_the_error_shape(
    api: Api, request_bytes: bytes
) -> None:
    status, headers, doc = _split(await _raw(api.server, request_bytes))
    assert status == 400 and headers["content-type"].startswith(JSON)
    assert doc["error"]["code"] == "malformed_http" and doc["error"]["message"]
    assert headers["x-request-id"] == doc["error"]["request_id"]


async def test_a_client_leaving_mid_body_is_not_a_server_error(api: Api) -> None:
    head = (
        b"POST /v1/tasks/t1/updates HTTP/1.1\r\nHost: a\r\nContent-Type: application/msgpack\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    for _ in range(3):
        await _raw(api.server, head + b"\x00" * 1000, read=False)
    await asyncio.sleep(0.5)
    log = api.server.log_file.read_text(errors="replace")
    metrics = await _metrics(api)
    assert 'status="499"' in metrics
    assert "Traceback" not in log and " ERROR " not in log


async def _metrics(api: Api) -> str:
    async with api.http.get(api.server.url + "/metrics") as r:
        return await r.text()


async def test_every_answer_carries_a_request_id(api: Api) -> None:
    _, _, ok = await api.call("GET", "/v1/tasks/t1/versions/0/params", auth=api.device)
    _, _, missing = await api.call("GET", "/v1/tasks/nope/versions/0/params", auth=api.device)
    _, _, given_id = await api.call("GET", "/healthz", headers={"X-Request-Id": "trace-42"})
    assert re.fullmatch(r"[0-9a-f]{32}", ok.headers["X-Request-Id"])
    assert missing.headers["X-Request-Id"] != ok.headers["X-Request-Id"]
    assert given_id.headers["X-Request-Id"] == "trace-42"


async def test_made_up_methods_share_one_metrics_series(api: Api) -> None:
    """Methods outside the standard ones must not each become a series of their own."""
    for method in ("PROPFIND", "MKCOL", "PURGE"):  # HTTP parser knows them; no route does
        status, body, _ = await api.call(method, "/v1/tasks/t1/checkin", auth=api.device)
        assert status == 405 and body["error"]["code"] == "method_not_allowed"
    metrics = await _metrics(api)
    methods = set(re.findall(r'asyncfl_http_requests_total\{[^}]*method="([^"]+)"', metrics))
    assert "other" in methods
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}


# -- a bounded fuzz of every endpoint over HTTP -------------------------------------------
ENDPOINTS = [
    ("POST", "/v1/devices/enroll", None),
    ("POST", "/v1/tasks/{task}/checkin", "device"),
    ("GET", "/v1/artifacts/{segment}", "device"),
    ("GET", "/v1/tasks/{task}/versions/{segment}/params", "device"),
    ("POST", "/v1/tasks/{task}/updates", None),
    ("POST", "/v1/tasks/{task}/evaluations", None),
    ("POST", "/v1/tasks/{task}/sessions/release", None),
    ("POST", "/admin/v1/tasks", "admin"),
    ("GET", "/admin/v1/tasks/{task}", "admin"),
    ("GET", "/admin/v1/tasks/{task}/versions?before={segment}&limit={segment}", "admin"),
    ("GET", "/admin/v1/tasks/{task}/versions/{segment}/model.onnx", "admin"),
    ("POST", "/admin/v1/devices/{segment}/revoke", "admin"),
    # the dashboard's reads (the stream is a long-lived answer: its refusals are below)
    ("GET", "/admin/v1/overview", "admin"),
    ("GET", "/admin/v1/tasks/{task}/history?after_version={segment}", "admin"),
    ("GET", "/admin/v1/tasks/{task}/live?after_version={segment}", "admin"),
    ("GET", "/admin/v1/tasks/{task}/fleet", "admin"),
    ("GET", "/admin/v1/tasks/{task}/cost", "admin"),
    ("GET", "/admin/v1/tasks/{task}/timeline?since={segment}&bucket_s={segment}", "admin"),
    ("GET", "/admin/v1/tasks/{task}/snapshot", "admin"),
]
BODY_KEYS = [
    "id",
    "model",
    "config",
    "session",
    "version",
    "metrics",
    "device_info",
    "enrollment_key",
    "tensors",
    "base_version",
    "num_examples",
    "evaluation",
]
bodies = trees(st.one_of(st.sampled_from(BODY_KEYS), st.binary(max_size=2)), max_leaves=12)
segments = st.one_of(
    st.sampled_from(["0", "latest", "t1", "²", "1" * 25, str(2**64), "%00", "..", "a%2Fb"]),
    st.text(alphabet=st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=6),
)
FUZZED: list[int] = []


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    body=st.one_of(
        bodies.map(lambda b: ("tree", b)), st.binary(max_size=40).map(lambda b: ("raw", b))
    ),
    fmt=st.sampled_from([MSGPACK, JSON, "text/plain"]),
    task=st.sampled_from(["t1", "nope", "T1"]),
    segment=segments,
    with_auth=st.booleans(),
    gzip_header=st.booleans(),
    etag=st.one_of(st.none(), st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126))),
)
async def test_no_input_on_any_endpoint_is_a_5xx(
    api: Api,
    endpoint: tuple[str, str, str | None],
    body: tuple[str, Any],
    fmt: str,
    task: str,
    segment: str,
    with_auth: bool,
    gzip_header: bool,
    etag: str | None,
) -> None:
    method, template, auth = endpoint
    path = template.format(task=task, segment=segment)
    kind, value = body
    data = value if kind == "raw" else _encode(value, fmt)
    token = {"device": api.device, "admin": api.admin, None: None}[auth] if with_auth else None
    headers = {"Content-Encoding": "gzip"} if gzip_header else {}
    if etag is not None:
        headers["If-None-Match"] = etag
    status, doc, _ = await api.call(
        method,
        path,
        data if method == "POST" else None,
        content_type=fmt,
        auth=token,
        headers=headers,
    )
    FUZZED.append(status)
    assert status < 500, (method, path, status, doc)
    if status >= 400:
        _error_shape(status, doc)


@pytest.mark.parametrize("task", ["nope", "T1", "%00", "a%2Fb", "1" * 80])
@pytest.mark.parametrize("with_auth", [True, False])
async def test_the_live_stream_refuses_before_any_byte(
    api: Api, task: str, with_auth: bool
) -> None:
    """An unknown task or no credential: a 4xx in the error shape, never a stream."""
    status, doc, r = await api.call(
        "GET", f"/admin/v1/tasks/{task}/stream", auth=api.admin if with_auth else None
    )
    FUZZED.append(status)
    assert r.content_type != "text/event-stream"
    _error_shape(status, doc)
    assert status == (404 if with_auth else 401)


def _encode(value: Any, fmt: str) -> bytes:
    if fmt == JSON:
        try:
            return json.dumps(value).encode()
        except (TypeError, ValueError):
            return b"{"
    try:
        return msgpack.packb(value, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return b"\xc1"


async def test_the_server_counted_no_5xx(api: Api) -> None:
    metrics = await _metrics(api)
    statuses = re.findall(r'asyncfl_http_requests_total\{[^}]*status="(\d+)"[^}]*\} (\S+)', metrics)
    counted: dict[str, float] = {}
    for status, n in statuses:
        counted[status] = counted.get(status, 0.0) + float(n)
    print(f"fuzzed {len(FUZZED)} requests; statuses {sorted(set(FUZZED))}; server {counted}")
    assert not any(s.startswith("5") and n for s, n in counted.items()), counted
