"""Load tools: a Locust fleet emulator (``run.py``) and an ingest benchmark."""
