"""The Shaper: named reward streams, each weighted, normalized and transformed on its own, fused
into the one reward the agent trains on.

    total = sum_{extrinsic-kind s} w_s(t) r~_s  +  w_int(t) * F({w_i(t) r~_i : intrinsic i})

``r~`` is a stream's value after its normalization and transforms and ``t`` is the env-step
clock (env steps taken, the same under every agent). ``F`` is the fusion of HIRE (Yuan et al.,
"Deep Reinforcement Learning with Hybrid Intrinsic Reward Model"): ``sum``, ``product``,
``max`` (elementwise over the intrinsic streams) or ``cycle`` (one intrinsic stream at a time,
switching every ``cycle_every`` env steps). The env reward and potential-based shaping are
extrinsic-kind streams: always summed, never fused.

Vector rewards ([..., k], multi-objective envs) stay vectors: the env reward's statistics are
per objective, a scalar stream is added to every objective, and an optional final
``scalarize`` stage (``linear``, ``chebyshev`` or ``augmented_chebyshev`` over a preference:
``rl.rewards.multiobjective``) makes the total scalar.

Two calls: ``shaper(state, batch, t) -> Rewards`` (pure: the current statistics) and
``shaper.step(state, batch, key, t) -> (state, Rewards, metrics)`` for training, which
computes each term's reward once, folds it into the running statistics *before* normalizing
(as the reference implementations do), then updates the learned terms on the batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import serialization

from rl.batch import Sequences, Transitions
from rl.returns import discounted_returns
from rl.rewards import multiobjective, registry, transforms
from rl.rewards.schedules import Schedule, Window, as_schedule
from rl.rewards.stats import RunningStats
from rl.rewards.term import Extrinsic, Term

FUSIONS = ("sum", "product", "max", "cycle")
SCALARIZATIONS = ("none", *multiobjective.SCALARIZATIONS)


@dataclass(frozen=True)
class Stream:
    """One named term in the Shaper.

    ``weight``: a number or a schedule of env steps (``rl.rewards.schedules``). ``normalize``:
    ``none``, ``std`` (divide by the running std of the values, sign kept), ``meanstd``
    (standardize) or ``return`` (divide by the running std of the discounted return, as RND;
    along the rows of ``Sequences``, carried across calls for PPO's rollouts; on
    ``Transitions``, which have no time order, the std of the values). Then ``symlog`` and
    ``clip`` (to [-clip, clip]) if set. ``intrinsic`` streams are fused; None takes the term's
    ``intrinsic`` attribute (False for the env reward and potential-based shaping), True if
    it has none. ``gamma`` (of ``return``) is the agent's, set by :meth:`Shaper.bind`."""

    name: str
    term: Term
    weight: float | Schedule = 1.0
    normalize: str = "none"
    symlog: bool = False
    clip: float | None = None
    intrinsic: bool | None = None
    gamma: float | None = None

    def __post_init__(self):
        if self.normalize not in transforms.NORMALIZE:
            raise ValueError(
                f"stream '{self.name}': unknown normalize={self.normalize!r}; choices: {transforms.NORMALIZE}"
            )
        object.__setattr__(self, "weight", as_schedule(self.weight))
        if self.intrinsic is None:
            object.__setattr__(self, "intrinsic", bool(getattr(self.term, "intrinsic", True)))

    @property
    def transformed(self) -> bool:
        return self.normalize != "none" or self.symlog or self.clip is not None


@flax.struct.dataclass
class ShaperState:
    terms: dict  # name -> the term's state
    stats: dict  # name -> RunningStats (normalized streams; per objective for vector streams)
    returns: dict  # name -> [num_envs] running discounted return (``return``-normalized streams)
    frozen: dict  # name -> assets of terms with ``frozen()`` (weights): never checkpointed


def _state_dict(s: ShaperState) -> dict:  # checkpoints leave the frozen assets out
    return {k: serialization.to_state_dict(getattr(s, k)) for k in ("terms", "stats", "returns")}


def _from_state_dict(template: ShaperState, d: dict) -> ShaperState:
    for k in ("terms", "stats", "returns"):
        saved, expected = set(d.get(k, {})), set(getattr(template, k))
        if saved != expected:  # flax would drop or invent a term's state without a word
            raise ValueError(
                f"the checkpoint's Shaper {k} are {sorted(saved)} but this Shaper's are "
                f"{sorted(expected)}: it is not the Shaper the run trained with"
            )
    return ShaperState(
        *(serialization.from_state_dict(getattr(template, k), d[k]) for k in ("terms", "stats", "returns")),
        template.frozen,  # loaded afresh by init
    )


