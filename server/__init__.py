"""asyncfl server: the aggregation service (FedBuff async and sync rounds)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
