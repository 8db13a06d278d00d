"""The ``shaper`` section of every agent's config, and the Shaper it builds.

    rl train ppo --env minigrid:MiniGrid-DoorKey-8x8-v0 shaper.terms=[icm,rnd] shaper.fuse=max \
        shaper.streams.icm.weight=0.01 shaper.streams.rnd.lr=3e-4

``terms`` names the streams added to the env reward; ``streams.<name>`` holds a stream's
options: ``kind`` (a registered term or ``module:Class``; default: the name itself), the
stream options (weight, decay, normalize, symlog, clip) and the term's own keys (its
dataclass fields). A term written in a notebook joins with ``rl.rewards.register`` or by
``module:Class``. Every key is checked: unknown ones fail, naming the valid ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from rl import config as config_lib
from rl.rewards import registry
from rl.rewards.schedules import Decay, Window
from rl.rewards.shaper import Shaper, Stream
from rl.rewards.smoothing import DreamSmooth
from rl.rewards.term import Extrinsic

STREAM_KEYS = ("kind", "weight", "decay", "start", "stop", "normalize", "symlog", "clip")
STREAM_DEFAULTS = {
    "weight": 0.01, "decay": 0.0, "start": 0, "stop": 0, "normalize": "std", "symlog": False, "clip": None,
}  # fmt: skip
EXTRINSIC_DEFAULTS = {**STREAM_DEFAULTS, "weight": 1.0, "normalize": "none"}


@dataclass
class ShaperConfig:
    """The training reward (rl.rewards): the env reward plus the streams named in ``terms``,
    fused. Schedules count env steps, the same under every agent."""

    terms: list[str] = field(
        default_factory=list
    )  # streams added to the env reward (icm, rnd, ngu, e3b, ...)
    streams: dict = field(
        default_factory=dict
    )  # name -> {kind, weight, decay, normalize, symlog, clip, term keys}
    extrinsic: dict = field(default_factory=dict)  # stream options of the env reward
    fuse: Literal["sum", "product", "max", "cycle"] = "sum"  # how intrinsic streams combine (HIRE)
    cycle_every: int = 100_000  # env steps per active intrinsic stream with fuse=cycle
    intrinsic_weight: float = 1.0  # scales the fused intrinsic reward
    intrinsic_decay: float = 0.0  # intrinsic_weight * (1 - intrinsic_decay)^(env steps) (RLeXplore)
    smoothing: Literal["none", "gaussian", "uniform", "ema"] = (
        "none"  # DreamSmooth: train on the smoothed env reward
    )
    smoothing_sigma: float = 3.0  # gaussian
    smoothing_window: int = 9  # uniform
    smoothing_alpha: float = 0.33  # ema
    scalarize: Literal["none", "linear", "chebyshev", "augmented_chebyshev"] = "none"  # vector -> one
    preference: list[float] | None = None  # scalarization weights (None: the batch's extras["preference"])
    utopia: list[float] | None = None  # the Chebyshev reference point z (None: zeros)
    augment: float = 0.01  # augmented_chebyshev's rho
    fit_every: int = 0  # env steps between the fitted terms' fit calls (0: every update batch)

    def validate(self) -> None:
        try:
            from_config(self)
        except config_lib.ConfigError:
            raise
        except (ValueError, TypeError) as e:
            raise config_lib.ConfigError(f"shaper: {e}") from None


def _schedule(weight, decay, start=0, stop=0):
    """A stream's weight: a number, ``decay`` (beta (1 - kappa)^t) or a ``start`` / ``stop``
    window of env steps (the weight inside, 0 outside)."""
    if (start or stop) and decay:
        raise config_lib.ConfigError("a stream takes decay or a start / stop window, not both")
    if start or stop:
        return Window(float(weight), int(start), int(stop))
    return Decay(float(weight), float(decay)) if decay else float(weight)


def _stream(name: str, term, options: dict, defaults: dict) -> Stream:
    opts = {**defaults, **{k: v for k, v in options.items() if k in STREAM_KEYS}}
    return Stream(
        name,
        term,
        weight=_schedule(opts["weight"], opts["decay"], opts["start"], opts["stop"]),
        normalize=str(opts["normalize"]),
        symlog=bool(opts["symlog"]),
        clip=None if opts["clip"] is None else float(opts["clip"]),
    )


def build_term(name: str, options: dict):
    """The term of stream ``name`` from its section: ``kind`` and the term's own keys."""
    kind = str(options.get("kind", name))
    cls = registry.resolve(kind)
    own = {k: v for k, v in options.items() if k not in STREAM_KEYS}
    if dataclasses.is_dataclass(cls):
        return config_lib.apply(cls(), own, prefix=f"shaper.streams.{name}.")
    if own:
        raise config_lib.ConfigError(
            f"shaper.streams.{name}: {kind} is not a dataclass, so it takes no keys; got {sorted(own)}"
        )
    return cls()


def from_config(cfg: ShaperConfig) -> Shaper:
    """The Shaper of a config's ``shaper`` section."""
    for key in cfg.extrinsic:
        if key not in STREAM_KEYS or key == "kind":
            raise config_lib.ConfigError(
                f"unknown config key 'shaper.extrinsic.{key}'; valid keys: "
                + ", ".join(f"shaper.extrinsic.{k}" for k in STREAM_KEYS if k != "kind")
            )
    stray = [n for n in cfg.streams if n not in cfg.terms]
    if stray:
        raise config_lib.ConfigError(
            f"shaper.streams has section(s) {stray} that shaper.terms does not use; terms: {cfg.terms}"
        )
    if len(set(cfg.terms)) != len(cfg.terms) or "extrinsic" in cfg.terms:
        raise config_lib.ConfigError(
            f"shaper.terms must be unique names other than 'extrinsic', got {cfg.terms}"
        )
    env_term = Extrinsic()
    if cfg.smoothing != "none":
        env_term = DreamSmooth(cfg.smoothing, cfg.smoothing_sigma, cfg.smoothing_window, cfg.smoothing_alpha)
    streams = [_stream("extrinsic", env_term, cfg.extrinsic, EXTRINSIC_DEFAULTS)]
    for name in cfg.terms:
        options = cfg.streams.get(name, {})
        if not isinstance(options, dict):
            raise config_lib.ConfigError(
                f"shaper.streams.{name}: expected a mapping of keys, got {options!r}"
            )
        term = build_term(name, options)
        defaults = {**STREAM_DEFAULTS, **getattr(term, "stream_defaults", {})}
        streams.append(_stream(name, term, options, defaults))
    return Shaper(
        tuple(streams),
        cfg.fuse,
        cfg.cycle_every,
        _schedule(cfg.intrinsic_weight, cfg.intrinsic_decay),
        scalarize=cfg.scalarize,
        preference=None if cfg.preference is None else tuple(float(x) for x in cfg.preference),
        utopia=None if cfg.utopia is None else tuple(float(x) for x in cfg.utopia),
        augment=cfg.augment,
        fit_every=cfg.fit_every,
    )
