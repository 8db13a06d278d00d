"""Our PPO population (C-MORL's stage 1, ``method=linear``) against MORL-Baselines' PGMORL
warm-up, side by side in one run: the same env, six policies on the 0.2-step preference grid,
the same PPO (64x64 tanh actor and critic with a value per objective, 4 envs x 2048 steps per
policy and iteration, 10 epochs x 32 minibatches, lr 3e-4, gamma 0.995, GAE 0.95), the same
number of iterations. Wall time from construction to the evaluated front (our time includes
compilation), and the hypervolume of each front by the same protocol (one deterministic
episode per policy of up to 1,000 steps, returns discounted at 0.995, MORL-Baselines'
``policy_eval``), at reference point (-100, -100). Each side runs in its own fresh process.

    pip install -e '.[peers]' morl-baselines==1.3.0   # the peer (make bench does it)
    python experiments/bench/morl_peer.py [--env mo-hopper-2obj-v5] [--iterations 4] [--seeds 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # rl, when run as a script

REF = np.array([-100.0, -100.0])
POP, ENVS, STEPS = 6, 4, 2048


def ours(env_id: str, iterations: int, seed: int) -> dict:
    from rl import config as config_lib
    from rl.agents import cmorl

    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        cfg = config_lib.build(
            cmorl.Config,
            overrides={
                "env": f"mo:{env_id}",
                "env_options": {"max_episode_steps": 1000},
                "method": "linear",
                "seed": seed,
                "total_steps": iterations * POP * ENVS * STEPS,
                "num_envs": ENVS,
                "num_steps": STEPS,
                "anneal_lr": False,
                "init_eval_interval": iterations,
                "eval_episodes": 1,
                "eval_gamma": 0.995,
                "ref_point": REF.tolist(),
                "mb_episode_steps": 0,
                "runs_dir": d,
            },
        )
        summary = cmorl.train(cfg)
        points = json.loads(next(Path(d).rglob("front.json")).read_text())["points"]
    return {"seconds": time.perf_counter() - t, "hypervolume": summary["eval/hypervolume"], "points": points}


def peer(env_id: str, iterations: int, seed: int) -> dict:
    import mo_gymnasium as mo_gym
    import torch
    from morl_baselines.multi_policy.pgmorl.pgmorl import PGMORL

    from rl.rewards import multiobjective as mo

    torch.manual_seed(seed)
    t = time.perf_counter()
    agent = PGMORL(
        env_id, origin=REF, num_envs=ENVS, pop_size=POP, warmup_iterations=iterations,
        steps_per_iteration=STEPS, seed=seed, log=False, device="cpu",
    )  # fmt: skip
    eval_env = mo_gym.make(env_id)
    agent.start_time = time.time()  # what PGMORL.train sets before its warm-up
    for i in range(iterations):  # the warm-up loop of PGMORL.train
        agent._PGMORL__train_all_agents(iteration=i, max_iterations=iterations)
    evaluations = [np.zeros(2) for _ in agent.agents]
    agent._PGMORL__eval_all_agents(eval_env=eval_env, evaluations_before_train=evaluations, ref_point=REF)
    seconds = time.perf_counter() - t
    points = np.asarray(agent.archive.evaluations, np.float64)
    return {
        "seconds": seconds,
        "hypervolume": mo.hypervolume(mo.pareto_front(points), REF),
        "points": points.tolist(),
    }


def envs_only(env_id: str, iterations: int, seed: int) -> dict:
    """The floor both sides share: the same env steps with random actions, no learner."""
    from rl import envs

    env, spec = envs.make(f"mo:{env_id}", POP * ENVS, seed, max_episode_steps=1000)
    rng = np.random.default_rng(seed)
    env.reset()
    t = time.perf_counter()
    for _ in range(iterations * STEPS):
        env.step(rng.uniform(-1, 1, (POP * ENVS, *spec.action_shape)))
    env.close()
    return {"seconds": time.perf_counter() - t, "hypervolume": float("nan"), "points": []}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="mo-hopper-2obj-v5")
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--seeds", default="0")
    p.add_argument("--worker", nargs=4, metavar=("SIDE", "ENV", "ITERATIONS", "SEED"))
    args = p.parse_args(argv)
    if args.worker:
        side, env_id, n, seed = args.worker
        out = {"ours": ours, "peer": peer, "envs": envs_only}[side](env_id, int(n), int(seed))
        print("RESULT " + json.dumps(out))
        return 0
    from rl.experiment import worker_result

    steps = args.iterations * POP * ENVS * STEPS
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for side in ("ours", "peer"):  # alternating, each in a fresh process
            r = worker_result(__file__, side, args.env, args.iterations, seed)
            rows.append((side, seed, r))
            print(f"{side} seed {seed}: {r['seconds']:.1f} s, HV {r['hypervolume']:,.0f}", flush=True)
    floor = worker_result(__file__, "envs", args.env, args.iterations, 0)["seconds"]
    t = {s: np.median([r["seconds"] for side, _, r in rows if side == s]) for s in ("ours", "peer")}
    hv = {s: np.median([r["hypervolume"] for side, _, r in rows if side == s]) for s in ("ours", "peer")}
    print(
        f"\n{args.env}, {args.iterations} iterations x {POP} policies ({steps:,} env steps), seeds {args.seeds}"
    )
    print("| | wall time (s) | env steps/s | hypervolume |")
    print("|---|---|---|---|")
    print(f"| MORL-Baselines 1.3.0 PGMORL warm-up (torch CPU) | {t['peer']:.0f} | {steps / t['peer']:,.0f} | {hv['peer']:,.0f} |")  # fmt: skip
    print(f"| ours, `rl train cmorl method=linear` | {t['ours']:.0f} | {steps / t['ours']:,.0f} | {hv['ours']:,.0f} |")  # fmt: skip
    print(
        f"| the env steps alone (random actions, {POP * ENVS} envs) | {floor:.0f} | {steps / floor:,.0f} | - |"
    )
    print(
        f"speed-up: {t['peer'] / t['ours']:.2f}x; hypervolume ratio (ours / peer): {hv['ours'] / hv['peer']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
