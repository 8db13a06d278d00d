"""Ibarz et al. (NeurIPS 2018, "Reward learning from human preferences and demonstrations in
Atari") with PPO: preference PPO with and without demonstrations against PPO on the game reward.

    python experiments/ibarz_atari.py --budget smoke                 # the pipeline, minutes
    python experiments/ibarz_atari.py --budget paper --jobs 1        # 2M steps x 3 seeds x 3 arms x 2 games
    python experiments/ibarz_atari.py --report-only

Three phases, each resumable: (1) ``ppo`` (CleanRL's Atari PPO, ``--config ppo-atari``, on the
clipped game reward) trains on every game and seed; (2) its seed-0 run, the demonstrator,
records ``DEMO_EPISODES`` episodes with ``rl demos`` into ``demos-<game>.npz`` in the experiment's
folder (the paper's demonstrations are a human expert's; ours are that trained policy's, at the
same budget); (3) ``pref`` (the preference reward alone: the game reward weighs 0 in training
and is what evaluation reports) and ``pref_demos`` (the same, the policy first cloned from the
demos, ``bc_epochs``, and each feedback session adding ``DEMO_PAIRS`` demo-preferred pairs:
Algorithm 1, steps 2 and 6) train.

The preference term (``rl.rewards.preference``): an ensemble of 3 of Ibarz et al.'s small CNN
reward models on the 4-frame stack (appendix A.2, without batch norm, dropout and L2), clips of
25 steps (their 25), an oracle teacher on the clipped game reward (their synthetic labels),
disagreement queries from 10x candidates (their ensemble-variance selection), a session every
``FEEDBACK_EVERY`` env steps. Departures, budget-driven: PPO in place of DQfD (so behaviour
cloning is maximum likelihood, not their large-margin loss, and there is no policy pre-training
on demos with learned rewards, their step 8); ``CAPACITY`` labels in all where they use up to
6,800 over 50M frames, and a queries replay of ``REPLAY`` steps. Their results are learning
curves and per-game final scores (fig. 1-2), which this report does not read off.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # rl, when run as a script

from rl import experiment as experiment_lib  # noqa: E402

EXPERIMENT = "ibarz_atari"
DEMO_EPISODES = 10
DEMO_PAIRS = 10  # per session
FEEDBACK_EVERY = 50_000
CAPACITY = 400  # labels, the demo pairs included: 560 MB of uint8 clips
REPLAY = 25_000  # env steps the queries are drawn from
P = "shaper.streams.preference"
PREF = (
    "--config", "ppo-atari", "shaper.terms=[preference]", "shaper.extrinsic.weight=0", f"preference_buffer={REPLAY}",
    f"{P}.inputs=obs", f"{P}.segment=25", f"{P}.capacity={CAPACITY}", f"{P}.per_session=30", f"{P}.query=disagreement",
    f"{P}.feedback_start={FEEDBACK_EVERY}", f"{P}.feedback_every={FEEDBACK_EVERY}", f"{P}.hidden=[64]",
    f"{P}.teacher=oracle",
)  # fmt: skip
ARMS = {
    "ppo": experiment_lib.Arm("ppo", ("--config", "ppo-atari")),
    "pref": experiment_lib.Arm("ppo", PREF),
    "pref_demos": experiment_lib.Arm("ppo", (*PREF, "bc_epochs=3", f"{P}.demo_pairs={DEMO_PAIRS}")),
}
TASKS = {"atari:Pong": [], "atari:Breakout": []}
BUDGETS = {
    "smoke": (256, [0], {"eval_episodes": 1, "log_every": 128}),
    "paper": (2_000_000, [0, 1, 2], {"eval_episodes": 10, "checkpoint_every": 250_000}),
}
SMOKE = {
    task: ["num_envs=2", "num_steps=32", "num_minibatches=2", "update_epochs=1"]
    for task in TASKS
}  # fmt: skip
for _task in TASKS:  # every phase inside 256 steps: sessions at 64, 128, 192
    SMOKE[("pref", _task)] = SMOKE[("pref_demos", _task)] = [
        f"{P}.feedback_start=64", f"{P}.feedback_every=64", f"{P}.per_session=2", f"{P}.capacity=12",
        f"{P}.segment=4", f"{P}.large_batch=2", "preference_buffer=256",
    ]  # fmt: skip
    SMOKE[("pref_demos", _task)] = [*SMOKE[("pref", _task)], f"{P}.demo_pairs=2"]
SMOKE_DEMO_EPISODES = 2


def demos_path(root: Path, task: str) -> Path:
    return root / f"demos-{task.replace(':', '-')}.npz"


def record_demos(root: Path, task: str, episodes: int) -> Path:
    """Phase 2: the seed-0 ``ppo`` run of ``task`` records the demonstrations (once)."""
    from rl import demos

    path = demos_path(root, task)
    if path.exists():
        return path
    run = root / f"ppo__{task.replace(':', '-')}__s0"
    if not (run / "summary.json").exists():
        raise FileNotFoundError(f"the demonstrator {run} has not finished: run the ppo arm first")
    tmp = demos.record(run, episodes, path.with_suffix(".part"))
    tmp.rename(path)  # whole or absent: a crash mid-recording leaves no truncated file
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment_lib.common_args(p, ARMS, BUDGETS)
    args = p.parse_args(argv)
    budget = args.budget or ("paper" if args.steps else "smoke")
    root = Path(args.runs_dir) / f"{EXPERIMENT}-{budget if not args.steps else 'custom'}"
    chosen = args.arms.split(",")
    tasks = args.tasks.split(",") if args.tasks else list(TASKS)
    passed = [x for opt in ("budget", "steps", "seeds", "jobs", "runs_dir", "report") if getattr(args, opt) is not None
              for x in (f"--{opt.replace('_', '-')}", str(getattr(args, opt)))]  # fmt: skip
    passed += ["--tasks", ",".join(tasks)] + (["--report-only"] if args.report_only else [])
    title = "Ibarz et al. on Atari with PPO: preferences, demonstrations, the game reward"

    def phase(arms: list[str], task_overrides: dict) -> int:
        return experiment_lib.grid_main([*passed, "--arms", ",".join(arms)], __doc__, EXPERIMENT, ARMS,
                                        task_overrides, BUDGETS, SMOKE, title)  # fmt: skip

    code = phase(["ppo"], TASKS) if "ppo" in chosen or "pref_demos" in chosen else 0
    if "pref" in chosen:
        code |= phase(["pref"], TASKS)
    if "pref_demos" in chosen:
        episodes = SMOKE_DEMO_EPISODES if budget == "smoke" else DEMO_EPISODES
        with_demos = {}
        for task in tasks:
            path = demos_path(root, task) if args.report_only else record_demos(root, task, episodes)
            with_demos[task] = [f"demos={path.resolve()}", f"{P}.demos={path.resolve()}"]
        code |= phase(["pref_demos"], with_demos)
    return code


if __name__ == "__main__":
    sys.exit(main())
