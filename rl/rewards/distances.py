"""Distances between reward functions that ignore what does not change the optimal policies:
EPIC (Gleave et al. 2021, "Quantifying Differences in Reward Functions") and STARC (Skalse et
al. 2023, "STARC: A General Framework For Quantifying Differences Between Reward Functions").

A reward is a callable on batched transitions, ``reward(obs [N, ...], action [N, ...],
next_obs [N, ...]) -> [N]`` (a learned term's reward, an env's true reward, a hand-written
function). Both distances canonicalize each reward (eq. 3 of Gleave et al.):

    C(R)(s, a, s') = R(s, a, s') + E[gamma R(s', A, S') - R(s, A, S') - gamma R(S, A, S')]

with S, S' ~ D_S and A ~ D_A independent, estimated from ``mean`` samples (states and actions
of a replay, say); C removes potential shaping gamma Phi(s') - Phi(s) up to a constant. EPIC is
the Pearson distance sqrt((1 - rho) / 2) of the canonical rewards over the coverage samples
(invariant to positive scaling too): 0 for rewards equivalent under shaping and scaling, at most
1. STARC (with this canonicalization and the L2 norm over the coverage samples) is half the L2
distance of the canonical rewards each divided by its norm, in [0, 1].
"""

from __future__ import annotations

import jax.numpy as jnp


def canonicalize(reward, coverage, mean, gamma: float):
    """C(R) [N] on the coverage transitions ``coverage = (obs, action, next_obs)`` [N], the
    expectations over the ``mean = (states, actions)`` [M] samples (D_S and D_A)."""
    obs, action, next_obs = coverage
    S, A = mean
    M = S.shape[0]

    def grid(first):  # R(first_i, A_j, S_j) for every pair (i, j): [N, M]
        rep = lambda x, n: jnp.repeat(x, n, axis=0)  # noqa: E731
        tile = lambda x, n: jnp.tile(x, (n,) + (1,) * (x.ndim - 1))  # noqa: E731
        return reward(rep(first, M), tile(A, first.shape[0]), tile(S, first.shape[0])).reshape(-1, M)

    # S' ~ D_S: the same state samples serve as S and as S' (rolled, so a pair is not (s, s))
    S_next = jnp.roll(S, 1, axis=0)
    base = reward(obs, action, next_obs)
    after = grid(next_obs).mean(1)  # E[R(s', A, S')]
    before = grid(obs).mean(1)  # E[R(s, A, S')]
    const = reward(S, A, S_next).mean()  # E[R(S, A, S')]
    return base + gamma * after - before - gamma * const


def pearson_distance(x, y):
    """sqrt((1 - rho(x, y)) / 2) over the samples."""
    x, y = x - x.mean(), y - y.mean()
    rho = jnp.sum(x * y) / jnp.sqrt(jnp.sum(x * x) * jnp.sum(y * y))
    return jnp.sqrt(jnp.clip(1.0 - rho, 0.0, 2.0) / 2.0)


def epic_distance(reward_a, reward_b, coverage, mean, gamma: float):
    """EPIC between two rewards (Gleave et al. 2021, def. 4.2, sample-based as their sec. 5)."""
    return pearson_distance(
        canonicalize(reward_a, coverage, mean, gamma), canonicalize(reward_b, coverage, mean, gamma)
    )


def starc_distance(reward_a, reward_b, coverage, mean, gamma: float):
    """STARC (Skalse et al. 2023) with EPIC's canonicalization, the L2 norm over the coverage
    samples for normalization and for the metric, halved into [0, 1]; a canonical reward of norm
    0 (a reward equivalent to 0) normalizes to 0."""

    def unit(r):
        c = canonicalize(r, coverage, mean, gamma)
        n = jnp.sqrt(jnp.mean(c * c))
        return jnp.where(n > 0, c / jnp.where(n > 0, n, 1.0), 0.0)

    return 0.5 * jnp.sqrt(jnp.mean((unit(reward_a) - unit(reward_b)) ** 2))
