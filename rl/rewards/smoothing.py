"""DreamSmooth reward smoothing (Lee, Abbeel & Lee 2024, "DreamSmooth: Improving Model-based
Reinforcement Learning via Reward Smoothing", section 4).

A sparse or delayed reward is hard for a world model's reward head to predict at the exact
step; DreamSmooth trains it on a temporally smoothed reward instead, which keeps (almost) the
same return. Smoothing runs once per episode, when it ends, on the episode's reward sequence:

- ``gaussian``: Gaussian kernel (sigma 3), edges extended with the end values (``nearest``);
- ``uniform``: moving average over a window (9), edges likewise;
- ``ema``: causal exponential moving average, r~_t = alpha r_t + (1 - alpha) r~_{t-1}, r~_{-1} = 0
  (alpha 0.33): the only one that does not move reward earlier in time.

Host numpy on one episode [L] or [L, k]: episodes are short, and their lengths vary. The
``DreamSmooth`` term is an annotator (``rl.rewards.annotate``): it writes the smoothed copy
into the replay field ``smoothed_reward`` when each episode ends (SAC; PPO smooths each
episode segment of its rollout), for every agent alike; the raw reward stays, and the term's
reward is that field (``shaper.smoothing=gaussian`` makes it the env-reward stream).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rl.rewards.term import Fixed

SMOOTHERS = ("gaussian", "uniform", "ema")


def _convolve_nearest(r: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """out[t] = sum_i kernel[i] r[t - len // 2 + i] along axis 0, with the ends extended by
    their values (an even kernel reaches one step further into the past, as scipy's)."""
    before, after = len(kernel) // 2, (len(kernel) - 1) // 2
    padded = np.concatenate([np.repeat(r[:1], before, 0), r, np.repeat(r[-1:], after, 0)])
    out = np.zeros_like(r, dtype=np.float64)
    for i, w in enumerate(kernel):
        out += w * padded[i : i + len(r)]
    return out


def gaussian(r, sigma: float = 3.0, truncate: float = 4.0) -> np.ndarray:
    """Gaussian smoothing along axis 0 (as scipy.ndimage.gaussian_filter1d, mode='nearest')."""
    r = np.asarray(r, np.float64)
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return _convolve_nearest(r, kernel / kernel.sum())


def uniform(r, size: int = 9) -> np.ndarray:
    """Moving average over ``size`` steps along axis 0 (scipy.ndimage.uniform_filter1d,
    mode='nearest')."""
    return _convolve_nearest(np.asarray(r, np.float64), np.full(size, 1.0 / size))


def ema(r, alpha: float = 0.33) -> np.ndarray:
    r = np.asarray(r, np.float64)
    out, acc = np.zeros_like(r), np.zeros_like(r[0])
    for t in range(len(r)):
        acc = alpha * r[t] + (1.0 - alpha) * acc
        out[t] = acc
    return out


def smooth(r, mode: str, **kwargs) -> np.ndarray:
    """One episode's rewards smoothed by ``mode`` (gaussian, uniform or ema), as float32."""
    fns = {"gaussian": gaussian, "uniform": uniform, "ema": ema}
    if mode not in fns:
        raise ValueError(f"unknown smoothing '{mode}'; choices: {', '.join(SMOOTHERS)}")
    if len(r) == 0:
        return np.zeros_like(np.asarray(r, np.float32))
    return fns[mode](r, **kwargs).astype(np.float32)


@dataclass(frozen=True)
class DreamSmooth(Fixed):
    """The env reward smoothed within each episode: reads the replay field ``field`` that its
    ``annotate`` writes at episode end (until then the field holds the raw reward)."""

    mode: str = "gaussian"  # gaussian | uniform | ema
    sigma: float = 3.0  # gaussian
    size: int = 9  # uniform window
    alpha: float = 0.33  # ema
    field: str = "smoothed_reward"

    intrinsic = False
    per_objective = True

    def __post_init__(self):
        if self.mode not in SMOOTHERS:
            raise ValueError(f"unknown smoothing '{self.mode}'; choices: {', '.join(SMOOTHERS)}")
        if self.sigma <= 0 or self.size < 1 or not 0 < self.alpha <= 1:
            raise ValueError("smoothing needs sigma > 0, size >= 1 and 0 < alpha <= 1")

    @property
    def reads(self) -> frozenset[str]:
        return frozenset({self.field})

    def options(self) -> dict:
        return {
            "gaussian": {"sigma": self.sigma},
            "uniform": {"size": self.size},
            "ema": {"alpha": self.alpha},
        }[self.mode]

    def annotations(self, spec) -> dict:
        return {self.field: (tuple(spec.reward_shape), "float32")}

    def pending(self, step: dict) -> dict:
        return {self.field: step["reward"]}

    def annotate(self, episode: dict) -> dict:
        return {self.field: smooth(episode["reward"], self.mode, **self.options())}

    def reward(self, state, batch):
        return batch.get(self.field)
