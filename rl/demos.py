"""Demonstration datasets: episodes of a trained policy, stored as one ``.npz`` file, for
behaviour cloning and for demo-preferred preference pairs (Ibarz et al. 2018, "Reward learning
from human preferences and demonstrations in Atari", Algorithm 1 steps 1-2 and 6).

    rl demos RUN_DIR --episodes 20 --out demos.npz     # record with a run's latest checkpoint

The file holds flat arrays over all recorded steps, in episode order: ``obs`` (the env's raw
observations, its dtype), ``action`` (what the env was given), ``reward`` (the true env reward),
``terminated``, ``truncated``, ``episode`` (index of the step's episode) and ``step`` (its step
within that episode); and ``meta``, a JSON string: env id and options, the source run and
checkpoint, the episode returns. Nothing is downloaded: ``load`` reads a local file and says
what is missing or does not match.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FIELDS = ("obs", "action", "reward", "terminated", "truncated", "episode", "step")


def record(run_dir, episodes: int, path, seed: int = 0) -> Path:
    """Run the latest checkpoint of ``run_dir``'s policy (its agent's ``policy``: PPO's
    stochastic policy with frozen observation statistics) for ``episodes`` episodes on the run's
    env and write them to ``path``."""
    from rl import agents, envs

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    module, cfg, state, loop, ckpt = agents.restore(run_dir)
    if not hasattr(module, "policy"):
        raise ValueError(f"agent {module.__name__} has no policy() to record demonstrations with")
    act = module.policy(cfg, state, loop, seed)
    env, spec = envs.make(cfg.env, 1, seed, **cfg.env_options)
    steps: dict = {k: [] for k in FIELDS}
    t, ep = 0, 0
    try:
        obs, _ = env.reset()
        while ep < episodes:
            action = np.asarray(act(obs))
            next_obs, reward, terminated, truncated, info = env.step(action)
            for name, value in (("obs", obs[0]), ("action", action[0]), ("reward", float(np.asarray(reward)[0])),
                                ("terminated", bool(terminated[0])), ("truncated", bool(truncated[0])),
                                ("episode", ep), ("step", t)):  # fmt: skip
                steps[name].append(value)
            t += 1
            if terminated[0] or truncated[0]:
                ep, t = ep + 1, 0
            obs = next_obs
    finally:
        env.close()
    meta = {
        "env": cfg.env,
        "env_options": cfg.env_options,
        "run": str(run_dir),
        "checkpoint": Path(ckpt).name,
    }
    arrays = {k: np.asarray(v) for k, v in steps.items()}
    arrays["obs"] = arrays["obs"].astype(spec.obs_dtype)
    return save(path, arrays, meta)


def save(path, arrays: dict, meta: dict) -> Path:
    """Write a dataset (``FIELDS`` arrays over all steps; ``meta`` gains the episode returns)."""
    missing = [k for k in FIELDS if k not in arrays]
    if missing:
        raise ValueError(f"demonstrations need {', '.join(FIELDS)}; missing {', '.join(missing)}")
    arrays = {k: np.asarray(arrays[k]) for k in FIELDS}
    ep = arrays["episode"]
    meta = {**meta, "returns": [float(arrays["reward"][ep == e].sum()) for e in np.unique(ep)]}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to a bare name
        np.savez_compressed(f, **arrays, meta=np.asarray(json.dumps(meta)))  # frames compress well
    return path


def load(path, spec=None) -> dict:
    """The dataset at ``path`` (arrays and ``meta``), checked against ``spec`` (observation shape
    and dtype, action shape) when given."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no demonstrations at {path}; record them with `rl demos RUN_DIR --episodes N --out {path}`"
        )
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in (*FIELDS, "meta") if k not in f.files]
        if missing:
            raise ValueError(f"{path} is not a demonstration file: missing {', '.join(missing)}")
        data = {k: f[k] for k in FIELDS}
        data["meta"] = json.loads(str(f["meta"]))
    if spec is not None:
        if tuple(data["obs"].shape[1:]) != tuple(spec.obs_shape):
            raise ValueError(
                f"demonstrations in {path} have observations {data['obs'].shape[1:]}; {spec.env_id} has "
                f"{tuple(spec.obs_shape)} (recorded on {data['meta']['env']})"
            )
        if tuple(data["action"].shape[1:]) != tuple(spec.action_shape):
            raise ValueError(
                f"demonstrations in {path} have actions {data['action'].shape[1:]}; {spec.env_id} has "
                f"{tuple(spec.action_shape)}"
            )
    return data


def segments(data: dict, n: int, length: int, rng: np.random.Generator) -> dict:
    """``n`` random windows of ``length`` steps inside single demo episodes: ``obs``, ``action``,
    ``reward`` [n, length, ...] and each window's ``episode`` and ``start``."""
    ep, t = data["episode"], data["step"]
    ok = np.flatnonzero(t == 0)  # episode starts
    ends = np.append(ok[1:], len(ep))
    starts = np.concatenate(
        [np.arange(s, e - length + 1) for s, e in zip(ok, ends, strict=True)] or [[]]
    ).astype(int)
    if not len(starts):
        raise ValueError(f"no demonstration episode has {length} steps (segment length)")
    pick = rng.choice(starts, n)
    idx = pick[:, None] + np.arange(length)[None]
    return {"obs": data["obs"][idx], "action": data["action"][idx], "reward": data["reward"][idx],
            "episode": ep[pick], "start": t[pick]}  # fmt: skip
