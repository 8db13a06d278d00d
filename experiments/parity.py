"""PPO on DoorKey-8x8 in XLand-MiniGrid (jitted) against Farama MiniGrid (host loop): do the
two learn alike at equal env steps?

    python experiments/parity.py --budget smoke
    python experiments/parity.py --budget paper --seeds 0,1,2 --tasks minigrid:MiniGrid-DoorKey-8x8-v0,xminigrid:MiniGrid-DoorKey-8x8
    python experiments/parity.py --steps 300000 --seeds 0,1,2 --tasks minigrid:MiniGrid-DoorKey-5x5-v0,xminigrid:MiniGrid-DoorKey-5x5
    python experiments/parity.py --report-only

One arm, PPO's MiniGrid preset (rl-starter-files' hyperparameters), on
``minigrid:MiniGrid-DoorKey-8x8-v0`` (the host loop) and ``xminigrid:MiniGrid-DoorKey-8x8``
(the jitted path), and the same pair at 5x5, which PPO learns within a few hundred thousand
steps. The envs differ in what the agent sees (``rl/jaxenvs.py``: a [7, 7, 2] view
that walls do not occlude against MiniGrid's occluded [7, 7, 3]) and in the action set (6 against
7, without MiniGrid's no-op ``done``); reward and step limit are the same. The report's curves
put the two side by side with their seed spread.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # rl, when run as a script

from rl import experiment as experiment_lib  # noqa: E402

ARMS = {"ppo": experiment_lib.Arm("ppo")}
MINIGRID = ["--config", "ppo-minigrid"]
TASKS = {
    "minigrid:MiniGrid-DoorKey-8x8-v0": MINIGRID,
    "xminigrid:MiniGrid-DoorKey-8x8": MINIGRID,
    "minigrid:MiniGrid-DoorKey-5x5-v0": MINIGRID,
    "xminigrid:MiniGrid-DoorKey-5x5": MINIGRID,
}
BUDGETS = {
    "smoke": (2048, [0], {"eval_episodes": 1, "log_every": 1024}),
    "paper": (500_000, [0, 1, 2, 3, 4], {"eval_episodes": 10, "log_every": 10_240}),
}
SMOKE = {t: ["num_envs=2", "num_steps=64", "num_minibatches=2"] for t in TASKS}


def main(argv=None) -> int:
    return experiment_lib.grid_main(
        argv,
        __doc__,
        "parity",
        ARMS,
        TASKS,
        BUDGETS,
        SMOKE,
        "PPO on DoorKey-8x8: XLand-MiniGrid against MiniGrid",
    )


if __name__ == "__main__":
    sys.exit(main())
