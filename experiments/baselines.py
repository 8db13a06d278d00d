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
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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


def run_one(cmd: list[str], run_dir: Path, log: Path) -> int:
    if (run_dir / "summary.json").exists():
        return 0  # finished earlier
    if (run_dir / "checkpoints").exists() and any((run_dir / "checkpoints").glob("step_*/meta.json")):
        cmd = [sys.executable, "-m", "rl.cli", "resume", str(run_dir)]  # crashed: continue it
    elif run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)  # died before its first checkpoint: start again
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--budget", choices=list(BUDGETS), help="smoke (default) or paper; --steps uses paper's settings"
    )
    p.add_argument("--steps", help="env steps per run, overriding the budget's (Atari too): N or arm=N,arm=N")
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of: " + ", ".join(ARMS))
    p.add_argument("--tasks", help="comma-separated subset of the tasks (env ids)")
    p.add_argument("--seeds", help="comma-separated seeds (default: the budget's)")
    p.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="parallel runs (default: one per core)"
    )
    p.add_argument("--runs-dir", default="runs", help="root of the run directories")
    p.add_argument("--report", help="report.md's folder (default: <runs-dir>/baselines/<budget>)")
    p.add_argument("--report-only", action="store_true", help="aggregate existing runs, launch nothing")
    args = p.parse_args(argv)
    args.budget = args.budget or ("paper" if args.steps else "smoke")

    steps, atari_steps, seeds, extra = BUDGETS[args.budget]
    per_arm = {}
    if args.steps:
        try:
            if "=" in args.steps:
                per_arm = {a: int(float(n)) for a, n in (x.split("=") for x in args.steps.split(","))}
            else:
                per_arm = dict.fromkeys(ARMS, int(float(args.steps)))
        except ValueError:
            p.error(f"--steps {args.steps!r}: expected N or arm=N,arm=N")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else seeds
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        p.error(f"unknown arm(s) {unknown}; arms: {', '.join(ARMS)}")
    tasks = args.tasks.split(",") if args.tasks else None
    label = args.budget if not args.steps else "custom"
    experiment = f"{EXPERIMENT}-{label}"
    root = Path(args.runs_dir) / experiment

    jobs = []
    for arm in arms:
        for task in ARMS[arm]:
            if tasks and task not in tasks:
                continue
            n = per_arm.get(arm) or (atari_steps if task.startswith("atari:") else steps)
            for seed in seeds:
                name = f"{arm}__{task.replace(':', '-')}__s{seed}"
                cmd = [sys.executable, "-m", "rl.cli", "train", arm, "--env", task, f"seed={seed}"]
                cmd += overrides_for(arm, task, n, args.budget)
                cmd += [f"{k}={v}" for k, v in extra.items()]
                cmd += [
                    f"experiment={experiment}",
                    f"run_name={name}",
                    f"runs_dir={Path(args.runs_dir).resolve()}",
                ]
                jobs.append((cmd, root / name, root / "logs" / f"{name}.log"))

    failed = []
    if not args.report_only:
        print(f"{len(jobs)} runs, {args.jobs} at a time; logs in {root / 'logs'}")
        with ThreadPoolExecutor(args.jobs) as pool:
            codes = list(pool.map(lambda j: run_one(*j), jobs))
        failed = [j[1].name for j, c in zip(jobs, codes) if c != 0]
        if failed:
            print(f"failed runs (see their logs): {', '.join(failed)}", file=sys.stderr)

    sys.path.insert(0, str(ROOT))
    from rl.report import report

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
