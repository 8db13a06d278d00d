"""The Shaper: named reward streams, each optionally normalized, fused into one training reward."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rl.rewards.term import Extrinsic, Term


class RunningStats(NamedTuple):
    """Running mean and variance over every value seen (Chan et al. 1979 parallel merge).

    Works on device arrays (inside jit) and on host numpy arrays (``host()``: float64, for a
    per-step loop on the host, where each jax.numpy call would cost a dispatch)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def zeros(cls, shape=()) -> RunningStats:
        return cls(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32), jnp.float32(1e-4))

    def host(self) -> RunningStats:
        return RunningStats(*(np.asarray(a, np.float64) for a in jax.device_get(self)))

    def merge(self, x, axes) -> RunningStats:
        """Fold the values of ``x`` reduced over ``axes`` into the statistics."""
        xp = np if isinstance(self.mean, np.ndarray) and isinstance(x, np.ndarray) else jnp
        n = 1
        for a in axes:
            n = n * x.shape[a]
        b_mean, b_var = xp.mean(x, axis=axes), xp.var(x, axis=axes)
        total = self.count + n
        delta = b_mean - self.mean
        mean = self.mean + delta * n / total
        m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / total
        return RunningStats(mean, m2 / total, total)

    def normalize(self, x, eps: float = 1e-8):
        return (x - self.mean) / (self.var + eps) ** 0.5


@dataclass(frozen=True)
class Stream:
    """One named term in the Shaper: its weight, decayed as ``weight * (1 - decay) ** updates``
    (the beta * (1 - kappa)^t schedule of intrinsic-reward papers), and whether its values are
    normalized by running mean/std before fusing."""

    name: str
    term: Term
    weight: float = 1.0
    decay: float = 0.0
    normalize: bool = False


class ShaperState(NamedTuple):
    terms: dict  # name -> the term's state
    stats: dict  # name -> RunningStats of its raw values (normalized streams only)
    updates: jax.Array  # update() calls so far: drives the weight schedules


@dataclass(frozen=True)
class Shaper:
    """``reward(state, batch) -> (reward, info)`` and ``update(state, batch, key)``.

    ``info`` holds every stream's mean raw value (``reward/<name>``) and, for normalized
    streams, the mean normalized value (``reward/<name>_norm``): the standard metric names.
    The default Shaper is the env reward alone, unchanged.
    """

    streams: tuple[Stream, ...] = field(default_factory=lambda: (Stream("extrinsic", Extrinsic()),))
    fuse: str = "sum"

    def __post_init__(self):
        names = [s.name for s in self.streams]
        if not names:
            raise ValueError("a Shaper needs at least one stream")
        if len(set(names)) != len(names):
            raise ValueError(f"Shaper stream names must be unique, got {names}")
        if self.fuse != "sum":
            raise ValueError(f"unknown fusion '{self.fuse}'; available: sum")

    def init(self, key, spec) -> ShaperState:
        keys = jax.random.split(key, len(self.streams))
        terms = {s.name: s.term.init(k, spec) for s, k in zip(self.streams, keys)}
        stats = {s.name: RunningStats.zeros() for s in self.streams if s.normalize}
        return ShaperState(terms, stats, jnp.int32(0))

    def weight(self, stream: Stream, state: ShaperState):
        return stream.weight * (1.0 - stream.decay) ** state.updates.astype(jnp.float32)

    def reward(self, state: ShaperState, batch: dict) -> tuple[jax.Array, dict[str, Any]]:
        total, info = 0.0, {}
        for s in self.streams:
            r = s.term.reward(state.terms[s.name], batch)
            info[f"reward/{s.name}"] = jnp.mean(r)
            if s.normalize:
                r = state.stats[s.name].normalize(r)
                info[f"reward/{s.name}_norm"] = jnp.mean(r)
            total = total + self.weight(s, state) * r
        return total, info

    def update(self, state: ShaperState, batch: dict, key) -> tuple[ShaperState, dict]:
        """Train the learned terms on ``batch`` and fold its raw values into the running stats."""
        terms, stats, metrics = dict(state.terms), dict(state.stats), {}
        keys = jax.random.split(key, len(self.streams))
        for s, k in zip(self.streams, keys):
            if s.normalize:
                r = s.term.reward(state.terms[s.name], batch)
                stats[s.name] = stats[s.name].merge(r, tuple(range(r.ndim)))
            terms[s.name], m = s.term.update(state.terms[s.name], batch, k)
            metrics.update({f"reward/{s.name}/{key}": v for key, v in m.items()})
        return ShaperState(terms, stats, state.updates + 1), metrics
