"""What every experiment script shares: an arms x tasks x seeds grid of ``rl train`` runs,
launched one process per core, then aggregated by :mod:`rl.report`.

A run is a subprocess writing ``<runs-dir>/<experiment>/<arm>__<task>__s<seed>/``. A rerun
skips finished runs (``summary.json``) and resumes crashed ones from their last checkpoint, so
it completes what is missing. An arm is an agent plus the config overrides that make it (e.g.
``shaper.terms=[icm]``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Arm:
    agent: str  # an rl.agents name
    overrides: tuple[str, ...] = ()  # config overrides (and --config presets) that make the arm


@dataclass(frozen=True)
class Job:
    name: str
    cmd: tuple[str, ...]
    run_dir: Path
    log: Path
    parts: tuple[Job, ...] = ()  # a vmapped group: one job per seed, run by ``cmd`` together


def common_args(p: argparse.ArgumentParser, arms, budgets) -> None:
    """The options every experiment takes."""
    p.add_argument(
        "--budget", choices=list(budgets), help="smoke (default) or paper; --steps uses paper's settings"
    )
    p.add_argument("--steps", help="env steps per run, overriding the budget's: N or arm=N,arm=N")
    p.add_argument("--arms", default=",".join(arms), help="comma-separated subset of: " + ", ".join(arms))
    p.add_argument("--tasks", help="comma-separated subset of the tasks (env ids)")
    p.add_argument("--seeds", help="comma-separated seeds (default: the budget's)")
    p.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="parallel runs (default: one per core)"
    )
    p.add_argument(
        "--vmap-seeds",
        action="store_true",
        help="train each arm's seeds side by side in one process (`rl train --seeds`: PPO on a "
        "JAX-native env, one vmapped program; on a GPU that costs about what one seed does)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for every run, after the budget's (repeatable), e.g. checkpoint_every=0",
    )
    p.add_argument("--runs-dir", default="runs", help="root of the run directories")
    p.add_argument("--report", help="report.md's folder (default: the experiment's run folder)")
    p.add_argument("--report-only", action="store_true", help="aggregate existing runs, launch nothing")


def parse_steps(p: argparse.ArgumentParser, value: str | None, arms) -> dict[str, int]:
    """``N`` (every arm) or ``arm=N,arm=N`` -> {arm: steps}."""
    if not value:
        return {}
    try:
        if "=" in value:
            return {a: int(float(n)) for a, n in (x.split("=") for x in value.split(","))}
        return dict.fromkeys(arms, int(float(value)))
    except ValueError:
        p.error(f"--steps {value!r}: expected N or arm=N,arm=N")


def select(p: argparse.ArgumentParser, value: str, known, what: str) -> list[str]:
    chosen = value.split(",")
    unknown = [x for x in chosen if x not in known]
    if unknown:
        p.error(f"unknown {what}(s) {unknown}; {what}s: {', '.join(known)}")
    return chosen


def job(experiment: str, runs_dir, arm_name: str, arm: Arm, task: str, seed: int, args) -> Job:
    """The ``rl train`` command of one run; ``args`` are its config overrides beyond the arm's."""
    name = f"{arm_name}__{task.replace(':', '-')}__s{seed}"
    runs_dir = Path(runs_dir).resolve()
    cmd = [sys.executable, "-m", "rl.cli", "train", arm.agent, "--env", task, f"seed={seed}"]
    cmd += [*arm.overrides, *args, f"experiment={experiment}", f"run_name={name}", f"runs_dir={runs_dir}"]
    root = runs_dir / experiment
    return Job(name, tuple(cmd), root / name, root / "logs" / f"{name}.log")


def vmapped(jobs: list[Job]) -> Job:
    """One process for the seeds of one arm and task (``rl train --seeds``), each seed's run
    directory named as its own job would name it."""
    first, stem = jobs[0], jobs[0].name.rsplit("__s", 1)[0]
    seeds = [j.name.rsplit("__s", 1)[1] for j in jobs]
    cmd = [x for x in first.cmd if not x.startswith(("seed=", "run_name="))]
    cmd += ["--seeds", ",".join(seeds), f"run_name={stem}__s{{seed}}"]
    name = f"{stem}__s{'+'.join(seeds)}"
    return Job(name, tuple(cmd), first.run_dir, first.log.with_name(f"{name}.log"), tuple(jobs))


