"""asyncfl client SDK: on-device training with stock ONNX Runtime (never torch).

Start with :class:`Client` (async) or :class:`SyncClient` (blocking); see the README.
"""

from client_sdk.client import Client
from client_sdk.data import ArrayDataSource, DataSource
from client_sdk.eligibility import (
    DeviceState,
    DeviceStateProvider,
    EligibilityPolicy,
    ManualDeviceState,
)
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
from client_sdk.events import Event, EventKind
from client_sdk.examples import ExampleStore
from client_sdk.options import ClientOptions, Credentials
from client_sdk.results import (
    Evaluated,
    NoSlot,
    NotEligible,
    Rejected,
    RoundResult,
    Trained,
)
from client_sdk.retry import RetryPolicy
from client_sdk.sync import SyncClient
from client_sdk.transport import AiohttpTransport, Response, Transport
from client_sdk.version import __version__

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
