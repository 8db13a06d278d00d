"""Training throughput of our SAC and PPO beside Stable-Baselines3 and SBX, in one run.

    python experiments/bench/throughput.py            # full: about 12 minutes on 2 cores
    python experiments/bench/throughput.py --quick    # a smoke run of the script

Every implementation trains on gym HalfCheetah-v5 with the same hyperparameters (SAC: 256x256
MLPs, batch 256, one update per env step, 100 random steps first, 1 env; PPO: 64x64 tanh
MLPs, 2048-step rollouts, 10 epochs, minibatch 64, 1 env), each in a fresh process. The
steady-state rate excludes start-up and JIT compilation: each is trained twice, for a short
and a long budget, and rate = (steps_long - steps_short) / (time_long - time_short); the
start-up cost is what the line leaves at zero steps. Peak memory is the process's max RSS.

The peers come from the ``peers`` extra: ``pip install -e '.[peers]'`` (torch CPU,
stable-baselines3, sbx-rl). Missing peers are skipped with that hint.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # rl, when run as a script

from rl import experiment as experiment_lib  # noqa: E402

ENV = "HalfCheetah-v5"
BUDGETS = {"sac": (1_000, 5_000), "ppo": (8_192, 57_344)}
QUICK = {"sac": (300, 600), "ppo": (2_048, 4_096)}
IMPLS = ("ours", "sbx", "sb3")


def train_ours(algo: str, steps: int) -> None:
    from rl import config as config_lib
    from rl.agents import ppo, sac

    tmp = tempfile.mkdtemp(prefix="bench-")
    common = dict(env=f"gym:{ENV}", total_steps=steps, runs_dir=tmp, eval_episodes=1, log_every=steps)
    if algo == "sac":
        cfg = config_lib.build(sac.Config, overrides={**common, "learning_starts": 100, "buffer_size": steps})
        sac.train(cfg)
    else:
        cfg = config_lib.build(ppo.Config, overrides=common)
        ppo.train(cfg)


def train_peer(impl: str, algo: str, steps: int) -> None:
    import gymnasium as gym

    if impl == "sb3":
        from stable_baselines3 import PPO, SAC
    else:
        from sbx import PPO, SAC
    env = gym.make(ENV)
    if algo == "sac":
        model = SAC(
            "MlpPolicy", env, batch_size=256, learning_starts=100, train_freq=1, gradient_steps=1,
            buffer_size=steps, policy_kwargs={"net_arch": [256, 256]}, seed=0, device="cpu",
        )  # fmt: skip
    else:
        model = PPO(
            "MlpPolicy", env, n_steps=2048, batch_size=64, n_epochs=10, seed=0, device="cpu",
            policy_kwargs={"net_arch": [64, 64]},
        )  # fmt: skip
    model.learn(total_timesteps=steps)


def worker(impl: str, algo: str, steps: int) -> None:
    """Train once and print elapsed seconds (imports and process start-up excluded) and peak RSS."""
    if impl == "ours":
        import rl.agents.ppo  # noqa: F401  (import time is not training time)
    elif impl == "sb3":
        import stable_baselines3  # noqa: F401
    else:
        import sbx  # noqa: F401
    t0 = time.perf_counter()
    train_ours(algo, steps) if impl == "ours" else train_peer(impl, algo, steps)
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    print("RESULT " + json.dumps({"seconds": elapsed, "peak_mib": peak}), flush=True)


def sac_matmul_floor(repeats: int = 500) -> float:
    """Seconds for the 256-wide matmuls of one SAC update alone, run as XLA runs them here.

    One update (batch 256, 256x256 MLPs) has 16 dependent 256x256x256 matmuls: for the twin
    critic 6 batched pairs (target forward, online forward, its two backward products, the
    actor loss's critic forward and its input gradient), for the actor 4 single ones (forward
    on next_obs, forward on obs, two backward products). Everything else (the narrow input
    and output layers, optimizers, sampling) only adds to this, so 1 / floor bounds the
    updates per second any XLA SAC reaches on this machine."""
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    pair_x, pair_w = (jax.random.normal(k, (2, 256, 256)) / 16 for k in keys[:2])
    x, w = (jax.random.normal(k, (256, 256)) / 16 for k in keys[2:])

    @jax.jit
    def chain(pair_x, pair_w, x, w):
        for _ in range(6):
            pair_x = jnp.tanh(jnp.einsum("bij,bjk->bik", pair_x, pair_w))
        for _ in range(4):
            x = jnp.tanh(x @ w)
        return pair_x, x

    jax.block_until_ready(chain(pair_x, pair_w, x, w))
    best = float("inf")
    for _ in range(5):  # the best of 5 blocks: the floor, not the noise
        t0 = time.perf_counter()
        for _ in range(repeats // 5):
            out = chain(pair_x, pair_w, x, w)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - t0) / (repeats // 5))
    return best


def measure(impl: str, algo: str, steps: int) -> dict:
    return experiment_lib.worker_result(__file__, impl, algo, steps)


def available(impl: str) -> bool:
    import importlib.util

    return (
        impl == "ours"
        or importlib.util.find_spec({"sb3": "stable_baselines3", "sbx": "sbx"}[impl]) is not None
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny budgets: checks the script runs")
    p.add_argument("--algos", default="sac,ppo")
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument("--out", default="bench-throughput.json")
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        impl, algo, steps = args.worker
        return worker(impl, algo, int(steps))

    budgets = QUICK if args.quick else BUDGETS
    results = {}
    for algo in args.algos.split(","):
        for impl in args.impls.split(","):
            if not available(impl):
                print(f"skipping {impl}: install the peers with  pip install -e '.[peers]'")
                continue
            short, long = budgets[algo]
            a, b = measure(impl, algo, short), measure(impl, algo, long)
            rate = (long - short) / max(b["seconds"] - a["seconds"], 1e-9)
            startup = max(a["seconds"] - short / rate, 0.0)
            results[f"{algo}/{impl}"] = {
                "steps_per_s": rate,
                "startup_s": startup,
                "peak_mib": max(a["peak_mib"], b["peak_mib"]),
                "budgets": [short, long],
                "seconds": [a["seconds"], b["seconds"]],
            }
            print(
                f"{algo:4s} {impl:5s} {rate:8.1f} steps/s  start-up {startup:5.1f} s  peak {b['peak_mib']:6.0f} MiB"
            )

    print("\n| algo | impl | env steps/s (steady) | start-up incl. JIT (s) | peak RSS (MiB) | ours / impl |")
    print("|---|---|---|---|---|---|")
    for key, r in results.items():
        algo, impl = key.split("/")
        ours = results.get(f"{algo}/ours", {}).get("steps_per_s")
        ratio = f"{ours / r['steps_per_s']:.2f}x" if ours else "-"
        print(
            f"| {algo.upper()} | {impl} | {r['steps_per_s']:,.0f} | {r['startup_s']:.1f} | {r['peak_mib']:,.0f} | {ratio} |"
        )
    if "sac" in args.algos.split(","):
        floor = sac_matmul_floor(50 if args.quick else 500)
        results["sac/matmul_floor"] = {"seconds_per_update": floor, "updates_per_s": 1 / floor}
        sbx = results.get("sac/sbx", {}).get("steps_per_s")
        need = f"; 2x SBX needs {2 * sbx:.0f} env steps/s" if sbx else ""
        print(
            f"\nSAC update matmul floor: {floor * 1e3:.2f} ms, at most {1 / floor:.0f} updates/s "
            f"with nothing else in the step{need}"
        )
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