serialization.register_serialization_state(ShaperState, _state_dict, _from_state_dict, override=True)


@flax.struct.dataclass
class Rewards:
    """What the Shaper returns: the ``total`` the agent trains on ([...] or [..., k]), each
    stream's ``raw`` per-sample values, their values after normalization and transforms
    (``norm``, streams that have any), the fused intrinsic reward and the weights in force."""

    total: jax.Array
    raw: dict
    norm: dict
    intrinsic: Any
    weights: dict

    def means(self, mask=None) -> dict:
        """Scalars for logging: ``reward/<name>`` (raw), ``reward/<name>_norm``,
        ``reward/intrinsic`` and ``reward/<name>_weight``, means over the (masked) batch."""

        def mean(x):
            if mask is None:
                return jnp.mean(x)
            m = jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x.shape)
            return jnp.sum(jnp.where(m, x, 0.0)) / jnp.maximum(jnp.sum(m), 1)

        out = {f"reward/{k}": mean(v) for k, v in self.raw.items()}
        out.update({f"reward/{k}_norm": mean(v) for k, v in self.norm.items()})
        out.update({f"reward/{k}_weight": w for k, w in self.weights.items()})
        if self.intrinsic is not None:
            out["reward/intrinsic"] = mean(self.intrinsic)
        return out


def _zeros(shapes, *_):
    """Zeros of the shapes and dtypes of ``jax.eval_shape``'s output."""
    return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)


def _start_returns(carry, raw, batch):
    """The returns a ``Sequences`` batch continues: the carried ones for PPO's rollouts, zeros
    for replay windows (each row starts its own)."""
    return carry if batch.rollout else jnp.zeros_like(raw[:, 0])


