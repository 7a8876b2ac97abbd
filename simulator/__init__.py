"""asyncfl fleet simulator: virtual-time FL over heterogeneous device fleets.

Async FedBuff and sync rounds run on the same simulated fleet (device tiers with
heavy-tailed speeds, bandwidth, daily availability, dropouts, energy), on lazily
generated non-IID shards, training with the model bundle the SDK runs and aggregating
through :mod:`server.aggregation`. ``asyncfl simulate --preset NAME`` runs a TOML
preset from ``simulator/presets/``.

Importing the package is cheap: the names below load their module on first use (the
``asyncfl`` command line imports :mod:`simulator.cli` for every command).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulator.artifacts import load_bundle
    from simulator.batched import DenseBatchTrainer
    from simulator.config import Preset
    from simulator.environment import Environment, build_environment
    from simulator.errors import PresetError, SimulatorError
    from simulator.experiments import Comparison, GridResult, compare, grid, run_mode, sweep
    from simulator.fedbuff import AsyncSimulation
    from simulator.fleet import Fleet
    from simulator.presets import list_presets, load_preset
    from simulator.results import RunResult
    from simulator.rounds import SyncSimulation
    from simulator.shards import LabelSkewShards
    from simulator.synthetic import SyntheticShards
    from simulator.training import LocalTrainer, OnnxTrainer

__all__ = [
    "AsyncSimulation",
    "Comparison",
    "DenseBatchTrainer",
    "Environment",
    "Fleet",
    "GridResult",
    "LabelSkewShards",
    "LocalTrainer",
    "OnnxTrainer",
    "Preset",
    "PresetError",
    "RunResult",
    "SimulatorError",
    "SyncSimulation",
    "SyntheticShards",
    "build_environment",
    "compare",
    "grid",
    "list_presets",
    "load_bundle",
    "load_preset",
    "run_mode",
    "sweep",
]

_MODULES: dict[str, str] = {
    "AsyncSimulation": "fedbuff",
    "Comparison": "experiments",
    "DenseBatchTrainer": "batched",
    "Environment": "environment",
    "Fleet": "fleet",
    "GridResult": "experiments",
    "LabelSkewShards": "shards",
    "LocalTrainer": "training",
    "OnnxTrainer": "training",
    "Preset": "config",
    "PresetError": "errors",
    "RunResult": "results",
    "SimulatorError": "errors",
    "SyncSimulation": "rounds",
    "SyntheticShards": "synthetic",
    "build_environment": "environment",
    "compare": "experiments",
    "grid": "experiments",
    "list_presets": "presets",
    "load_bundle": "artifacts",
    "load_preset": "presets",
    "run_mode": "experiments",
    "sweep": "experiments",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'simulator' has no attribute {name!r}")
    return getattr(importlib.import_module(f"simulator.{module}"), name)
