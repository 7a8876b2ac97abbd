"""Every server-side decoder: arbitrary input gives a value or a 4xx AsyncflError.

Body parsers (msgpack and JSON), path and query integers, task and aggregation config,
evaluation sets, device_info, tokens and the update payload (read only: its rules are
the upload use case's). "Another exception" is the failure these tests look for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from client_sdk.wire import check_tree, encode_tensor, pack
from server.aggregation import AggregationConfig
from server.api.device import _device_info
from server.api.http import JSON, decode_body, loads_json, parse_int, parse_version
from server.coordination.tokens import SessionClaims, TokenSigner
from server.errors import AsyncflError, BadRequest, ConfigError, SessionError, Unauthorized
from server.tasks.artifacts import eval_set_from_request
from server.tasks.config import TaskConfig
from server.tasks.manager import TASK_ID
from server.updates import parse_update
from tests.strategies import small_manifest
from tests.strategies import trees as trees_of

EXAMPLES = settings(max_examples=300, deadline=None)

trees = trees_of(max_int=2**70)
CONTENT_TYPES = st.sampled_from(
    [JSON, "application/msgpack", "application/octet-stream", "", "text/plain", "x/y"]
)


def _outcome(call: Callable[[], Any]) -> tuple[Any, AsyncflError | None]:
    """What ``call()`` returned, or the AsyncflError it raised (anything else propagates)."""
    try:
        return call(), None
    except AsyncflError as exc:
        return None, exc


def _refused(exc: AsyncflError) -> None:
    assert 400 <= exc.status < 500, exc
    body = exc.to_body()["error"]
    assert isinstance(body["code"], str) and isinstance(body["message"], str)


def _packed(tree: Any) -> bytes:
    try:
        return msgpack.packb(tree, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return b"\xc1"  # never valid msgpack


def _json_text(tree: Any) -> bytes:
    try:
        return json.dumps(tree).encode()
    except (TypeError, ValueError):
        return b"{"


# -- bodies ------------------------------------------------------------------------------
@EXAMPLES
@given(st.one_of(st.binary(max_size=64), trees.map(_packed), trees.map(_json_text)), CONTENT_TYPES)
def test_any_body_decodes_to_a_checked_value_or_a_4xx(body: bytes, content_type: str) -> None:
    try:
        value = decode_body(body, content_type)
    except AsyncflError as exc:
        _refused(exc)
        return
    check_tree(value)


@pytest.mark.parametrize("opener", ["[", '{"a":'])
@pytest.mark.parametrize("depth", [33, 1000, 100_000])
def test_deep_json_is_a_400_not_a_recursion_error(opener: str, depth: int) -> None:
    with pytest.raises(BadRequest) as info:
        loads_json((opener * depth + "1" + ("]" if opener == "[" else "}") * depth).encode())
    assert info.value.code == "malformed_body"


@pytest.mark.parametrize(
    "text", ['{"a": NaN}', "[Infinity]", "-Infinity", "1" * 5000, str(2**64), '{"a": 1e400}']
)
def test_json_outside_the_format_is_refused_or_finite(text: str) -> None:
    value, error = _outcome(lambda: loads_json(text.encode()))
    if error is not None:
        assert error.code == "malformed_body"
    else:
        assert value == {"a": math.inf}  # 1e400 parses; config validation refuses it later


def test_mixed_str_and_bin_keys_are_refused_before_anyone_sorts_them() -> None:
    with pytest.raises(BadRequest, match="keys must be strings"):
        decode_body(pack({"a": 1, b"b": 2}), "application/msgpack")


# -- path and query integers --------------------------------------------------------------
@EXAMPLES
@given(st.one_of(st.text(max_size=24), st.integers(-5, 2**70).map(str)))
def test_any_path_integer_parses_in_range_or_is_a_400(raw: str) -> None:
    value, error = _outcome(lambda: parse_int(raw, "before", low=0, high=2**63 - 1))
    if error is not None:
        assert error.code == "bad_parameter"
    else:
        assert raw.isascii() and raw.isdigit() and 0 <= value < 2**63 and value == int(raw)


@pytest.mark.parametrize("raw", ["²", "٣", "1²", " 1", "1\n", "+1", "-1", "1" * 20, str(2**64)])
def test_digits_python_would_accept_are_refused(raw: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_version(raw, latest=7)
    assert info.value.code == "bad_version"


@EXAMPLES
@given(st.one_of(st.text(max_size=24), st.integers(0, 2**70).map(str), st.just("latest")))
def test_any_version_segment_is_latest_a_version_or_a_400(raw: str) -> None:
    version, error = _outcome(lambda: parse_version(raw, latest=7))
    if error is not None:
        assert error.code == "bad_version"
    else:
        assert version == 7 if raw == "latest" else 0 <= version == int(raw) < 2**63


# -- config ----------------------------------------------------------------------------------
TASK_KEYS = ["concurrency", "session_deadline_s", "eval_every", "federated_eval_fraction"]
PLAN_KEYS = ["lr", "batch_size", "epochs", "max_steps", "time_budget_s"]
numbers = st.one_of(
    st.integers(-3, 2**64),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, 0, 1, 0.5, 240.0, True]),
    trees,
)
task_configs = st.fixed_dictionaries(
    {},
    optional={
        **dict.fromkeys(TASK_KEYS, numbers),
        "plan": st.one_of(st.dictionaries(st.sampled_from(PLAN_KEYS), numbers), trees),
        "aggregation": st.one_of(
            st.dictionaries(
                st.sampled_from(
                    ["aggregation_goal", "over_selection", "mode", "staleness", "seed", "x"]
                ),
                numbers,
            ),
            trees,
        ),
    },
)


def _all_finite(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    return not isinstance(value, float) or math.isfinite(value)


@settings(max_examples=500, deadline=None)
@given(st.one_of(task_configs, trees))
def test_any_task_config_is_valid_and_finite_or_a_config_error(data: Any) -> None:
    try:
        config = TaskConfig.from_dict(data)
    except ConfigError as exc:
        _refused(exc)
        return
    as_dict = config.to_dict()
    assert _all_finite(as_dict)
    assert TaskConfig.from_dict(json.loads(json.dumps(as_dict))) == config


@pytest.mark.parametrize(
    "config",
    [
        {"session_deadline_s": math.nan},
        {"session_deadline_s": math.inf},
        {"plan": {"lr": math.nan}},
        {"plan": {"time_budget_s": math.inf}},
        {"federated_eval_fraction": math.nan},
        {"aggregation": {"over_selection": math.nan}},
        {"concurrency": True},
        {"plan": {"epochs": 1.5}},
    ],
)
def test_nan_infinity_and_wrong_types_are_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        TaskConfig.from_dict(config)


@EXAMPLES
@given(trees)
def test_any_aggregation_config_is_valid_or_a_config_error(data: Any) -> None:
    try:
        AggregationConfig.from_dict(data)
    except ConfigError as exc:
        _refused(exc)


@pytest.mark.parametrize("task_id", ["t1\n", "t1\r\n", "\nt1", "T1", "-t", "a" * 65])
def test_task_ids_match_the_whole_string(task_id: str) -> None:
    assert TASK_ID.match(task_id) is None


# -- evaluation sets, device info ----------------------------------------------------------
MANIFEST = small_manifest()
shapes = st.lists(
    st.one_of(st.integers(0, 3), st.sampled_from([64, 2**31, 2**62])), min_size=0, max_size=3
)
tensors = st.builds(
    lambda dtype, shape, data: {"dtype": dtype, "shape": shape, "data": data},
    st.sampled_from(["float32", "int64", "float64", "nope"]),
    shapes,
    st.binary(max_size=64),
)


@EXAMPLES
@given(
    st.one_of(
        st.fixed_dictionaries({"x": tensors, "y": tensors}),
        st.fixed_dictionaries({"dataset": st.one_of(st.text(max_size=8), trees)}),
        trees,
    )
)
def test_any_evaluation_set_decodes_or_is_a_400(obj: Any) -> None:
    try:
        result = eval_set_from_request(obj, MANIFEST)
    except BadRequest as exc:
        _refused(exc)
        return
    assert result is None or len(result[0]) == len(result[1]) > 0


def test_an_evaluation_set_the_model_takes_is_accepted() -> None:
    x, y = np.zeros((3, 64), np.float32), np.zeros(3, np.int64)
    result = eval_set_from_request({"x": encode_tensor(x), "y": encode_tensor(y)}, MANIFEST)
    assert result is not None and result[0].shape == (3, 64)


@EXAMPLES
@given(trees)
def test_any_device_info_is_a_json_map_or_a_400(info: Any) -> None:
    try:
        value = _device_info(info)
    except BadRequest as exc:
        _refused(exc)
        return
    assert isinstance(value, dict) and len(json.dumps(value, allow_nan=False)) <= 4096


def test_bin_and_deeply_nested_device_info_are_refused() -> None:
    deep: Any = {}
    for _ in range(1000):
        deep = {"a": deep}
    for info in ({"serial": b"\x00"}, deep, {"x": math.nan}, {"x": "y" * 5000}):
        with pytest.raises(BadRequest):
            _device_info(info)


# -- tokens ------------------------------------------------------------------------------
SIGNER = TokenSigner("secret")
CLAIMS = SessionClaims("sid", "t1", "dev", 3, 1000.0, 1240.0)
TOKENS = [SIGNER.session_token(CLAIMS), SIGNER.device_token("dev42")]


@EXAMPLES
@given(
    st.sampled_from(TOKENS),
    st.integers(0, 400),
    st.sampled_from(["=", "==", " ", "\n", "+", "/", "A", "Q", "_", "-", ".", "é"]),
    st.sampled_from(["insert", "replace", "append"]),
)
def test_a_token_verifies_in_exactly_one_spelling(token: str, at: int, char: str, how: str) -> None:
    at %= len(token)
    if how == "insert":
        mutated = token[:at] + char + token[at:]
    elif how == "replace":
        mutated = token[:at] + char + token[at + 1 :]
    else:
        mutated = token + char
    assume(mutated != token)
    verify = SIGNER.verify_session if token.startswith("s1.") else SIGNER.verify_device
    with pytest.raises((SessionError, Unauthorized)):
        verify(mutated)


def test_padding_and_other_trailing_bits_do_not_verify() -> None:
    kind, payload, sig = TOKENS[1].split(".")
    last = sig[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # the last character of 43 carries 2 unused bits: 3 other characters decode the same
    same_bytes = [
        c for c in alphabet if c != last and alphabet.index(c) >> 2 == alphabet.index(last) >> 2
    ]
    assert len(same_bytes) == 3
    for spelling in [sig + "=", *(sig[:-1] + c for c in same_bytes)]:
        with pytest.raises(Unauthorized):
            SIGNER.verify_device(f"{kind}.{payload}.{spelling}")
    assert SIGNER.verify_device(TOKENS[1]) == "dev42"


# -- the update payload (parsed by the upload use case; read-only use here) ---------------
updates = st.fixed_dictionaries(
    {},
    optional={
        "session": st.one_of(st.text(max_size=4), trees),
        "base_version": numbers,
        "num_examples": numbers,
        "encoding": st.one_of(st.sampled_from(["float32", "masked_fixed_point", "x"]), trees),
        "tensors": st.one_of(st.lists(tensors, max_size=3), trees),
        "metrics": st.one_of(st.dictionaries(st.text(max_size=4), numbers, max_size=3), trees),
        "extra": trees,
    },
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(updates.map(_packed), st.binary(max_size=64)))
def test_any_update_body_parses_or_is_a_400(body: bytes) -> None:
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception:  # not msgpack at all: the parser must say so
        obj = None
    # KNOWN OPEN (issue 15, the upload use case's part): an unhashable "encoding" raises
    # TypeError; test_an_unhashable_encoding_is_a_400 below turns red once it is fixed.
    assume(not (isinstance(obj, dict) and isinstance(obj.get("encoding"), list | dict)))
    try:
        payload = parse_update(body)
    except BadRequest as exc:
        _refused(exc)
        return
    assert payload.num_examples >= 1 and payload.base_version >= 0


def test_an_unhashable_encoding_is_a_400() -> None:
    body = pack(
        {"session": "s", "base_version": 0, "num_examples": 1, "tensors": [], "encoding": ["a"]}
    )
    with pytest.raises(BadRequest):
        parse_update(body)
