"""The Term interface and the one term every Shaper starts with: the env's own reward."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import jax
import jax.numpy as jnp

TermState = Any  # a pytree: parameters, optimizer state, running statistics


class Term(Protocol):
    """A reward term: pure functions over pytrees, so it jits, vmaps and scans.

    ``batch`` is a dict as the replay samples it (``obs``, ``action``, ``reward`` (the env's),
    ``next_obs``, ``terminated``, ``truncated``, extras ...) with leading axes [B] or [B, T];
    ``reward`` returns one value per leading index (or [..., k] for vector rewards).
    """

    def init(self, key: jax.Array, spec) -> TermState: ...

    def reward(self, state: TermState, batch: dict) -> jax.Array: ...

    def update(self, state: TermState, batch: dict, key: jax.Array) -> tuple[TermState, dict]: ...


@dataclass(frozen=True)
class Extrinsic:
    """The environment's reward as stored: ``batch[field]`` (scalar or vector). Fixed.
    ``field="smoothed_reward"`` reads DreamSmooth's smoothed copy (``rl.rewards.smoothing``)."""

    field: str = "reward"

    intrinsic = False  # summed by the Shaper, never fused with the intrinsic streams

    def init(self, key, spec):
        return ()

    def reward(self, state, batch):
        return batch[self.field]

    def update(self, state, batch, key):
        return state, {}


@dataclass(frozen=True)
class PotentialShaping:
    """Potential-based shaping (Ng, Harada & Russell 1999, theorem 1): F(s, s') = gamma Phi(s')
    - Phi(s) for a user potential ``Phi(obs [N, ...]) -> [N]``; adding F to the reward leaves
    the optimal policies unchanged. A terminal s' is the absorbing state, with potential 0;
    a truncated episode continues, so Phi(s') counts. ``potential`` must be hashable (a
    module-level function or a frozen dataclass) so the Shaper stays static under jit."""

    potential: Callable
    gamma: float = 0.99

    intrinsic = False

    def init(self, key, spec):
        return ()

    def reward(self, state, batch):
        lead = batch["terminated"].shape
        phi = self.potential(batch["obs"].reshape(-1, *batch["obs"].shape[len(lead) :])).reshape(lead)
        phi_next = self.potential(batch["next_obs"].reshape(-1, *batch["next_obs"].shape[len(lead) :]))
        alive = 1.0 - batch["terminated"].astype(jnp.float32)
        return self.gamma * alive * phi_next.reshape(lead) - phi

    def update(self, state, batch, key):
        return state, {}
