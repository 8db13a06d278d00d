"""DreamSmooth reward smoothing (Lee, Abbeel & Lee 2024, "DreamSmooth: Improving Model-based
Reinforcement Learning via Reward Smoothing", section 4).

A sparse or delayed reward is hard for a world model's reward head to predict at the exact
step; DreamSmooth trains it on a temporally smoothed reward instead, which keeps (almost) the
same return. Smoothing runs once per episode, when it ends, on the episode's reward sequence:

- ``gaussian``: Gaussian kernel (sigma 3), edges extended with the end values (``nearest``);
- ``uniform``: moving average over a window (9), edges likewise;
- ``ema``: causal exponential moving average, r~_t = alpha r_t + (1 - alpha) r~_{t-1}, r~_{-1} = 0
  (alpha 0.33): the only one that does not move reward earlier in time.

Host numpy on one episode [L] or [L, k]: episodes are short, and their lengths vary.
``EpisodeSmoother`` keeps the open episodes of a vector env and hands each finished one back
smoothed (SAC writes it into the replay's ``smoothed_reward`` field with
``Replay.write_episode``); ``smooth_segments`` smooths a [T, E] rollout episode by episode
(PPO: an episode cut by the rollout's ends is smoothed over the part inside it).
"""

from __future__ import annotations

import numpy as np

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


class EpisodeSmoother:
    """The rewards of each env's open episode; ``step`` returns the finished ones, smoothed."""

    def __init__(self, num_envs: int, mode: str, **kwargs):
        smooth(np.zeros(1), mode, **kwargs)  # a bad mode or option fails here
        self.mode, self.kwargs = mode, kwargs
        self.open: list[list] = [[] for _ in range(num_envs)]

    def step(self, reward, done) -> list[tuple[int, np.ndarray]]:
        """Record one vector step; [(env, smoothed rewards)] for the episodes it ended."""
        finished = []
        for e, r in enumerate(np.asarray(reward)):
            self.open[e].append(r)
            if done[e]:
                finished.append((e, smooth(np.asarray(self.open[e]), self.mode, **self.kwargs)))
                self.open[e] = []
        return finished


def smooth_segments(reward, done, mode: str, **kwargs) -> np.ndarray:
    """``reward`` [T, E, ...] smoothed within each episode segment (split after ``done``)."""
    reward, done = np.asarray(reward), np.asarray(done)
    out = np.zeros(reward.shape, np.float32)
    for e in range(reward.shape[1]):
        start = 0
        for t in [*np.flatnonzero(done[:, e]), reward.shape[0] - 1]:
            if t >= start:
                out[start : t + 1, e] = smooth(reward[start : t + 1, e], mode, **kwargs)
                start = t + 1
    return out
