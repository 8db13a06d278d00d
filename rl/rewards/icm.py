"""Intrinsic Curiosity Module (Pathak et al. 2017, "Curiosity-driven Exploration by
Self-supervised Prediction").

A feature encoder phi is trained by an inverse model g(phi(s), phi(s')) -> a; a forward model
f(phi(s), a) predicts phi(s'). The curiosity reward is the forward model's error in feature
space (eq. 6), r = eta / 2 * ||f(phi(s), a) - phi(s')||^2, and the module minimizes
(1 - beta) L_I + beta L_F (eq. 7) jointly over encoder, inverse and forward models, with
L_I the inverse model's cross-entropy (Discrete) or squared error (Box) and
L_F = 1/2 ||f(phi(s), a) - phi(s')||^2 (eq. 5).
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
    action_input,
    masked_mean,
    spec_fields,
    train_step,
)


class ICMNets(nn.Module):
    obs_shape: tuple[int, ...]
    hidden: tuple[int, ...]
    features: int
    action_dim: int

    def setup(self):
        self.dynamics = InverseDynamics(self.obs_shape, self.hidden, self.features, self.action_dim)
        self.forward_model = MLP(self.hidden, self.features, nn.relu)

    def __call__(self, obs, next_obs, action_in):
        """(phi(s'), predicted phi(s'), inverse model's action prediction)."""
        phi, phi_next, a_hat = self.dynamics(obs, next_obs)
        return phi_next, self.forward_model(jnp.concatenate([phi, action_in], -1)), a_hat


@dataclass(frozen=True)
class ICM:
    eta: float = 1.0  # reward scale of eq. 6 (the stream weight scales it further)
    beta: float = 0.2  # forward vs inverse loss (eq. 7; 0.2 in the paper)
    features: int = 128  # dimension of phi
    hidden: tuple[int, ...] = (256,)
    lr: float = 1e-3

    reads = frozenset({"obs", "action", "next_obs"})

    def net(self, obs_shape, action_dim: int) -> ICMNets:
        return ICMNets(tuple(obs_shape), tuple(self.hidden), self.features, action_dim)

    def init(self, key, spec):
        fields = spec_fields(spec)
        obs = jnp.zeros((1, *spec.obs_shape), spec.obs_dtype)
        act = jnp.zeros((1, fields["action_dim"]), jnp.float32)
        params = self.net(spec.obs_shape, fields["action_dim"]).init(key, obs, obs, act)["params"]
        return LearnedState(params, optax.adam(self.lr).init(params), **fields)

    def _apply(self, state, params, batch):
        obs, next_obs = batch.flat(batch.obs), batch.flat(batch.next_obs)
        net = self.net(obs.shape[1:], state.action_dim)
        return net.apply({"params": params}, obs, next_obs, action_input(state, batch.flat(batch.action)))

    def reward(self, state, batch):
        phi_next, pred, _ = self._apply(state, state.params, batch)
        return batch.unflat(0.5 * self.eta * jnp.sum((pred - phi_next) ** 2, -1))

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
        forward = 0.5 * masked_mean(jnp.sum((pred - phi_next) ** 2, -1), batch)
        return inverse, forward

    def update(self, state, batch, key):
        def loss_fn(params):
            inverse, forward = self.losses(state, params, batch)
            return (1 - self.beta) * inverse + self.beta * forward, {"inverse": inverse, "forward": forward}

        return train_step(state, loss_fn, optax.adam(self.lr))
