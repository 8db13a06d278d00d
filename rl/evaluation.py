"""Evaluation episodes on a separately seeded env, shared by every agent's ``evaluate``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rl import envs
from rl.runs import write_video

EVAL_SEED_OFFSET = 10_000  # evaluation envs never share a seed with training envs


def run_episodes(cfg, policy: Callable[[np.ndarray], np.ndarray], episodes: int, video_path=None) -> dict:
    """Mean and std of ``episodes`` returns of ``policy`` (host obs [1, ...] -> actions [1, ...])
    on env ``cfg.env`` seeded ``cfg.seed + 10000``; an mp4 of the first episode if ``video_path``.

    Vector (multi-objective) returns are summed for the mean and also given per objective."""
    env, _ = envs.make(
        cfg.env, 1, cfg.seed + EVAL_SEED_OFFSET, **{**cfg.env_options, "render": video_path is not None}
    )
    returns, frames = [], []
    try:
        obs, _ = env.reset()
        while len(returns) < episodes:
            obs, _, _, _, info = env.step(np.asarray(policy(obs)))
            if video_path is not None and not returns:
                frames.append(env.envs[0].render())
            returns += [np.asarray(e["return"], np.float64) for e in info["episodes"]]
    finally:
        env.close()
    totals = [np.sum(r) for r in returns]
    out = {"eval/episode_return": float(np.mean(totals)), "eval/episode_return_std": float(np.std(totals))}
    mean = np.mean(returns, axis=0)
    if mean.ndim:
        out.update({f"eval/episode_return/{i}": float(m) for i, m in enumerate(mean)})
    if video_path is not None and frames:
        out["video"] = str(write_video(frames, video_path))
    return out
