"""Episodic novelty bonuses: how new a state is within the current episode.

Both embed observations with an encoder trained by inverse dynamics (predict a_t from
(s_t, s_t+1)), so the embedding keeps what the agent controls and drops distractors. The
encoder trains on each batch after its reward, ``epochs`` passes of minibatches of
``batch_size`` (RLeXplore's cadence: 1 x 256, Adam 1e-3).

- ``E3B`` (Henaff et al. 2022, "Exploration via Elliptical Episodic Bonuses", eq. 3-4):
  b_t = phi_t^T C_{t-1}^{-1} phi_t with C_{t-1} = lambda I + sum_{i<t} phi_i phi_i^T over the
  episode's earlier steps, phi_t the embedding of s_t; C^{-1} is kept by Sherman-Morrison
  updates and reset at episode starts. Reference: facebookresearch/e3b
  (``minihack/torchbeast/src/utils.py``, ``act``): an episode's first step gets 0 (its
  embedding still enters C), not the ||phi||^2 / lambda of a fresh ellipse. Its encoder's
  inputs: images scaled to [0, 1], or with ``obs_norm='rms'`` standardized by running
  statistics (rllte's ``--obs_rms``; ``rl.rewards.learned.ObsNorm``).
- ``NGU`` (Badia et al. 2020, "Never Give Up", section 2 and appendix A): the episodic bonus
  r = 1 / (sqrt(sum_{k-NN} K(phi_t, phi_j)) + c) over the k nearest embeddings of the
  episode's earlier steps, K(x, y) = eps / (max(d^2(x, y) / d_m^2 - xi, 0) + eps), d_m^2 the
  running mean of the squared k-NN distances, and r = 0 where sqrt(sum K) + c > s_m (too
  similar to memory: the paper's cut-off); times the life-long modulator alpha =
  clip(1 + err / std(err), 1, L) of an RND error when ``lifelong``. Reference: RLeXplore
  (rllte ``rllte/xplore/reward/pseudo_counts.py`` and ``ngu.py``): its constants (k 10,
  eps 1e-4, xi 8e-3, c 1e-3, s_m 8), an episode's first step gets 0, the memory holds the
  whole episode (here: its last ``memory`` steps, carried across PPO's rollouts), and its
  alpha (no mean subtracted, unlike the paper's (err - mean) / std). One departure: d_m^2
  takes in the batch's distances before its reward (the reference, after: its first
  rollout divides by a mean of 0). Its encoder's inputs as E3B's (``obs_norm``); rllte's NGU
  builds its pseudo-counts module with ``obs_rms=True`` whatever its own flag says.

Time order. On ``Sequences`` [B, T] the episode runs along each row. On PPO's rollouts
(``rollout=True``, row b is env b) E3B's C^{-1} and NGU's memory carry into the next rollout
until the episode ends; replay windows start afresh, their first step counted as an episode's
first. ``Transitions`` [B] (SAC) have no episodes in order: there the memory is the rest of
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
    ObsNormed,
    action_input,
    masked_mean,
    minibatch_epochs,
    smallest,
    spec_fields,
)
from rl.rewards.rnd import RND
from rl.rewards.stats import RunningStats


@dataclass(frozen=True)
class _InverseDynamicsTerm:
    """The embedding shared by E3B and NGU, trained by inverse dynamics."""

    features: int = 32
    hidden: tuple[int, ...] = (256,)
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 1
    torso: str = "default"  # "rlexplore" (grids): RLeXplore's MinigridEncoder(features) is phi

    reads = frozenset({"obs", "action", "next_obs", "terminated", "truncated"})

    def _inputs(self, state, x):
        return self._obs(state.fixed["obs_stats"], x) if self._obs.on else x

    def net(self, obs_shape, action_dim: int) -> InverseDynamics:
        return InverseDynamics(
            tuple(obs_shape), tuple(self.hidden), self.features, action_dim, self.torso, not self._obs.on
        )

    def _init_params(self, key, spec):
        obs = jnp.zeros((1, *spec.obs_shape), spec.obs_dtype)
        params = self.net(spec.obs_shape, spec.num_actions).init(key, obs, obs)["params"]
        return params, optax.adam(self.lr).init(params)

    def embed(self, state, obs_flat):
        net = self.net(obs_flat.shape[1:], state.action_dim)
        return net.apply(
            {"params": state.params}, self._inputs(state, obs_flat), method=InverseDynamics.embed
        )

    def inverse_loss(self, state, params, batch):
        obs, next_obs, action = (batch.flat(x) for x in (batch.obs, batch.next_obs, batch.action))
        obs, next_obs = self._inputs(state, obs), self._inputs(state, next_obs)
        logits = self.net(obs.shape[1:], state.action_dim).apply({"params": params}, obs, next_obs)[2]
        if state.discrete:
            return masked_mean(
                optax.softmax_cross_entropy_with_integer_labels(logits, action.reshape(-1)), batch
            )
        return 0.5 * masked_mean(jnp.sum((logits - action_input(state, action)) ** 2, -1), batch)

    def _train(self, state, batch, key):
        return minibatch_epochs(
            state, batch, key, lambda p, mb, _: (self.inverse_loss(state, p, mb), {}),
            optax.adam(self.lr), self.batch_size, self.epochs,
        )  # fmt: skip

    def _row_starts(self, state, batch: Sequences):
        """[B, T] true where a step is its episode's first: after a done in the row, and at
        the row's start where the previous rollout's episode ended (always for windows)."""
        first = state.fixed["first"] if batch.rollout else jnp.ones(batch.lead[:1], bool)
        return batch.episode_starts().at[:, 0].set(first)


@dataclass(frozen=True)
class E3B(ObsNormed, _InverseDynamicsTerm):
    ridge: float = 0.1  # lambda: C_0 = lambda I
    obs_norm: str = "none"  # none | rms: the encoder's inputs standardized (rllte's obs_rms)
    obs_clip: float = 5.0
    warmup_steps: int = 0  # random-action steps per env initializing the statistics (rllte: 640)

    def init(self, key, spec):
        params, opt = self._init_params(key, spec)
        E = spec.num_envs
        fixed = {
            "c_inv": jnp.broadcast_to(self.fresh(), (E, self.features, self.features)),
            "first": jnp.ones((E,), bool),  # the next rollout's first step starts an episode
            "obs_stats": self._obs.init(spec),
        }
        return LearnedState(params, opt, fixed, **spec_fields(spec))

    def fresh(self):
        return jnp.eye(self.features) / self.ridge

    def _scan(self, state, batch: Sequences):
        """(bonuses [B, T], C^{-1} after each row [B, D, D]): along each row from the carried
        C^{-1} (PPO's rollouts) or a fresh one (replay windows)."""
        phi = batch.unflat(self.embed(state, batch.flat(batch.obs)))
        B, D = batch.lead[0], self.features
        c0 = state.fixed["c_inv"] if batch.rollout else jnp.broadcast_to(self.fresh(), (B, D, D))
        fresh = jnp.broadcast_to(self.fresh(), (B, D, D))

        def step(c_inv, x):
            phi_t, start = x
            c_inv = jnp.where(jnp.broadcast_to(start[:, None, None], c_inv.shape), fresh, c_inv)
            u = jnp.einsum("eij,ej->ei", c_inv, phi_t)
            b = jnp.einsum("ei,ei->e", phi_t, u)
            c_inv = c_inv - jnp.einsum("ei,ej->eij", u, u) / jnp.broadcast_to(
                (1.0 + b)[:, None, None], c_inv.shape
            )
            return c_inv, jnp.where(start, 0.0, b)  # an episode's first step: 0 (the reference)

        starts = self._row_starts(state, batch)
        c_inv, bonuses = jax.lax.scan(step, c0, (jnp.swapaxes(phi, 0, 1), jnp.swapaxes(starts, 0, 1)))
        return jnp.swapaxes(bonuses, 0, 1), c_inv

    def reward(self, state, batch):
        if isinstance(batch, Sequences):
            return self._scan(state, batch)[0]
        phi = self.embed(state, batch.flat(batch.obs))  # transitions: the ellipse of the batch
        c = self.ridge * jnp.eye(self.features) + phi.T @ phi
        return batch.unflat(jnp.einsum("bi,bi->b", phi, jnp.linalg.solve(c, phi.T).T))

    def update(self, state, batch, key):
        return self.step(state, batch, key)[1:]

    def step(self, state, batch, key):
        if not isinstance(batch, Sequences):
            return self.reward(state, batch), *self._train(state, batch, key)
        bonus, c_inv = self._scan(state, batch)
        fixed = state.fixed
        if batch.rollout:  # carry each env's ellipse on; reset at the next rollout's first step
            fixed = {**fixed, "c_inv": c_inv, "first": (batch.terminated | batch.truncated)[:, -1]}
        return bonus, *self._train(state.replace(fixed=fixed), batch, key)


@dataclass(frozen=True)
class NGU(ObsNormed, _InverseDynamicsTerm):
    k: int = 10  # neighbours
    kernel_eps: float = 1e-4  # eps of the kernel
    cluster: float = 8e-3  # xi: squared distances below this (relative) count as identical
    c: float = 1e-3  # pseudo-count constant
    max_similarity: float = 8.0  # s_m: no bonus where sqrt(sum K) + c exceeds it
    memory: int = 1024  # embeddings of the current episode kept per env across PPO's rollouts
    lifelong: bool = True  # times RND's life-long modulator alpha
    max_modulator: float = 5.0  # L
    rnd: RND = RND()
    obs_norm: str = "none"  # none | rms: the encoder's inputs standardized (rllte's NGU: always)
    obs_clip: float = 5.0

    @property
    def warmup_steps(self) -> int:
        """Its RND's: the life-long modulator's observation statistics, and with ``obs_norm``
        the encoder's, warm up on random steps (the Shaper's ``warm_up`` reaches them through
        :meth:`prepare`)."""
        return self.rnd.warmup_steps if self.lifelong else 0

    def init(self, key, spec):
        k_net, k_rnd = jax.random.split(key)
        params, opt = self._init_params(k_net, spec)
        E = spec.num_envs
        fixed = {
            "dist": RunningStats.zeros(),
            "err": RunningStats.zeros(),
            "mem": jnp.zeros((E, self.memory + 1, self.features), jnp.float32),  # +1: a scratch slot
            "count": jnp.zeros((E,), jnp.int32),  # embeddings written this episode
            "first": jnp.ones((E,), bool),
            "obs_stats": self._obs.init(spec),
        }
        if self.lifelong:
            fixed["rnd"] = self.rnd.init(k_rnd, spec)
        return LearnedState(params, opt, fixed, **spec_fields(spec))

    def _knn_sq(self, state, batch):
        """(squared distances to the k nearest embeddings of the episode's earlier steps
        [N, k], a [N, k] mask of neighbours that exist, the embeddings [N, D])."""
        flat = self.embed(state, batch.flat(batch.obs))
        if not isinstance(batch, Sequences):  # transitions: every other sample
            phi, allowed = flat[None], ~jnp.eye(flat.shape[0], dtype=bool)[None]
            cand = phi
        else:  # earlier steps of the same episode in the row, and (rollouts) the carried memory
            phi = batch.unflat(flat)  # [B, T, D]
            B, T = batch.lead
            starts = self._row_starts(state, batch)
            episode = jnp.cumsum(starts, axis=1)  # [B, T] segment ids; 1 = the row's first episode
            t = jnp.arange(T)
            allowed = (t[None, :, None] > t[None, None, :]) & (episode[:, :, None] == episode[:, None, :])
            cand = phi
            if batch.rollout:  # the episode's embeddings from earlier rollouts, while it goes on
                M = self.memory
                mem = state.fixed["mem"][:, :M]
                valid = jnp.arange(M)[None, :] < jnp.minimum(state.fixed["count"], M)[:, None]  # [B, M]
                same = (episode == 0)[:, :, None] & valid[:, None, :]  # [B, T, M]
                cand = jnp.concatenate([mem, phi], axis=1)
                allowed = jnp.concatenate([same, allowed], axis=2)
        sq_x = jnp.sum(phi * phi, -1)
        sq_c = jnp.sum(cand * cand, -1)
        d2 = jnp.maximum(sq_x[..., :, None] + sq_c[..., None, :] - 2 * phi @ jnp.swapaxes(cand, -1, -2), 0.0)
        k = min(self.k, d2.shape[-1])
        d2k = smallest(jnp.where(allowed, d2, jnp.inf), k)
        return d2k.reshape(-1, k), jnp.isfinite(d2k).reshape(-1, k), flat

    def _dist_stats(self, state, d2k, exists, batch):
        """d_m^2's statistics with the batch's squared k-NN distances folded in (the padding's left out)."""
        exists = exists & jnp.broadcast_to(batch.flat(batch.mask)[:, None], exists.shape)
        return state.fixed["dist"].merge_masked(jnp.where(exists, d2k, 0.0).reshape(-1), exists.reshape(-1))

    def reward(self, state, batch):
        return self._reward(state, batch, *self._knn_sq(state, batch)[:2])

    def _reward(self, state, batch, d2k, exists):
        mean = jnp.maximum(self._dist_stats(state, d2k, exists, batch).mean, 1e-8)  # d_m^2, this batch in
        d = jnp.maximum(jnp.where(exists, d2k, 0.0) / mean - self.cluster, 0.0)
        kernel = jnp.where(exists, self.kernel_eps / (d + self.kernel_eps), 0.0)
        s = jnp.sqrt(kernel.sum(-1)) + self.c
        # an episode's first step has an empty memory: no bonus (a 1 / c spike at every reset
        # would dominate the stream's statistics); nor a state too similar to the memory (s_m)
        r = jnp.where(exists.any(-1) & (s <= self.max_similarity), 1.0 / s, 0.0)
        if self.lifelong:
            err = batch.flat(self.rnd.reward(state.fixed["rnd"], batch))
            stats = state.fixed["err"].merge_masked(err, batch.flat(batch.mask))
            alpha = 1.0 + err / jnp.sqrt(stats.var + 1e-8)
            r = r * jnp.clip(alpha, 1.0, self.max_modulator)
        return batch.unflat(r)

    def prepare(self, state, batch):
        """The batch's observations folded into the encoder's input statistics and its RND's
        before the reward."""
        state = ObsNormed.prepare(self, state, batch)
        if not self.lifelong:
            return state
        return state.replace(fixed={**state.fixed, "rnd": self.rnd.prepare(state.fixed["rnd"], batch)})

    def _remember(self, state, batch: Sequences, phi):
        """Each env's memory after the rollout: its current episode's embeddings, the latest
        ``memory`` of them, written ring-wise (order does not matter to k-NN)."""
        B, T = batch.lead
        phi = batch.unflat(phi)
        starts = self._row_starts(state, batch)
        last = jnp.cumsum(starts, axis=1) == jnp.sum(starts, axis=1, keepdims=True)  # the row's last episode
        restarted = starts.any(axis=1)
        count = jnp.where(restarted, 0, state.fixed["count"])
        rank = jnp.cumsum(last, axis=1) - 1
        slot = jnp.where(last, (count[:, None] + rank) % self.memory, self.memory)  # the scratch slot else
        rows = jnp.broadcast_to(jnp.arange(B)[:, None], (B, T))
        mem = state.fixed["mem"].at[rows, slot].set(phi)
        done = (batch.terminated | batch.truncated)[:, -1]
        count = jnp.where(done, 0, count + jnp.sum(last, axis=1))
        return mem, count, done

    def update(self, state, batch, key):
        return self.step(state, batch, key)[1:]

    def step(self, state, batch, key):
        knn = self._knn_sq(state, batch)
        return self._reward(state, batch, *knn[:2]), *self._update(state, batch, key, *knn)

    def _update(self, state, batch, key, d2k, exists, phi):
        k_rnd, k_train = jax.random.split(key)
        fixed = {**state.fixed, "dist": self._dist_stats(state, d2k, exists, batch)}
        if isinstance(batch, Sequences) and batch.rollout:
            fixed["mem"], fixed["count"], fixed["first"] = self._remember(state, batch, phi)
        metrics = {}
        if self.lifelong:
            err = batch.flat(self.rnd.reward(fixed["rnd"], batch))
            fixed["err"] = fixed["err"].merge_masked(err, batch.flat(batch.mask))
            fixed["rnd"], m = self.rnd.update(fixed["rnd"], batch, k_rnd)
            metrics.update({f"rnd_{k}": v for k, v in m.items()})
        state, m = self._train(state.replace(fixed=fixed), batch, k_train)
        return state, {**metrics, **m}
