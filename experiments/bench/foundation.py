"""Foundation throughput: env steps/s per namespace, offscreen render fps, replay add/sample.

    make bench            # or: python experiments/bench/foundation.py [--quick]

Prints markdown tables (the README's benchmark section is this output) and writes
``bench-foundation.json`` in the working directory. Compile time is excluded from every
rate (each timed function is called once before timing).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import gymnasium as gym
import jax
import numpy as np

from rl import envs
from rl.replay import Replay

ENVS = [
    ("gym:HalfCheetah-v5", {}),
    ("dmc:cheetah-run", {}),
    ("atari:Pong", {}),
    ("mo:mo-halfcheetah-v5", {}),
    ("minigrid:MiniGrid-DoorKey-8x8-v0", {}),
]


def env_rate(env_id, num_envs, steps, **options) -> float:
    env, _ = envs.make(env_id, num_envs=num_envs, seed=0, **options)
    env.reset()
    actions = [env.action_space.sample() for _ in range(64)]
    for i in range(10):
        env.step(actions[i % 64])
    t = time.perf_counter()
    n = max(steps // num_envs, 1)
    for i in range(n):
        env.step(actions[i % 64])
    dt = time.perf_counter() - t
    env.close()
    return n * num_envs / dt


def render_fps(make_env, frames) -> float:
    env = make_env()
    env.reset(seed=0)
    env.render()
    t = time.perf_counter()
    for _ in range(frames):
        env.render()
    dt = time.perf_counter() - t
    env.close()
    return frames / dt


def gym_render(size, fast):
    def make():
        env = gym.make("HalfCheetah-v5", render_mode="rgb_array", width=size, height=size)
        if fast:
            envs.fast_render_settings(env.unwrapped.model)
        return env

    return make


class _DMCRender:
    """dm_control cheetah-run drawn by a mujoco.Renderer, with or without the fast settings."""

    def __init__(self, size, fast):
        import mujoco
        from dm_control import suite

        self.physics = suite.load("cheetah", "run", task_kwargs={"random": 0}).physics
        if fast:
            envs.fast_render_settings(self.physics.model)
        self.renderer = mujoco.Renderer(self.physics.model.ptr, size, size)

    def reset(self, seed=None):
        return None

    def render(self):
        self.renderer.update_scene(self.physics.data.ptr, camera=0)
        return self.renderer.render()

    def close(self):
        self.renderer.close()


def dmc_render(size, fast):
    return lambda: _DMCRender(size, fast)


def replay_rates(obs_shape, obs_dtype, num_envs, capacity, calls, batch=256) -> dict:
    spec = envs.EnvSpec("bench", num_envs, obs_shape, obs_dtype, gym.spaces.Box(-1, 1, (6,)), (), 1000)
    replay = Replay.from_spec(spec, capacity)
    state = replay.init()
    add = jax.jit(replay.add, donate_argnums=0)
    rng = np.random.default_rng(0)
    obs = jax.device_put((rng.random((num_envs, *obs_shape)) * 255).astype(obs_dtype))
    act = jax.device_put(rng.random((num_envs, 6)).astype(np.float32))
    rew = jax.device_put(np.ones(num_envs, np.float32))
    done = jax.device_put(rng.random((64, num_envs)) < 0.001)
    no = jax.device_put(np.zeros(num_envs, bool))
    state = add(state, obs, act, rew, done[0], no, obs)
    jax.block_until_ready(state)
    t = time.perf_counter()
    for i in range(calls):
        state = add(state, obs, act, rew, done[i % 64], no, obs)
    jax.block_until_ready(state)
    add_rate = calls * num_envs / (time.perf_counter() - t)
    # fill enough of the buffer to sample from
    for i in range(min(replay.length, 2000)):
        state = add(state, obs, act, rew, done[i % 64], no, obs)
    out = {"add steps/s": add_rate, "bytes/step": replay.bytes_per_step}
    reps = 20 if calls < 1000 else 200
    for name, fn in {
        "sample transitions/s": jax.jit(lambda s, k: replay.sample(s, k, batch)),
        "sample seq (16x64) steps/s": jax.jit(lambda s, k: replay.sample_sequences(s, k, 16, 64)),
    }.items():
        jax.block_until_ready(fn(state, jax.random.PRNGKey(0)))
        t = time.perf_counter()
        for i in range(reps):
            b = fn(state, jax.random.PRNGKey(i))
        jax.block_until_ready(b)
        per = batch if "transitions" in name else 16 * 64
        out[name] = reps * per / (time.perf_counter() - t)
    return out


def table(title, header, rows) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(f"{v:,.0f}" if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer steps (a smoke run of the script)")
    args = p.parse_args()
    steps = 100 if args.quick else 5000
    frames = 5 if args.quick else 300
    results: dict = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "devices": [str(d) for d in jax.devices()],
    }

    rows = []
    for env_id, options in ENVS:
        one, vec = env_rate(env_id, 1, steps, **options), env_rate(env_id, 4, steps, **options)
        rows.append((env_id, one, vec))
        results[f"env {env_id}"] = {"1 env": one, "4 envs": vec}
    print(table("Env steps/s (random actions, synchronous vector env)", ["env", "1 env", "4 envs"], rows))

    rows = []
    for size in (64,) if args.quick else (64, 84):
        for name, make in (("gym HalfCheetah-v5", gym_render), ("dmc cheetah-run", dmc_render)):
            fast, slow = (
                render_fps(make(size, True), frames),
                render_fps(make(size, False), max(frames // 10, 5)),
            )
            rows.append((f"{name} {size}x{size}", slow, fast, f"{fast / slow:.1f}x"))
            results[f"render {name} {size}"] = {"defaults": slow, "fast": fast}
    print(
        table(
            f"Offscreen render fps (MUJOCO_GL={__import__('os').environ['MUJOCO_GL']})",
            ["scene", "MuJoCo defaults", "shadows/reflections/MSAA off", "speed-up"],
            rows,
        )
    )

    rows = []
    calls = 50 if args.quick else 5000
    buffers = (
        ("state 17-d, 1 env", (17,), "float32", 1, 1_000_000),
        ("state 17-d, 8 envs", (17,), "float32", 8, 1_000_000),
        ("pixels 64x64x3, 1 env", (64, 64, 3), "uint8", 1, 100_000),
    )
    for label, shape, dtype, E, cap in buffers[2:] if args.quick else buffers:  # quick: the pixel one
        cap = cap // 100 if args.quick else cap
        r = replay_rates(shape, dtype, E, cap, calls)
        rows.append(
            (
                label,
                f"{cap:,}",
                r["bytes/step"],
                r["add steps/s"],
                r["sample transitions/s"],
                r["sample seq (16x64) steps/s"],
            )
        )
        results[f"replay {label}"] = r
    print(
        table(
            "Replay (jitted, on the default device)",
            [
                "buffer",
                "capacity",
                "bytes/step",
                "add steps/s",
                "sample transitions/s (batch 256)",
                "sample sequence steps/s (16x64)",
            ],
            rows,
        )
    )
    naive = 2 * 64 * 64 * 3
    print(
        f"Pixel task bytes per stored step: {rows[-1][2]} (obs stored once; storing obs and next_obs "
        f"would take {naive + rows[-1][2] - 64 * 64 * 3}).\n"
    )
    with open("bench-foundation.json", "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
