"""k-nearest-neighbour state-entropy bonuses, computed within the batch.

The particle estimate of state entropy (Singh et al. 2003) rewards a state by its distance to
its k-th nearest neighbour among the batch's states: far from the others means rarely visited.

- ``RE3`` (Seo et al. 2021, "State Entropy Maximization with Random Encoders for Efficient
  Exploration", eq. 5): distances in the space of a fixed, randomly initialized encoder,
  r = log(||y - y^kNN|| + 1). Reference implementation: RLeXplore (rllte
  ``rllte/xplore/reward/re3.py``): k = 5 (the paper's 3), and on PPO's rollouts the
  neighbours of env e's state are env e's own recent embeddings: the rollout's other steps
  and the last ``memory`` steps before it (a per-env ring across rollouts, never reset at
  episode ends). Replay batches and windows use the batch itself. The encoder's inputs: images
  scaled to [0, 1], or with ``obs_norm='rms'`` standardized by running statistics folded in
  before the reward (rllte's ``--obs_rms``, passed to every arm of its DoorKey-16x16 script
  ``doorkey_5.sh``; ``rl.rewards.learned.ObsNorm``), first on ``warmup_steps`` random steps.
- ``StateEntropy`` (the unsupervised pre-training of PEBBLE, Lee et al. 2021, eq. 8, after APT,
  Liu & Abbeel 2021): distances between the states themselves (flattened), k = 5; the Shaper
  stream divides by the running std of the values (``normalize='std'``), as PEBBLE does.

The [N, N] distance matrix of a batch is one matmul (``rl.rewards.learned.knn_distance``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp

from rl.batch import Sequences
from rl.rewards.learned import Embedding, ObsNormed, knn_distance, smallest
from rl.rewards.term import Fixed


@dataclass(frozen=True)
class RE3(ObsNormed):
    k: int = 5
    features: int = 128  # random encoder output
    hidden: tuple[int, ...] = (256,)
    memory: int = 1000  # per-env embeddings kept across PPO's rollouts
    torso: str = "default"  # "rlexplore" (grids): the random encoder is MinigridEncoder(features)
    obs_norm: str = "none"  # none | rms: the encoder's inputs standardized (rllte's obs_rms)
    obs_clip: float = 5.0
    warmup_steps: int = 0  # random-action steps per env initializing the statistics (rllte: 640)

    reads = frozenset({"obs"})

    def encoder(self, obs_shape) -> Embedding:
        return Embedding(
            tuple(obs_shape), tuple(self.hidden), self.features, scale=not self._obs.on, torso=self.torso
        )

    def init(self, key, spec):
        obs = jnp.zeros((1, *spec.obs_shape), spec.obs_dtype)
        return {
            "params": self.encoder(spec.obs_shape).init(key, obs)["params"],  # fixed: never trained
            "mem": jnp.zeros((spec.num_envs, self.memory, self.features), jnp.float32),
            "count": jnp.zeros((spec.num_envs,), jnp.int32),  # embeddings written so far
            "obs_stats": self._obs.init(spec),
        }

    def prepare(self, state, batch):
        """The batch's observations folded into the input statistics before its reward."""
        return {
            **state,
            "obs_stats": self._obs.fold(state["obs_stats"], batch.flat(batch.obs), batch.flat(batch.mask)),
        }

    def _embed(self, state, batch):
        obs = self._obs(state["obs_stats"], batch.flat(batch.obs))
        return self.encoder(obs.shape[1:]).apply({"params": state["params"]}, obs)

    def reward(self, state, batch):
        return self._reward(state, batch, self._embed(state, batch))

    def _reward(self, state, batch, y):
        if not (isinstance(batch, Sequences) and batch.rollout):
            return batch.unflat(jnp.log(knn_distance(y, self.k) + 1.0))
        y = batch.unflat(y)  # [E, T, D]: each env against its own memory and rollout
        E, T = batch.lead
        cand = jnp.concatenate([state["mem"], y], axis=1)  # [E, M + T, D]
        valid = jnp.arange(self.memory)[None, :] < jnp.minimum(state["count"], self.memory)[:, None]
        allowed = jnp.concatenate(
            [
                jnp.broadcast_to(valid[:, None, :], (E, T, self.memory)),
                ~jnp.eye(T, dtype=bool)[None].repeat(E, 0),
            ],
            axis=2,
        )
        sq_y, sq_c = jnp.sum(y * y, -1), jnp.sum(cand * cand, -1)
        d2 = jnp.maximum(sq_y[..., :, None] + sq_c[..., None, :] - 2 * y @ jnp.swapaxes(cand, -1, -2), 0.0)
        k = min(self.k, T - 1 + self.memory)
        d = jnp.sqrt(smallest(jnp.where(allowed, d2, jnp.inf), k)[..., k - 1])
        return jnp.log(jnp.where(jnp.isfinite(d), d, 0.0) + 1.0)

    def update(self, state, batch, key):
        return self.step(state, batch, key)[1:]

    def step(self, state, batch, key):
        y = self._embed(state, batch)
        return self._reward(state, batch, y), *self._remember(state, batch, y)

    def _remember(self, state, batch, y):
        if not (isinstance(batch, Sequences) and batch.rollout):
            return state, {}
        y = batch.unflat(y)
        E, T = batch.lead
        slot = (state["count"][:, None] + jnp.arange(T)[None, :]) % self.memory
        rows = jnp.broadcast_to(jnp.arange(E)[:, None], (E, T))
        return {**state, "mem": state["mem"].at[rows, slot].set(y), "count": state["count"] + T}, {}


@dataclass(frozen=True)
class StateEntropy(Fixed):
    k: int = 5

    reads = frozenset({"obs"})

    def reward(self, state, batch):
        obs = batch.flat(batch.obs)
        return batch.unflat(knn_distance(obs.reshape(obs.shape[0], -1), self.k))
