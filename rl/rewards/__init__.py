"""The reward-shaping core: every agent trains on ``Shaper`` output, computed at sample time
from what the replay (or a PPO rollout) stored. See DESIGN.md "The reward-shaping core".

A term is three pure functions (``init``, ``reward``, ``update``); the Shaper holds named
terms with weights and schedules, normalizes and transforms each stream on its own, and fuses
them. ``from_config`` builds one from a config's ``shaper`` section:

    rl train ppo --env minigrid:MiniGrid-DoorKey-8x8-v0 shaper.terms=[icm,rnd] shaper.fuse=max shaper.icm.weight=0.01
"""

from __future__ import annotations

from rl.rewards.disagreement import Disagreement
from rl.rewards.episodic import E3B, NGU
from rl.rewards.icm import ICM
from rl.rewards.knn import RE3, StateEntropy
from rl.rewards.rnd import RND
from rl.rewards.schedules import Constant, Decay, Linear
from rl.rewards.shaper import FUSIONS, Shaper, ShaperState, Stream
from rl.rewards.stats import RunningStats
from rl.rewards.term import Extrinsic, PotentialShaping, Term

# config name -> term class; its dataclass fields are the term's config keys
TERMS = {
    "icm": ICM,
    "rnd": RND,
    "ngu": NGU,
    "e3b": E3B,
    "disagreement": Disagreement,
    "re3": RE3,
    "state_entropy": StateEntropy,
}
# the stream options a term's config section takes beside the term's own keys
STREAM_KEYS = ("weight", "decay", "normalize", "symlog", "clip")
STREAM_DEFAULTS = {"weight": 0.01, "decay": 0.0, "normalize": "std", "symlog": False, "clip": None}
TERM_DEFAULTS = {"rnd": {"normalize": "return"}}  # RND's paper normalization


def _stream(name: str, term, options: dict, defaults: dict) -> Stream:
    opts = {**defaults, **{k: v for k, v in options.items() if k in STREAM_KEYS}}
    weight, decay = float(opts["weight"]), float(opts["decay"])
    clip = None if opts["clip"] is None else float(opts["clip"])
    return Stream(
        name,
        term,
        weight=Decay(weight, decay) if decay else weight,
        normalize=str(opts["normalize"]),
        symlog=bool(opts["symlog"]),
        clip=clip,
    )


def from_config(cfg) -> Shaper:
    """The Shaper of a config's ``shaper`` section (``rl.config.ShaperConfig``): the env reward
    plus each term named in ``terms``, with the options of its own section."""
    from rl import config as config_lib

    streams = [
        _stream(
            "extrinsic", Extrinsic(), cfg.extrinsic, {**STREAM_DEFAULTS, "weight": 1.0, "normalize": "none"}
        )
    ]
    unknown = [n for n in cfg.terms if n not in TERMS]
    if unknown:
        raise config_lib.ConfigError(f"shaper.terms: unknown term(s) {unknown}; terms: {', '.join(TERMS)}")
    for name in TERMS:  # every section is checked, selected or not: a typo never passes silently
        options = getattr(cfg, name)
        if name not in cfg.terms and not options:
            continue
        own = {k: v for k, v in options.items() if k not in STREAM_KEYS}
        term = config_lib.apply(TERMS[name](), own, prefix=f"shaper.{name}.")
        stream = _stream(name, term, options, {**STREAM_DEFAULTS, **TERM_DEFAULTS.get(name, {})})
        if name in cfg.terms:
            streams.append(stream)
    weight = Decay(cfg.intrinsic_weight, cfg.intrinsic_decay) if cfg.intrinsic_decay else cfg.intrinsic_weight
    return Shaper(tuple(streams), cfg.fuse, cfg.cycle_every, weight)


__all__ = [
    "FUSIONS",
    "ICM",
    "RE3",
    "RND",
    "TERMS",
    "Constant",
    "Decay",
    "Disagreement",
    "E3B",
    "NGU",
    "Extrinsic",
    "Linear",
    "PotentialShaping",
    "RunningStats",
    "Shaper",
    "ShaperState",
    "StateEntropy",
    "Stream",
    "Term",
    "from_config",
]
