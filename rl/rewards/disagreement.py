"""Ensemble disagreement (Pathak et al. 2019, "Self-Supervised Exploration via Disagreement";
the latent-disagreement bonus of Plan2Explore, Sekar et al. 2020, and InDRiVE).

K forward models f_k(phi(s), a) -> phi(s'), each from its own random init; the bonus is their
disagreement, the variance across the ensemble averaged over feature dimensions (section 3):
high where the models have not seen enough data to agree, low on stochastic but
well-explored transitions. phi is a fixed random embedding (the paper's random-feature
variant); ``features=0`` uses flat vector observations as they are.

Reference implementation: RLeXplore (rllte ``rllte/xplore/reward/disagreement.py``): K = 4,
the unbiased variance over members, each member's loss the mean squared error over feature
units, and training by minibatches of ``batch_size`` in which only member ``j mod K`` learns
(round-robin: each sees about 1 / K of the data, which keeps them apart), after the batch's
reward is computed. The embedding's inputs: images scaled to [0, 1] by default, or with
``obs_norm='rms'`` standardized by running statistics (rllte's ``--obs_rms``, which its
DoorKey-16x16 launch script ``doorkey_5.sh`` passes to every arm; ``rl.rewards.learned.ObsNorm``),
first on ``warmup_steps`` random steps per env.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from rl.nets import MLP, ensemble
from rl.rewards.learned import (
    Embedding,
    LearnedState,
    ObsNormed,
    action_input,
    masked_mean,
    minibatch_epochs,
    spec_fields,
)


class Ensemble(nn.Module):
    """K forward MLPs evaluated as one batched network: [K, N, features]."""

    hidden: tuple[int, ...]
    out: int
    k: int

    @nn.compact
    def __call__(self, x):
        return ensemble(MLP, self.k)(self.hidden, self.out, nn.relu)(x)


@dataclass(frozen=True)
class Disagreement(ObsNormed):
    ensemble: int = 4  # K
    features: int = 64  # random embedding size (0: raw flat observations)
    hidden: tuple[int, ...] = (256, 256)
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 1
    torso: str = "default"  # "rlexplore" (grids): the random embedding is MinigridEncoder(features)
    obs_norm: str = "none"  # none | rms: the embedding's inputs standardized (rllte's obs_rms)
    obs_clip: float = 5.0
    warmup_steps: int = 0  # random-action steps per env initializing the statistics (rllte: 640)

    reads = frozenset({"obs", "action", "next_obs"})

    def _embedding(self, obs_shape):
        if not self.features:
            return None
        return Embedding(tuple(obs_shape), (256,), self.features, scale=not self._obs.on, torso=self.torso)

    def init(self, key, spec):
        k_embed, k_models = jax.random.split(key)
        fields = spec_fields(spec)
        obs = jnp.zeros((1, *spec.obs_shape), spec.obs_dtype)
        embed = self._embedding(spec.obs_shape)
        # the embedding (never trained) and the minibatches trained so far (the round-robin's clock)
        fixed = {
            "embed": embed.init(k_embed, obs)["params"] if embed else None,
            "steps": jnp.int32(0),
            "obs_stats": self._obs.init(spec),
        }
        dim = self.features or math.prod(spec.obs_shape)
        x = jnp.zeros((1, dim + fields["action_dim"]), jnp.float32)
        params = Ensemble(tuple(self.hidden), dim, self.ensemble).init(k_models, x)["params"]
        opt = jax.vmap(optax.adam(self.lr).init)(params)  # one Adam per member, as the reference
        return LearnedState(params, opt, fixed, **fields)

    def _predict(self, state, params, batch):
        """([K, N, D] predictions of phi(s'), [N, D] phi(s'))."""
        stats = state.fixed["obs_stats"]
        obs, next_obs = (self._obs(stats, batch.flat(o)) for o in (batch.obs, batch.next_obs))
        embed = self._embedding(obs.shape[1:])
        if embed is None:
            phi, phi_next = obs.reshape(obs.shape[0], -1), next_obs.reshape(obs.shape[0], -1)
            phi, phi_next = phi.astype(jnp.float32), phi_next.astype(jnp.float32)
        else:
            phi, phi_next = (embed.apply({"params": state.fixed["embed"]}, o) for o in (obs, next_obs))
        x = jnp.concatenate([phi, action_input(state, batch.flat(batch.action))], -1)
        pred = Ensemble(tuple(self.hidden), phi.shape[-1], self.ensemble).apply({"params": params}, x)
        return pred, phi_next

    def reward(self, state, batch):
        pred, _ = self._predict(state, state.params, batch)
        return batch.unflat(jnp.mean(jnp.var(pred, axis=0, ddof=1), -1))

    def update(self, state, batch, key):
        start = state.fixed["steps"]

        def loss_fn(params, mb, j):
            pred, target = self._predict(state, params, mb)
            per_model = jax.vmap(lambda p: masked_mean(jnp.mean((p - target) ** 2, -1), mb))(pred)  # [K]
            return jnp.sum(per_model * jax.nn.one_hot((start + j) % self.ensemble, self.ensemble)), {}

        def member_step(state, loss, tx, j):  # only member (start + j) mod K and its own Adam move
            (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
            updates, opt = jax.vmap(tx.update)(grads, state.opt, state.params)
            params = optax.apply_updates(state.params, updates)
            mine = jnp.arange(self.ensemble) == (start + j) % self.ensemble

            def pick(new, old):
                return jnp.where(mine.reshape(mine.shape + (1,) * (new.ndim - 1)), new, old)

            new = state.replace(
                params=jax.tree.map(pick, params, state.params), opt=jax.tree.map(pick, opt, state.opt)
            )
            return new, {"loss": value, **metrics}

        n = math.prod(batch.lead)
        new, metrics = minibatch_epochs(
            state, batch, key, loss_fn, optax.adam(self.lr), self.batch_size, self.epochs, train=member_step
        )
        steps = start + self.epochs * -(-n // min(self.batch_size, n))
        return new.replace(fixed={**new.fixed, "steps": steps}), metrics
