"""Where a reward term's time goes on PPO's jitted path: one PPO iteration (rollout, Shaper,
GAE, update) against its rollout, the Shaper's step, and the term's reward and update alone.

    python experiments/bench/jitted_parts.py                  # PPO alone, ICM, RND
    python experiments/bench/jitted_parts.py --terms none,e3b --env xminigrid:MiniGrid-DoorKey-8x8

Each part is jitted on its own, compiled once, then timed over ``--repeats`` calls (median);
the iteration is timed as ``--length`` iterations in one scan, divided. The batch the parts
see is a real rollout of the fresh policy, PPO's MiniGrid preset (16 envs x 128 steps).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # rl, when run as a script

import jax  # noqa: E402

from rl import config as config_lib  # noqa: E402
from rl import jaxenvs  # noqa: E402
from rl.agents import ppo  # noqa: E402


def timed(f, *args, repeats: int) -> float:
    """Median seconds of ``f(*args)`` after one call that compiles it."""
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def parts(env_id: str, term: str, length: int, repeats: int) -> dict[str, float]:
    """Milliseconds of each part of one iteration with ``term`` (``none``: PPO alone)."""
    overrides = {"env": env_id, "anneal_lr": False}
    if term != "none":
        overrides["shaper"] = {"terms": [term]}
    cfg = config_lib.build(ppo.Config, ["ppo-minigrid"], overrides)
    shaper = ppo.build_shaper(cfg)
    env = jaxenvs.make(cfg.env, cfg.num_envs, **cfg.env_options)
    spec = env.spec
    carry = ppo.init_carry(cfg, spec, env, shaper, 0)
    iterate = jax.jit(lambda c: ppo.iterations(cfg, spec, env, shaper, c, length, length)[0])
    rollout = jax.jit(lambda c: ppo.rollout_jax(cfg, spec, env, c)[1])
    out = {
        "iteration": timed(iterate, carry, repeats=repeats) / length,
        "rollout": timed(rollout, carry, repeats=repeats),
    }
    batch = ppo.shaper_batch(rollout(carry))
    key = jax.random.PRNGKey(1)
    step = jax.jit(lambda s, b, k: shaper.step(s, b, k, cfg.batch_size))
    out["shaper step"] = timed(step, carry.state.shaper, batch, key, repeats=repeats)
    if term != "none":
        stream = next(s for s in shaper.streams if s.name == term)
        state = carry.state.shaper.terms[term]
        out["term reward"] = timed(jax.jit(stream.term.reward), state, batch, repeats=repeats)
        out["term update"] = timed(jax.jit(stream.term.update), state, batch, key, repeats=repeats)
    return {k: 1e3 * v for k, v in out.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--terms", default="none,icm,rnd", help="comma-separated; none is PPO alone")
    p.add_argument("--env", default="xminigrid:MiniGrid-DoorKey-8x8")
    p.add_argument("--length", type=int, default=10, help="iterations per timed scan")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    rows = {t: parts(args.env, t, args.length, args.repeats) for t in args.terms.split(",")}
    base = rows.get("none", {}).get("iteration")
    cols = ["iteration", "rollout", "shaper step", "term reward", "term update"]
    print("| term | " + " | ".join(f"{c} (ms)" for c in cols) + " | iteration / PPO alone |")
    print("|---" * (len(cols) + 2) + "|")
    for t, r in rows.items():
        ratio = f"{r['iteration'] / base:.2f}x" if base else "-"
        print(f"| {t} | " + " | ".join(f"{r[c]:.1f}" if c in r else "" for c in cols) + f" | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
