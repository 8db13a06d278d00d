"""The Shaper: named reward streams, each weighted, normalized and transformed on its own, fused
into the one reward the agent trains on.

    total = sum_{extrinsic-kind streams} w_s(t) r~_s  +  w_int(t) * F({w_i(t) r~_i : intrinsic i})

where ``r~`` is a stream's value after its normalization and transforms, ``t`` counts
``update`` calls, and ``F`` is the fusion of HIRE (Yuan et al., "Deep Reinforcement Learning
with Hybrid Intrinsic Reward Model"): ``sum``, ``product``, ``max`` (elementwise over the
intrinsic streams) or ``cycle`` (one intrinsic stream at a time, switching every
``cycle_every`` updates). The env reward (``Extrinsic``) and potential-based shaping are
extrinsic-kind streams: always summed, never fused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rl.rewards import transforms
from rl.rewards.schedules import Schedule, as_schedule
from rl.rewards.stats import RunningStats
from rl.rewards.term import Extrinsic, Term

FUSIONS = ("sum", "product", "max", "cycle")


@dataclass(frozen=True)
class Stream:
    """One named term in the Shaper.

    ``weight``: a number or a schedule (``rl.rewards.schedules``). ``normalize``: ``none``,
    ``std`` (divide by the running std of the values, sign kept), ``meanstd`` (standardize) or
    ``return`` (divide by the running std of the discounted return, as RND; needs [T, E]
    rollouts; on replay batches, which have no time order, the std of the values). Then
    ``symlog`` and ``clip`` (to [-clip, clip]) if set. ``intrinsic`` streams are fused; None
    takes the term's ``intrinsic`` attribute (False for the env reward and potential-based
    shaping), True if it has none."""

    name: str
    term: Term
    weight: float | Schedule = 1.0
    normalize: str = "none"
    symlog: bool = False
    clip: float | None = None
    intrinsic: bool | None = None
    gamma: float = 0.99  # discount of the ``return`` normalization

    def __post_init__(self):
        if self.normalize not in transforms.NORMALIZE:
            raise ValueError(
                f"stream '{self.name}': unknown normalize={self.normalize!r}; choices: {transforms.NORMALIZE}"
            )
        object.__setattr__(self, "weight", as_schedule(self.weight))
        if self.intrinsic is None:
            object.__setattr__(self, "intrinsic", bool(getattr(self.term, "intrinsic", True)))


class ShaperState(NamedTuple):
    terms: dict  # name -> the term's state
    stats: dict  # name -> RunningStats (normalized streams only)
    returns: dict  # name -> [E] running discounted return (``return``-normalized streams only)
    updates: jax.Array  # update() calls so far: drives the schedules and the cycle


@dataclass(frozen=True)
class Shaper:
    """``reward(state, batch) -> (reward, info)`` and ``update(state, batch, key)``.

    ``info`` holds each stream's mean raw value (``reward/<name>``), its mean after
    normalization and transforms (``reward/<name>_norm``, where it has any) and the fused
    intrinsic reward (``reward/intrinsic``). The default Shaper is the env reward, unchanged.
    """

    streams: tuple[Stream, ...] = field(default_factory=lambda: (Stream("extrinsic", Extrinsic()),))
    fuse: str = "sum"
    cycle_every: int = 1000  # updates per active intrinsic stream with fuse="cycle"
    intrinsic_weight: float | Schedule = 1.0  # w_int(t): scales the fused intrinsic reward

    def __post_init__(self):
        names = [s.name for s in self.streams]
        if not names:
            raise ValueError("a Shaper needs at least one stream")
        if len(set(names)) != len(names):
            raise ValueError(f"Shaper stream names must be unique, got {names}")
        if self.fuse not in FUSIONS:
            raise ValueError(f"unknown fusion '{self.fuse}'; available: {', '.join(FUSIONS)}")
        if self.cycle_every < 1:
            raise ValueError(f"cycle_every must be >= 1, got {self.cycle_every}")
        object.__setattr__(self, "intrinsic_weight", as_schedule(self.intrinsic_weight))

    def init(self, key, spec) -> ShaperState:
        keys = jax.random.split(key, len(self.streams))
        terms = {s.name: s.term.init(k, spec) for s, k in zip(self.streams, keys)}
        stats = {s.name: RunningStats.zeros() for s in self.streams if s.normalize != "none"}
        num_envs = getattr(spec, "num_envs", 1)
        returns = {s.name: jnp.zeros(num_envs, jnp.float32) for s in self.streams if s.normalize == "return"}
        return ShaperState(terms, stats, returns, jnp.int32(0))

    def weight(self, stream: Stream, state: ShaperState):
        return stream.weight(state.updates)

    def _transform(self, s: Stream, state: ShaperState, r):
        r = transforms.normalize(s.normalize, state.stats.get(s.name), r)
        if s.symlog:
            r = transforms.symlog(r)
        if s.clip is not None:
            r = jnp.clip(r, -s.clip, s.clip)
        return r

    def _fuse(self, values: list, state: ShaperState):
        stacked = jnp.stack(values)
        if self.fuse == "sum":
            return stacked.sum(0)
        if self.fuse == "product":
            return stacked.prod(0)
        if self.fuse == "max":
            return stacked.max(0)
        active = (state.updates // self.cycle_every) % len(values)  # cycle
        return stacked[active]

    def reward(self, state: ShaperState, batch: dict) -> tuple[jax.Array, dict[str, Any]]:
        total, intrinsic, info = 0.0, [], {}
        for s in self.streams:
            raw = s.term.reward(state.terms[s.name], batch)
            info[f"reward/{s.name}"] = jnp.mean(raw)
            r = self._transform(s, state, raw)
            if r is not raw:
                info[f"reward/{s.name}_norm"] = jnp.mean(r)
            r = self.weight(s, state) * r
            if s.intrinsic:
                intrinsic.append(r)
            else:
                total = total + r
        if intrinsic:
            fused = self.intrinsic_weight(state.updates) * self._fuse(intrinsic, state)
            info["reward/intrinsic"] = jnp.mean(fused)
            total = total + fused
        return total, info

    def update(self, state: ShaperState, batch: dict, key) -> tuple[ShaperState, dict]:
        """Train the learned terms on ``batch`` and fold its raw values into the running stats."""
        terms, stats, returns, metrics = dict(state.terms), dict(state.stats), dict(state.returns), {}
        keys = jax.random.split(key, len(self.streams))
        for s, k in zip(self.streams, keys):
            if s.normalize != "none":
                r = s.term.reward(state.terms[s.name], batch)
                if s.normalize == "return" and r.ndim == 2:  # a [T, E] rollout: time-ordered
                    r, returns[s.name] = transforms.discounted_returns(r, returns[s.name], s.gamma)
                stats[s.name] = stats[s.name].merge(r, tuple(range(r.ndim)))
            terms[s.name], m = s.term.update(state.terms[s.name], batch, k)
            metrics.update({f"reward/{s.name}/{key}": v for key, v in m.items()})
        return ShaperState(terms, stats, returns, state.updates + 1), metrics
