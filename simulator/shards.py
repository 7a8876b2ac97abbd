"""Device data shards, generated lazily from the seed and the device id.

Nothing per device is stored up front except its shard size, so a fleet of 100,000
devices fits in memory; a bounded LRU cache keeps recently used shards (10,000 digits
shards of the median 16 examples take ~40 MB). :class:`LabelSkewShards`
gives each device a class mix ~ Dirichlet(alpha * C * prior) (Hsu et al., 2019) and
draws its examples from a pool with that mix; several devices may hold the same pool
example, which is what lets 5,000+ devices share 1,437 digits. With ``partition =
"disjoint"`` the pool is split instead: devices take their examples, in device order,
without replacement from what is left of each class (a class that runs out is made up
from the classes with the most left), so no example is on two devices. The RF^2 switch
(``tier_correlation``) tilts each tier's prior toward its own classes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Protocol

import numpy as np

from simulator import rand
from simulator.config import DataConfig
from simulator.distributions import sample_shard_sizes
from simulator.errors import PresetError
from simulator.streams import DeviceStreams

__all__ = ["LabelSkewShards", "ShardCache", "ShardSource", "tier_class_priors"]

Array = np.ndarray[Any, Any]
XY = tuple[Array, Array]


class ShardSource(Protocol):
    """Where device data comes from; ``sizes[d]`` is device ``d``'s shard size."""

    sizes: Array

    def shard(self, device: int) -> XY: ...

    def test_set(self) -> XY:
        """The held-out set the accuracy curve is measured on."""
        ...

    def tier_test_set(self, devices: Array) -> XY:
        """Held-out examples distributed like the data of ``devices`` (one tier's)."""
        ...


class ShardCache:
    """A small LRU of generated shards (or of their pool indices)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[int, Any] = OrderedDict()

    def get(self, device: int) -> Any:
        item = self._items.get(device)
        if item is not None and len(self._items) >= self.capacity:  # LRU order matters
            self._items.move_to_end(device)
        return item

    def put(self, device: int, item: Any) -> None:
        self._items[device] = item
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)


def tier_class_priors(num_tiers: int, classes: int, correlation: float) -> Array:
    """(tiers, classes) class priors: uniform at 0; at 1 tier t owns classes c = t mod T."""
    owned = np.zeros((num_tiers, classes))
    owned[np.arange(classes) % num_tiers, np.arange(classes)] = 1.0
    owned /= np.maximum(owned.sum(1, keepdims=True), 1.0)
    uniform = np.full((num_tiers, classes), 1.0 / classes)
    priors = (1.0 - correlation) * uniform + correlation * owned
    if num_tiers > classes:  # tiers without an own class stay uniform
        priors[classes:] = uniform[classes:]
    return priors


class LabelSkewShards:
    """Label-skewed shards over a labelled pool (digits); see the module docstring."""

    def __init__(
        self,
        cfg: DataConfig,
        train: XY,
        test: XY,
        device_tiers: Array,
        num_tiers: int,
        *,
        seed: int,
        cache_size: int = 10_000,
    ) -> None:
        self.cfg = cfg
        self.seed = seed
        self._train = _ByClass(*train)
        self._test = _ByClass(*test)
        self._x_test, self._y_test = test
        self._tiers = device_tiers
        classes = self._train.classes
        self._labels = np.arange(classes)
        self._concentration = (
            cfg.alpha * classes * tier_class_priors(num_tiers, classes, cfg.tier_correlation)
        )
        rng = np.random.default_rng([seed, 0x5A4D])
        self.sizes: Array = sample_shard_sizes(cfg, rng, len(device_tiers))
        # default_rng(rand.key_seed(seed, device)) per device, without its SeedSequence
        self._streams = DeviceStreams(seed, len(device_tiers))
        self._cache = ShardCache(cache_size)
        self._disjoint: list[Array] | None = None
        if cfg.partition == "disjoint":
            self._disjoint = self._split()

    @property
    def partition(self) -> list[Array] | None:
        """Each device's pool indices when the pool is split disjointly (else None)."""
        return self._disjoint

    def _split(self) -> list[Array]:
        """Disjoint pool indices per device (see the module docstring)."""
        total, pool = int(self.sizes.sum()), len(self._train.y)
        if total > pool:
            raise PresetError(
                f"data.partition = 'disjoint': the {len(self.sizes):,} shards take {total:,} "
                f"examples, the {self.cfg.dataset} pool has {pool:,} (fewer devices or a "
                "smaller data.size_median)"
            )
        rng = np.random.default_rng([self.seed, 0xD15])
        left = [
            list(rng.permutation(np.arange(s, s + c)))
            for s, c in zip(self._train.starts, self._train.counts, strict=True)
        ]
        out = []
        for device in range(len(self.sizes)):
            drng = self._streams.rng(device)
            counts = drng.multinomial(int(self.sizes[device]), self._mix(drng, device))
            taken: list[int] = []
            for c, k in enumerate(counts.tolist()):
                got = min(k, len(left[c]))
                taken += [left[c].pop() for _ in range(got)]
            while len(taken) < self.sizes[device]:  # classes that ran out
                richest = max(range(len(left)), key=lambda c: len(left[c]))
                taken.append(left[richest].pop())
            out.append(np.asarray(taken, dtype=np.int64))
        return out

    def _mix(self, rng: np.random.Generator, device: int) -> Array:
        alpha = self._concentration[self._tiers[device]]
        return rng.dirichlet(np.maximum(alpha, 1e-3))

    def class_mix(self, device: int) -> Array:
        """Device ``device``'s class probabilities."""
        return self._mix(self._streams.rng(device), device)

    def shard(self, device: int) -> XY:
        if self._disjoint is not None:
            idx = self._disjoint[device]
            return self._train.x[idx], self._train.y[idx]
        xy = self._cache.get(device)
        if xy is None:
            # one stream per device: its class mix first, then its examples
            rng = self._streams.rng(device)
            counts = rng.multinomial(int(self.sizes[device]), self._mix(rng, device))
            idx = self._train.draw(np.repeat(self._labels, counts), rng)
            xy = (self._train.x[idx], self._train.y[idx])
            self._cache.put(device, xy)
        return xy  # type: ignore[no-any-return]

    def test_set(self) -> XY:
        return self._x_test, self._y_test

    def tier_test_set(self, devices: Array) -> XY:
        parts = []
        for device in devices:
            rng = np.random.default_rng(rand.key_seed(self.seed, 0x7E57, int(device)))
            counts = rng.multinomial(self.cfg.eval_examples, self.class_mix(int(device)))
            parts.append(self._test.draw(np.repeat(self._labels, counts), rng))
        idx = np.concatenate(parts)
        return self._test.x[idx], self._test.y[idx]


class _ByClass:
    """A pool sorted by class, so drawing an example of class ``c`` is one index."""

    def __init__(self, x: Array, y: Array) -> None:
        order = np.argsort(y, kind="stable")
        self.x = np.ascontiguousarray(x[order])
        self.y = np.ascontiguousarray(y[order])
        self.classes = int(self.y.max()) + 1
        counts = np.bincount(self.y, minlength=self.classes)
        if (counts == 0).any():
            raise ValueError("every class needs at least one example in the pool")
        self.counts = counts
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def draw(self, labels: Array, rng: np.random.Generator) -> Array:
        """One random pool index per label (with replacement)."""
        offsets = (rng.random(len(labels)) * self.counts[labels]).astype(np.int64)
        return self.starts[labels] + offsets
