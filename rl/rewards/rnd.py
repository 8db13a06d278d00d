"""Random Network Distillation (Burda et al. 2019, "Exploration by Random Network Distillation").

A fixed, randomly initialized target network f and a predictor f^ trained to match it on the
observations seen (section 2.2). The bonus of reaching s' is the prediction error
||f^(s') - f(s')||^2 (averaged over output units, as the reference code), high on states
unlike those trained on. Observations are normalized by running per-dimension mean and std
and clipped to [-5, 5] before both networks (section 2.4). The reward normalization of section
2.4 (divide by a running std of the intrinsic return) is the stream's ``normalize='return'``,
the default for ``rnd`` in a config-built Shaper (``stream_defaults``). Each update trains the predictor on a random
``update_proportion`` of the batch (the reference's 0.25).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax

from rl.rewards.learned import Embedding, LearnedState, spec_fields, train_step
from rl.rewards.stats import RunningStats


@dataclass(frozen=True)
class RND:
    features: int = 128  # output units of target and predictor
    hidden: tuple[int, ...] = (256, 256)  # the target's MLP; the predictor has one more layer
    lr: float = 1e-4
    update_proportion: float = 0.25
    obs_clip: float = 5.0

    reads = frozenset({"next_obs"})
    stream_defaults = {"normalize": "return"}  # section 2.4: divide by the intrinsic return's std

    def nets(self, obs_shape):
        hidden = tuple(self.hidden)
        target = Embedding(tuple(obs_shape), hidden, self.features, scale=False)
        predictor = Embedding(tuple(obs_shape), hidden + hidden[-1:], self.features, scale=False)
        return target, predictor

    def init(self, key, spec):
        k_target, k_pred = jax.random.split(key)
        obs = jnp.zeros((1, *spec.obs_shape), jnp.float32)
        target, predictor = self.nets(spec.obs_shape)
        params = predictor.init(k_pred, obs)["params"]
        fixed = {
            "target": target.init(k_target, obs)["params"],
            "obs_stats": RunningStats.zeros(spec.obs_shape),
        }
        return LearnedState(params, optax.adam(self.lr).init(params), fixed, **spec_fields(spec))

    def _normalized(self, state, obs):
        x = state.fixed["obs_stats"].normalize(obs.astype(jnp.float32))
        return jnp.clip(x, -self.obs_clip, self.obs_clip)

    def _errors(self, state, params, batch):
        x = self._normalized(state, batch.flat(batch.next_obs))
        target, predictor = self.nets(x.shape[1:])
        y = jax.lax.stop_gradient(target.apply({"params": state.fixed["target"]}, x))
        return jnp.mean((predictor.apply({"params": params}, x) - y) ** 2, -1)

    def reward(self, state, batch):
        return batch.unflat(self._errors(state, state.params, batch))

    def update(self, state, batch, key):
        valid = batch.flat(batch.mask).astype(jnp.float32)

        def loss_fn(params):
            err = self._errors(state, params, batch)
            mask = (jax.random.uniform(key, err.shape) < self.update_proportion).astype(jnp.float32) * valid
            return jnp.sum(err * mask) / jnp.maximum(mask.sum(), 1.0), {}

        state, metrics = train_step(state, loss_fn, optax.adam(self.lr))
        next_obs = batch.flat(batch.next_obs).astype(jnp.float32)
        stats = state.fixed["obs_stats"].merge_masked(next_obs, batch.flat(batch.mask))
        return state.replace(fixed={**state.fixed, "obs_stats": stats}), metrics
