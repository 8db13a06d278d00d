"""Plan2Explore's latent disagreement (Sekar et al. 2020, "Planning to Explore via
Self-Supervised World Models", sec. 3 and eq. 5-6; the world-model bonus of InDRiVE), as
DreamerV3's exploration module computes it (danijar/dreamerv3 at ec526b9,
``dreamerv3/expl.py`` ``Disag`` and ``configs.yaml`` ``disag_*``).

K one-step models f_k([h_t, z_t, a_t]) -> z_{t+1}, each from its own random init, trained on
the world model's posterior latents of replayed sequences (every member on every sample,
squared error summed over the target's units); the bonus of a transition is the members'
standard deviation, averaged over units: high where the models have not seen enough data to
agree. Unlike ``disagreement`` (Pathak et al. 2019, on observation embeddings) it reads the
latent fields that a world-model agent adds to its batches (``LATENT_FIELDS``), so the Shaper
refuses it under an agent without a world model before a run starts. Dreamer trains it on
replayed chunks and computes it on imagined trajectories, where the actor learns from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from rl.models.rssm import Block
from rl.nets import ensemble
from rl.rewards.learned import LearnedState, masked_mean, train_step

# What a world-model agent provides (Dreamer, ``rl/agents/dreamer.py``): for the transition
# t -> t + 1, the features [h_t, z_t] of the state it starts from, the action as the model
# sees it (one-hot, or scaled to [-1, 1]) and the flat stochastic latent z_{t+1} it leads to.
LATENT_FIELDS = ("latent", "latent_action", "next_stoch")
PROVIDED_BY = "a world model's latent states, which the dreamer agent provides"


class Member(nn.Module):
    """One forward model: Linear-RMSNorm-SiLU blocks (the reference's MLP with its norm and
    activation) and a linear output."""

    hidden: tuple[int, ...]
    out: int

    @nn.compact
    def __call__(self, x):
        for h in self.hidden:
            x = Block(h)(x)
        return nn.Dense(self.out)(x)


@dataclass(frozen=True)
class LatentDisagreement:
    """The reference's sizes are 8 members of 5 x 1024 units; ``hidden`` defaults to a size
    this CPU trains at Dreamer's update rate (set ``hidden=[1024,1024,1024,1024,1024]`` for the
    reference's). Adam at 1e-4, eps 1e-5, gradients clipped to global norm 100 (``expl_opt``);
    stream defaults: weight 0.1 (``expl_rewards.disag``), no normalization."""

    members: int = 8
    hidden: tuple[int, ...] = (256, 256)
    lr: float = 1e-4
    eps: float = 1e-5
    clip: float = 100.0

    reads = frozenset(LATENT_FIELDS)
    provided_by = PROVIDED_BY
    stream_defaults = {"weight": 0.1, "normalize": "none"}

    def _net(self, out: int) -> nn.Module:
        return ensemble(Member, self.members)(tuple(self.hidden), out)

    def _tx(self):
        return optax.chain(optax.clip_by_global_norm(self.clip), optax.adam(self.lr, eps=self.eps))

    def init(self, key, spec):
        shapes = getattr(spec, "fields", None)
        if not shapes or any(f not in shapes for f in LATENT_FIELDS):
            raise ValueError(f"plan2explore reads {list(LATENT_FIELDS)}: {PROVIDED_BY}")
        dim = math.prod(shapes["latent"]) + math.prod(shapes["latent_action"])
        out = math.prod(shapes["next_stoch"])
        params = self._net(out).init(key, jnp.zeros((1, dim), jnp.float32))["params"]
        return LearnedState(params, self._tx().init(params))

    def _predict(self, params, batch):
        x = jnp.concatenate([batch.flat(batch.get("latent")), batch.flat(batch.get("latent_action"))], -1)
        out = params["Dense_0"]["bias"].shape[-1]  # the target's size, from the output layer
        return self._net(out).apply({"params": params}, x.astype(jnp.float32))  # [K, N, out]

    def reward(self, state, batch):
        pred = self._predict(state.params, batch)
        return batch.unflat(jnp.mean(jnp.std(pred, axis=0), -1))

    def update(self, state, batch, key):
        """One optimizer step of every member on the batch's real samples (the reference's
        ``Disag.train``: the sum over members of each member's mean squared-error loss)."""
        target = batch.flat(batch.get("next_stoch")).astype(jnp.float32)

        def loss_fn(params):
            pred = self._predict(params, batch)
            per_member = jax.vmap(lambda p: masked_mean(jnp.sum((p - target) ** 2, -1), batch))(pred)
            return jnp.sum(per_member), {}

        return train_step(state, loss_fn, self._tx())
