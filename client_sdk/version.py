"""The SDK version, sent at check-in."""

__version__ = "0.1.0"
