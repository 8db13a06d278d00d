"""Episodic novelty bonuses: how new a state is within the current episode.

Both embed observations with an encoder trained by inverse dynamics (predict a_t from
(s_t, s_t+1)), so the embedding keeps what the agent controls and drops distractors.

- ``E3B`` (Henaff et al. 2022, "Exploration via Elliptical Episodic Bonuses", eq. 3-4):
  b_t = phi_t^T C_{t-1}^{-1} phi_t with C_t = lambda I + sum_{i<=t} phi_i phi_i^T over the
  episode so far; C^{-1} is kept by Sherman-Morrison updates and reset at episode starts.
- ``NGU`` (Badia et al. 2020, "Never Give Up", section 2 and appendix A): the inverse kernel
  sum r = 1 / (sqrt(sum_{k-NN} K(phi_t, phi_j)) + c) over the k nearest earlier embeddings of
  the episode, K(x, y) = eps / (max(d^2(x, y) / d_m^2 - xi, 0) + eps), with d_m^2 a running
  mean of the squared k-NN distances; optionally times RND's life-long modulator
  alpha = clip(1 + (err - mean) / std, 1, L). An episode's first step, with an empty memory,
  gets no bonus.

Time order. On ``Sequences`` [B, T] the episode runs along each row: E3B's C^{-1} and NGU's
memory hold the episode's earlier steps in the row. On PPO's rollouts (``rollout=True``, row b
is env b) E3B carries each env's C^{-1} from one rollout to the next; replay windows start
afresh. ``Transitions`` [B] (SAC) have no episodes in order: there the memory is the rest of
the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax

from rl.batch import Sequences
from rl.rewards.learned import (
    InverseDynamics,
    LearnedState,
    action_input,
    masked_mean,
    smallest,
    spec_fields,
    train_step,
)
from rl.rewards.rnd import RND
from rl.rewards.stats import RunningStats


@dataclass(frozen=True)
class _InverseDynamicsTerm:
    """The embedding shared by E3B and NGU, trained by inverse dynamics."""

    features: int = 32
    hidden: tuple[int, ...] = (256,)
    lr: float = 3e-4

    reads = frozenset({"obs", "action", "next_obs", "terminated", "truncated"})

    def net(self, obs_shape, action_dim: int) -> InverseDynamics:
        return InverseDynamics(tuple(obs_shape), tuple(self.hidden), self.features, action_dim)

    def _init_params(self, key, spec):
        obs = jnp.zeros((1, *spec.obs_shape), spec.obs_dtype)
        params = self.net(spec.obs_shape, spec.num_actions).init(key, obs, obs)["params"]
        return params, optax.adam(self.lr).init(params)

    def embed(self, state, obs_flat):
        net = self.net(obs_flat.shape[1:], state.action_dim)
        return net.apply({"params": state.params}, obs_flat, method=InverseDynamics.embed)

    def inverse_loss(self, state, params, batch):
        obs, next_obs, action = (batch.flat(x) for x in (batch.obs, batch.next_obs, batch.action))
        logits = self.net(obs.shape[1:], state.action_dim).apply({"params": params}, obs, next_obs)[2]
        if state.discrete:
            return masked_mean(
                optax.softmax_cross_entropy_with_integer_labels(logits, action.reshape(-1)), batch
            )
        return 0.5 * masked_mean(jnp.sum((logits - action_input(state, action)) ** 2, -1), batch)

    def _train(self, state, batch):
        return train_step(state, lambda p: (self.inverse_loss(state, p, batch), {}), optax.adam(self.lr))


@dataclass(frozen=True)
class E3B(_InverseDynamicsTerm):
    ridge: float = 0.1  # lambda: C_0 = lambda I

    def init(self, key, spec):
        params, opt = self._init_params(key, spec)
        c_inv = jnp.broadcast_to(
            jnp.eye(self.features) / self.ridge, (spec.num_envs, self.features, self.features)
        )
        return LearnedState(params, opt, {"c_inv": c_inv}, **spec_fields(spec))

    def fresh(self):
        return jnp.eye(self.features) / self.ridge

    def _scan(self, state, batch: Sequences):
        """(bonuses [B, T], C^{-1} after each row [B, D, D]): along each row from the carried
        C^{-1} (PPO's rollouts) or a fresh one (replay windows)."""
        phi = batch.unflat(self.embed(state, batch.flat(batch.obs)))
        B = batch.lead[0]
        c0 = (
            state.fixed["c_inv"]
            if batch.rollout
            else jnp.broadcast_to(self.fresh(), (B, *self.fresh().shape))
        )

        def step(c_inv, x):
            phi_t, start = x
            c_inv = jnp.where(start[:, None, None], self.fresh(), c_inv)
            u = jnp.einsum("eij,ej->ei", c_inv, phi_t)
            bonus = jnp.einsum("ei,ei->e", phi_t, u)
            c_inv = c_inv - jnp.einsum("ei,ej->eij", u, u) / (1.0 + bonus)[:, None, None]  # Sherman-Morrison
            return c_inv, bonus

        xs = (jnp.swapaxes(phi, 0, 1), jnp.swapaxes(batch.episode_starts(), 0, 1))  # time-major scan
        c_inv, bonuses = jax.lax.scan(step, c0, xs)
        return jnp.swapaxes(bonuses, 0, 1), c_inv

    def reward(self, state, batch):
        if isinstance(batch, Sequences):
            return self._scan(state, batch)[0]
        phi = self.embed(state, batch.flat(batch.obs))  # transitions: the ellipse of the batch
        c = self.ridge * jnp.eye(self.features) + phi.T @ phi
        return batch.unflat(jnp.einsum("bi,bi->b", phi, jnp.linalg.solve(c, phi.T).T))

    def update(self, state, batch, key):
        fixed = state.fixed
        if isinstance(batch, Sequences) and batch.rollout:  # carry each env's ellipse on
            c_inv = self._scan(state, batch)[1]
            done = (batch.terminated | batch.truncated)[:, -1]
            fixed = {"c_inv": jnp.where(done[:, None, None], self.fresh(), c_inv)}
        state, metrics = self._train(state.replace(fixed=fixed), batch)
        return state, metrics


@dataclass(frozen=True)
class NGU(_InverseDynamicsTerm):
    k: int = 10  # neighbours
    kernel_eps: float = 1e-3  # eps of the kernel
    cluster: float = 8e-3  # xi: squared distances below this (relative) count as identical
    c: float = 1e-3  # pseudo-count constant
    lifelong: bool = False  # times RND's life-long modulator alpha
    max_modulator: float = 5.0  # L
    rnd: RND = RND()

    def init(self, key, spec):
        k_net, k_rnd = jax.random.split(key)
        params, opt = self._init_params(k_net, spec)
        fixed = {"dist": RunningStats.zeros(), "err": RunningStats.zeros()}
        if self.lifelong:
            fixed["rnd"] = self.rnd.init(k_rnd, spec)
        return LearnedState(params, opt, fixed, **spec_fields(spec))

    def _knn_sq(self, state, batch):
        """(squared distances to the k nearest earlier embeddings of the episode [N, k], and
        a [N, k] mask of neighbours that exist)."""
        phi = self.embed(state, batch.flat(batch.obs))
        if isinstance(batch, Sequences):  # earlier steps of the same episode within the row
            phi = batch.unflat(phi)  # [B, T, D]
            T = batch.lead[1]
            episode = jnp.cumsum(batch.episode_starts(), axis=1)  # [B, T] segment ids
            t = jnp.arange(T)
            allowed = (t[None, :, None] > t[None, None, :]) & (episode[:, :, None] == episode[:, None, :])
        else:  # transitions: every other sample
            phi, allowed = phi[None], ~jnp.eye(phi.shape[0], dtype=bool)[None]
        sq = jnp.sum(phi * phi, -1)
        d2 = jnp.maximum(sq[..., :, None] + sq[..., None, :] - 2 * phi @ jnp.swapaxes(phi, -1, -2), 0.0)
        k = min(self.k, d2.shape[-1])
        d2k = smallest(jnp.where(allowed, d2, jnp.inf), k)
        return d2k.reshape(-1, k), jnp.isfinite(d2k).reshape(-1, k)

    def reward(self, state, batch):
        d2k, exists = self._knn_sq(state, batch)
        mean = jnp.maximum(state.fixed["dist"].mean, 1e-8)  # d_m^2
        d = jnp.maximum(jnp.where(exists, d2k, 0.0) / mean - self.cluster, 0.0)
        kernel = jnp.where(exists, self.kernel_eps / (d + self.kernel_eps), 0.0)
        # an episode's first step has an empty memory: no bonus (a 1 / c spike at every reset
        # would dominate the stream's statistics)
        r = jnp.where(exists.any(-1), 1.0 / (jnp.sqrt(kernel.sum(-1)) + self.c), 0.0)
        if self.lifelong:
            err = batch.flat(self.rnd.reward(state.fixed["rnd"], batch))
            stats = state.fixed["err"]
            alpha = 1.0 + (err - stats.mean) / jnp.sqrt(stats.var + 1e-8)
            r = r * jnp.clip(alpha, 1.0, self.max_modulator)
        return batch.unflat(r)

    def update(self, state, batch, key):
        d2k, exists = self._knn_sq(state, batch)
        exists = exists & batch.flat(batch.mask)[:, None]  # padding leaves d_m^2 alone
        n = jnp.maximum(exists.sum(), 1)
        mean = jnp.sum(jnp.where(exists, d2k, 0.0)) / n
        fixed = dict(state.fixed)  # d_m^2: a running mean of the batches' mean squared k-NN distance
        fixed["dist"] = fixed["dist"].merge(jnp.full((1,), mean), (0,))
        metrics = {}
        if self.lifelong:
            err = batch.flat(self.rnd.reward(fixed["rnd"], batch))
            fixed["err"] = fixed["err"].merge_masked(err, batch.flat(batch.mask))
            fixed["rnd"], m = self.rnd.update(fixed["rnd"], batch, key)
            metrics.update({f"rnd_{k}": v for k, v in m.items()})
        state, m = self._train(state.replace(fixed=fixed), batch)
        return state, {**metrics, **m}
