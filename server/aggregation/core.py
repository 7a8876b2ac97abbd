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

With ``masked`` (secure aggregation, :mod:`.masked`) updates are masked integers: the
buffer sums them modulo 2**32 with integer weights, a full buffer is sealed into a
:class:`~server.aggregation.masked.Release` (the version advances at once), and the
step happens in :meth:`complete_release` once the mask service returned the sum of
masks. ``params_version`` is then the version of the parameters, ``version`` the
version the next update will be counted against.
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
from server.aggregation.contribution import Weigher, masked_flat
from server.aggregation.masked import MaskedAccumulator, MaskedConfig, Release
from server.aggregation.optimizers import make_optimizer
from server.aggregation.partial import Partial, PartialGroup
from server.aggregation.privacy import GaussianNoise, sensitivity
from server.aggregation.recent import RecentIds
from server.aggregation.results import AggregatorStats, MergeResult, StepResult
from server.aggregation.staleness import make_staleness_fn
from server.aggregation.state import SnapshotError, checked_array
from server.aggregation.validation import MAX_NUM_EXAMPLES, Flat, ModelSpec, RejectReason, reject
from server.errors import ConfigError, UpdateRejected

__all__ = ["AggregatorBase"]


class AggregatorBase:
    """Base of :class:`FedBuffAggregator` and :class:`SyncRoundAggregator`."""

    kind: ClassVar[str]
    mode: ClassVar[str]

    def __init__(
        self,
        params: Sequence[np.ndarray[Any, Any]],
        config: AggregationConfig,
        *,
        version: int = 0,
        masked: MaskedConfig | None = None,
        noise_seed: int | None = None,
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
        # a DP task's server passes a secret seed: the config's seed is published
        self._noise = GaussianNoise(config.seed if noise_seed is None else noise_seed)
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
        self._masked = masked
        self._mbuffer = MaskedAccumulator(self._spec.total_size if masked else 0)
        self._releases: list[Release] = []
        self._params_version = version
        if masked is not None:
            self._plain = False
        self._recent = RecentIds(config.dedup_window)
        # The last version this aggregator may make (a privacy budget), None: no limit.
        # Set by the task each time it builds or restores the aggregator; not in the state.
        self.version_limit: int | None = None
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
    def params_version(self) -> int:
        """The version of :attr:`params` (behind :attr:`version` while releases wait)."""
        return self._params_version if self._masked is not None else self._version

    @property
    def masked(self) -> MaskedConfig | None:
        return self._masked

    @property
    def pending_releases(self) -> tuple[Release, ...]:
        """Sealed masked buffers waiting for their sum of masks, oldest first."""
        return tuple(self._releases)

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    @property
    def params(self) -> list[Flat]:
        """The current parameters as read-only float32 arrays (valid after later steps)."""
        flat = self.flat_params
        return [
            flat[o : o + n].reshape(shape)
            for o, n, shape in zip(
                self._spec.offsets, self._spec.sizes, self._spec.shapes, strict=True
            )
        ]

    @property
    def flat_params(self) -> Flat:
        """The current parameters as one read-only float32 array, not copied: the next
        step copies them before it changes them, so it stays valid after."""
        self._params_shared = True
        view = self._flat.view()
        view.flags.writeable = False
        return view

    @property
    def buffered(self) -> int:
        """Updates folded into the open buffer (or round), or sealed, not yet applied."""
        return len(self._active) + sum(len(r.ids) for r in self._releases)

    @property
    def _active(self) -> Accumulator | MaskedAccumulator:
        return self._mbuffer if self._masked is not None else self._buffer

    @property
    def open_ids(self) -> tuple[str, ...]:
        """Ids in the open buffer (or round), in fold order."""
        return tuple(self._active.ids)

    @property
    def pending_ids(self) -> tuple[str, ...]:
        """Ids of the updates not yet applied (sealed first, then the open buffer)."""
        sealed = tuple(uid for r in self._releases for uid in r.ids)
        return sealed + tuple(self._active.ids)

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
        """True for updates in the open buffer and the last ``dedup_window`` consumed ones
        (sealed ones are among the consumed)."""
        return update_id in self._active.id_set or update_id in self._recent

    def staleness_weight(self, staleness: int) -> float:
        table = self._staleness_weights
        return table[staleness] if staleness < len(table) else self._staleness_fn(staleness)

    # -- folding -------------------------------------------------------------------------

    def _check_duplicate(self, update_id: str) -> None:
        if update_id in self._active.id_set or update_id in self._recent:
            raise reject(RejectReason.DUPLICATE_UPDATE, f"update {update_id!r} was already folded")
        if type(update_id) is not str:
            raise TypeError(f"update_id must be a str, got {type(update_id).__name__}")

    def _fold_checked(
        self,
        update_id: str,
        tensors: Sequence[np.ndarray[Any, Any]],
        num_examples: int,
        staleness: int,
        source: str | None = None,
    ) -> tuple[float, float, bool]:
        """Validate and fold an update whose id and version were accepted.

        Returns ``(weight, norm, clipped)``; raises UpdateRejected having changed nothing.
        A masked update has no norm to give (0.0): the device clipped it.
        """
        masked = self._masked
        if masked is not None:
            flat = masked_flat(tensors, self._spec.total_size)
            e_int = masked.example_int(self._weigher.example(num_examples))
            w_int = masked.staleness_int(self.staleness_weight(staleness)) * e_int
            self._mbuffer.add(update_id, flat, w_int, masked.to_float(w_int), source)
            self._folded += 1
            self._staleness_sum += staleness
            return masked.to_float(w_int), 0.0, False
        c = self._weigher.weigh(tensors, num_examples)
        weight = self.staleness_weight(staleness) * c.example_weight
        self._buffer.add(update_id, c.flats, weight * c.scale * self._fold_factor, weight)
        self._folded += 1
        self._staleness_sum += staleness
        self._clipped += c.clipped
        return weight, c.norm, c.clipped

    def split_flat(self, flat: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
        """The model's tensors as views of one flat vector laid out as :attr:`spec`
        (UpdateRejected, counted, when it has another shape)."""
        spec = self._spec
        if not isinstance(flat, np.ndarray) or flat.shape != (spec.total_size,):
            exc = reject(
                RejectReason.SHAPE_MISMATCH,
                f"a flat update has shape {list(np.shape(flat))}, the model needs "
                f"[{spec.total_size}]",
            )
            self._count_rejection(exc)
            raise exc
        return [
            flat[o : o + n].reshape(s)
            for o, n, s in zip(spec.offsets, spec.sizes, spec.shapes, strict=True)
        ]

    def _fold_flat_plain(
        self, update_id: str, flat: Flat, num_examples: int, staleness: int
    ) -> tuple[float, float] | None:
        """The plain path (no clipping, no norm bound, equal example weights, not masked)
        of an update given as one flat float32 vector whose id and version were accepted:
        one ``sdot`` (norm, NaN/Inf) and one ``saxpy`` over the vector, the same values
        per element as a fold tensor by tensor. Returns ``(weight, norm)``, or None having
        changed nothing when the general path must decide."""
        if (
            not self._plain
            or type(flat) is not np.ndarray
            or flat.dtype != np.float32
            or flat.shape != (self._spec.total_size,)
            or not flat.flags.c_contiguous
            or type(num_examples) is not int
            or not 1 <= num_examples <= MAX_NUM_EXAMPLES
            or not 0 <= staleness < self._plain_staleness_limit
        ):
            return None
        sq = blas.sq_norm(flat)
        if not sq < math.inf:
            return None
        weight = self._staleness_weights[staleness]
        self._buffer.add_total((update_id,), flat, weight * self._fold_factor, weight)
        self._folded += 1
        self._staleness_sum += staleness
        return weight, math.sqrt(sq)

    def _count_rejection(self, exc: UpdateRejected) -> None:
        self._rejected[exc.code] += 1

    # -- merging pre-aggregated partials ---------------------------------------------------

    def _merge_group(self, group: PartialGroup, staleness: int) -> list[tuple[str, int, float]]:
        """Add a replica's group sum, weighted by its staleness here and now; returns each
        update's ``(id, staleness, weight)``. Ids already here are a bug upstream."""
        for uid in group.ids:
            self._check_duplicate(uid)
        s_weight = self.staleness_weight(staleness)
        masked = self._masked
        if masked is not None:
            s_int = masked.staleness_int(s_weight)
            e_ints = [int(w) for w in group.example_weights]
            floats = [masked.to_float(s_int * e) for e in e_ints]
            self._mbuffer.add_total(
                group.ids, group.total, s_int, e_ints, sum(floats), group.sources
            )
            self._folded += len(group.ids)
            self._staleness_sum += staleness * len(group.ids)
            return [(uid, staleness, w) for uid, w in zip(group.ids, floats, strict=True)]
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

    def _buffer_ready(self) -> bool:
        """K updates in the buffer; masked, also from as many distinct sources as a release
        needs (a buffer short of them waits for more, up to the fixed point's limit)."""
        if len(self._active) < self._goal:
            return False
        masked = self._masked
        if masked is None or self._mbuffer.distinct >= masked.distinct_sources:
            return True
        return len(self._mbuffer) >= (masked.max_updates or self._goal)

    def _step(self) -> StepResult | None:
        """Turn the buffer into a pseudo-gradient, apply the optimizer, bump the version.
        Masked: seal the buffer instead (None); :meth:`complete_release` steps.
        At :attr:`version_limit` nothing happens (None): the updates stay buffered."""
        if self.at_version_limit:
            return None
        if self._masked is not None:
            self._version += 1
            sealed = list(self._mbuffer.ids)
            self._releases.append(self._mbuffer.seal(self._version, self._release_key()))
            self._recent.extend(sealed)
            return None
        cfg, buf = self._config, self._buffer
        n = len(buf)
        pseudo_grad = buf.total
        if cfg.normalization == "weights":
            # weights are > 0 unless a staleness rule underflowed; then the step is a no-op
            pseudo_grad *= np.float32(1.0 / buf.weight_sum if buf.weight_sum > 0 else 0.0)
        elif n != cfg.aggregation_goal:  # a round closing short or a buffer past K: divide by n
            pseudo_grad *= np.float32(cfg.aggregation_goal / n)
        ids = tuple(buf.ids)
        step = self._apply(pseudo_grad, n, ids)
        self._consume(ids)
        return step

    def _release_key(self) -> str:
        return f"{self.kind}:{self._config.seed}"

    def complete_release(self, mask_sum: np.ndarray[Any, Any]) -> StepResult:
        """Step with the oldest sealed buffer, given the mask service's sum of masks."""
        masked = self._masked
        if masked is None or not self._releases:
            raise SnapshotError("no sealed buffer waits for a release")
        release = self._releases[0]
        if mask_sum.dtype != np.uint32 or mask_sum.shape != release.total.shape:
            raise SnapshotError("the sum of masks does not fit the sealed buffer")
        self._releases.pop(0)
        n = len(release.ids)
        weighted = release.unmask(mask_sum, masked)  # sum of w_i * x_i (float weights)
        if self._config.normalization == "weights":
            divisor = release.weight_sum if release.weight_sum > 0 else math.inf
        else:
            divisor = float(n)
        pseudo_grad = (weighted / divisor).astype(np.float32)
        step = self._apply(pseudo_grad, n, release.ids)
        self._params_version = release.version
        return StepResult(release.version, n, release.ids, step.pseudo_grad_norm)

    def skip_release(self) -> StepResult:
        """The mask service refused the oldest sealed buffer: its version is made with
        the parameters unchanged (versions stay consecutive) and its updates are dropped;
        ``update_ids`` of the result is empty."""
        if self._masked is None or not self._releases:
            raise SnapshotError("no sealed buffer waits for a release")
        release = self._releases.pop(0)
        self._updates_dropped += len(release.ids)
        self._params_version = release.version
        return StepResult(release.version, 0, (), 0.0)

    def _apply(self, pseudo_grad: Flat, n: int, ids: tuple[str, ...]) -> StepResult:
        """Noise, then the optimizer step on the parameters."""
        cfg = self._config
        # Masked: the mask service added the noise to the sum before the server saw it.
        if cfg.noise_multiplier > 0 and self._masked is None:
            self._noise.add(pseudo_grad, self.noise_std(n))
        pg_norm = math.sqrt(blas.sq_norm(pseudo_grad))
        if self._params_shared:
            self._flat = self._flat.copy()
            self._params_shared = False
        self._optimizer.step([self._flat], [pseudo_grad])
        if self._masked is None:
            self._version += 1
        self._steps += 1
        return StepResult(self._version, n, ids, pg_norm)

    @property
    def at_version_limit(self) -> bool:
        """True when :attr:`version_limit` forbids another version."""
        return self.version_limit is not None and self._version >= self.version_limit

    def noise_std(self, n: int) -> float:
        """The std of the Gaussian noise on the pseudo-gradient of ``n`` updates:
        ``noise_multiplier`` times the version's sensitivity (:mod:`.privacy`)."""
        return self._config.noise_multiplier * sensitivity(self._config, n)

    def _consume(self, ids: Sequence[str]) -> None:
        """Move the buffer's ids into the dedup window and empty the buffer."""
        self._recent.extend(ids)
        self._active.reset()

    # -- state ---------------------------------------------------------------------------

    def state(self, *, buffer: bool = True, params: bool = True) -> dict[str, Any]:
        """The complete state as plain values and float32 arrays (copies: later folds do
        not change it). ``buffer=False`` leaves the open buffer out (an empty one is
        restored), for a state stored with a version whose buffer a checkpoint holds;
        ``params=False`` leaves the parameters out, for a state stored beside the
        version's own params blob (the restorer puts them back as ``"params"``)."""
        return {
            "kind": self.kind,
            "config": self._config.to_dict(),
            "shapes": [list(s) for s in self._spec.shapes],
            **({"params": self._flat.copy()} if params else {}),
            "optimizer": _copy_arrays(self._optimizer.state_dict()),
            "masked": None if self._masked is None else self._masked.to_dict(),
            **self._buffer_state(buffer),
        }

    def buffer_state(self) -> dict[str, Any]:
        """What changes between steps (no params, no optimizer): a checkpoint of the open
        buffer, loaded with :meth:`load_buffer_state` onto the state of its version."""
        return self._buffer_state(True)

    def _buffer_state(self, with_buffer: bool) -> dict[str, Any]:
        if self._masked is not None:
            return self._masked_buffer_state(with_buffer)
        buf = self._buffer
        held = with_buffer and len(buf) > 0
        return {
            "version": self._version,
            "params_version": self._version,
            "buffer": {
                "total": buf.total.copy() if held else None,
                "weight_sum": buf.weight_sum if held else 0.0,
                "ids": list(buf.ids) if held else [],
            },
            **self._counts(),
        }

    def _masked_buffer_state(self, with_buffer: bool) -> dict[str, Any]:
        """Without the buffer: the state at the parameters' version (no sealed buffers)."""
        buf = self._mbuffer
        held = with_buffer and len(buf) > 0
        return {
            "version": self._version if with_buffer else self._params_version,
            "params_version": self._params_version,
            "buffer": {
                "total": buf.total.view(np.float32).copy() if held else None,  # same bits
                "weight_sum": buf.weight_sum if held else 0.0,
                "ids": list(buf.ids) if held else [],
                "weights": list(buf.weights) if held else [],
                "sources": list(buf.sources) if held else [],
            },
            "releases": [r.to_state() for r in self._releases] if with_buffer else [],
            **self._counts(),
        }

    def _counts(self) -> dict[str, Any]:
        return {
            "counts": {name: getattr(self, f"_{name}") for name in _COUNTERS},
            "rejected": dict(sorted(self._rejected.items())),
            "rng": self._noise.state(),
        }

    def load_buffer_state(self, state: dict[str, Any]) -> None:
        """Put back a :meth:`buffer_state` taken at this aggregator's parameters' version."""
        try:
            at = int(state.get("params_version", state["version"]))
            if at != self.params_version:
                raise SnapshotError(f"buffer state is for version {at}, not {self.params_version}")
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
            masked_cfg = state.get("masked")
            masked = None if masked_cfg is None else MaskedConfig.from_dict(masked_cfg)
            at = int(state.get("params_version", state["version"]))
            agg = cls(params, config, version=at, masked=masked)
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
        if self._masked is not None:
            self._mbuffer.load(
                None if total is None else total.view(np.uint32),
                ids,
                buf["weights"],
                float(buf["weight_sum"]),
                buf.get("sources"),
            )
            self._releases = [Release.from_state(r) for r in state["releases"]]
            self._version = int(state["version"])
        else:
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
