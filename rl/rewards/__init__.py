"""The reward-shaping core: every agent trains on ``Shaper`` output, computed at sample time
from what the replay (or a PPO rollout) stored. See DESIGN.md "The reward-shaping core".

A term is three pure functions (``init``, ``reward``, ``update``); the Shaper holds named
terms with weights, normalizes the streams that ask for it, and fuses them.
"""

from rl.rewards.shaper import RunningStats, Shaper, ShaperState, Stream
from rl.rewards.term import Extrinsic, Term

__all__ = ["Extrinsic", "RunningStats", "Shaper", "ShaperState", "Stream", "Term"]
