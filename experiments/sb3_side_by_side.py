"""Stable-Baselines3 SAC / PPO on the baselines' tasks at the same small budget as ours.

    python experiments/sb3_side_by_side.py --algo sac --steps 30000 --tasks HalfCheetah-v5,Hopper-v5 --seeds 2

Published curves are at 1M steps; at a budget we can afford, the fair reference is a mature
implementation run side by side with the same hyperparameters (SAC: 256x256, batch 256,
lr 3e-4, 5,000 random steps, one update per step; PPO: SB3's defaults, which are CleanRL's,
without observation / reward normalization). Each task is one process (one per core); the
score is the mean return of 10 deterministic (SAC) or stochastic (PPO) evaluation episodes
on a separately seeded env, as ours. Needs the ``peers`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor


def worker(algo: str, task: str, steps: int, seed: int) -> dict:
    import gymnasium as gym
    import numpy as np
    import torch
    from stable_baselines3 import PPO, SAC

    torch.set_num_threads(1)  # one process per core

    env = gym.make(task)
    if algo == "sac":
        model = SAC("MlpPolicy", env, batch_size=256, learning_starts=5000, seed=seed, device="cpu",
                    policy_kwargs={"net_arch": [256, 256]})  # fmt: skip
    else:
        model = PPO("MlpPolicy", env, seed=seed, device="cpu")
    model.learn(total_timesteps=steps)
    eval_env = gym.make(task)
    returns = []
    for i in range(10):
        obs, _ = eval_env.reset(seed=seed + 10_000 + i)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(obs, deterministic=algo == "sac")
            obs, r, terminated, truncated, _ = eval_env.step(action)
            total += float(r)
            done = terminated or truncated
        returns.append(total)
    return {"algo": algo, "task": task, "steps": steps, "seed": seed, "eval_return": float(np.mean(returns))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algo", choices=["sac", "ppo"], default="sac")
    p.add_argument("--steps", type=int, default=15_000)
    p.add_argument("--tasks", default="HalfCheetah-v5,Hopper-v5,Walker2d-v5")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per task")
    p.add_argument("--out", help="also write the results as JSON here")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)  # task seed
    args = p.parse_args()
    if args.worker:
        print(
            "RESULT " + json.dumps(worker(args.algo, args.worker[0], args.steps, int(args.worker[1]))),
            flush=True,
        )
        return

    def launch(job):
        task, seed = job
        cmd = [
            sys.executable,
            __file__,
            "--algo",
            args.algo,
            "--steps",
            str(args.steps),
        ]
        out = subprocess.run([*cmd, "--worker", task, str(seed)], capture_output=True, text=True)
        lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if not lines:
            raise RuntimeError(f"{task} failed:\n{out.stderr[-2000:]}")
        return json.loads(lines[-1][7:])

    jobs = [(task, seed) for task in args.tasks.split(",") for seed in range(args.seeds)]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(launch, jobs))
    print(
        "| task | seed | SB3 " + args.algo.upper() + f" eval return at {args.steps:,} steps |\n|---|---|---|"
    )
    for r in results:
        print(f"| {r['task']} | {r['seed']} | {r['eval_return']:,.1f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
