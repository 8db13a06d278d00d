"""C-MORL (Liu et al., ICLR 2025) against PGMORL and linear-scalarization MO-PPO on MO-MuJoCo, scored by
both evaluation protocols.

    python experiments/cmorl.py --budget smoke          # seconds: the tests run this
    python experiments/cmorl.py --budget paper          # the reported budget
    python experiments/cmorl.py --report-only

Arms: ``cmorl`` (``rl train cmorl``: Pareto initialisation on six evenly spaced preferences,
then IPO-constrained extension), ``mo_ppo_linear`` (the same six PPO policies trained on their
fixed linear scalarizations for the whole budget, ``method=linear``) and ``pgmorl``
(``rl train pgmorl``: the same PPO population, warm-up then prediction-guided generations). The
PGMORL arm runs C-MORL's PPO shape (8 envs x 512 steps) and protocol; its reference schedule
(80 warm-up updates, generations of 20, 30M env steps on halfcheetah) is scaled to the budget:
40 warm-up updates (the 1M of 1.5M C-MORL gives its initialisation), generations of 10.
``mo_ppo_conditioned`` (``rl train mo_ppo``) is one preference-conditioned policy on the same
budget, its front the policy evaluated at 11 preferences.

Protocols, both computed on every run's final archive (``front.json``'s ``protocols``):
C-MORL's (the deterministic policy's returns discounted at 0.99 over 500-step episodes, 5
episodes, EU over the 0.01-step simplex grid, reference point (-100, -100)) and
MORL-Baselines' (undiscounted 1000-step episodes, EUM over 50 equally spaced weights, the same
reference point). Budgets are env steps over all envs: the reference's ``--num-time-steps
1500000`` counts rollout steps per process (8 processes), about 12M env steps on hopper-2d.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # rl, when run as a script

from rl import experiment as experiment_lib  # noqa: E402

EXPERIMENT = "cmorl"
ARMS = {
    "cmorl": experiment_lib.Arm("cmorl", ("method=cmorl",)),
    "mo_ppo_linear": experiment_lib.Arm("cmorl", ("method=linear",)),
    "pgmorl": experiment_lib.Arm(
        "pgmorl",
        (
            "num_envs=8",
            "num_steps=512",
            "warmup_iter=40",
            "update_iter=10",
            "eval_episodes=5",
            "eval_gamma=0.99",
            "env_options={max_episode_steps: 500}",
        ),
    ),  # fmt: skip
    "mo_ppo_conditioned": experiment_lib.Arm("mo_ppo", ("eval_interval=50",)),
}
TASKS = {"mo:mo-hopper-2obj-v5": [], "mo:mo-halfcheetah-v5": []}
SMOKE = {
    task: [
        "num_envs=2",
        "num_steps=16",
        "num_minibatches=2",
        "update_epochs=1",
        "eval_episodes=1",
        "mb_episode_steps=20",
        "env_options={max_episode_steps: 16}",
    ]  # fmt: skip
    for task in TASKS
}
for _task in TASKS:  # each agent's own keys
    for _arm in ("cmorl", "mo_ppo_linear"):
        SMOKE[(_arm, _task)] = ["init_eval_interval=1", "num_select=2", "init_fraction=0.5", "update_iter=1"]
    SMOKE[("pgmorl", _task)] = ["warmup_iter=1", "update_iter=1"]
    SMOKE[("mo_ppo_conditioned", _task)] = ["eval_interval=4"]
BUDGETS = {  # env steps per run, seeds, overrides
    "smoke": (6 * 2 * 16 * 2, [0], {}),
    "paper": (1_500_000, [0, 1, 2], {}),
}
PROTOCOLS = {"cmorl": "C-MORL (gamma 0.99, 500 steps, EU grid 0.01)", "morl_baselines": "MORL-Baselines (undiscounted, 1000 steps, EUM 50)"}  # fmt: skip
METRICS = ("hypervolume", "eum", "sparsity", "cardinality")


def main(argv=None) -> int:
    code = experiment_lib.grid_main(
        argv,
        __doc__,
        EXPERIMENT,
        ARMS,
        TASKS,
        BUDGETS,
        SMOKE,
        "C-MORL, PGMORL, linear and conditioned MO-PPO on MO-MuJoCo",
    )
    p = argparse.ArgumentParser(add_help=False)  # where grid_main wrote: the same options
    for opt in ("--budget", "--steps", "--report"):
        p.add_argument(opt)
    p.add_argument("--runs-dir", default="runs")
    args = p.parse_known_args(argv)[0]
    name = f"{EXPERIMENT}-{'custom' if args.steps else args.budget or 'smoke'}"
    append_protocols(Path(args.runs_dir) / name, Path(args.report or Path(args.runs_dir) / name))
    return code


def fronts(root: Path) -> dict:
    """{(arm, task): [front.json documents]} of the finished runs under ``root``."""
    from rl.rewards import multiobjective as mo

    out: dict = {}
    for f in sorted(root.glob("*__*__s*/front.json")):
        doc = mo.read_front(f)
        out.setdefault((f.parent.name.split("__")[0], doc["env"]), []).append(doc)
    return out


def append_protocols(root: Path, out: Path) -> None:
    """A table per protocol (IQM and 95% CI over seeds of HV, EU(M), sparsity) and the fronts'
    plot per task, appended to report.md."""
    from rl.report import iqm_ci

    md = out / "report.md"
    found = fronts(root)
    if not md.exists() or not found:
        return
    lines = ["", "## Both protocols (each run's final archive)", ""]
    for key, label in PROTOCOLS.items():
        lines += [f"{label}:", "", "| arm | task | runs | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 3) + "|"]  # fmt: skip
        for (arm, task), docs in sorted(found.items()):
            vals = {m: np.asarray([d["protocols"][key][m] for d in docs if key in d.get("protocols", {})], np.float64) for m in METRICS}  # fmt: skip
            if not len(vals["hypervolume"]):
                continue
            cells = []
            for m in METRICS:
                point, lo, hi = iqm_ci({"x": vals[m][:, None]})["x"]
                cells.append(f"{point:,.4g} [{lo:,.4g}, {hi:,.4g}]")
            lines.append(f"| {arm} | {task} | {len(vals['hypervolume'])} | " + " | ".join(cells) + " |")
        lines.append("")
    for task in sorted({t for _, t in found}):
        path = out / f"fronts-{task.replace(':', '-')}.png"
        sets = {arm: np.concatenate([np.asarray(d["points"]) for d in docs]) for (arm, t), docs in found.items() if t == task}  # fmt: skip
        plot_fronts(path, sets, title=f"{task}: every seed's archive (C-MORL protocol)")
        lines.append(f"![{task}]({path.name})")
    md.write_text(md.read_text() + "\n".join(lines) + "\n")


def plot_fronts(path: Path, sets: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for arm, pts in sorted(sets.items()):
        ax.scatter(pts[:, 0], pts[:, 1], s=12, label=arm, alpha=0.7)
    ax.set_xlabel("objective 0")
    ax.set_ylabel("objective 1")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
