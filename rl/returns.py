"""Return computations from per-step (shaped) rewards: pure, time-major functions over one
trajectory ([T] or [T, k]), vmapped over the batch at the call site (as rlax).

The replay returns windows and does no reward arithmetic; agents turn the Shaper's per-step
rewards into n-step returns (SAC), GAE (PPO) or lambda-returns (world models) here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _expand(x, like):
    """``x`` [T] with trailing unit axes to broadcast against ``like`` [T, ...]."""
    return x.reshape(x.shape + (1,) * (like.ndim - x.ndim))


def n_step_return(reward, discount, mask, gamma: float):
    """The n-step return of one window of T transitions, cut at the episode's end.

    ``reward`` [T] (or [T, k]), ``discount`` [T] (1 - terminated), ``mask`` [T] (the steps
    inside the window's episode; a prefix). Returns (G, bootstrap, last): G = sum_{k<m}
    gamma^k r_k over the m masked steps, ``bootstrap`` = gamma^m * discount_{m-1} (0 after a
    termination; truncation bootstraps), and ``last`` = m - 1, the step whose next observation
    the target bootstraps from."""
    m = jnp.maximum(jnp.sum(mask.astype(jnp.int32)), 1)
    k = jnp.arange(reward.shape[0])
    weight = jnp.where(mask, jnp.float32(gamma) ** k.astype(jnp.float32), 0.0)
    g = jnp.sum(_expand(weight, reward) * reward, axis=0)
    last = m - 1
    bootstrap = jnp.float32(gamma) ** m.astype(jnp.float32) * discount[last]
    return g, bootstrap, last


def gae(reward, value, last_value, final_value, terminated, truncated, gamma: float, lam: float):
    """Generalized advantage estimation (Schulman et al. 2016, eq. 16) over one env's [T] steps.

    ``value[t]`` = V(s_t); ``last_value`` = V(s_T) of the observation after the window.
    Where an episode ended at t, the successor is its final observation: V = 0 if
    ``terminated``, ``final_value[t]`` if ``truncated`` (time limit: bootstrap), and the
    advantage recursion restarts. Returns (advantages, returns = advantages + value)."""
    done = terminated | truncated
    next_value = jnp.concatenate([value[1:], last_value[None]], axis=0)
    next_value = jnp.where(done, jnp.where(terminated, 0.0, final_value), next_value)
    delta = reward + gamma * next_value - value

    def back(carry, x):
        d, dn = x
        adv = d + gamma * lam * (1.0 - dn) * carry
        return adv, adv

    _, adv = jax.lax.scan(back, jnp.zeros_like(last_value), (delta, done.astype(jnp.float32)), reverse=True)
    return adv, adv + value


def discounted_returns(reward, carry, gamma: float):
    """Non-episodic discounted returns of one row, ret_t = gamma ret_{t-1} + r_t, from ``carry``
    (RND's RewardForwardFilter: intrinsic returns do not reset at episode ends).
    ``reward`` [T] (or [T, k]). Returns (all [T], last)."""

    def step(ret, x):
        ret = gamma * ret + x
        return ret, ret

    last, rets = jax.lax.scan(step, carry, reward)
    return rets, last
