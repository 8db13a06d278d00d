"""PEBBLE (Lee, Smith & Abbeel 2021) and B-Pref's teacher ablations (Lee et al. 2021) with SAC.

    python experiments/pebble.py --budget smoke                     # the arms' pipeline, minutes
    python experiments/pebble.py --budget paper --jobs 1            # 200k steps x 3 seeds: days here
    python experiments/pebble.py --arms sac,pebble-1000 --steps 200000 --seeds 0 --jobs 1
    python experiments/pebble.py --report-only
    python experiments/pebble.py --accuracy RUN_DIR   # the learned reward on held-out segment pairs

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
session (``reward/preference/accuracy``); ``--accuracy RUN_DIR`` scores the learned reward on
held-out pairs (fresh episodes, half greedy and half random, ordered as the true reward
orders them). EPIC (``rl.rewards.distances``) is not computed here: it canonicalizes over
transitions (s, a, s') with s' drawn independently of s, where a DMC task's true reward is
a function of the simulator's state (walker's torso-subtree velocity), not of the observation,
so it cannot be evaluated on such made-up transitions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

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


def window_starts(episode_id, segment: int) -> np.ndarray:
    """The steps where a ``segment``-step window starts and ends in the same episode (the
    episodes are contiguous runs of ``episode_id``)."""
    episode_id = np.asarray(episode_id)
    return np.flatnonzero(episode_id[: len(episode_id) - segment + 1] == episode_id[segment - 1 :])


def pair_accuracy(predicted, true, episode_id, segment: int, pairs: int, seed: int = 0) -> dict:
    """How often the learned reward orders held-out segment pairs as the true reward does:
    ``pairs`` random pairs of ``segment``-step windows, each inside one episode
    (``episode_id`` [N] per step), ranked by their summed ``predicted`` and ``true`` rewards
    [N]; pairs whose true returns tie are left out. Also the per-step Pearson correlation."""
    predicted, true = np.asarray(predicted), np.asarray(true)
    starts = window_starts(episode_id, segment)
    if len(starts) < 2:
        raise ValueError(f"no two {segment}-step windows inside episodes: collect longer episodes")
    rng = np.random.default_rng(seed)
    a, b = rng.choice(starts, (2, pairs))
    window = np.arange(segment)
    pred = predicted[a[:, None] + window].sum(1) - predicted[b[:, None] + window].sum(1)
    truth = true[a[:, None] + window].sum(1) - true[b[:, None] + window].sum(1)
    keep = np.abs(truth) > 1e-6
    return {
        "accuracy": float(np.mean(np.sign(pred[keep]) == np.sign(truth[keep]))),
        "pairs": int(keep.sum()),
        "pearson": float(np.corrcoef(predicted, true)[0, 1]),
    }


def held_out_accuracy(run_dir, episodes: int = 10, pairs: int = 5000, seed: int = 20_000) -> dict:
    """A PEBBLE run's learned reward (its latest checkpoint) on fresh episodes of the same env,
    half by the run's greedy policy and half uniformly random, scored by :func:`pair_accuracy`
    against the env's true reward at the term's segment length."""
    import jax.numpy as jnp

    from rl import agents, envs
    from rl.nets import action_bounds, to_env

    module, cfg, state, _, ckpt = agents.restore(run_dir)
    shaper = module.build_shaper(cfg)
    stream = next((s for s in shaper.streams if s.name == "preference"), None)
    if stream is None:
        raise ValueError(f"{run_dir} trains no preference reward (no stream named preference)")
    term, tstate = stream.term, state.shaper.terms["preference"]
    env, spec = envs.make(cfg.env, 1, seed, **cfg.env_options)
    actor, low, high = module.networks(cfg, spec)[0], *action_bounds(spec, "SAC")
    rng = np.random.default_rng(seed)
    obs_l, act_l, rew_l, ep_l = [], [], [], []
    obs, _ = env.reset()
    for ep in range(episodes):
        greedy, done = ep % 2 == 0, False
        while not done:
            if greedy:
                mean = actor.apply({"params": state.actor}, jnp.asarray(obs, jnp.float32))[0]
                action = np.asarray(to_env(jnp.tanh(mean), low, high))
            else:
                action = rng.uniform(low, high, (1, *spec.action_shape)).astype(np.float32)
            nxt, reward, terminated, truncated, _ = env.step(action)
            obs_l.append(obs[0]), act_l.append(action[0]), rew_l.append(float(reward[0])), ep_l.append(ep)
            obs, done = nxt, bool(terminated[0] or truncated[0])
    env.close()
    o, a = jnp.asarray(np.stack(obs_l), jnp.float32), jnp.asarray(np.stack(act_l), jnp.float32)
    predicted = np.asarray(term.member_rewards(tstate, tstate.params, o, a).mean(0))
    result = pair_accuracy(predicted, np.array(rew_l), np.array(ep_l), term.segment, pairs)
    return {"checkpoint": ckpt.name, "episodes": episodes, "steps": len(rew_l), **result}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--accuracy" in argv:  # python experiments/pebble.py --accuracy RUN_DIR
        i = argv.index("--accuracy")
        if i + 1 >= len(argv) or not Path(argv[i + 1]).is_dir():
            raise SystemExit("--accuracy needs a PEBBLE run directory")
        print(json.dumps(held_out_accuracy(argv[i + 1]), indent=2))
        return 0
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
