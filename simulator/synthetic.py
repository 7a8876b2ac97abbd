"""LEAF's Synthetic(alpha, beta) federated data, generated per device on demand.

Following LEAF's generator (Caldas et al.; Li et al., FedProx; normal draws take
their *standard deviation* as the code does): device k draws ``u_k ~ N(0, alpha)``,
``B_k ~ N(0, beta)``, a softmax model ``W_k ~ N(u_k, 1)`` (features x classes),
``b_k ~ N(u_k, 1)``, a feature mean ``v_k ~ N(B_k, 1)``; its examples are
``x ~ N(v_k, diag(j^-1.2))`` and ``y = argmax(x W_k + b_k)``. alpha sets how much the
devices' labelling models differ, beta how much their features do. Every device then
labels by its own random model, which one global model can only fit for a few dozen
devices (FedProx used 30); ``iid = true`` is LEAF's Synthetic-IID variant, one shared
``W, b`` with ``v_k = B_k``, learnable at any fleet size while features (and so label
mixes) still shift per device. With ``tier_correlation`` rho the feature mean (and
``u_k``) also shift by rho times a per-tier offset (RF^2: slow devices see different
data). Nothing is stored per device but its shard size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from simulator import rand
from simulator.config import DataConfig
from simulator.distributions import sample_shard_sizes
from simulator.shards import ShardCache

__all__ = ["SyntheticShards"]

Array = np.ndarray[Any, Any]
XY = tuple[Array, Array]

_TRAIN, _HELD_OUT = 0x7A1, 0x7E57


class SyntheticShards:
    """Synthetic(alpha, beta) shards; the test set is held-out data of sampled devices."""

    def __init__(
        self,
        cfg: DataConfig,
        device_tiers: Array,
        num_tiers: int,
        *,
        seed: int,
        cache_size: int = 2_000,
    ) -> None:
        self.cfg = cfg
        self.seed = seed
        self._tiers = device_tiers
        d = cfg.features
        rng = np.random.default_rng([seed, 0x5E7])
        self.sizes: Array = sample_shard_sizes(cfg, rng, len(device_tiers))
        self._std = np.arange(1, d + 1, dtype=np.float64) ** -0.6  # sqrt of j^-1.2
        self._tier_v = rng.normal(0.0, 1.0, (num_tiers, d)) * cfg.tier_correlation
        self._tier_u = np.linspace(-1.0, 1.0, num_tiers) * cfg.tier_correlation
        self._shared = (
            rng.normal(0.0, 1.0, (d, cfg.classes)),
            rng.normal(0.0, 1.0, cfg.classes),
        )
        self._cache = ShardCache(cache_size)
        devices = rng.choice(len(device_tiers), size=min(cfg.eval_devices, len(device_tiers)))
        self._test = self.tier_test_set(np.sort(devices))

    def _model(self, device: int) -> tuple[Array, Array, Array]:
        cfg = self.cfg
        rng = np.random.default_rng(rand.key_seed(self.seed, 0x30DE1, device))
        tier = int(self._tiers[device])
        u = rng.normal(0.0, cfg.alpha) + self._tier_u[tier]
        big_b = rng.normal(0.0, cfg.beta)
        if cfg.iid:
            w, b = self._shared
            v = np.full(cfg.features, big_b)
        else:
            w = rng.normal(u, 1.0, (cfg.features, cfg.classes))
            b = rng.normal(u, 1.0, cfg.classes)
            v = rng.normal(big_b, 1.0, cfg.features)
        return w, b, v + self._tier_v[tier]

    def _examples(self, device: int, n: int, stream: int) -> XY:
        w, b, v = self._model(device)
        rng = np.random.default_rng(rand.key_seed(self.seed, stream, device))
        x = v + rng.standard_normal((n, self.cfg.features)) * self._std
        y = np.argmax(x @ w + b, axis=1)
        return x.astype(np.float32), y.astype(np.int64)

    def shard(self, device: int) -> XY:
        xy = self._cache.get(device)
        if xy is None:
            xy = self._examples(device, int(self.sizes[device]), _TRAIN)
            self._cache.put(device, xy)
        return xy  # type: ignore[no-any-return]

    def test_set(self) -> XY:
        return self._test

    def tier_test_set(self, devices: Array) -> XY:
        parts = [self._examples(int(d), self.cfg.eval_examples, _HELD_OUT) for d in devices]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
