"""Intrinsic Curiosity Module (Pathak et al. 2017, "Curiosity-driven Exploration by
Self-supervised Prediction").

A feature encoder phi is trained by an inverse model g(phi(s), phi(s')) -> a; a forward model
f(phi(s), a) predicts phi(s'). The curiosity reward is the forward model's error in feature
space (eq. 6) and the module minimizes (1 - beta) L_I + beta L_F (eq. 7) jointly over encoder,
inverse and forward models, L_I the inverse model's cross-entropy (Discrete) or squared error
(Box).

Reference implementation: RLeXplore (rllte, ``rllte/xplore/reward/icm.py``, the benchmark's
``reward`` branch). Where it departs from the paper we follow it: the error is the *mean*
over feature units, r = eta * mean_j (f(phi(s), a) - phi(s'))_j^2 and L_F its batch mean (the
paper's eta / 2 * ||.||^2 is 2 / features times that, a constant the stream's normalization
removes), L_I + L_F unweighted (``beta = 0.5``: the same Adam steps), phi(s') not detached, and
the module trains on each batch it sees for ``epochs`` passes of minibatches of
``batch_size`` (1 x 256, Adam 1e-3), after the batch's reward is computed (the Shaper's order).
The encoder's inputs: images scaled to [0, 1], or with ``obs_norm='rms'`` standardized by
running statistics (rllte's ``--obs_rms``; ``rl.rewards.learned.ObsNorm``).
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax.numpy as jnp
import optax

from rl.nets import MLP
from rl.rewards.learned import (
    InverseDynamics,
    LearnedState,
    ObsNormed,
    action_input,
    masked_mean,
    minibatch_epochs,
    spec_fields,
)


class ICMNets(nn.Module):
    obs_shape: tuple[int, ...]
    hidden: tuple[int, ...]
    features: int
    action_dim: int
    torso: str = "default"
    scale: bool = True

    def setup(self):
        self.dynamics = InverseDynamics(
            self.obs_shape, self.hidden, self.features, self.action_dim, self.torso, self.scale
        )
        self.forward_model = MLP(self.hidden, self.features, nn.relu)

    def __call__(self, obs, next_obs, action_in):
        """(phi(s'), predicted phi(s'), inverse model's action prediction)."""
        phi, phi_next, a_hat = self.dynamics(obs, next_obs)
        return phi_next, self.forward_model(jnp.concatenate([phi, action_in], -1)), a_hat


@dataclass(frozen=True)
class ICM(ObsNormed):
    eta: float = 1.0  # reward scale of eq. 6 (the stream weight scales it further)
    beta: float = 0.5  # forward vs inverse loss (eq. 7; the paper's 0.2, the reference's unweighted sum)
    features: int = 128  # dimension of phi
    hidden: tuple[int, ...] = (256,)
    lr: float = 1e-3
    batch_size: int = 256  # minibatch of the module's training (the reference's DataLoader)
    epochs: int = 1  # passes over each batch
    torso: str = "default"  # "rlexplore" (grids): RLeXplore's MinigridEncoder(features) is phi
    obs_norm: str = "none"  # none | rms: the encoder's inputs standardized (rllte's obs_rms)
    obs_clip: float = 5.0
    warmup_steps: int = 0  # random-action steps per env initializing the statistics (rllte: 640)

    reads = frozenset({"obs", "action", "next_obs"})

    def net(self, obs_shape, action_dim: int) -> ICMNets:
        return ICMNets(
            tuple(obs_shape), tuple(self.hidden), self.features, action_dim, self.torso, not self._obs.on
        )

    def init(self, key, spec):
        fields = spec_fields(spec)
        obs = jnp.zeros((1, *spec.obs_shape), spec.obs_dtype)
        act = jnp.zeros((1, fields["action_dim"]), jnp.float32)
        params = self.net(spec.obs_shape, fields["action_dim"]).init(key, obs, obs, act)["params"]
        fixed = {"obs_stats": self._obs.init(spec)}
        return LearnedState(params, optax.adam(self.lr).init(params), fixed, **fields)

    def _apply(self, state, params, batch):
        stats = state.fixed["obs_stats"]
        obs, next_obs = (self._obs(stats, batch.flat(o)) for o in (batch.obs, batch.next_obs))
        net = self.net(obs.shape[1:], state.action_dim)
        return net.apply({"params": params}, obs, next_obs, action_input(state, batch.flat(batch.action)))

    def reward(self, state, batch):
        phi_next, pred, _ = self._apply(state, state.params, batch)
        return batch.unflat(self.eta * jnp.mean((pred - phi_next) ** 2, -1))

    def losses(self, state, params, batch):
        """(L_I, L_F) of eq. 7 on ``batch``."""
        phi_next, pred, a_hat = self._apply(state, params, batch)
        action = batch.flat(batch.action)
        if state.discrete:
            inverse = masked_mean(
                optax.softmax_cross_entropy_with_integer_labels(a_hat, action.reshape(-1)), batch
            )
        else:
            inverse = 0.5 * masked_mean(jnp.sum((a_hat - action_input(state, action)) ** 2, -1), batch)
        forward = masked_mean(jnp.mean((pred - phi_next) ** 2, -1), batch)
        return inverse, forward

    def update(self, state, batch, key):
        def loss_fn(params, mb, _):
            inverse, forward = self.losses(state, params, mb)
            return (1 - self.beta) * inverse + self.beta * forward, {"inverse": inverse, "forward": forward}

        return minibatch_epochs(state, batch, key, loss_fn, optax.adam(self.lr), self.batch_size, self.epochs)
