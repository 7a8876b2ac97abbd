"""Everything the runs of one preset share: fleet, shards, model, test sets.

Built once per preset (the fleet, the lazy shards and the ONNX sessions are reused by
every run of a sweep or grid), so the runs compared with each other see the same
devices and the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from simulator.batched import DenseBatchTrainer, supports
from simulator.config import Preset
from simulator.errors import PresetError, SimulatorError
from simulator.fleet import Fleet
from simulator.shards import LabelSkewShards, ShardSource
from simulator.synthetic import SyntheticShards
from simulator.training import LocalTrainer, OnnxTrainer

__all__ = [
    "Environment",
    "build_environment",
    "build_environments",
    "make_shards",
    "select_trainer",
]

Array = np.ndarray[Any, Any]
XY = tuple[Array, Array]


@dataclass
class Environment:
    preset: Preset
    fleet: Fleet
    shards: ShardSource
    trainer: LocalTrainer
    test_set: XY
    tier_test_sets: list[XY]
    engine: str = "custom"


def make_shards(preset: Preset, fleet: Fleet) -> ShardSource:
    """The shard source the preset's ``[data]`` asks for."""
    data, seed = preset.data, preset.seed
    if data.dataset == "synthetic":
        return SyntheticShards(data, fleet.tier, len(fleet.tiers), seed=seed)
    from server.modeling.datasets import load_dataset

    x_train, y_train, x_test, y_test = load_dataset(data.dataset)
    classes = int(y_train.max()) + 1
    if classes != data.classes:
        raise SimulatorError(f"{data.dataset} has {classes} classes, not {data.classes}")
    return LabelSkewShards(
        data, (x_train, y_train), (x_test, y_test), fleet.tier, len(fleet.tiers), seed=seed
    )


def select_trainer(
    onnx: OnnxTrainer, preset: Preset, shards: ShardSource
) -> tuple[LocalTrainer, str]:
    """The trainer ``training.engine`` asks for, and a note saying which one runs.

    A batched trainer checks itself against the SDK's ``Trainer.train`` at every
    configuration a run trains with (:mod:`simulator.batched`).
    """
    tr = preset.training
    problem = supports(onnx)
    if tr.engine == "onnx" or (tr.engine == "auto" and problem is not None):
        return onnx, "onnx (the SDK trainer, one device at a time)"
    if problem is not None:
        raise PresetError(f"training.engine = 'batched' is unavailable: {problem}")
    return DenseBatchTrainer(onnx), (
        "batched numpy, gated against the SDK Trainer.train at each (client lr, batch, "
        "epochs) the run uses"
    )


def build_environment(preset: Preset, trainer: LocalTrainer) -> Environment:
    """Fleet, shards and test sets for ``preset``; an OnnxTrainer may become batched."""
    fleet = Fleet(preset.fleet, preset.seed)
    shards = make_shards(preset, fleet)
    trainer.check_data(*shards.shard(0))
    engine = "custom"
    if isinstance(trainer, OnnxTrainer):
        trainer, engine = select_trainer(trainer, preset, shards)
    rng = np.random.default_rng([preset.seed, 0x7135])
    tier_sets = []
    for tier in range(len(fleet.tiers)):
        members = fleet.members(tier)
        if len(members) == 0:
            raise SimulatorError(
                f"tier {fleet.tiers[tier].name!r} got no devices; raise its share or the fleet size"
            )
        count = min(preset.data.eval_devices, len(members))
        picked = rng.choice(members, size=count, replace=False)
        tier_sets.append(shards.tier_test_set(np.sort(picked)))
    return Environment(preset, fleet, shards, trainer, shards.test_set(), tier_sets, engine)


def build_environments(preset: Preset, trainer: LocalTrainer) -> list[Environment]:
    """One environment per seed of ``run.seeds`` (or the preset's seed alone)."""
    seeds = preset.run.seeds or (preset.seed,)
    return [build_environment(replace(preset, seed=seed), trainer) for seed in seeds]
