"""The Term interface and the one term every Shaper starts with: the env's own reward."""

from __future__ import annotations

from typing import Any, Protocol

import jax

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


class Extrinsic:
    """The environment's reward as stored: ``batch["reward"]`` (scalar or vector). Fixed."""

    def init(self, key, spec):
        return ()

    def reward(self, state, batch):
        return batch["reward"]

    def update(self, state, batch, key):
        return state, {}
