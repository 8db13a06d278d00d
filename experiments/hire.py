"""HIRE (Yuan et al., "Deep Reinforcement Learning with Hybrid Intrinsic Reward Model"): single
intrinsic rewards against their fusions, with PPO.

    python experiments/hire.py --budget smoke                     # seconds: the tests run this
    python experiments/hire.py --steps 500000 --seeds 0,1         # the reported budget
    python experiments/hire.py --report-only

Arms: ICM, RND, NGU and E3B alone, and the four of them fused by ``sum``, ``product``, ``max``
and ``cycle`` (the active term switches every 20,480 env steps: 10 rollouts of the MiniGrid
preset). Every intrinsic stream is divided
by its running std before fusion and the fused bonus is weighted 0.01 against the env reward.
Tasks: MiniGrid DoorKey-8x8, KeyCorridorS3R3 and MultiRoom-N4-S5 (PPO's MiniGrid preset) and
Atari MontezumaRevenge (PPO's Atari preset), the paper's kinds of sparse-reward tasks. The
report's table is the paper's layout (rows: tasks; columns: single terms, then fusions).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # rl, when run as a script

from rl import experiment as experiment_lib  # noqa: E402

EXPERIMENT = "hire"
TERMS = ["icm", "rnd", "ngu", "e3b"]
WEIGHT = "0.01"
ARMS = {
    **{
        t: experiment_lib.Arm(
            "ppo",
            (f"shaper.terms=[{t}]", f"shaper.intrinsic_weight={WEIGHT}", f"shaper.streams.{t}.weight=1"),
        )
        for t in TERMS
    },
    **{
        fuse: experiment_lib.Arm(
            "ppo",
            (
                f"shaper.terms=[{','.join(TERMS)}]",
                f"shaper.fuse={fuse}",
                "shaper.cycle_every=20480",
                f"shaper.intrinsic_weight={WEIGHT}",
                *(f"shaper.streams.{t}.weight=1" for t in TERMS),
            ),
        )  # fmt: skip
        for fuse in ("sum", "product", "max", "cycle")
    },
}
MINIGRID = ["--config", "ppo-minigrid"]
TASKS = {
    "minigrid:MiniGrid-DoorKey-8x8-v0": MINIGRID,
    "minigrid:MiniGrid-KeyCorridorS3R3-v0": MINIGRID,
    "minigrid:MiniGrid-MultiRoom-N4-S5-v0": MINIGRID,
    "atari:MontezumaRevenge": ["--config", "ppo-atari"],
}
BUDGETS = {
    "smoke": (512, [0], {"eval_episodes": 1, "log_every": 256}),
    "paper": (10_000_000, [0, 1, 2], {"eval_episodes": 10, "log_every": 10_000}),
}
SMOKE = {t: ["num_envs=2", "num_steps=64"] for t in TASKS}
SMOKE["atari:MontezumaRevenge"] = ["num_envs=2", "num_steps=64", "env_options.max_episode_steps=100"]


def main(argv=None) -> int:
    return experiment_lib.grid_main(
        argv,
        __doc__,
        EXPERIMENT,
        ARMS,
        TASKS,
        BUDGETS,
        SMOKE,
        "HIRE: single intrinsic rewards and their fusions",
    )


if __name__ == "__main__":
    sys.exit(main())
