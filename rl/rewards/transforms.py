"""Reward transforms a stream applies before fusion: running normalization, symlog, clipping."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rl.rewards.stats import RunningStats

NORMALIZE = ("none", "std", "meanstd", "return")


def symlog(x):
    """sign(x) log(1 + |x|) (Hafner et al. 2023, DreamerV3 eq. 1)."""
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def normalize(mode: str, stats: RunningStats, r, eps: float = 1e-8):
    """``r`` under a stream's normalization: ``std`` divides by the running std of the values,
    ``meanstd`` also subtracts their mean, ``return`` divides by the running std of the
    stream's discounted return (RND, Burda et al. 2019, section 2.4); ``none`` passes."""
    if mode == "none":
        return r
    if mode == "meanstd":
        return stats.normalize(r, eps)
    return r / jnp.sqrt(stats.var + eps)


def discounted_returns(r, carry, gamma: float):
    """Non-episodic discounted returns along axis 0 of ``r`` [T, E] from ``carry`` [E] (RND's
    RewardForwardFilter: intrinsic returns do not reset at episode ends). Returns (all, last)."""

    def step(ret, x):
        ret = gamma * ret + x
        return ret, ret

    last, rets = jax.lax.scan(step, carry, r)
    return rets, last
