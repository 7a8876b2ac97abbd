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
    from client_sdk.transport import AiohttpTransport, Response, Transport

_LAZY = {
    "AiohttpTransport": "client_sdk.transport",
    "ArrayDataSource": "client_sdk.data",
    "Client": "client_sdk.client",
    "ClientOptions": "client_sdk.options",
    "Credentials": "client_sdk.options",
    "DataSource": "client_sdk.data",
    "DeviceState": "client_sdk.eligibility",
    "DeviceStateProvider": "client_sdk.eligibility",
    "EligibilityPolicy": "client_sdk.eligibility",
    "Evaluated": "client_sdk.results",
    "Event": "client_sdk.events",
    "EventKind": "client_sdk.events",
    "ExampleStore": "client_sdk.examples",
    "ManualDeviceState": "client_sdk.eligibility",
    "NoSlot": "client_sdk.results",
    "NotEligible": "client_sdk.results",
    "Rejected": "client_sdk.results",
    "Response": "client_sdk.transport",
    "RetryPolicy": "client_sdk.retry",
    "RoundResult": "client_sdk.results",
    "SyncClient": "client_sdk.sync",
    "Trained": "client_sdk.results",
    "Transport": "client_sdk.transport",
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
    "BundleError",
    "Client",
    "ClientOptions",
    "ConfigError",
    "Credentials",
    "DataSource",
    "DeviceState",
    "DeviceStateProvider",
    "EligibilityPolicy",
    "Evaluated",
    "Event",
    "EventKind",
    "ExampleStore",
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
    "Trained",
    "TrainingError",
    "Transport",
    "TransportError",
    "WireFormatError",
    "__version__",
]
