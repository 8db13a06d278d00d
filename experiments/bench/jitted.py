"""PPO's jitted path (JAX-native envs) against the host loop and against rejax, in one run.

    python experiments/bench/jitted.py            # about 15 minutes on 2 cores
    python experiments/bench/jitted.py --quick    # a smoke run of the script

1. PPO's MiniGrid preset (16 envs x 128 steps, 4 epochs of 8 minibatches) on DoorKey-8x8:
   the jitted path on ``xminigrid:MiniGrid-DoorKey-8x8`` against the host loop on
   ``minigrid:MiniGrid-DoorKey-8x8-v0``, the same hyperparameters and network. Target >= 10x.
2. The jitted path against rejax's PPO (``rejax.PPO``, its own jitted train loop) on
   ``gymnax:CartPole-v1`` at the ``ppo-cartpole`` preset's hyperparameters (8 envs x 32 steps,
   20 epochs of 1 minibatch, 64x64 tanh MLPs). Target >= 1x.
3. The jitted path with each intrinsic term on xminigrid DoorKey-8x8, against PPO alone.
   Targets as for the host loop: ICM and RND <= 1.3x, the k-NN terms <= 2x.

Every arm trains in a fresh process at a short and a long budget; the steady-state rate is
the step difference over the time difference (start-up and compilation left out), medians of
``--repeats`` alternating runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # rl, when run as a script

from rl import experiment as experiment_lib  # noqa: E402

TERMS = ["none", "icm", "rnd", "ngu", "e3b", "disagreement", "re3", "state_entropy"]
TARGETS = {"icm": 1.3, "rnd": 1.3, "ngu": 2.0, "re3": 2.0, "state_entropy": 2.0}
BUDGETS = {"minigrid": (2048 * 4, 2048 * 24), "xminigrid": (2048 * 20, 2048 * 220),
           "cartpole": (256 * 40, 256 * 1240), "terms": (2048 * 10, 2048 * 60)}  # fmt: skip
QUICK = {"minigrid": (2048, 4096), "xminigrid": (2048, 4096), "cartpole": (512, 1024), "terms": (2048, 4096)}
CARTPOLE = {"num_envs": 8, "num_steps": 32, "num_minibatches": 1, "update_epochs": 20, "lr": 1e-3,
            "gamma": 0.98, "gae_lambda": 0.8, "ent_coef": 0.0}  # the ppo-cartpole preset  # fmt: skip


def ours(env: str, preset: str, steps: int, term: str = "none") -> None:
    from rl import config as config_lib
    from rl.agents import ppo

    overrides = {"env": env, "total_steps": steps, "runs_dir": tempfile.mkdtemp(prefix="bench-"),
                 "eval_episodes": 1, "log_every": steps, "anneal_lr": False}  # fmt: skip
    if term != "none":
        overrides["shaper"] = {"terms": [term]}
    cfg = config_lib.build(ppo.Config, [preset], overrides)
    ppo.train(cfg)


def rejax_ppo(steps: int) -> None:
    import jax
    import jax.numpy as jnp
    from rejax import PPO

    c = CARTPOLE
    algo = PPO.create(
        env="CartPole-v1", total_timesteps=steps, eval_freq=steps, skip_initial_evaluation=True,
        num_envs=c["num_envs"], num_steps=c["num_steps"], num_minibatches=c["num_minibatches"],
        num_epochs=c["update_epochs"], learning_rate=c["lr"], gamma=c["gamma"], gae_lambda=c["gae_lambda"],
        ent_coef=c["ent_coef"], clip_eps=0.2, vf_coef=0.5, max_grad_norm=0.5,
        normalize_observations=False, normalize_rewards=False, agent_kwargs={"activation": "tanh"},
    )  # fmt: skip
    algo = algo.replace(eval_callback=lambda algo, ts, rng: jnp.zeros(()))  # timing training only
    ts, _ = jax.jit(algo.train)(jax.random.PRNGKey(0))
    jax.block_until_ready(ts)


ARMS = {
    "host": lambda n, t: ours("minigrid:MiniGrid-DoorKey-8x8-v0", "ppo-minigrid", n, t),
    "jitted": lambda n, t: ours("xminigrid:MiniGrid-DoorKey-8x8", "ppo-minigrid", n, t),
    "ours-cartpole": lambda n, t: ours("gymnax:CartPole-v1", "ppo-cartpole", n, t),
    "rejax-cartpole": lambda n, t: rejax_ppo(n),
}


def worker(arm: str, steps: int, term: str) -> None:
    import rl.agents.ppo  # noqa: F401  (import time is not training time)

    t0 = time.perf_counter()
    ARMS[arm](steps, term)
    print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0}), flush=True)


def rates(pairs: list[tuple[str, str]], budgets: tuple[int, int], repeats: int) -> dict:
    """Steady-state env steps/s of each (arm, term), alternating the arms each repeat."""
    times = {p: [] for p in pairs}
    for _ in range(repeats):
        for arm, term in pairs:
            times[(arm, term)].append(
                [experiment_lib.worker_result(__file__, arm, n, term)["seconds"] for n in budgets]
            )
    out = {}
    for p, ts in times.items():
        short, long = (statistics.median(t[i] for t in ts) for i in (0, 1))
        out[p] = (budgets[1] - budgets[0]) / (long - short) if long > short else float("nan")  # noise won
        print(
            f"{p[0]:16s} {p[1]:14s} {out[p]:10,.0f} env steps/s  (median s {short:.2f} / {long:.2f})",
            flush=True,
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--parts", default="host,rejax,terms")
    p.add_argument("--terms", default=",".join(TERMS))
    p.add_argument("--out", default="bench-jitted.json")
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker[0], int(args.worker[1]), args.worker[2])
    b = QUICK if args.quick else BUDGETS
    parts, results, lines = args.parts.split(","), {}, []
    if "host" in parts:  # the two paths need different budgets to reach their steady states
        host = rates([("host", "none")], b["minigrid"], args.repeats)[("host", "none")]
        jit = rates([("jitted", "none")], b["xminigrid"], args.repeats)[("jitted", "none")]
        results["doorkey"] = {"host": host, "jitted": jit}
        lines += ["| PPO, MiniGrid preset, DoorKey-8x8 | env steps/s |", "|---|---|",
                  f"| host loop, minigrid:MiniGrid-DoorKey-8x8-v0 | {host:,.0f} |",
                  f"| jitted, xminigrid:MiniGrid-DoorKey-8x8 | {jit:,.0f} ({jit / host:.1f}x; target >= 10x) |", ""]  # fmt: skip
    if "rejax" in parts and importlib.util.find_spec("rejax") is None:
        print("rejax is not installed (pip install -e '.[peers]'): its comparison is skipped", flush=True)
        parts.remove("rejax")
    if "rejax" in parts:
        r = rates([("ours-cartpole", "none"), ("rejax-cartpole", "none")], b["cartpole"], args.repeats)
        o, x = r[("ours-cartpole", "none")], r[("rejax-cartpole", "none")]
        results["cartpole"] = {"ours": o, "rejax": x}
        lines += ["| PPO on gymnax:CartPole-v1, ppo-cartpole preset | env steps/s |", "|---|---|",
                  f"| rejax 0.1.3 | {x:,.0f} |", f"| ours, jitted | {o:,.0f} ({o / x:.2f}x; target >= 1x) |", ""]  # fmt: skip
    if "terms" in parts:
        r = rates([("jitted", t) for t in args.terms.split(",")], b["terms"], args.repeats)
        base = r.get(("jitted", "none"))
        results["terms"] = {t: v for (_, t), v in r.items()}
        lines += ["| jitted PPO on xminigrid DoorKey-8x8 with | env steps/s | time per step / PPO alone | target |",
                  "|---|---|---|---|"]  # fmt: skip
        for (_, t), v in r.items():
            ratio = f"{base / v:.2f}x" if base else "-"
            target = f"<= {TARGETS[t]}x" if t in TARGETS else "-"
            lines.append(f"| {t if t != 'none' else 'nothing (PPO alone)'} | {v:,.0f} | {ratio} | {target} |")
    print("\n" + "\n".join(lines))
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
