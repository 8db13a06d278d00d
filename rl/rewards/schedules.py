"""Weight schedules of a reward stream: functions of ``t``, the env-step clock (env steps taken,
the same under every agent).

A stream's weight is a number (constant) or one of these. They are frozen dataclasses, so a
Shaper holding them stays hashable and static under jit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp


@dataclass(frozen=True)
class Constant:
    value: float = 1.0

    def __call__(self, t):
        return jnp.asarray(self.value, jnp.float32)


@dataclass(frozen=True)
class Linear:
    """From ``start`` to ``end`` over ``steps`` env steps, then ``end``."""

    start: float
    end: float
    steps: int

    def __call__(self, t):
        frac = jnp.clip(jnp.asarray(t, jnp.float32) / max(self.steps, 1), 0.0, 1.0)
        return self.start + frac * (self.end - self.start)


@dataclass(frozen=True)
class Decay:
    """``beta * (1 - kappa) ** t``, t in env steps: the intrinsic-reward coefficient of
    RLeXplore (Yuan et al. 2024, "RLeXplore: Accelerating Research in Intrinsically-Motivated
    Reinforcement Learning") and HIRE. Computed as exp(t log(1 - kappa)), exact in float32 for
    the small per-step kappa an env-step clock needs."""

    beta: float
    kappa: float

    def __call__(self, t):
        return self.beta * jnp.exp(jnp.asarray(t, jnp.float32) * math.log1p(-self.kappa))


@dataclass(frozen=True)
class Window:
    """``value`` for ``start <= t < stop`` env steps, 0 outside (``stop`` 0: no end): PEBBLE's
    phases, the state-entropy bonus before its unsupervised steps end, the learned reward after."""

    value: float
    start: int = 0
    stop: int = 0

    def on(self, t):
        t = jnp.asarray(t, jnp.int32)
        return (t >= self.start) & ((t < self.stop) if self.stop else True)

    def __call__(self, t):
        return jnp.where(self.on(t), jnp.float32(self.value), jnp.float32(0.0))


Schedule = Constant | Linear | Decay | Window


def as_schedule(weight) -> Schedule:
    return weight if isinstance(weight, (Constant, Linear, Decay, Window)) else Constant(float(weight))
