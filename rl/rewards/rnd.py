"""Random Network Distillation (Burda et al. 2019, "Exploration by Random Network Distillation").

A fixed, randomly initialized target network f and a predictor f^ trained to match it on the
observations seen (section 2.2). The bonus of reaching s' is the prediction error
||f^(s') - f(s')||^2, averaged over output units, high on states unlike those trained on.

Reference implementation: RLeXplore (rllte, ``rllte/xplore/reward/rnd.py`` and
``BaseReward`` in ``rllte/common/prototype/base_reward.py``, the benchmark's ``reward``
branch), followed where it departs from the paper:

- observations: ``obs_norm='rms'`` normalizes them by running per-dimension mean and std,
  clipped to [-5, 5] (section 2.4), the statistics folded in *before* the batch's reward
  (``prepare``, as ``BaseReward.compute`` does) and, with ``warmup_steps``, first on that
  many random-action steps per env (Burda et al.: 50 x 128); ``'none'`` leaves vectors as they are and
  scales images to [0, 1] (the reference's ``/255`` baseline);
- the predictor trains on the batch's ``obs`` (the rewarded ``next_obs`` are the same states one
  step on), ``epochs`` passes of minibatches of ``batch_size`` (1 x 256, Adam 1e-3), each
  sample's loss kept with probability ``update_proportion`` (the reference's mask; Burda et
  al. use 0.25 with 32 envs, RLeXplore's baseline 1.0);
- the reward's normalization is the stream's (RLeXplore: ``std``, the running std of the raw
  bonuses; the paper's ``return``, the std of the discounted intrinsic return, is the
  stream's ``normalize='return'``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax

from rl.rewards.learned import Embedding, LearnedState, ObsNorm, minibatch_epochs, spec_fields


@dataclass(frozen=True)
class RND:
    features: int = 128  # output units of target and predictor
    hidden: tuple[int, ...] = (256, 256)  # the target's MLP; the predictor has one more layer
    lr: float = 1e-3
    update_proportion: float = 1.0
    obs_norm: str = "rms"  # rms | none
    obs_clip: float = 5.0
    batch_size: int = 256
    epochs: int = 1
    warmup_steps: int = 0  # random-action steps per env initializing the statistics (paper: 6400)
    torso: str = "default"  # "rlexplore" (grids): target and predictor are MinigridEncoder(features)

    reads = frozenset({"obs", "next_obs"})

    def __post_init__(self):
        ObsNorm(self.obs_norm, self.obs_clip)  # a bad choice fails here

    @property
    def _obs(self) -> ObsNorm:
        return ObsNorm(self.obs_norm, self.obs_clip)

    def nets(self, obs_shape):
        hidden, scale = tuple(self.hidden), self.obs_norm == "none"
        target = Embedding(tuple(obs_shape), hidden, self.features, scale=scale, torso=self.torso)
        predictor = Embedding(
            tuple(obs_shape), hidden + hidden[-1:], self.features, scale=scale, torso=self.torso
        )
        return target, predictor

    def init(self, key, spec):
        k_target, k_pred = jax.random.split(key)
        obs = jnp.zeros((1, *spec.obs_shape), jnp.float32)
        target, predictor = self.nets(spec.obs_shape)
        params = predictor.init(k_pred, obs)["params"]
        fixed = {
            "target": target.init(k_target, obs)["params"],
            "obs_stats": self._obs.init(spec),
        }
        return LearnedState(params, optax.adam(self.lr).init(params), fixed, **spec_fields(spec))

    def _errors(self, state, params, obs_flat):
        x = self._obs(state.fixed["obs_stats"], obs_flat).astype(jnp.float32)
        target, predictor = self.nets(x.shape[1:])
        y = jax.lax.stop_gradient(target.apply({"params": state.fixed["target"]}, x))
        return jnp.mean((predictor.apply({"params": params}, x) - y) ** 2, -1)

    def prepare(self, state, batch):
        """The batch's observations folded into the statistics before its reward."""
        stats = self._obs.fold(state.fixed["obs_stats"], batch.flat(batch.next_obs), batch.flat(batch.mask))
        return state.replace(fixed={**state.fixed, "obs_stats": stats})

    def reward(self, state, batch):
        return batch.unflat(self._errors(state, state.params, batch.flat(batch.next_obs)))

    def update(self, state, batch, key):
        k_order, k_mask = jax.random.split(key)

        def loss_fn(params, mb, j):
            err = self._errors(state, params, mb.obs)
            keep = jax.random.uniform(jax.random.fold_in(k_mask, j), err.shape) < self.update_proportion
            mask = (keep & mb.mask).astype(jnp.float32)
            return jnp.sum(err * mask) / jnp.maximum(mask.sum(), 1.0), {}

        return minibatch_epochs(
            state, batch, k_order, loss_fn, optax.adam(self.lr), self.batch_size, self.epochs
        )
