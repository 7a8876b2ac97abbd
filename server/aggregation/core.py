"""What the async and sync aggregators share: model, optimizer, fold, merge, step, state.

State lives in one flat float32 parameter vector and one flat accumulator. A fold
validates the update (one ``sdot`` pass per tensor: norm and NaN/Inf check), then adds
it to the accumulator with one ``saxpy`` pass whose factor carries the staleness weight,
the example weight, the clip scale and, with ``normalization = "goal"``, the ``1/K``,
so the accumulator already *is* the pseudo-gradient when the buffer fills. A step hands
it to the server optimizer, which updates the parameters in place. Parameter arrays
returned by :attr:`params` stay valid: a step after they were handed out writes into
a fresh copy (copy-on-write), so nothing is copied while nobody looks.

Both aggregators fold with one signature, ``fold(update_id, tensors, num_examples,
base_version, now=None)`` (``now`` matters to sync rounds only), and merge sums
pre-aggregated elsewhere (:class:`~server.aggregation.partial.Partial`) with
``merge(partial)``. State goes out as plain values and arrays (:meth:`state`) and comes
back with :meth:`from_state`; turning it into bytes is the storage layer's job.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar, Self

import numpy as np

from server.aggregation import blas
from server.aggregation.accumulator import Accumulator
from server.aggregation.config import AggregationConfig
from server.aggregation.contribution import Weigher
from server.aggregation.optimizers import make_optimizer
from server.aggregation.partial import Partial, PartialGroup
from server.aggregation.privacy import GaussianNoise
from server.aggregation.recent import RecentIds
from server.aggregation.results import AggregatorStats, MergeResult, StepResult
from server.aggregation.staleness import make_staleness_fn
from server.aggregation.state import SnapshotError, checked_array
from server.aggregation.validation import Flat, ModelSpec, RejectReason, reject
from server.errors import ConfigError, UpdateRejected

__all__ = ["AggregatorBase"]


class AggregatorBase:
    """Base of :class:`FedBuffAggregator` and :class:`SyncRoundAggregator`."""

    kind: ClassVar[str]
    mode: ClassVar[str]

    def __init__(
        self, params: Sequence[np.ndarray[Any, Any]], config: AggregationConfig, *, version: int = 0
    ) -> None:
        if config.mode != self.mode:
            raise ConfigError(
                f"{type(self).__name__} needs mode {self.mode!r}, got {config.mode!r}"
            )
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ConfigError(f"version must be an integer >= 0, got {version!r}")
        blas.limit_blas_threads()
        self._config = config
        self._spec = ModelSpec.from_arrays(params)
        self._flat: Flat = np.empty(self._spec.total_size, dtype=np.float32)
        for o, n, p in zip(self._spec.offsets, self._spec.sizes, params, strict=True):
            self._flat[o : o + n] = np.asarray(p).reshape(-1)
        self._params_shared = False
        self._version = version
        self._optimizer = make_optimizer(config)
        self._noise = GaussianNoise(config.seed)
        self._staleness_fn = make_staleness_fn(config)
        self._max_staleness = sys.maxsize if config.max_staleness is None else config.max_staleness
        table_size = min(_STALENESS_TABLE, self._max_staleness + 1)
        self._staleness_weights = [self._staleness_fn(s) for s in range(table_size)]
        self._goal = config.aggregation_goal
        self._weigher = Weigher(self._spec, config)
        # No clipping, no norm bound, equal example weights: the fold's straight-line path.
        self._plain = (
            config.example_weighting.kind == "equal"
            and config.clip_norm is None
            and config.max_update_norm is None
        )
        self._plain_staleness_limit = len(self._staleness_weights)
        # With "goal" normalisation the 1/K rides on every fold's saxpy factor, so the
        # accumulator is the pseudo-gradient when the buffer fills (no extra pass).
        self._fold_factor = 1.0 / config.aggregation_goal if config.normalization == "goal" else 1.0
        self._buffer = Accumulator(self._spec)
        self._recent = RecentIds(config.dedup_window)
        self._folded = self._steps = self._staleness_sum = self._clipped = 0
        self._rounds_abandoned = self._updates_dropped = 0
        self._rejected: Counter[str] = Counter()

    @property
    def config(self) -> AggregationConfig:
        return self._config

    @property
    def version(self) -> int:
        return self._version

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    @property
    def params(self) -> list[Flat]:
        """The current parameters as read-only float32 arrays (valid after later steps)."""
        self._params_shared = True
        out = []
        for o, n, shape in zip(
            self._spec.offsets, self._spec.sizes, self._spec.shapes, strict=True
        ):
            view = self._flat[o : o + n].reshape(shape)
            view.flags.writeable = False
            out.append(view)
        return out

    @property
    def buffered(self) -> int:
        """Updates folded into the open buffer (or round) and not yet applied."""
        return len(self._buffer)

    @property
    def pending_ids(self) -> tuple[str, ...]:
        """Ids of the updates in the open buffer, in fold order."""
        return tuple(self._buffer.ids)

    @property
    def stats(self) -> AggregatorStats:
        return AggregatorStats(
            folded=self._folded,
            steps=self._steps,
            rejected=dict(sorted(self._rejected.items())),
            staleness_sum=self._staleness_sum,
            staleness_count=self._folded,
            clipped=self._clipped,
            rounds_abandoned=self._rounds_abandoned,
            updates_dropped=self._updates_dropped,
        )

    def has_folded(self, update_id: str) -> bool:
        """True for updates in the open buffer and the last ``dedup_window`` consumed ones."""
        return update_id in self._buffer.id_set or update_id in self._recent

    def staleness_weight(self, staleness: int) -> float:
        table = self._staleness_weights
        return table[staleness] if staleness < len(table) else self._staleness_fn(staleness)

    # -- folding -------------------------------------------------------------------------

    def _check_duplicate(self, update_id: str) -> None:
        if update_id in self._buffer.id_set or update_id in self._recent:
            raise reject(RejectReason.DUPLICATE_UPDATE, f"update {update_id!r} was already folded")
        if type(update_id) is not str:
            raise TypeError(f"update_id must be a str, got {type(update_id).__name__}")

    def _fold_checked(
        self,
        update_id: str,
        tensors: Sequence[np.ndarray[Any, Any]],
        num_examples: int,
        staleness: int,
    ) -> tuple[float, float, bool]:
        """Validate and fold an update whose id and version were accepted.

        Returns ``(weight, norm, clipped)``; raises UpdateRejected having changed nothing.
        """
        c = self._weigher.weigh(tensors, num_examples)
        weight = self.staleness_weight(staleness) * c.example_weight
        self._buffer.add(update_id, c.flats, weight * c.scale * self._fold_factor, weight)
        self._folded += 1
        self._staleness_sum += staleness
        self._clipped += c.clipped
        return weight, c.norm, c.clipped

    def _count_rejection(self, exc: UpdateRejected) -> None:
        self._rejected[exc.code] += 1

    # -- merging pre-aggregated partials ---------------------------------------------------

    def _merge_group(self, group: PartialGroup, staleness: int) -> list[tuple[str, int, float]]:
        """Add a replica's group sum, weighted by its staleness here and now; returns each
        update's ``(id, staleness, weight)``. Ids already here are a bug upstream."""
        for uid in group.ids:
            self._check_duplicate(uid)
        s_weight = self.staleness_weight(staleness)
        self._buffer.add_total(
            group.ids, group.total, s_weight * self._fold_factor, s_weight * group.weight_sum
        )
        self._folded += len(group.ids)
        self._staleness_sum += staleness * len(group.ids)
        return [
            (uid, staleness, s_weight * w)
            for uid, w in zip(group.ids, group.example_weights, strict=True)
        ]

    def merge(self, partial: Partial, now: float | None = None) -> MergeResult:
        """Merge a replica's partial whole; step once afterwards if the buffer holds at
        least K updates (a partial that crosses K makes a version of more than K updates,
        averaged over all of them). Subclasses decide which groups they take."""
        raise NotImplementedError

    # -- stepping ------------------------------------------------------------------------

    def _step(self) -> StepResult:
        """Turn the buffer into a pseudo-gradient, apply the optimizer, bump the version."""
        cfg, buf = self._config, self._buffer
        n = len(buf)
        pseudo_grad = buf.total
        if cfg.normalization == "weights":
            # weights are > 0 unless a staleness rule underflowed; then the step is a no-op
            pseudo_grad *= np.float32(1.0 / buf.weight_sum if buf.weight_sum > 0 else 0.0)
        elif n != cfg.aggregation_goal:  # a round closing short or a buffer past K: divide by n
            pseudo_grad *= np.float32(cfg.aggregation_goal / n)
        if cfg.noise_multiplier > 0 and cfg.clip_norm is not None:
            self._noise.add(pseudo_grad, cfg.noise_multiplier * cfg.clip_norm / n)
        pg_norm = math.sqrt(blas.sq_norm(pseudo_grad))
        if self._params_shared:
            self._flat = self._flat.copy()
            self._params_shared = False
        self._optimizer.step([self._flat], [pseudo_grad])
        self._version += 1
        self._steps += 1
        ids = tuple(buf.ids)
        self._consume(ids)
        return StepResult(self._version, n, ids, pg_norm)

    def _consume(self, ids: Sequence[str]) -> None:
        """Move the buffer's ids into the dedup window and empty the buffer."""
        self._recent.extend(ids)
        self._buffer.reset()

    # -- state ---------------------------------------------------------------------------

    def state(self, *, buffer: bool = True) -> dict[str, Any]:
        """The complete state as plain values and float32 arrays (copies: later folds do
        not change it). ``buffer=False`` leaves the open buffer out (an empty one is
        restored), for a state stored with a version whose buffer a checkpoint holds."""
        return {
            "kind": self.kind,
            "config": self._config.to_dict(),
            "shapes": [list(s) for s in self._spec.shapes],
            "params": self._flat.copy(),
            "optimizer": _copy_arrays(self._optimizer.state_dict()),
            **self._buffer_state(buffer),
        }

    def buffer_state(self) -> dict[str, Any]:
        """What changes between steps (no params, no optimizer): a checkpoint of the open
        buffer, loaded with :meth:`load_buffer_state` onto the state of its version."""
        return self._buffer_state(True)

    def _buffer_state(self, with_buffer: bool) -> dict[str, Any]:
        buf = self._buffer
        held = with_buffer and len(buf) > 0
        return {
            "version": self._version,
            "buffer": {
                "total": buf.total.copy() if held else None,
                "weight_sum": buf.weight_sum if held else 0.0,
                "ids": list(buf.ids) if held else [],
            },
            "counts": {name: getattr(self, f"_{name}") for name in _COUNTERS},
            "rejected": dict(sorted(self._rejected.items())),
            "rng": self._noise.state(),
        }

    def load_buffer_state(self, state: dict[str, Any]) -> None:
        """Put back a :meth:`buffer_state` taken at this aggregator's version."""
        try:
            if int(state["version"]) != self._version:
                raise SnapshotError(
                    f"buffer state is for version {state['version']}, not {self._version}"
                )
            self._load_state(state)
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"buffer state is incomplete: {exc!r}") from exc

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        """Rebuild an aggregator from :meth:`state` (SnapshotError if unusable)."""
        try:
            if state.get("kind") != cls.kind:
                raise SnapshotError(f"state of a {state.get('kind')!r} aggregator, not {cls.kind}")
            config = AggregationConfig.from_dict(state["config"])
            spec = ModelSpec.of(state["shapes"])
            flat = checked_array(state["params"], where="params", size=spec.total_size)
            assert flat is not None
            params = [
                flat[o : o + n].reshape(s)
                for o, n, s in zip(spec.offsets, spec.sizes, spec.shapes, strict=True)
            ]
            agg = cls(params, config, version=state["version"])
            opt = _checked_optimizer(state["optimizer"])
            if opt["name"] != config.optimizer.name:
                raise SnapshotError("state optimizer does not match its config")
            agg._optimizer.load_state_dict(opt)
            agg._load_state(state)
        except (AttributeError, KeyError, TypeError, ValueError, ConfigError) as exc:
            raise SnapshotError(f"state is incomplete or inconsistent: {exc!r}") from exc
        return agg

    def _load_state(self, state: dict[str, Any]) -> None:
        buf = state["buffer"]
        total = checked_array(buf["total"], where="buffer.total", size=self._spec.total_size)
        ids = [str(i) for i in buf["ids"]]
        self._buffer.load(total, float(buf["weight_sum"]), ids)
        for name in _COUNTERS:
            setattr(self, f"_{name}", int(state["counts"][name]))
        self._rejected = Counter({str(k): int(v) for k, v in state["rejected"].items()})
        self._noise.load_state(state["rng"])


# Staleness weights precomputed for s < this (a list lookup instead of two calls per fold).
_STALENESS_TABLE = 1024

_COUNTERS = ("folded", "steps", "staleness_sum", "clipped", "rounds_abandoned", "updates_dropped")

# Optimizer state dicts hold "name", "steps" and lists of arrays (or None) under other keys.
_SCALARS = ("name", "steps")


def _copy_arrays(state: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if k in _SCALARS or v is None else [np.array(a, dtype=np.float32) for a in v]
        for k, v in state.items()
    }


def _checked_optimizer(state: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        if k in _SCALARS or v is None
        else [checked_array(a, where=f"optimizer.{k}") for a in v]
        for k, v in state.items()
    }
