"""The batch contract: what the replay's samplers and PPO's rollout hand to the Shaper and the
losses (DESIGN.md "The data flow").

Two typed, batch-major pytrees with the same fields:

- ``Transitions`` [B]: independent transitions (a replay sample);
- ``Sequences`` [B, T]: rows of consecutive transitions (replay windows, or PPO's rollout
  swapped once from [T, E] to [E, T]). ``rollout`` (static) says row b continues the previous
  batch's row b (PPO's envs), so a term may carry per-row state across calls (E3B's ellipse,
  RND's running intrinsic return); replay windows start afresh.

Fields: ``obs`` and ``next_obs`` (the transition's successor; for a truncated step its final
observation), ``action``, ``reward`` (the env's, scalar or [k]), ``terminated``, ``truncated``,
``discount`` (1 - terminated: truncation still bootstraps; agents multiply by their gamma),
``mask`` (false on padding: a sample that found no valid start, or window steps past the
episode's end) and ``extras`` (declared replay fields, ``next_<extra>``, rollout values...).

Terms dispatch on the type (``isinstance(batch, Sequences)``), never on ``ndim``, and declare
what they read (``reads``), checked when the Shaper is built (``rl.rewards.Shaper.check``).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated", "discount", "mask")


@flax.struct.dataclass
class _Batch:
    obs: Any
    action: Any
    reward: Any
    next_obs: Any
    terminated: Any
    truncated: Any
    discount: Any
    mask: Any
    extras: dict = flax.struct.field(default_factory=dict)

    axes = 1  # leading batch axes of the type

    @property
    def lead(self) -> tuple[int, ...]:
        """The leading shape: (B,) or (B, T)."""
        return tuple(self.terminated.shape)

    def fields(self) -> frozenset[str]:
        """Every name this batch can be read by: the core fields and the extras."""
        return frozenset(FIELDS) | frozenset(self.extras)

    def get(self, name: str):
        """A core field or an extra by name; a missing one names what the batch holds."""
        if name in FIELDS:
            return getattr(self, name)
        if name not in self.extras:
            raise KeyError(f"the batch has no field '{name}'; it holds: {', '.join(sorted(self.fields()))}")
        return self.extras[name]

    def flat(self, x):
        """``x`` with the batch's leading axes folded into one: [B, ...] or [B * T, ...]."""
        return x.reshape(-1, *x.shape[self.axes :])

    def unflat(self, x):
        """The inverse of :meth:`flat` for per-sample values: [N, ...] -> [*lead, ...]."""
        return x.reshape(*self.lead, *x.shape[1:])

    def with_extras(self, **extras):
        return self.replace(extras={**self.extras, **extras})

    def flatten(self) -> Transitions:
        """Every sample of the batch as ``Transitions`` [N] (N = prod(lead)), extras included:
        what a term's minibatch updates draw from."""
        n = 1
        for d in self.lead:
            n *= d
        fold = lambda x: x.reshape(n, *x.shape[len(self.lead) :])  # noqa: E731
        return Transitions(
            **{k: fold(getattr(self, k)) for k in FIELDS}, extras=jax.tree.map(fold, self.extras)
        )


@flax.struct.dataclass
class Transitions(_Batch):
    """Independent transitions, [B]."""

    axes = 1


@flax.struct.dataclass
class Sequences(_Batch):
    """Rows of consecutive transitions, [B, T]; ``rollout``: rows continue the previous call's."""

    rollout: bool = flax.struct.field(pytree_node=False, default=False)

    axes = 2

    def episode_starts(self) -> jax.Array:
        """[B, T] true where a step begins a new episode inside its row: after a done, and
        after a masked step (a replay chunk's episode-final slot, whose successor is the next
        episode's first observation). The first step of a row is not marked: whether it starts
        an episode is the carry's call."""
        cut = self.terminated | self.truncated | ~self.mask
        return jnp.concatenate([jnp.zeros_like(cut[:, :1]), cut[:, :-1]], axis=1)


def transitions(obs, action, reward, next_obs, terminated, truncated, mask=None, **extras) -> Transitions:
    """A ``Transitions`` from arrays, ``discount`` and ``mask`` filled in."""
    terminated = jnp.asarray(terminated, bool)
    return Transitions(
        obs=obs,
        action=action,
        reward=reward,
        next_obs=next_obs,
        terminated=terminated,
        truncated=jnp.asarray(truncated, bool),
        discount=1.0 - terminated.astype(jnp.float32),
        mask=jnp.ones(terminated.shape, bool) if mask is None else mask,
        extras=extras,
    )


def sequences(
    obs, action, reward, next_obs, terminated, truncated, mask=None, rollout=False, **extras
) -> Sequences:
    """A ``Sequences`` from batch-major [B, T] arrays, ``discount`` and ``mask`` filled in."""
    t = transitions(obs, action, reward, next_obs, terminated, truncated, mask, **extras)
    return Sequences(**{k: getattr(t, k) for k in (*FIELDS, "extras")}, rollout=rollout)


def time_major_to_sequences(rollout: dict, extras: tuple[str, ...] = ()) -> Sequences:
    """A PPO-style rollout of [T, E] arrays as ``Sequences`` [E, T] (``rollout=True``): the one
    swap, before the Shaper."""

    def swap(x):
        return jnp.swapaxes(jnp.asarray(x), 0, 1)

    core = ("obs", "action", "reward", "next_obs", "terminated", "truncated")
    return sequences(*(swap(rollout[k]) for k in core), rollout=True, **{k: swap(rollout[k]) for k in extras})
