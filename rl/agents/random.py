"""Uniform random policy.

The baseline that normalized scores are measured against (e.g. Atari human-normalized
scores use random-policy returns), and the smallest agent that runs the whole loop every
agent runs: envs -> replay -> metrics, progress, checkpoints, evaluation, resume. Learning
agents follow the same shape with networks, an optimizer and ``update``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from rl import checkpoint, envs
from rl import config as config_lib
from rl.evaluation import run_episodes
from rl.loop import Common, Lifecycle
from rl.replay import Replay
from rl.runs import Run, print_result


@dataclass
class Config(Common):
    total_steps: int = 20_000  # env steps
    buffer_size: int = 100_000  # replay capacity in steps
    batch_size: int = 256  # transitions sampled per metrics line (replay statistics)

    def validate(self) -> None:
        super().validate()
        if self.buffer_size < 2 * self.num_envs:
            raise config_lib.ConfigError(f"buffer_size must be >= 2 * num_envs, got {self.buffer_size}")
        if self.batch_size < 1:
            raise config_lib.ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


class State(NamedTuple):
    key: jax.Array  # PRNG key (raw uint32, so it serializes)
    step: jax.Array  # env steps taken


def init(cfg: Config, spec: envs.EnvSpec, key) -> State:
    return State(key=key, step=jnp.int32(0))


def init_loop(cfg: Config, spec: envs.EnvSpec) -> dict:
    """The host-side loop state: the envs' current observations (a resumed run ends their
    open episodes with them)."""
    return {"obs": np.zeros((spec.num_envs, *spec.obs_shape), spec.obs_dtype)}


def make_act(spec: envs.EnvSpec):
    """``act(key, obs) -> actions``: uniform over the action space (normal where unbounded)."""
    space, n = spec.action_space, spec.num_envs
    if isinstance(space, gym.spaces.Discrete):
        start = int(space.start)
        return jax.jit(lambda key, obs: jax.random.randint(key, (n,), start, start + space.n))
    if isinstance(space, gym.spaces.Box):
        low, high = np.asarray(space.low, np.float32), np.asarray(space.high, np.float32)
        bounded = np.isfinite(low) & np.isfinite(high)
        low_b, high_b = np.where(bounded, low, -1.0), np.where(bounded, high, 1.0)

        def act(key, obs):
            u = jax.random.uniform(key, (n, *space.shape), minval=low_b, maxval=high_b)
            return jnp.where(bounded, u, jax.random.normal(key, (n, *space.shape)))

        return jax.jit(act)
    raise ValueError(f"random agent: unsupported action space {space}")


def batch_metrics(batch) -> dict:
    """What one replay sample looks like: a cheap check that the buffer holds real data."""
    return {
        "replay/reward_mean": jnp.mean(batch.reward),
        "replay/terminated_frac": jnp.mean(batch.terminated),
    }


def train(cfg: Config, run: Run | None = None, resume=None) -> dict:
    """Run the loop for ``cfg.total_steps`` env steps; ``resume`` is a checkpoint directory."""
    env, spec = envs.make(cfg.env, cfg.num_envs, cfg.seed, **cfg.env_options)  # bad options fail here
    run = run or Run.create(cfg, "random")
    print(config_lib.to_yaml(run.cfg), flush=True)
    replay = Replay.from_spec(spec, cfg.buffer_size)
    state, loop = init(cfg, spec, jax.random.PRNGKey(cfg.seed)), init_loop(cfg, spec)
    obs, _ = env.reset()
    if resume is not None:
        state, loop, replay, rstate, _ = checkpoint.load(resume, state, loop)
        rstate = replay.close_episodes(rstate, loop["obs"])
        # Fresh episodes, seeded by the step so a resume from this checkpoint is reproducible.
        obs, _ = env.reset(seed=cfg.seed + int(state.step))
    else:
        rstate = replay.init()
    act = make_act(spec)
    add = jax.jit(replay.add, donate_argnums=0)
    sample = jax.jit(lambda rs, k: batch_metrics(replay.sample(rs, k, cfg.batch_size)))
    key, step = state.key, int(state.step)

    def save():
        return run.save_checkpoint(step, State(key, jnp.int32(step)), replay, rstate, loop={"obs": obs})

    def replay_metrics():
        k = jax.random.fold_in(key, step)
        return {"replay/size": int(replay.size(rstate)), **jax.device_get(sample(rstate, k))}

    life = Lifecycle(
        cfg,
        run,
        step,
        save=save,
        evaluate=lambda: evaluate(cfg, State(key, jnp.int32(step)), cfg.eval_episodes),
        extra=replay_metrics,
    )
    try:
        while step < cfg.total_steps:
            key, k_act = jax.random.split(key)
            action = np.asarray(act(k_act, obs))
            next_obs, reward, terminated, truncated, info = env.step(action)
            rstate = add(rstate, obs, action, reward, terminated, truncated, info["next_obs"])
            obs = next_obs
            step += cfg.num_envs
            life.after(step, info["episodes"])
        summary = life.finish(step)
    finally:
        run.close()
        env.close()
    print_result(summary, cfg.eval_episodes)
    return summary


def evaluate(cfg: Config, state: State, episodes: int, video_path=None, loop=None) -> dict:
    """Mean return of ``episodes`` episodes on a separately seeded env; optionally an mp4 of the first."""
    spec = envs.make_spec(cfg.env, 1, cfg.seed, **cfg.env_options)
    act, key = make_act(spec), jax.random.fold_in(state.key, 1)

    def policy(obs):
        nonlocal key
        key, k = jax.random.split(key)
        return act(k, obs)

    return run_episodes(cfg, policy, episodes, video_path)