def run_one(j: Job) -> int:
    if j.parts:  # a vmapped group runs together only from scratch; a started seed goes on alone
        if not any(p.run_dir.exists() for p in j.parts):
            return _run(j.cmd, j.log)
        return max(run_one(p) for p in j.parts)
    if (j.run_dir / "summary.json").exists():
        return 0  # finished earlier
    cmd = list(j.cmd)
    if any((j.run_dir / "checkpoints").glob("step_*/meta.json")):
        cmd = [sys.executable, "-m", "rl.cli", "resume", str(j.run_dir)]  # crashed: continue it
    elif j.run_dir.exists():
        shutil.rmtree(j.run_dir)  # died before its first checkpoint: start again
    return _run(cmd, j.log)


def _run(cmd, log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return subprocess.run(list(cmd), stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode


def worker_result(script, *args) -> dict:
    """Run ``script --worker *args`` in a fresh process (wandb off) and return the JSON of its
    last ``RESULT {...}`` line: how the benchmarks time each implementation in isolation."""
    out = subprocess.run(
        [sys.executable, str(script), "--worker", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{Path(script).name} {' '.join(map(str, args))} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def launch(jobs: list[Job], parallel: int) -> list[str]:
    """Run the jobs, ``parallel`` at a time; returns the names of those that failed."""
    if not jobs:
        return []
    print(f"{len(jobs)} runs, {parallel} at a time; logs in {jobs[0].log.parent}", flush=True)
    with ThreadPoolExecutor(parallel) as pool:
        codes = list(pool.map(run_one, jobs))
    failed = [j.name for j, c in zip(jobs, codes) if c != 0]
    if failed:
        print(f"failed runs (see their logs): {', '.join(failed)}", file=sys.stderr)
    return failed


def grid_main(
    argv,
    doc: str,
    experiment: str,
    arms: dict,
    tasks: dict,
    budgets: dict,
    smoke: dict,
    title: str,
    references=None,
    default_tasks=None,
) -> int:
    """The whole script of an experiment whose arms all run every task: parse the common
    options, launch the missing runs, write the report. ``tasks`` maps an env id to the
    overrides every arm uses there (``default_tasks``: the ones run without ``--tasks``; all
    by default), ``smoke`` (keyed by task, or by (arm, task) for one arm's)
    to extra ones at the smoke budget; ``budgets``
    maps a name to (env steps per run, seeds, {key: value} overrides)."""
    from rl.report import report

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(p, arms, budgets)
    args = p.parse_args(argv)
    if bad := [x for x in args.set if "=" not in x]:
        p.error(f"--set {bad[0]!r}: expected KEY=VALUE")
    args.budget = args.budget or ("paper" if args.steps else "smoke")
    steps, seeds, extra = budgets[args.budget]
    per_arm = parse_steps(p, args.steps, arms)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else seeds
    chosen = select(p, args.arms, arms, "arm")
    chosen_tasks = select(p, args.tasks, tasks, "task") if args.tasks else list(default_tasks or tasks)
    name = f"{experiment}-{args.budget if not args.steps else 'custom'}"

    jobs = []
    for arm in chosen:
        for task in chosen_tasks:
            overrides = [*tasks[task], f"total_steps={per_arm.get(arm, steps)}"]
            if args.budget == "smoke":  # a task's smoke overrides, then an (arm, task)'s
                overrides += [*smoke.get(task, []), *smoke.get((arm, task), [])]
            overrides += [f"{k}={v}" for k, v in extra.items()] + args.set
            group = [job(name, args.runs_dir, arm, arms[arm], task, s, overrides) for s in seeds]
            jobs += [vmapped(group)] if args.vmap_seeds else group
    failed = [] if args.report_only else launch(jobs, args.jobs)

    root = Path(args.runs_dir) / name
    budget = ", ".join(f"{a} {per_arm.get(a, steps):,}" for a in chosen)
    md = report(
        root,
        args.report or root,
        references=references,
        title=title,
        notes=f"Budget: `{args.budget}`, env steps per run: {budget}; seeds {seeds}.",
        arm_order=list(arms),
    )
    print(f"report: {md}")
    return 1 if failed else 0
