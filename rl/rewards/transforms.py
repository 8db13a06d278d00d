"""Reward transforms a stream applies before fusion: running normalization, symlog, clipping."""

from __future__ import annotations

from rl.nets import symlog  # noqa: F401  (a stream transform; defined once, with the networks)
from rl.rewards.stats import RunningStats

NORMALIZE = ("none", "std", "meanstd", "return")


def normalize(mode: str, stats: RunningStats, r, eps: float = 1e-8):
    """``r`` under a stream's normalization: ``std`` divides by the running std of the values,
    ``meanstd`` also subtracts their mean, ``return`` divides by the running std of the
    stream's discounted return (RND, Burda et al. 2019, section 2.4); ``none`` passes."""
    if mode == "none":
        return r
    if mode == "meanstd":
        return stats.normalize(r, eps)
    return stats.scale(r, eps)