@dataclass(frozen=True)
class Shaper:
    """The training reward: ``shaper(state, batch, t)`` and ``shaper.step(state, batch, key, t)``.
    The default Shaper is the env reward, unchanged."""

    streams: tuple[Stream, ...] = field(default_factory=lambda: (Stream("extrinsic", Extrinsic()),))
    fuse: str = "sum"
    cycle_every: int = 100_000  # env steps per active intrinsic stream with fuse="cycle"
    intrinsic_weight: float | Schedule = 1.0  # w_int(t): scales the fused intrinsic reward
    scalarize: str = "none"  # vector rewards: linear | chebyshev | augmented_chebyshev
    preference: tuple[float, ...] | None = None  # None: the batch's extras["preference"]
    utopia: tuple[float, ...] | None = None  # chebyshev's reference point z (None: zeros)
    augment: float = 0.01  # augmented_chebyshev's rho
    fit_every: int = 0  # env steps between ``fit`` calls of the fitted terms (0: every update batch)

    def __post_init__(self):
        names = [s.name for s in self.streams]
        if not names:
            raise ValueError("a Shaper needs at least one stream")
        if len(set(names)) != len(names):
            raise ValueError(f"Shaper stream names must be unique, got {names}")
        if self.fuse not in FUSIONS:
            raise ValueError(f"unknown fusion '{self.fuse}'; available: {', '.join(FUSIONS)}")
        if self.scalarize not in SCALARIZATIONS:
            raise ValueError(f"unknown scalarize '{self.scalarize}'; available: {', '.join(SCALARIZATIONS)}")
        if self.cycle_every < 1:
            raise ValueError(f"cycle_every must be >= 1 env step, got {self.cycle_every}")
        if self.preference is not None and (min(self.preference) < 0 or abs(sum(self.preference) - 1) > 1e-6):
            raise ValueError(
                f"a preference lies on the simplex (>= 0, sums to 1); got {list(self.preference)}"
            )
        if (
            self.preference is not None
            and self.utopia is not None
            and len(self.utopia) != len(self.preference)
        ):
            raise ValueError(
                f"utopia {list(self.utopia)} and preference {list(self.preference)} differ in length"
            )
        if self.augment < 0:
            raise ValueError(f"augment (augmented_chebyshev's rho) must be >= 0, got {self.augment}")
        object.__setattr__(self, "intrinsic_weight", as_schedule(self.intrinsic_weight))

    # -- building ------------------------------------------------------------------------

    def bind(self, gamma: float) -> Shaper:
        """This Shaper with the agent's discount in every discount-dependent piece (``return``
        normalization, potential-based shaping), so there is one gamma."""

        def term(t):
            if hasattr(t, "__dataclass_fields__") and "gamma" in t.__dataclass_fields__:
                return replace(t, gamma=float(gamma))
            return t

        return replace(
            self, streams=tuple(replace(s, term=term(s.term), gamma=float(gamma)) for s in self.streams)
        )

    def reads(self) -> dict[str, frozenset[str]]:
        return {s.name: frozenset(getattr(s.term, "reads", frozenset())) for s in self.streams}

    def check(self, provided, who: str) -> None:
        """Fail, naming the stream and the field, if a term reads what ``who`` does not provide."""
        provided = frozenset(provided)
        for s in self.streams:
            missing = sorted(frozenset(getattr(s.term, "reads", frozenset())) - provided)
            if missing:
                needs = getattr(s.term, "provided_by", None)
                raise ValueError(
                    f"reward stream '{s.name}' ({registry.kind_of(s.term)}) reads {missing}, which "
                    f"{who} does not provide"
                    + (f" ({needs})" if needs else "")
                    + f"; it provides: {', '.join(sorted(provided))}"
                )

    def split(self, names) -> tuple[Shaper | None, Shaper | None]:
        """(the Shaper of the streams not in ``names``, the Shaper of those in it), each with
        this one's fusion, intrinsic weight and scalarization, or None where it has no stream.
        For a scalar reward their totals add up to this Shaper's when intrinsic streams sit on
        one side only or ``fuse="sum"`` (checked); the second never scalarizes (its streams are
        scalar bonuses, added to the scalarized first). A world-model agent learns the first in
        its reward head and computes the second on imagined latents."""
        names = frozenset(names)
        sides = tuple(
            tuple(s for s in self.streams if (s.name in names) == inside) for inside in (False, True)
        )
        if self.fuse != "sum" and all(any(s.intrinsic for s in side) for side in sides):
            raise ValueError(
                f"fuse={self.fuse!r} combines intrinsic streams of both sides of a split "
                f"({[s.name for s in self.streams if s.intrinsic]}); only fuse='sum' splits"
            )
        rest = replace(self, streams=sides[0]) if sides[0] else None
        # the bonus side's total is a scalar per step: it is added after the scalarization
        picked = replace(self, streams=sides[1], scalarize="none") if sides[1] else None
        return rest, picked

    def check_scalar(self, reward_shape, who: str) -> None:
        """Fail before a run if ``who`` trains on a scalar reward but the env's is a vector
        that no scalarization stage reduces."""
        if tuple(reward_shape) and self.scalarize == "none":
            raise ValueError(
                f"{who} trains on a scalar reward but the env's reward has shape {tuple(reward_shape)}; "
                "set shaper.scalarize (linear | chebyshev) and shaper.preference"
            )

    def describe(self) -> list[dict]:
        """What identifies this Shaper across processes (checkpoints compare it on resume)."""
        out = []
        for s in self.streams:
            text = re.sub(r" at 0x[0-9a-f]+", "", repr(s.term))
            out.append(
                {
                    "name": s.name,
                    "kind": registry.kind_of(s.term),
                    "term": text,
                    "weight": repr(s.weight),
                    "normalize": s.normalize,
                    "symlog": s.symlog,
                    "clip": s.clip,
                    "intrinsic": s.intrinsic,
                }
            )
        head = {
            "fuse": self.fuse,
            "cycle_every": self.cycle_every,
            "intrinsic_weight": repr(self.intrinsic_weight),
            "scalarize": self.scalarize,
            "preference": self.preference,
            "utopia": self.utopia,
            "augment": self.augment,
            "fit_every": self.fit_every,
        }
        return [head, *out]

    def annotators(self) -> list:
        """The terms that write extra replay fields on the host (``annotate``)."""
        return [s.term for s in self.streams if hasattr(s.term, "annotate")]

    def annotations(self, spec) -> dict:
        """{field: (shape, dtype)} the annotators write: the replay declares them."""
        out = {}
        for term in self.annotators():
            out.update(term.annotations(spec))
        return out

    def warmup_steps(self) -> int:
        """Random-action env steps per env, before training, whose observations the terms with
        ``warmup_steps`` fold in (``prepare``): RND's observation statistics (Burda et al.
        2019: 50 x 128 steps; not counted in the run's env steps, as there)."""
        return max([int(getattr(s.term, "warmup_steps", 0)) for s in self.streams] or [0])

    def warm_up(self, state: ShaperState, batch) -> ShaperState:
        """Fold the warm-up steps' ``batch`` into the terms that asked for it."""
        terms = dict(state.terms)
        for s in self.streams:
            if getattr(s.term, "warmup_steps", 0) > 0 and hasattr(s.term, "prepare"):
                terms[s.name] = s.term.prepare(terms[s.name], batch)
        return state.replace(terms=terms)

    def fitted(self) -> list[Stream]:
        """Streams whose term trains on its own data at the Shaper's cadence (``fit`` every
        ``fit_every`` env steps). Terms fitted only by their feedback sessions
        (``fit_in_sessions``: the preference reward, ``rl.rewards.feedback``) are not."""
        return [
            s
            for s in self.streams
            if hasattr(s.term, "fit") and not getattr(s.term, "fit_in_sessions", False)
        ]

    # -- state ---------------------------------------------------------------------------

    def init(self, key, spec) -> ShaperState:
        keys = jax.random.split(key, len(self.streams))
        terms = {s.name: s.term.init(k, spec) for s, k in zip(self.streams, keys)}
        vector = tuple(getattr(spec, "reward_shape", ()))
        stats = {
            s.name: RunningStats.zeros(vector if getattr(s.term, "per_objective", False) else ())
            for s in self.streams
            if s.normalize != "none"
        }
        num_envs = getattr(spec, "num_envs", 1)
        returns = {
            s.name: jnp.zeros((num_envs, *stats[s.name].mean.shape), jnp.float32)
            for s in self.streams
            if s.normalize == "return"
        }
        frozen = {s.name: s.term.frozen() for s in self.streams if hasattr(s.term, "frozen")}
        return ShaperState(terms, stats, returns, frozen)

    # -- rewards -------------------------------------------------------------------------

    def _raw(self, s: Stream, state: ShaperState, batch):
        if s.name in state.frozen:
            return s.term.reward(state.terms[s.name], batch, state.frozen[s.name])
        return s.term.reward(state.terms[s.name], batch)

    @staticmethod
    def _live(s: Stream, t):
        """Whether a windowed stream is on at ``t``; None for the streams always computed. A
        stream weighted by a ``Window`` is not computed outside it, where its weight is exactly
        0 (PEBBLE's k-NN state entropy after its unsupervised phase, the learned reward before
        its first session): its raw value reads 0 there and its statistics stand still."""
        return s.weight.on(t) if isinstance(s.weight, Window) and jnp.ndim(t) == 0 else None

    @staticmethod
    def _gated(live, fn, off, *args):
        """``fn(*args)`` where ``live`` (one branch runs: ``lax.cond``), else ``off(out, *args)``
        given ``fn``'s output shapes."""
        if live is None:
            return fn(*args)
        shapes = jax.eval_shape(fn, *args)
        return jax.lax.cond(live, fn, lambda *a: off(shapes, *a), *args)

    def _stat_values(self, s: Stream, state: ShaperState, raw, batch):
        """What a stream's running statistics see: the values, or their discounted returns
        along the rows of a ``Sequences`` (``return``); and the carried returns after."""
        if s.normalize == "return" and isinstance(batch, Sequences):
            carry = _start_returns(state.returns[s.name], raw, batch)
            rets, last = jax.vmap(discounted_returns, in_axes=(0, 0, None))(raw, carry, s.gamma)
            return rets, last if batch.rollout else state.returns[s.name]
        return raw, state.returns.get(s.name)

    def _transform(self, s: Stream, stats, r):
        r = transforms.normalize(s.normalize, stats, r)
        if s.symlog:
            r = transforms.symlog(r)
        if s.clip is not None:
            r = jnp.clip(r, -s.clip, s.clip)
        return r

    def _fuse(self, values: list, t):
        stacked = jnp.stack(values)
        if self.fuse == "sum":
            return stacked.sum(0)
        if self.fuse == "product":
            return stacked.prod(0)
        if self.fuse == "max":
            return stacked.max(0)
        active = (jnp.asarray(t, jnp.int32) // self.cycle_every) % len(values)  # cycle
        return stacked[active]

    def _combine(self, raw: dict, stats: dict, batch, t) -> Rewards:
        lead = batch.lead
        vector = batch.reward.shape[len(lead) :]

        def widen(x):  # a scalar stream counts in every objective of a vector reward
            return x.reshape(*x.shape, *(1,) * len(vector)) if vector and x.ndim == len(lead) else x

        total, intrinsic, norm, weights = jnp.zeros(lead + vector, jnp.float32), [], {}, {}
        for s in self.streams:
            r = raw[s.name]
            if s.transformed:
                r = norm[s.name] = self._transform(s, stats.get(s.name), r)
            w = weights[s.name] = s.weight(t)
            if s.intrinsic:
                intrinsic.append(widen(w * r))
            else:
                total = total + widen(w * r)
        fused = None
        if intrinsic:
            fused = self.intrinsic_weight(t) * self._fuse(intrinsic, t)
            total = total + fused
        if self.scalarize != "none":
            total = self._scalarize(total, batch, vector)
        return Rewards(total, raw, norm, fused, weights)

    def _scalarize(self, total, batch, vector):
        if not vector:
            raise ValueError(f"scalarize={self.scalarize!r} needs a vector reward; this one is scalar")
        pref = (
            jnp.asarray(self.preference, jnp.float32)
            if self.preference is not None
            else batch.get("preference").astype(jnp.float32)
        )
        pref = jnp.broadcast_to(pref, total.shape)  # one preference for all, or one per sample
        return multiobjective.scalarize(self.scalarize, total, pref, self.utopia, self.augment)

    def __call__(self, state: ShaperState, batch: Transitions | Sequences, t) -> Rewards:
        """The rewards of ``batch`` at env step ``t`` under the current statistics (pure)."""
        raw = {
            s.name: self._gated(
                self._live(s, t), lambda st, b, s=s: self._raw(s, st, b), _zeros, state, batch
            )
            for s in self.streams
        }
        return self._combine(raw, state.stats, batch, t)

    def step(self, state: ShaperState, batch, key, t) -> tuple[ShaperState, Rewards, dict]:
        """Training: the terms' ``prepare`` (statistics they fold in first), each term's reward
        once, folded into its running statistics before it is normalized, then the learned
        terms' ``update`` on ``batch``. Masked samples (padding)
        are left out of the statistics."""
        prepared = {  # statistics a term folds in before its reward (``prepare``: RND's observations)
            s.name: s.term.prepare(state.terms[s.name], batch)
            for s in self.streams
            if hasattr(s.term, "prepare")
        }
        state = state.replace(terms={**state.terms, **prepared})
        keys = dict(zip((s.name for s in self.streams), jax.random.split(key, len(self.streams))))
        raw, stepped, metrics = {}, {}, {}
        for s in self.streams:  # ``step``: a term's reward and update sharing one pass (embeddings, k-NN)
            live = self._live(s, t)
            if hasattr(s.term, "step") and s.name not in state.frozen:

                def off(shapes, ts, b, k):  # outside its window: the term's state unchanged
                    return _zeros(shapes[0]), ts, _zeros(shapes[2])

                raw[s.name], stepped[s.name], m = self._gated(
                    live, s.term.step, off, state.terms[s.name], batch, keys[s.name]
                )
                metrics.update({f"reward/{s.name}/{name}": v for name, v in m.items()})
            else:
                raw[s.name] = self._gated(live, lambda st, b, s=s: self._raw(s, st, b), _zeros, state, batch)
        stats, returns = dict(state.stats), dict(state.returns)
        mask = batch.mask
        for s in self.streams:
            if s.normalize == "none":
                continue
            values, carried = self._stat_values(s, state, raw[s.name], batch)
            if carried is not None:
                returns[s.name] = carried
            live = self._live(s, t)
            seen = mask if live is None else mask & live  # a stream outside its window adds nothing
            stats[s.name] = stats[s.name].merge_masked(values, seen)
        rewards = self._combine(raw, stats, batch, t)
        terms = {**state.terms, **stepped}
        for s in self.streams:
            k = keys[s.name]
            if s.name in stepped:
                continue
            if s.name in state.frozen:
                terms[s.name], m = s.term.update(state.terms[s.name], batch, k, state.frozen[s.name])
            else:
                terms[s.name], m = s.term.update(state.terms[s.name], batch, k)
            metrics.update({f"reward/{s.name}/{name}": v for name, v in m.items()})
        return ShaperState(terms, stats, returns, state.frozen), rewards, metrics

    def fit_due(self, t_before, t_after):
        """Whether ``fit`` is due between env steps ``t_before`` and ``t_after`` (traced or not)."""
        if self.fit_every <= 0:
            return t_after > t_before
        return (t_after // self.fit_every) > (t_before // self.fit_every)

    def fit(self, state: ShaperState, data, key) -> tuple[ShaperState, dict]:
        """Train the terms that have ``fit`` on ``data`` (their own data, at their cadence)."""
        terms, metrics = dict(state.terms), {}
        for s, k in zip(self.fitted(), jax.random.split(key, max(len(self.fitted()), 1))):
            terms[s.name], m = s.term.fit(state.terms[s.name], data, k)
            metrics.update({f"reward/{s.name}/{name}": v for name, v in m.items()})
        return state.replace(terms=terms), metrics
