"""k-nearest-neighbour state-entropy bonuses, computed within the batch.

The particle estimate of state entropy (Singh et al. 2003) rewards a state by its distance to
its k-th nearest neighbour among the batch's states: far from the others means rarely visited.

- ``RE3`` (Seo et al. 2021, "State Entropy Maximization with Random Encoders for Efficient
  Exploration", eq. 5): distances in the space of a fixed, randomly initialized encoder,
  r = log(||y - y^kNN|| + 1), k = 3.
- ``StateEntropy`` (the unsupervised pre-training of PEBBLE, Lee et al. 2021, eq. 8, after APT,
  Liu & Abbeel 2021): distances between the states themselves (flattened), k = 5; the Shaper
  stream divides by the running std of the values (``normalize='std'``), as PEBBLE does.

The [N, N] distance matrix of a batch is one matmul (``rl.rewards.learned.knn_distance``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp

from rl.rewards.learned import Embedding, knn_distance
from rl.rewards.term import Fixed


@dataclass(frozen=True)
class RE3(Fixed):
    k: int = 3
    features: int = 128  # random encoder output
    hidden: tuple[int, ...] = (256,)

    reads = frozenset({"obs"})

    def encoder(self, obs_shape) -> Embedding:
        return Embedding(tuple(obs_shape), tuple(self.hidden), self.features)

    def init(self, key, spec):
        obs = jnp.zeros((1, *spec.obs_shape), spec.obs_dtype)
        return self.encoder(spec.obs_shape).init(key, obs)["params"]  # fixed: never trained

    def reward(self, state, batch):
        obs = batch.flat(batch.obs)
        y = self.encoder(obs.shape[1:]).apply({"params": state}, obs)
        return batch.unflat(jnp.log(knn_distance(y, self.k) + 1.0))


@dataclass(frozen=True)
class StateEntropy(Fixed):
    k: int = 5

    reads = frozenset({"obs"})

    def reward(self, state, batch):
        obs = batch.flat(batch.obs)
        return batch.unflat(knn_distance(obs.reshape(obs.shape[0], -1), self.k))
