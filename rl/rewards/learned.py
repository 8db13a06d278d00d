"""What the learned and embedding-based reward terms share: an observation embedding, the
standardization of its inputs, action inputs, one optimizer step, and k-nearest-neighbour
distances.

Terms see ``Transitions`` [B] or ``Sequences`` [B, T] (``rl.batch``); they fold the leading
axes into one (``batch.flat``), compute, and give back one value per sample (``batch.unflat``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from rl.nets import MLP, MinigridEncoder, encoder_for
from rl.rewards.stats import RunningStats

OBS_NORMS = ("rms", "none")


@dataclass(frozen=True)
class ObsNorm:
    """A reward module's input standardization: RLeXplore's ``obs_rms`` (rllte
    ``BaseReward.normalize`` and ``compute`` in ``rllte/common/prototype/base_reward.py``, the
    ``reward`` branch; RND's section 2.4): ``'rms'`` maps observations to (x - mean) / std by
    running per-dimension statistics, clipped to [-clip, clip], the batch's observations folded
    in before its reward (the term's ``prepare``) and, with the term's ``warmup_steps``, first
    on random-action steps (rllte's ``init_normalization``); ``'none'`` leaves them to the
    embedding, which scales images to [0, 1] (the reference's ``/ 255`` without ``obs_rms``)."""

    kind: str = "none"
    clip: float = 5.0

    def __post_init__(self):
        if self.kind not in OBS_NORMS:
            raise ValueError(f"obs_norm={self.kind!r}; choices: {OBS_NORMS}")

    @property
    def on(self) -> bool:
        return self.kind == "rms"

    def init(self, spec) -> RunningStats:
        return RunningStats.zeros(spec.obs_shape)  # kept (unused) under 'none': one state layout

    def fold(self, stats: RunningStats, obs, mask) -> RunningStats:
        """``obs`` [N, ...] where ``mask`` [N] folded into the statistics."""
        return stats.merge_masked(obs.astype(jnp.float32), mask) if self.on else stats

    def __call__(self, stats: RunningStats, obs):
        if not self.on:
            return obs
        return jnp.clip(stats.normalize(obs.astype(jnp.float32)), -self.clip, self.clip)


class ObsNormed:
    """For a term with ``obs_norm`` and ``obs_clip`` fields (and ``warmup_steps``, which the
    Shaper's warm-up reads): checks them, gives their :class:`ObsNorm`, and folds a batch's
    observations into ``state.fixed['obs_stats']`` before its reward (``prepare``)."""

    def __post_init__(self):
        ObsNorm(self.obs_norm, self.obs_clip)  # a bad choice fails here

    @property
    def _obs(self) -> ObsNorm:
        return ObsNorm(self.obs_norm, self.obs_clip)

    def prepare(self, state, batch):
        """The batch's observations folded into the input statistics before its reward."""
        stats = self._obs.fold(state.fixed["obs_stats"], batch.flat(batch.obs), batch.flat(batch.mask))
        return state.replace(fixed={**state.fixed, "obs_stats": stats})


class Embedding(nn.Module):
    """obs -> features: the shared encoder for the observation (Nature CNN, GridCNN or none)
    followed by an MLP of ``hidden`` and a linear layer of ``features`` units."""

    obs_shape: tuple[int, ...]
    hidden: tuple[int, ...]
    features: int
    scale: bool = True  # images: divide uint8 by 255 (False when the term normalizes them itself)
    torso: str = "default"  # "rlexplore": grids embed as RLeXplore's MinigridEncoder(features)

    @nn.compact
    def __call__(self, obs):
        if self.torso == "rlexplore" and len(self.obs_shape) == 3 and min(self.obs_shape[:2]) < 36:
            # its ReLU features are the embedding; torch's default init, as rllte leaves its modules'
            return MinigridEncoder(self.features, self.scale, weight_init="torch")(obs)
        encoder = encoder_for(self.obs_shape, self.scale, self.torso)
        x = encoder(obs) if encoder is not None else obs.astype(jnp.float32)
        return MLP(self.hidden, self.features, nn.relu)(x)


class InverseDynamics(nn.Module):
    """phi(s), and the inverse model g(phi(s), phi(s')) -> action logits or values."""

    obs_shape: tuple[int, ...]
    hidden: tuple[int, ...]
    features: int
    action_dim: int
    torso: str = "default"
    scale: bool = True  # images / 255 (False when the term standardizes its inputs: ObsNorm)

    def setup(self):
        self.encoder = Embedding(
            self.obs_shape, self.hidden, self.features, scale=self.scale, torso=self.torso
        )
        self.inverse = MLP(self.hidden, self.action_dim, nn.relu)

    def __call__(self, obs, next_obs):
        """(phi(s), phi(s'), the inverse model's prediction of the action)."""
        phi, phi_next = self.encoder(obs), self.encoder(next_obs)
        return phi, phi_next, self.inverse(jnp.concatenate([phi, phi_next], -1))

    def embed(self, obs):
        return self.encoder(obs)


@flax.struct.dataclass
class LearnedState:
    """A term's trained parameters and their optimizer state; ``fixed`` holds what is never
    trained (a random target network, observation statistics). The shapes of the env are
    static fields, so the term can build its networks from the state alone."""

    params: Any
    opt: Any
    fixed: Any = None
    discrete: bool = flax.struct.field(pytree_node=False, default=False)
    action_dim: int = flax.struct.field(pytree_node=False, default=0)  # actions, or Box dimensions


def action_input(state: LearnedState, action):
    """One-hot for discrete actions, flat floats for Box ones."""
    if state.discrete:
        return jax.nn.one_hot(action.reshape(action.shape[0]), state.action_dim)
    return action.reshape(action.shape[0], -1).astype(jnp.float32)


def spec_fields(spec) -> dict:
    return {"discrete": bool(spec.discrete), "action_dim": int(spec.num_actions)}


def masked_mean(x, batch):
    """Mean of per-sample values ``x`` [N] (flat) over the batch's real samples: padding
    (``mask`` false, e.g. window steps past an episode's end) does not train a term."""
    m = batch.flat(batch.mask).astype(jnp.float32)
    return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)


def train_step(state: LearnedState, loss_fn, tx: optax.GradientTransformation):
    """One optimizer step on ``loss_fn(params) -> (loss, metrics)``; metrics gain ``loss``."""
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt = tx.update(grads, state.opt, state.params)
    return state.replace(params=optax.apply_updates(state.params, updates), opt=opt), {
        "loss": loss,
        **metrics,
    }


def minibatch_epochs(state: LearnedState, batch, key, loss_fn, tx, batch_size: int, epochs: int, train=None):
    """Train on ``batch`` as the reference implementations do (RLeXplore, rllte
    ``BaseReward.update``: a shuffled DataLoader over the rollout): ``epochs`` passes over its
    samples in minibatches of ``batch_size``, one optimizer step each. ``loss_fn(params, mb,
    j) -> (loss, metrics)`` sees ``Transitions`` [batch_size] and the step index ``j``; the last
    minibatch is filled with masked repeats, so padding trains nothing. Metrics are averaged.
    ``train(state, loss, tx, j)`` replaces :func:`train_step` (Disagreement's per-member steps)."""
    flat = batch.flatten()
    n = flat.lead[0]
    size = min(batch_size, n)
    per_epoch = -(-n // size)

    def order(k):
        perm = jax.random.permutation(k, n)
        idx = jnp.concatenate([perm, perm[: per_epoch * size - n]])
        valid = jnp.arange(per_epoch * size) < n
        return idx.reshape(per_epoch, size), valid.reshape(per_epoch, size)

    idx, valid = jax.vmap(order)(jax.random.split(key, epochs))
    idx, valid = idx.reshape(-1, size), valid.reshape(-1, size)

    def step(state, x):
        i, v, j = x
        mb = jax.tree.map(lambda a: a[i], flat)
        mb = mb.replace(mask=mb.mask & v)
        if train is not None:
            return train(state, lambda p: loss_fn(p, mb, j), tx, j)
        return train_step(state, lambda p: loss_fn(p, mb, j), tx)

    state, metrics = jax.lax.scan(step, state, (idx, valid, jnp.arange(idx.shape[0])))
    return state, jax.tree.map(jnp.mean, metrics)


def knn_distance(x, k: int):
    """Euclidean distance from each row of ``x`` [N, D] to its k-th nearest other row: one
    [N, N] distance matrix (a matmul) and its k smallest values per row, batched and jitted."""
    if x.shape[0] <= k:
        raise ValueError(f"k-NN with k={k} needs a batch of more than {k} states, got {x.shape[0]}")
    x = x.astype(jnp.float32)
    sq = jnp.sum(x * x, axis=-1)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    d2 = jnp.where(jnp.eye(x.shape[0], dtype=bool), jnp.inf, d2)  # a row is not its own neighbour
    return jnp.sqrt(smallest(d2, k)[:, k - 1])


def smallest(x, k: int):
    """The ``k`` smallest values along the last axis, ascending (``-top_k(-x, k)``), found by
    ``k`` passes of argmin-and-mask: for the small k of k-NN bonuses about 20x faster on
    XLA-CPU than ``lax.top_k`` over a [2048, 2048] distance matrix."""
    cols = jnp.broadcast_to(jnp.arange(x.shape[-1]), x.shape)
    out = []
    for _ in range(k):
        i = jnp.argmin(x, axis=-1)[..., None]
        out.append(jnp.take_along_axis(x, i, axis=-1)[..., 0])
        x = jnp.where(cols == jnp.broadcast_to(i, x.shape), jnp.inf, x)
    return jnp.stack(out, axis=-1)
