"""The RLeXplore MiniGrid table (Yuan et al. 2024, "RLeXplore: Accelerating Research in
Intrinsically-Motivated Reinforcement Learning") and HIRE's fusions, with PPO's jitted path.

    python experiments/intrinsic.py --budget smoke                   # seconds: the tests run this
    python experiments/intrinsic.py --budget paper --jobs 1          # 10M steps x 5 seeds x 11 arms
    python experiments/intrinsic.py --steps 2000000 --jobs 1         # a stated fraction
    python experiments/intrinsic.py --report-only
    python experiments/intrinsic.py --milestones runs/intrinsic-paper   # first success, solved from, ...
    python experiments/intrinsic.py --budget paper --vmap-seeds --jobs 7 # an arm's seeds in one program (GPU)
    python experiments/intrinsic.py --tasks minigrid:MiniGrid-DoorKey-16x16-v0 --arms ppo --steps 3000000
                                         # Farama MiniGrid (RLeXplore's env) on the host loop

Task: DoorKey-16x16 on XLand-MiniGrid (``xminigrid:MiniGrid-DoorKey-16x16``) through Farama
MiniGrid's agent interface (``env_options.interface=minigrid``: the [7, 7, 3] occluded view of
(object, colour, state) ids with the carried object shown, 7 actions; XLand's own [7, 7, 2]
transparent view of larger ids, 6 actions, is in ``rl/jaxenvs.py``; the reward and the
2,560-step limit are the same). Settings of RLeXplore's benchmark (rllte's
``reward`` branch at b0057b3, ``src/utils.py``, ``rllte/common/prototype/base_reward.py``):
PPO with 256 envs x 32 steps, 4 epochs of minibatches of 2,048 (``--batch_size 2048``; the
NeurIPS rebuttal's Table 3 says 1,024: the code wins), lr 2.5e-4 annealed, clip 0.1 (also the
value clip), entropy 0.01, gamma 0.99, GAE 0.95, one value head (the intrinsic return
episodic), the env reward x 100, RLeXplore's MiniGrid network (``torso=rlexplore``: three 2x2
convs on the raw tile ids, Dense 512 + ReLU, linear heads, all with rllte's orthogonal init:
gain sqrt(2) for the convs, 1 for the dense layers and both heads, ``actor_gain=1``), and the
baseline intrinsic settings: the
bonus divided by the running std of its raw values, updated with each rollout before it is
used (``normalize=std``), weighted beta = 0.25, each module trained on each rollout for one
epoch of minibatches of 256 (Adam 1e-3). Every term embeds with the same MinigridEncoder of
512 features, as every rllte module at that commit does (``torso=rlexplore features=512``):
E3B's and NGU's inverse heads 1024 -> 512 -> actions, ICM's forward and inverse heads with 512
hidden units, RND's target and predictor the encoder itself, RE3's and Disagreement's random
embedding the encoder (Disagreement's members one hidden layer of 512). Inputs: RND standardizes
its observations by running mean and std, clipped to 5, warmed up on 640 random steps per env
(rllte's ``obs_rms`` with ``init_normalization(32, 20)``); NGU's RND the same with update
proportion 0.1, as rllte builds it; ICM's, E3B's, RE3's and Disagreement's encoders the same
(``obs_norm=rms warmup_steps=640``), as rllte's DoorKey-16x16 launch script ``doorkey_5.sh``
passes ``--obs_rms`` to every arm: with obs / 255 (rllte's default without it) Disagreement's
raw bonus fell from 8e-5 to 1e-9 within 160k steps (the members fit the near-constant tiny
embeddings), so its std-normalized bonus was about 1e-5 for the rest of the run; NGU's
trained encoder the same (``obs_norm=rms``, warmed up with its RND: rllte's NGU builds its
pseudo-counts module with ``obs_rms=True``). Departures left: NGU's
life-long modulator is clip(1 + err / std(err), 1, 5) (rllte main; b0057b3 uses clip(1 + 0.25
err, 1, 5)) on the normalized product, not on the episodic part alone; the terms' heads (inverse and forward
models) start from lecun normal, rllte's from orthogonal. The terms' MinigridEncoders start
from torch's default init, as rllte's do. ``experiments/intrinsic/notes.md`` has the
line-by-line comparison.

Their published DoorKey-16x16 scores (``assets/mgd.png`` of RLE-Foundation/RLeXplore, read
off the bar chart, 10M steps; its caption says 10 seeds, the appendix 5, the scripts run 3):
E3B 0.98, RE3 0.94, Disagreement 0.95, NGU 0.49, ICM 0.07, RND about 0 (0.59 with their
combined settings, which no file we found spells out), PPO 0.37 (the rebuttal's Table 7).
The HIRE arms fuse ICM, RND, NGU and E3B by ``sum``, ``product``, ``max`` and ``cycle``
(the active term switching every 20 rollouts, 163,840 env steps).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # rl, when run as a script

from rl import experiment as experiment_lib  # noqa: E402

EXPERIMENT = "intrinsic"
SINGLE = ["icm", "rnd", "ngu", "e3b", "re3", "disagreement"]
FUSED = ["icm", "rnd", "ngu", "e3b"]
BETA = "0.25"  # RLeXplore's intrinsic weight
# rllte's --obs_rms: running mean / std of the module's inputs, clipped to 5, after 640 random
# steps per env (init_normalization(32, 20))
RMS = ("obs_norm=rms", "warmup_steps=640")


def _streams(terms) -> tuple[str, ...]:
    # every embedding is RLeXplore's MinigridEncoder(512) (rllte rllte/xplore/reward/*.py at b0057b3)
    def encoder(t, heads=True):
        keys = (f"shaper.streams.{t}.torso=rlexplore", f"shaper.streams.{t}.features=512")
        return keys + ((f"shaper.streams.{t}.hidden=[512]",) if heads else ())

    rms = (*RMS, "torso=rlexplore", "features=512")
    extra = {
        "icm": (*encoder("icm"), *(f"shaper.streams.icm.{k}" for k in RMS)),
        "rnd": tuple(f"shaper.streams.rnd.{k}" for k in rms),
        "ngu": (
            *encoder("ngu"),
            "shaper.streams.ngu.memory=2560",
            "shaper.streams.ngu.obs_norm=rms",  # rllte's NGU builds its pseudo-counts with obs_rms
            *(f"shaper.streams.ngu.rnd.{k}" for k in (*rms, "update_proportion=0.1")),
        ),  # fmt: skip
        "e3b": (*encoder("e3b"), *(f"shaper.streams.e3b.{k}" for k in RMS)),
        "re3": (*encoder("re3", heads=False), *(f"shaper.streams.re3.{k}" for k in RMS)),
        "disagreement": (
            *encoder("disagreement", heads=False),
            *(f"shaper.streams.disagreement.{k}" for k in RMS),
        ),
    }
    return tuple(
        x
        for t in terms
        for x in (f"shaper.streams.{t}.weight=1", f"shaper.streams.{t}.normalize=std", *extra.get(t, ()))
    )


ARMS = {
    "ppo": experiment_lib.Arm("ppo"),
    **{
        t: experiment_lib.Arm(
            "ppo", (f"shaper.terms=[{t}]", f"shaper.intrinsic_weight={BETA}", *_streams([t]))
        )
        for t in SINGLE
    },
    **{
        f"hire-{fuse}": experiment_lib.Arm(
            "ppo",
            (
                f"shaper.terms=[{','.join(FUSED)}]",
                f"shaper.fuse={fuse}",
                "shaper.cycle_every=163840",
                f"shaper.intrinsic_weight={BETA}",
                *_streams(FUSED),
            ),
        )
        for fuse in ("sum", "product", "max", "cycle")
    },
}
RLEXPLORE_PPO = [
    "--config", "ppo-minigrid", "num_envs=256", "num_steps=32", "num_minibatches=4", "update_epochs=4",
    "torso=rlexplore", "hidden=[]", "actor_gain=1.0",
    "lr=0.00025", "anneal_lr=true", "adam_eps=1e-5", "clip_coef=0.1", "ent_coef=0.01", "gamma=0.99",
    "gae_lambda=0.95", "shaper.extrinsic.weight=100",
]  # fmt: skip
# XLand-MiniGrid's DoorKey runs inside the jitted PPO, seen and acted on through Farama
# MiniGrid's interface (``interface=minigrid``: the env RLeXplore used, observed the same);
# Farama MiniGrid itself runs on the host loop, about 4x slower here (``--tasks``)
XLAND, FARAMA = "xminigrid:MiniGrid-DoorKey-16x16", "minigrid:MiniGrid-DoorKey-16x16-v0"
TASKS = {XLAND: [*RLEXPLORE_PPO, "env_options.interface=minigrid"], FARAMA: RLEXPLORE_PPO}
BUDGETS = {
    "smoke": (2048, [0], {"eval_episodes": 1, "log_every": 1024}),
    "paper": (
        10_000_000,
        [0, 1, 2, 3, 4],
        {"eval_episodes": 10, "log_every": 81_920, "checkpoint_every": 1_007_616},
    ),
}
SMOKE = {t: ["num_envs=4", "num_steps=32", "num_minibatches=2", "update_epochs=1"] for t in TASKS}
# RLeXplore's scores on DoorKey-16x16 at 10M steps (the bar chart; PPO from the rebuttal's Table 7)
PUBLISHED = {
    "ppo": 0.37,
    "e3b": 0.98,
    "re3": 0.94,
    "disagreement": 0.95,
    "ngu": 0.49,
    "icm": 0.07,
    "rnd": 0.02,
}
REFERENCES = {(arm, task): (v, "RLeXplore, 10M steps") for arm, v in PUBLISHED.items() for task in TASKS}


def milestones(root, threshold: float = 0.5, min_episodes: int = 20) -> str:
    """A markdown table of each run's milestones on a sparse task, read off its metrics.jsonl
    (finished or not): the first log window with a success (env reward > 0), the first whose
    >= ``min_episodes`` finished episodes average a return above ``threshold`` ("solved"),
    the env return summed over training (the per-step mean env reward of each window times
    its steps: about 0.6 a success here) and the last window's episodes, return and entropy."""
    from rl.report import find_runs
    from rl.runs import read_metrics

    lines = [
        "| run | env steps | first success | solved from | env return summed | last window: episodes, return | entropy |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in find_runs(root):
        rows = [r for r in read_metrics(Path(run["dir"]) / "metrics.jsonl") if "reward/extrinsic" in r]
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        gaps = [b - a for a, b in zip([0, *steps], steps)]
        first = next((r["step"] for r in rows if r["reward/extrinsic"] > 0), None)
        solved = next(
            (
                r["step"]
                for r in rows
                if r.get("train/episodes", 0) >= min_episodes and r["train/episode_return"] > threshold
            ),
            None,
        )
        summed = sum(r["reward/extrinsic"] * g for r, g in zip(rows, gaps))
        last = rows[-1]
        n = last.get("train/episodes", 0)
        window = f"{n}, {last['train/episode_return']:.2f}" if n else "0, -"

        def m(x):
            return "-" if x is None else f"{x / 1e6:.2f}M"

        lines.append(
            f"| {run['name']} | {m(last['step'])} | {m(first)} | {m(solved)} | {summed:.1f} | {window} | {last['ppo/entropy']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--milestones" in argv:  # python experiments/intrinsic.py --milestones RUNS_DIR
        i = argv.index("--milestones")
        if i + 1 >= len(argv) or not Path(argv[i + 1]).is_dir():
            raise SystemExit("--milestones needs a folder of run directories")
        print(milestones(argv[i + 1]))
        return 0
    return experiment_lib.grid_main(
        argv,
        __doc__,
        EXPERIMENT,
        ARMS,
        TASKS,
        BUDGETS,
        SMOKE,
        "Intrinsic rewards on DoorKey-16x16: RLeXplore's table and HIRE's fusions",
        references=REFERENCES,
        default_tasks=[XLAND],
    )


if __name__ == "__main__":
    sys.exit(main())
