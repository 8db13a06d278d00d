"""PEBBLE (Lee, Smith & Abbeel 2021) and B-Pref's teacher ablations (Lee et al. 2021) with SAC.

    python experiments/pebble.py --budget smoke                     # the arms' pipeline, minutes
    python experiments/pebble.py --budget paper --jobs 1            # 200k steps x 3 seeds: days here
    python experiments/pebble.py --arms sac,pebble-1000 --steps 200000 --seeds 0 --jobs 1
    python experiments/pebble.py --report-only

Arms: SAC on the true reward (the upper bound), PEBBLE (``--config pebble``: state-entropy
pre-training, critic reset, the preference reward) with feedback budgets of 100, 500 and 1000
labels (10, 50 and 100 queries a session, every 20,000 env steps as B-Pref's walker-walk runs),
and at 1000 labels each of B-Pref's scripted teachers (stoch, mistake, myopic, skip, equal; the
oracle is ``pebble-1000``); PrefPPO (``--config prefppo``, B-Pref's ``train_PrefPPO.py``
settings: 32 envs, state-entropy pre-training for 32,000 steps, 1000 labels). Tasks: DMC walker-walk and cheetah-run, state observations.

Budget stated as a deviation: B-Pref trains walker-walk for 500k steps with 2 x 1024 actor and
critic; here 200k steps with 2 x 256 (``configs/pebble.yaml``), about 40 minutes of SAC per run
on 2 cores. The papers' numbers are not in the report yet: B-Pref publishes its results as
learning curves (Lee et al. 2021, fig. 3 onwards), not tables, and they have not been read off.
Each run's metrics hold the reward model's training accuracy per
session (``reward/preference/accuracy``); the report does not aggregate it yet, nor EPIC between
the learned and the true reward (``rl.rewards.distances``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # rl, when run as a script

from rl import experiment as experiment_lib  # noqa: E402

EXPERIMENT = "pebble"
BUDGET_ARMS = {100: 10, 500: 50, 1000: 100}  # labels -> queries per session
TEACHER_ARMS = ["stoch", "mistake", "myopic", "skip", "equal"]


def _pebble(labels: int, teacher: str = "oracle") -> experiment_lib.Arm:
    p = "shaper.streams.preference"
    return experiment_lib.Arm(
        "sac",
        ("--config", "pebble", f"{p}.capacity={labels}", f"{p}.per_session={BUDGET_ARMS[labels]}",
         f"{p}.teacher={teacher}"),
    )  # fmt: skip


ARMS = {
    "sac": experiment_lib.Arm(
        "sac", ("batch_size=1024", "actor_lr=5e-4", "critic_lr=5e-4", "init_alpha=0.1")
    ),
    **{f"pebble-{n}": _pebble(n) for n in BUDGET_ARMS},
    **{f"pebble-1000-{t}": _pebble(1000, t) for t in TEACHER_ARMS},
    "prefppo-1000": experiment_lib.Arm("ppo", ("--config", "prefppo")),
}
TASKS = {"dmc:walker-walk": [], "dmc:cheetah-run": []}
BUDGETS = {
    "smoke": (400, [0], {"eval_episodes": 1, "log_every": 100}),
    "paper": (200_000, [0, 1, 2], {"eval_episodes": 10, "eval_every": 20_000, "checkpoint_every": 20_000}),
}
# smoke: small networks; PEBBLE's every phase inside 400 steps (random 50, pre-training to
# 150, sessions at 150 and 350)
_P = "shaper.streams"
TINY = ["hidden=[32,32]", "batch_size=32", "learning_starts=50"]
PHASES = ["reset_critic_at=150", f"{_P}.state_entropy.stop=150", f"{_P}.preference.start=150",
          f"{_P}.preference.feedback_start=150", f"{_P}.preference.feedback_every=200",
          f"{_P}.preference.segment=10", f"{_P}.preference.hidden=[32]", f"{_P}.preference.epochs=5"]  # fmt: skip
PPO_TINY = ["num_envs=2", "num_steps=50", "num_minibatches=2", "update_epochs=1", "hidden=[32,32]",
            "preference_buffer=1000", f"{_P}.state_entropy.stop=150", *PHASES[2:]]  # fmt: skip
SAC_ARMS = [a for a in ARMS if ARMS[a].agent == "sac"]
SMOKE = {
    **{("sac", t): TINY for t in TASKS},
    **{(a, t): TINY + PHASES for a in SAC_ARMS if a != "sac" for t in TASKS},
    **{("prefppo-1000", t): PPO_TINY for t in TASKS},
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
        "PEBBLE: SAC on preferences, feedback budgets and B-Pref's teachers",
    )


if __name__ == "__main__":
    sys.exit(main())
