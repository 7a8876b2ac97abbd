"""What the async and sync aggregators share: model, optimizer, fold, step and snapshot.

State lives in one flat float32 parameter vector and one flat accumulator. A fold
validates the update (one ``sdot`` pass per tensor: norm and NaN/Inf check), then adds
it to the accumulator with one ``saxpy`` pass whose factor carries the staleness weight,
the example weight, the clip scale and, with ``normalization = "goal"``, the ``1/K``,
so the accumulator already *is* the pseudo-gradient when the buffer fills. A step hands
it to the server optimizer, which updates the parameters in place. Parameter arrays
returned by :attr:`params` stay valid: a step after they were handed out writes into
a fresh copy (copy-on-write), so nothing is copied while nobody looks.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar, Self

import numpy as np

from server.aggregation import blas, snapshot
from server.aggregation.accumulator import Accumulator
from server.aggregation.config import AggregationConfig
from server.aggregation.optimizers import make_optimizer
from server.aggregation.privacy import GaussianNoise, clip_scale
from server.aggregation.recent import RecentIds
from server.aggregation.results import AggregatorStats, StepResult
from server.aggregation.staleness import make_staleness_fn
from server.aggregation.validation import (
    MAX_NUM_EXAMPLES,
    Flat,
    ModelSpec,
    RejectReason,
    flatten_update,
    reject,
)
from server.aggregation.weights import make_example_weight
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
        self._example_weight = make_example_weight(
            config.example_weighting.kind, config.example_weighting.cap
        )
        self._weigh_examples = config.example_weighting.kind != "equal"
        # No clipping, no norm bound, equal example weights: the fold's straight-line path.
        self._plain = (
            not self._weigh_examples and config.clip_norm is None and config.max_update_norm is None
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
        trusted_norm: float | None = None,
    ) -> tuple[float, float, bool]:
        """Validate and fold an update whose id and version were accepted (the hot path).

        Returns ``(weight, norm, clipped)``; raises UpdateRejected having changed nothing.
        """
        if type(num_examples) is not int or not 1 <= num_examples <= MAX_NUM_EXAMPLES:
            num_examples = _checked_num_examples(num_examples)
        cfg = self._config
        flats, norm = flatten_update(
            self._spec, tensors, max_norm=cfg.max_update_norm, trusted_norm=trusted_norm
        )
        table = self._staleness_weights
        weight = table[staleness] if staleness < len(table) else self._staleness_fn(staleness)
        if self._weigh_examples:
            weight *= self._example_weight(num_examples)
        clip = cfg.clip_norm
        scale, clipped = (1.0, False) if clip is None else clip_scale(norm, clip)
        self._buffer.add(update_id, flats, weight * scale * self._fold_factor, weight)
        self._folded += 1
        self._staleness_sum += staleness
        self._clipped += clipped
        return weight, norm, clipped

    def _count_rejection(self, exc: UpdateRejected) -> None:
        self._rejected[exc.code] += 1

    # -- stepping ------------------------------------------------------------------------

    def _step(self) -> StepResult:
        """Turn the buffer into a pseudo-gradient, apply the optimizer, bump the version."""
        cfg, buf = self._config, self._buffer
        n = len(buf)
        pseudo_grad = buf.total
        if cfg.normalization == "weights":
            # weights are > 0 unless a staleness rule underflowed; then the step is a no-op
            pseudo_grad *= np.float32(1.0 / buf.weight_sum if buf.weight_sum > 0 else 0.0)
        elif n != cfg.aggregation_goal:  # a sync round closing short: divide by n, not K
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

    # -- snapshot ------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The complete state as bytes; :meth:`restore` continues bit-identically."""
        return snapshot.dump(self.kind, self._state())

    @classmethod
    def restore(cls, data: bytes) -> Self:
        """Rebuild an aggregator from :meth:`snapshot` bytes (SnapshotError if unusable)."""
        return cls.from_state(snapshot.load(data, kind=cls.kind))

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        """Rebuild an aggregator from a decoded snapshot (see :func:`snapshot.load`)."""
        try:
            config = AggregationConfig.from_dict(state["config"])
            spec = ModelSpec.of(state["shapes"])
            flat = snapshot.decode_array(state["params"], where="params")
            if flat is None or flat.size != spec.total_size:
                raise snapshot.SnapshotError("snapshot params do not match its shapes")
            params = [flat[o : o + n] for o, n in zip(spec.offsets, spec.sizes, strict=True)]
            agg = cls(
                [p.reshape(s) for p, s in zip(params, spec.shapes, strict=True)],
                config,
                version=state["version"],
            )
            agg._load_state(state)
        except (AttributeError, KeyError, TypeError, ValueError, ConfigError) as exc:
            raise snapshot.SnapshotError(
                f"snapshot is incomplete or inconsistent: {exc!r}"
            ) from exc
        return agg

    def _state(self) -> dict[str, Any]:
        buf = self._buffer
        return {
            "config": self._config.to_dict(),
            "version": self._version,
            "shapes": [list(s) for s in self._spec.shapes],
            "params": snapshot.encode_array(self._flat),
            "optimizer": _encode_optimizer_state(self._optimizer.state_dict()),
            "buffer": {
                "total": snapshot.encode_array(buf.total) if len(buf) else None,
                "weight_sum": buf.weight_sum,
                "ids": list(buf.ids),
            },
            "recent_ids": self._recent.packed(),
            "counts": {name: getattr(self, f"_{name}") for name in _COUNTERS},
            "rejected": dict(sorted(self._rejected.items())),
            "rng": self._noise.state(),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        opt = _decode_optimizer_state(state["optimizer"])
        if opt["name"] != self._config.optimizer.name:
            raise snapshot.SnapshotError("snapshot optimizer state does not match its config")
        self._optimizer.load_state_dict(opt)
        buf = state["buffer"]
        total = snapshot.decode_array(buf["total"], where="buffer.total")
        self._buffer.load(total, float(buf["weight_sum"]), buf["ids"])
        self._recent = RecentIds(self._config.dedup_window, state["recent_ids"])
        for name in _COUNTERS:
            setattr(self, f"_{name}", int(state["counts"][name]))
        self._rejected = Counter(state["rejected"])
        self._noise.load_state(state["rng"])


# Staleness weights precomputed for s < this (a list lookup instead of two calls per fold).
_STALENESS_TABLE = 1024

_COUNTERS = ("folded", "steps", "staleness_sum", "clipped", "rounds_abandoned", "updates_dropped")

# Optimizer state dicts hold "name", "steps" and lists of arrays (or None) under other keys.
_SCALARS = ("name", "steps")


def _encode_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if k in _SCALARS or v is None else [snapshot.encode_array(a) for a in v]
        for k, v in state.items()
    }


def _decode_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        if k in _SCALARS or v is None
        else [snapshot.decode_array(a, where=f"optimizer.{k}") for a in v]
        for k, v in state.items()
    }


def _checked_num_examples(num_examples: object) -> int:
    if (
        isinstance(num_examples, int | np.integer)
        and not isinstance(num_examples, bool)
        and 1 <= num_examples <= MAX_NUM_EXAMPLES
    ):
        return int(num_examples)
    raise reject(
        RejectReason.BAD_NUM_EXAMPLES,
        f"num_examples must be an integer in [1, {MAX_NUM_EXAMPLES}], got {num_examples!r}",
    )
