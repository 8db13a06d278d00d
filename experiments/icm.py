"""ICM (Pathak et al. 2017): PPO with and without the curiosity bonus on sparse-reward tasks.

    python experiments/icm.py --budget smoke                      # seconds: the tests run this
    python experiments/icm.py --steps 300000 --seeds 0,1,2        # the reported budget
    python experiments/icm.py --report-only

Tasks where extrinsic-only PPO finds no reward at small budgets: MountainCar-v0 (reward
only at the flag; every step costs -1), MiniGrid DoorKey-8x8 (reward only for opening the
door with the key) and DMC cartpole-swingup_sparse (reward only with the pole up). The ICM
arm adds ``shaper.terms=[icm]``: the bonus eta/2 ||f(phi(s), a) - phi(s')||^2, normalized by
its running std and weighted 0.01, to the env reward; nothing else differs. The
``ppo+icm-decay`` arm weights it 0.001 and decays that by (1 - 2.45e-6)^t over env steps t:
(1 - 0.005) per 2,048-step rollout of the MiniGrid preset, the decay of the reported runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # rl, when run as a script

from rl import experiment as experiment_lib  # noqa: E402

EXPERIMENT = "icm"
ARMS = {
    "ppo": experiment_lib.Arm("ppo"),
    "ppo+icm": experiment_lib.Arm("ppo", ("shaper.terms=[icm]", "shaper.streams.icm.weight=0.01")),
    # a tenth of the bonus, decayed by 0.5% a 2,048-step rollout (RLeXplore's beta (1 - kappa)^t)
    "ppo+icm-decay": experiment_lib.Arm(
        "ppo", ("shaper.terms=[icm]", "shaper.streams.icm.weight=0.001", "shaper.intrinsic_decay=2.45e-6")
    ),
}
# task -> the PPO settings both arms use there
TASKS = {
    "gym:MountainCar-v0": [
        "num_envs=8",
        "num_steps=128",
        "num_minibatches=4",
        "update_epochs=4",
        "gamma=0.99",
    ],
    "minigrid:MiniGrid-DoorKey-8x8-v0": ["--config", "ppo-minigrid"],
    "dmc:cartpole-swingup_sparse": ["num_envs=4", "num_steps=512", "num_minibatches=8"],
}
# budget -> (env steps per run, seeds, extra overrides)
BUDGETS = {
    "smoke": (1_024, [0], {"eval_episodes": 1, "log_every": 256}),
    "paper": (1_000_000, [0, 1, 2], {"eval_episodes": 10, "log_every": 10_000}),
}
SMOKE = {  # tiny rollouts: the pipeline, not the score
    "gym:MountainCar-v0": ["num_steps=64", "num_envs=4"],
    "minigrid:MiniGrid-DoorKey-8x8-v0": ["num_envs=4", "num_steps=64"],
    "dmc:cartpole-swingup_sparse": ["num_envs=2", "num_steps=256"],
}


def main(argv=None) -> int:
    return experiment_lib.grid_main(
        argv,
        __doc__,
        EXPERIMENT,
        ARMS,
        TASKS,
        BUDGETS,
        SMOKE,
        "ICM: PPO with and without curiosity on sparse rewards",
    )


if __name__ == "__main__":
    sys.exit(main())
