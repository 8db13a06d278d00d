"""Relabeling with a learned preference reward: the time to evaluate B-Pref's 3 x 256 ensemble
(``rl.rewards.PreferenceReward``) on every stored transition of a walker-walk-sized replay
(obs 24, action 6), its FLOPs from XLA's cost analysis and the fraction of the CPU's matmul
peak (about 174 GFLOP/s, README).

    python experiments/bench/preference.py               # 1M transitions
    python experiments/bench/preference.py --quick       # 64k: a smoke run of the script
    python experiments/bench/preference.py --overhead 12000   # PEBBLE vs SAC wall time, walker-walk

``--overhead N``: SAC and PEBBLE (``--config pebble``: the same networks, batch and learning
rates) for N env steps each on walker-walk, one after the other in this process, and the
ratio of their wall times. At N = 12,000 PEBBLE's run holds every phase: 1,000 random
steps, pre-training on the k-NN state entropy to 10,000, the first feedback session (100
queries, the ensemble's fit), the critic reset, then the preference reward.

The replay's arrays are read in place: one jitted ``lax.map`` over chunks of the stored
transitions (a reshape, no copy), writing one reward per transition.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # rl, when run as a script

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

PEAK_GFLOPS = 174.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--chunk", type=int, default=65_536, help="transitions per matmul chunk")
    p.add_argument("--overhead", type=int, default=0, help="env steps of the PEBBLE vs SAC wall-time run")
    args = p.parse_args(argv)
    if args.overhead:
        return overhead(args.overhead)
    n = 65_536 if args.quick else 1_048_576

    from rl import envs
    from rl.rewards import PreferenceReward

    spec = envs.make_spec("dmc:walker-walk", 1, 0)  # obs 24, action 6
    term = PreferenceReward()  # B-Pref's: 3 members of 3 x 256, LeakyReLU, tanh
    state = term.init(jax.random.PRNGKey(0), spec)
    rng = np.random.default_rng(0)
    obs = jnp.asarray(rng.normal(size=(n, *spec.obs_shape)), jnp.float32)
    action = jnp.asarray(rng.uniform(-1, 1, (n, *spec.action_shape)), jnp.float32)

    def relabel(params, obs, action):
        chunks = lambda x: x.reshape(-1, args.chunk, *x.shape[1:])  # noqa: E731

        def one(xs):
            return term.member_rewards(state, params, *xs).mean(0)

        return jax.lax.map(one, (chunks(obs), chunks(action))).reshape(-1)

    compiled = jax.jit(relabel).lower(state.params, obs, action).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan"))) * (
        n // args.chunk
    )  # the analysis counts a loop's body once
    jax.block_until_ready(compiled(state.params, obs, action))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(state.params, obs, action))
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    mem = compiled.memory_analysis()
    temp = mem.temp_size_in_bytes / 2**20 if mem is not None else float("nan")
    print("| transitions | ensemble | seconds (median of 3) | GFLOP | GFLOP/s | of peak | temp MiB |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {n:,} | 3 x (3 x 256) | {sec:.2f} | {flops / 1e9:.0f} | {flops / 1e9 / sec:.1f} | "
        f"{100 * flops / 1e9 / sec / PEAK_GFLOPS:.0f}% | {temp:.0f} |"
    )
    return 0


def overhead(steps: int) -> int:
    """Wall time of SAC and of PEBBLE for ``steps`` env steps on walker-walk (wandb off, no
    evaluation beyond one episode at the end)."""
    import tempfile

    from rl import config as config_lib
    from rl.agents import sac

    common = {"env": "dmc:walker-walk", "total_steps": steps, "eval_episodes": 1, "log_every": 1000}
    arms = {
        "SAC": (  # PEBBLE's settings on the env reward: the same updates from the same step
            [],
            {
                "batch_size": 1024,
                "actor_lr": 5e-4,
                "critic_lr": 5e-4,
                "init_alpha": 0.1,
                "learning_starts": 1000,
            },
        ),
        "PEBBLE": (["pebble"], {}),
    }
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (presets, over) in arms.items():
            cfg = config_lib.build(sac.Config, presets, {**common, **over, "runs_dir": tmp, "run_name": name})
            t0 = time.perf_counter()
            sac.train(cfg)
            rows[name] = time.perf_counter() - t0
    print("| agent | env steps | wall s | steps/s | vs SAC |\n|---|---|---|---|---|")
    for name, sec in rows.items():
        print(f"| {name} | {steps:,} | {sec:.0f} | {steps / sec:.0f} | {sec / rows['SAC']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
