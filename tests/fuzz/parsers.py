"""Coverage-guided fuzzing (atheris, libFuzzer) of the server's decoders.

    python tests/fuzz/parsers.py -max_total_time=30 [CORPUS_DIR]

One target, the first input byte picks the decoder: the update payload parser
(:func:`server.updates.parse_update`), the body parsers for msgpack and JSON
(:func:`server.api.http.decode_body`), the tensor decoder (from bytes, and from shapes
built field by field), path and query integers,
the task config and the evaluation set. Each must return a value or raise an
:class:`~server.errors.AsyncflError` (or, for the wire alone, a WireFormatError) with a
4xx status; any other exception is a finding, and libFuzzer stops with the input that
raised it. ``tests/server/test_fuzz.py`` runs this for a bounded time in ``make test``,
from the seeds in :func:`seeds`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import atheris
import msgpack
import numpy  # noqa: F401  (imported before instrumenting: only our own code is traced)

with atheris.instrument_imports(include=["client_sdk", "server"]):
    from client_sdk.errors import WireFormatError
    from client_sdk.wire import WIRE_DTYPES, decode_tensor, decode_tensors, pack, unpack
    from server.api.http import decode_body, parse_int, parse_version
    from server.errors import AsyncflError
    from server.tasks.artifacts import eval_set_from_request
    from server.tasks.config import TaskConfig
    from server.updates import parse_update
    from tests.strategies import small_manifest

MANIFEST = small_manifest(features=4, classes=2)


def _update(body: bytes) -> None:
    try:
        parse_update(body)
    except TypeError:
        # KNOWN OPEN (issue 15, the upload use case's part): an unhashable "encoding"
        # raises TypeError in parse_update. Anything else that raises TypeError is a find.
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
        if not (isinstance(obj, dict) and isinstance(obj.get("encoding"), list | dict)):
            raise


def _tensors(body: bytes) -> None:
    decode_tensors(unpack(body))


DIMS = [0, 1, 2, 3, 2**16, 2**31 - 1, 2**31, 2**32, 2**62, 2**63 - 1]


def _shape(body: bytes) -> None:
    """A tensor map built field by field: random bytes rarely spell a shape that matters."""
    fdp = atheris.FuzzedDataProvider(body)
    dtype = fdp.PickValueInList([*WIRE_DTYPES, "complex64"])
    shape = [
        fdp.PickValueInList(DIMS) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 2**33)
        for _ in range(fdp.ConsumeIntInRange(0, 9))
    ]
    data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    decode_tensor({"dtype": dtype, "shape": shape, "data": data})


def _integers(body: bytes) -> None:
    text = body.decode("utf-8", errors="replace")
    parse_int(text, "before")
    parse_version(text, latest=3)


def _config(body: bytes) -> None:
    TaskConfig.from_dict(decode_body(body, "application/msgpack"))


def _evaluation(body: bytes) -> None:
    eval_set_from_request(decode_body(body, "application/msgpack"), MANIFEST)


TARGETS = [
    _update,
    lambda b: decode_body(b, "application/msgpack"),
    lambda b: decode_body(b, "application/json"),
    _tensors,
    _shape,
    _integers,
    _config,
    _evaluation,
]


def one_input(data: bytes) -> None:
    if not data:
        return
    target, body = TARGETS[data[0] % len(TARGETS)], data[1:]
    try:
        target(body)
    except WireFormatError:  # the SDK's refusal; the server turns it into a 400
        return
    except AsyncflError as exc:
        if not 400 <= exc.status < 500:
            raise


def seeds() -> list[bytes]:
    """One well-formed input per target: libFuzzer mutates from these."""
    tensor = {"dtype": "float32", "shape": [4, 2], "data": bytes(32)}
    update = {
        "session": "s1.e30.AAAA",
        "base_version": 0,
        "num_examples": 5,
        "encoding": "float32",
        "tensors": [tensor],
        "metrics": {"loss": 0.5},
    }
    config = {"concurrency": 10, "session_deadline_s": 60.0, "plan": {"lr": 0.1}}
    evaluation = {
        "x": {**tensor, "shape": [2, 4]},
        "y": {"dtype": "int64", "shape": [2], "data": bytes(16)},
    }
    bodies: list[Any] = [
        pack(update),
        pack({"enrollment_key": "k", "device_info": {"os": "android"}}),
        b'{"id": "t1", "model": "logreg", "config": {"concurrency": 5}}',
        pack([tensor]),
        bytes(16),
        b"12",
        pack(config),
        pack(evaluation),
    ]
    return [bytes([i]) + body for i, body in enumerate(bodies)]


def main(argv: list[str]) -> None:
    corpus = next((Path(a) for a in argv[1:] if not a.startswith("-")), None)
    if corpus is not None:
        corpus.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(seeds()):
            (corpus / f"seed-{i}").write_bytes(seed)
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
