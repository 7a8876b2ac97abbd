"""asyncfl client SDK: on-device training with stock ONNX Runtime (never torch).

Start with :class:`Client` (async) or :class:`SyncClient` (blocking); see the README.

Errors load eagerly; everything else loads on first use, so the server and the
simulator, which import only :mod:`client_sdk.wire` and :mod:`client_sdk.errors`, do
not pull in the client's HTTP, SQLite and ONNX Runtime code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from client_sdk.errors import (
    BundleError,
    ConfigError,
    SdkError,
    ServerError,
    StorageError,
    TrainingError,
    TransportError,
    WireFormatError,
)
from client_sdk.version import __version__

if TYPE_CHECKING:
    from client_sdk.bundle import Bundle, Manifest, TensorSpec, decode_params, encode_params
    from client_sdk.client import Client
    from client_sdk.data import ArrayDataSource, DataSource
    from client_sdk.eligibility import (
        DeviceState,
        DeviceStateProvider,
        EligibilityPolicy,
        ManualDeviceState,
    )
    from client_sdk.events import Event, EventKind
    from client_sdk.examples import ExampleStore
    from client_sdk.options import ClientOptions, Credentials
    from client_sdk.results import Evaluated, NoSlot, NotEligible, Rejected, RoundResult, Trained
    from client_sdk.retry import RetryPolicy
    from client_sdk.sync import SyncClient
    from client_sdk.trainer import EvalResult, Trainer, TrainPlan, TrainResult
    from client_sdk.transport import AiohttpTransport, Response, Transport

_LAZY = {
    "AiohttpTransport": "client_sdk.transport",
    "ArrayDataSource": "client_sdk.data",
    "Bundle": "client_sdk.bundle",
    "Client": "client_sdk.client",
    "ClientOptions": "client_sdk.options",
    "Credentials": "client_sdk.options",
    "DataSource": "client_sdk.data",
    "DeviceState": "client_sdk.eligibility",
    "DeviceStateProvider": "client_sdk.eligibility",
    "EligibilityPolicy": "client_sdk.eligibility",
    "EvalResult": "client_sdk.trainer",
    "Evaluated": "client_sdk.results",
    "Event": "client_sdk.events",
    "EventKind": "client_sdk.events",
    "ExampleStore": "client_sdk.examples",
    "Manifest": "client_sdk.bundle",
    "ManualDeviceState": "client_sdk.eligibility",
    "NoSlot": "client_sdk.results",
    "NotEligible": "client_sdk.results",
    "Rejected": "client_sdk.results",
    "Response": "client_sdk.transport",
    "RetryPolicy": "client_sdk.retry",
    "RoundResult": "client_sdk.results",
    "SyncClient": "client_sdk.sync",
    "TensorSpec": "client_sdk.bundle",
    "TrainPlan": "client_sdk.trainer",
    "TrainResult": "client_sdk.trainer",
    "Trained": "client_sdk.results",
    "Trainer": "client_sdk.trainer",
    "Transport": "client_sdk.transport",
    "decode_params": "client_sdk.bundle",
    "encode_params": "client_sdk.bundle",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'client_sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AiohttpTransport",
    "ArrayDataSource",
    "Bundle",
    "BundleError",
    "Client",
    "ClientOptions",
    "ConfigError",
    "Credentials",
    "DataSource",
    "DeviceState",
    "DeviceStateProvider",
    "EligibilityPolicy",
    "EvalResult",
    "Evaluated",
    "Event",
    "EventKind",
    "ExampleStore",
    "Manifest",
    "ManualDeviceState",
    "NoSlot",
    "NotEligible",
    "Rejected",
    "Response",
    "RetryPolicy",
    "RoundResult",
    "SdkError",
    "ServerError",
    "StorageError",
    "SyncClient",
    "TensorSpec",
    "TrainPlan",
    "TrainResult",
    "Trained",
    "Trainer",
    "TrainingError",
    "Transport",
    "TransportError",
    "WireFormatError",
    "__version__",
    "decode_params",
    "encode_params",
]
