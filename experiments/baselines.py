"""Baselines: SAC and PPO on MuJoCo, DeepMind Control and Atari, beside published numbers.

    python experiments/baselines.py --budget smoke              # seconds: the tests run this
    python experiments/baselines.py --budget paper              # 1M steps (Atari 10M): days on 2 cores
    python experiments/baselines.py --steps 200000 --arms ppo --seeds 0,1,2
    python experiments/baselines.py --steps sac=30000,ppo=1000000    # per-arm budgets
    python experiments/baselines.py --report-only               # re-aggregate finished runs

The pattern every experiment script follows: arms x tasks x seeds, launched one process per
core (``rl train`` subprocesses; a finished run is skipped and a crashed one resumed, so a
rerun completes what is missing), then ``rl.report`` aggregates them (IQM, stratified
bootstrap CIs, learning curves) into report.md beside the published numbers.

Published references: training return at 1M steps (CleanRL, MuJoCo v4, Huang et al. 2022
"CleanRL" JMLR and its benchmark tables), mean +- std over seeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # rl, when run as a script

from rl import experiment as experiment_lib  # noqa: E402
from rl.report import report  # noqa: E402

EXPERIMENT = "baselines"

# arm -> tasks; each task is (env id, extra config presets / overrides)
MUJOCO = ["gym:HalfCheetah-v5", "gym:Hopper-v5", "gym:Walker2d-v5"]
DMC = ["dmc:cheetah-run", "dmc:walker-walk"]
ATARI = ["atari:Pong", "atari:Breakout"]
ARMS = {"sac": MUJOCO + DMC, "ppo": MUJOCO + DMC + ATARI}

REFERENCES = {  # (arm, task) -> (score, source)
    ("sac", "gym:HalfCheetah-v5"): (9635, "CleanRL 1M, v4, +-1424"),
    ("sac", "gym:Walker2d-v5"): (3591, "CleanRL 1M, v4, +-911"),
    ("sac", "gym:Hopper-v5"): (2310, "CleanRL 1M, v4, +-343"),
    ("ppo", "gym:HalfCheetah-v5"): (1443, "CleanRL 1M, v4"),
    ("ppo", "gym:Walker2d-v5"): (2288, "CleanRL 1M, v4"),
    ("ppo", "gym:Hopper-v5"): (2383, "CleanRL 1M, v4"),
}

# budget -> (steps for MuJoCo/DMC, steps for Atari, seeds, extra overrides)
BUDGETS = {
    "smoke": (2_048, 1_024, [0], {"eval_episodes": 1, "log_every": 512}),
    "paper": (1_000_000, 10_000_000, [0, 1, 2, 3, 4], {"eval_episodes": 10, "eval_every": 50_000}),
}


def overrides_for(arm: str, task: str, steps: int, budget: str) -> list[str]:
    """The ``rl train`` arguments of one run beyond agent, env and seed."""
    args = [f"total_steps={steps}"]
    if task.startswith("atari:"):
        args = ["--config", "ppo-atari", *args]
        if budget == "smoke":  # short episodes, tiny rollouts: the pipeline, not the score
            args += ["num_envs=2", "num_steps=128", "env_options.max_episode_steps=200"]
    if budget == "smoke":
        if arm == "sac":
            args += ["learning_starts=512", "buffer_size=10000", "batch_size=64"]
        if arm == "ppo" and not task.startswith("atari:"):
            args += ["num_steps=512", "num_minibatches=8", "update_epochs=2"]
        if task.startswith("gym:"):
            args += ["env_options.max_episode_steps=200"]
    return args


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment_lib.common_args(p, ARMS, BUDGETS)
    args = p.parse_args(argv)
    args.budget = args.budget or ("paper" if args.steps else "smoke")

    steps, atari_steps, seeds, extra = BUDGETS[args.budget]
    per_arm = experiment_lib.parse_steps(p, args.steps, ARMS)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else seeds
    arms = experiment_lib.select(p, args.arms, ARMS, "arm")
    tasks = args.tasks.split(",") if args.tasks else None
    experiment = f"{EXPERIMENT}-{args.budget if not args.steps else 'custom'}"
    root = Path(args.runs_dir) / experiment

    jobs = []
    for arm in arms:
        for task in ARMS[arm]:
            if tasks and task not in tasks:
                continue
            n = per_arm.get(arm) or (atari_steps if task.startswith("atari:") else steps)
            overrides = overrides_for(arm, task, n, args.budget) + [f"{k}={v}" for k, v in extra.items()]
            for seed in seeds:
                jobs.append(
                    experiment_lib.job(
                        experiment, args.runs_dir, arm, experiment_lib.Arm(arm), task, seed, overrides
                    )
                )
    failed = [] if args.report_only else experiment_lib.launch(jobs, args.jobs)

    budget_note = (
        f"Budget: `{args.budget}`"
        + (
            ", env steps per run: " + ", ".join(f"{a} {n:,}" for a, n in per_arm.items() if a in arms)
            if per_arm
            else f", {steps:,} env steps (Atari {atari_steps:,})"
        )
        + f", seeds {seeds}. References are CleanRL's 1M-step numbers; below 1M steps they are "
        "an upper bound, not a like-for-like comparison."
    )
    md = report(
        root,
        args.report or root,
        references=REFERENCES,
        title="Baselines: SAC and PPO",
        notes=budget_note,
    )
    print(f"report: {md}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
