"""asyncfl client SDK: on-device training with stock ONNX Runtime (never torch)."""

from client_sdk.errors import BundleError, SdkError, TrainingError, WireFormatError

__version__ = "0.1.0"

__all__ = [
    "BundleError",
    "SdkError",
    "TrainingError",
    "WireFormatError",
    "__version__",
]
