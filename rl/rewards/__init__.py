"""The reward-shaping core: every agent trains on ``Shaper`` output, computed at sample time
from what the replay (or a PPO rollout) stored. See DESIGN.md "The reward-shaping core".

A term is pure functions (``init``, ``reward``, ``update``; optionally ``fit``, ``annotate``,
``frozen``) over the batch contract of ``rl.batch``; the Shaper holds named terms with
weights and schedules of env steps, normalizes and transforms each stream on its own, fuses
them and returns a ``Rewards``. ``from_config`` builds one from a config's ``shaper`` section:

    rl train ppo --env minigrid:MiniGrid-DoorKey-8x8-v0 shaper.terms=[icm,rnd] shaper.fuse=max \
        shaper.streams.icm.weight=0.01
"""

from __future__ import annotations

from rl.rewards.config import ShaperConfig, from_config
from rl.rewards.disagreement import Disagreement
from rl.rewards.episodic import E3B, NGU
from rl.rewards.icm import ICM
from rl.rewards.knn import RE3, StateEntropy
from rl.rewards.latent import LatentDisagreement
from rl.rewards.preference import PreferenceReward, Teacher
from rl.rewards.registry import TERMS, kind_of, register, resolve
from rl.rewards.rnd import RND
from rl.rewards.schedules import Constant, Decay, Linear, Window
from rl.rewards.shaper import FUSIONS, Rewards, Shaper, ShaperState, Stream
from rl.rewards.smoothing import DreamSmooth
from rl.rewards.stats import RunningStats
from rl.rewards.term import Extrinsic, Fixed, PotentialShaping, Term

for _name, _cls in {
    "extrinsic": Extrinsic,
    "dreamsmooth": DreamSmooth,
    "icm": ICM,
    "rnd": RND,
    "ngu": NGU,
    "e3b": E3B,
    "disagreement": Disagreement,
    "plan2explore": LatentDisagreement,
    "preference": PreferenceReward,
    "re3": RE3,
    "state_entropy": StateEntropy,
}.items():
    register(_name, _cls)

__all__ = [
    "FUSIONS",
    "ICM",
    "RE3",
    "RND",
    "TERMS",
    "Constant",
    "Decay",
    "Disagreement",
    "DreamSmooth",
    "E3B",
    "NGU",
    "Extrinsic",
    "Fixed",
    "LatentDisagreement",
    "Linear",
    "PotentialShaping",
    "PreferenceReward",
    "Rewards",
    "RunningStats",
    "Shaper",
    "ShaperConfig",
    "ShaperState",
    "StateEntropy",
    "Stream",
    "Teacher",
    "Term",
    "Window",
    "from_config",
    "kind_of",
    "register",
    "resolve",
]
