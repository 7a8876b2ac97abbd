"""Errors the simulator raises on purpose.

Hierarchy::

    AsyncflError                 (server.errors: the project's root)
    └── SimulatorError           a run cannot go on (no model bundle, bad data)
        ├── PresetError          a preset file, a ``--set`` override or an argument is wrong
        ├── Diverged             (training) local training produced non-finite values
        └── GateFailed           (batched) the batched path does not match Trainer.train;
                                 caught by the trainer, which falls back to the Trainer path
"""

from __future__ import annotations

from server.errors import AsyncflError

__all__ = ["PresetError", "SimulatorError"]


class SimulatorError(AsyncflError):
    code = "simulator_error"
    status = 500


class PresetError(SimulatorError):
    code = "bad_preset"
    status = 400
