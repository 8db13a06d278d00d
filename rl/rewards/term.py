"""The Term interface and the terms every Shaper can start with: the env's own reward and
potential-based shaping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import jax

from rl.batch import Sequences, Transitions

TermState = Any  # a pytree: parameters, optimizer state, running statistics
Batch = Transitions | Sequences


class Term(Protocol):
    """A reward term: pure functions over pytrees, so it jits, vmaps and scans.

    ``batch`` is ``Transitions`` [B] or ``Sequences`` [B, T] (``rl.batch``); ``reward``
    returns one value per sample ([B] or [B, T], or [..., k] for vector rewards). ``reads``
    names the batch fields (core or extras) the term needs; the Shaper checks them against
    what the agent provides before a run starts.

    Optional, detected by attribute:

    - ``prepare(state, batch) -> state``: statistics folded in before the batch's reward
      (RND's observation normalizer, NGU's mean k-NN distance), as the references order it;
    - ``step(state, batch, key) -> (reward, state, metrics)``: ``reward`` and ``update`` in
      one pass, sharing what both compute (E3B's scan, NGU's and RE3's neighbours); the
      Shaper's training call uses it, and it must equal ``reward`` then ``update``;
    - ``fit(state, data, key) -> (state, metrics)``: trains on its own data at its own
      cadence (``fit_every`` env steps), instead of or beside ``update``;
    - ``annotate(episode) -> {field: [L, ...]}`` with ``annotations(spec)`` (the fields'
      shapes) and ``pending(step)`` (their values until the episode ends): a host-side writer
      of extra replay fields at episode end (DreamSmooth);
    - ``frozen() -> assets``: loaded once (model weights), kept out of the term state and of
      checkpoints, passed as a third argument of ``reward`` and ``update``;
    - ``intrinsic`` (fused by the Shaper; default True) and ``per_objective`` (the values
      carry the env reward's objectives, so statistics are kept per objective).
    """

    reads: frozenset[str]

    def init(self, key: jax.Array, spec) -> TermState: ...

    def reward(self, state: TermState, batch: Batch) -> jax.Array: ...

    def update(self, state: TermState, batch: Batch, key: jax.Array) -> tuple[TermState, dict]: ...


class Fixed:
    """Mixin of terms that learn nothing: no state, ``update`` is the identity."""

    def init(self, key, spec):
        return ()

    def update(self, state, batch, key):
        return state, {}


@dataclass(frozen=True)
class Extrinsic(Fixed):
    """The environment's reward as stored: ``batch.get(field)`` (scalar or vector)."""

    field: str = "reward"

    intrinsic = False  # summed by the Shaper, never fused with the intrinsic streams
    per_objective = True

    @property
    def reads(self) -> frozenset[str]:
        return frozenset({self.field})

    def reward(self, state, batch):
        return batch.get(self.field)


@dataclass(frozen=True)
class PotentialShaping(Fixed):
    """Potential-based shaping (Ng, Harada & Russell 1999, theorem 1): F(s, s') = gamma Phi(s')
    - Phi(s) for a user potential ``Phi(obs [N, ...]) -> [N]``; adding F to the reward leaves
    the optimal policies unchanged when gamma is the agent's (``Shaper.bind`` sets it). A
    terminal s' is the absorbing state, with potential 0; a truncated episode continues, so
    Phi(s') counts. ``potential`` must be hashable (a module-level function or a frozen
    dataclass) so the Shaper stays static under jit."""

    potential: Callable
    gamma: float | None = None  # the agent's, set by Shaper.bind

    intrinsic = False
    reads = frozenset({"obs", "next_obs", "terminated"})

    def reward(self, state, batch):
        if self.gamma is None:
            raise ValueError("PotentialShaping.gamma is unset: build the agent with it (Shaper.bind(gamma))")
        phi = batch.unflat(self.potential(batch.flat(batch.obs)))
        phi_next = batch.unflat(self.potential(batch.flat(batch.next_obs)))
        return self.gamma * batch.discount * phi_next - phi
