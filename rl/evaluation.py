"""Evaluation episodes on a separately seeded env, shared by every agent's ``evaluate``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rl import envs
from rl.rewards.multiobjective import scalarize
from rl.runs import write_video

EVAL_SEED_OFFSET = 10_000  # evaluation envs never share a seed with training envs


def step_utility(cfg) -> Callable[[np.ndarray], float] | None:
    """The per-step scalarization the agent trains with (``shaper.scalarize`` with a fixed
    ``shaper.preference``, ``utopia`` and ``augment``: ``rl.rewards.multiobjective.scalarize``)
    as a host function of one vector reward; None otherwise."""
    sh = getattr(cfg, "shaper", None)
    if sh is None or sh.scalarize == "none" or sh.preference is None:
        return None
    w = np.asarray(sh.preference, np.float64)
    return lambda r: float(scalarize(sh.scalarize, np.asarray(r, np.float64), w, sh.utopia, sh.augment))


def run_episodes(
    cfg,
    policy: Callable[[np.ndarray], np.ndarray],
    episodes: int,
    video_path=None,
    on_episode_end: Callable[[], None] | None = None,
) -> dict:
    """Mean and std of ``episodes`` returns of ``policy`` (host obs [1, ...] -> actions [1, ...])
    on env ``cfg.env`` seeded ``cfg.seed + 10000``; an mp4 of the first episode if ``video_path``.
    A recurrent policy resets its state in ``on_episode_end`` (the env has autoreset: the
    next observation it sees starts an episode).

    Vector (multi-objective) returns are given per objective (``eval/episode_return/<i>``);
    ``eval/episode_return`` is then the episode's sum of the per-step scalarized reward the
    agent trains on (``step_utility``: the env reward under ``shaper.scalarize`` and
    ``shaper.preference``), or the objectives' sum when the config fixes no preference."""
    utility = step_utility(cfg)
    scalarized, running = [], 0.0
    env, _ = envs.make(
        cfg.env, 1, cfg.seed + EVAL_SEED_OFFSET, **{**cfg.env_options, "render": video_path is not None}
    )
    returns, frames = [], []
    try:
        obs, _ = env.reset()
        while len(returns) < episodes:
            obs, reward, _, _, info = env.step(np.asarray(policy(obs)))
            if video_path is not None and not returns:
                frames.append(env.envs[0].render())
            if utility is not None:
                running += utility(np.asarray(reward)[0])
            returns += [np.asarray(e["return"], np.float64) for e in info["episodes"]]
            if info["episodes"] and on_episode_end is not None:
                on_episode_end()
            if info["episodes"]:
                scalarized, running = [*scalarized, running], 0.0
    finally:
        env.close()
    totals = scalarized[: len(returns)] if utility is not None else [np.sum(r) for r in returns]
    out = {"eval/episode_return": float(np.mean(totals)), "eval/episode_return_std": float(np.std(totals))}
    mean = np.mean(returns, axis=0)
    if mean.ndim:
        out.update({f"eval/episode_return/{i}": float(m) for i, m in enumerate(mean)})
    if video_path is not None and frames:
        out["video"] = str(write_video(frames, video_path))
    return out


def preference_returns(cfg, policy, weights, episodes: int, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Vector returns of a preference-conditioned ``policy`` (obs [n, ...], preferences [n, k]
    -> actions [n]) for each of ``weights`` [n, k], one env per preference on env ``cfg.env``
    seeded ``cfg.seed + 10000``: (undiscounted, discounted with ``gamma``) means over
    ``episodes`` episodes, [n, k] each. Objectives are never summed here."""
    weights = np.asarray(weights, np.float32)
    n = len(weights)
    env, spec = envs.make(cfg.env, n, cfg.seed + EVAL_SEED_OFFSET, **cfg.env_options)
    k = spec.reward_dim
    undisc, disc = np.zeros((n, k)), np.zeros((n, k))
    running, scale = np.zeros((n, k)), np.ones(n)
    done = np.zeros(n, int)
    try:
        obs, _ = env.reset()
        while done.min() < episodes:
            obs, reward, terminated, truncated, _ = env.step(np.asarray(policy(obs, weights)))
            live = done < episodes  # an env that has its episodes keeps stepping, unrecorded
            running += live[:, None] * scale[:, None] * np.asarray(reward, np.float64).reshape(n, k)
            undisc += live[:, None] * np.asarray(reward, np.float64).reshape(n, k)
            scale *= gamma
            ended = (terminated | truncated) & live
            disc[ended] += running[ended]
            running[ended], scale[ended] = 0.0, 1.0
            done += ended
    finally:
        env.close()
    return undisc / episodes, disc / episodes
