"""What vmapping C-MORL's population over preferences buys on this machine: one stage-1 update
(C-MORL's PPO settings: 512 steps x 8 envs, 10 epochs x 32 minibatches) and one env step's
action sampling for the whole population, vmapped against a Python loop over the members'
own jitted programs, on the same rollout. Steady state (compiled first), medians of repeats.

    python experiments/bench/cmorl.py [--env mo:mo-hopper-2obj-v5] [--members 6] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # rl, when run as a script


def median_time(fn, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn())  # compiled and warm
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="mo:mo-hopper-2obj-v5")
    p.add_argument("--members", type=int, default=6)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from rl import config as config_lib
    from rl import envs
    from rl.agents import cmorl
    from rl.rewards import multiobjective as mo

    cfg = config_lib.build(cmorl.Config, overrides={"env": args.env})
    spec = envs.make_spec(cfg.env, cfg.num_envs, 0, **cfg.env_options)
    P, T, E, k = args.members, cfg.num_steps, cfg.num_envs, spec.reward_dim
    init = jax.jit(partial(cmorl.init_member, cfg, spec))
    members = cmorl.stack([init(key) for key in jax.random.split(jax.random.PRNGKey(0), P)])
    rng = np.random.default_rng(0)
    rollout = {  # a synthetic rollout of the right shapes: the update's cost does not depend on values
        "x": rng.standard_normal((P, T, E, *spec.obs_shape)).astype(np.float32),
        "action": rng.standard_normal((P, T, E, *spec.action_shape)).astype(np.float32),
        "reward": rng.standard_normal((P, T, E, k)).astype(np.float32),
        "terminated": rng.random((P, T, E)) < 0.002,
        "truncated": rng.random((P, T, E)) < 0.002,
        "final_x": rng.standard_normal((P, T, E, *spec.obs_shape)).astype(np.float32),
        "last_x": rng.standard_normal((P, E, *spec.obs_shape)).astype(np.float32),
    }
    rollout = jax.tree.map(jnp.asarray, rollout)
    weights = jnp.asarray(
        mo.simplex_grid(k, 1.0 / (P - 1)) if k == 2 else mo.sample_simplex(jax.random.PRNGKey(1), P, k)
    )
    objs, key = jnp.zeros(P, jnp.int32), jax.random.PRNGKey(2)

    def member(tree, i):
        return jax.tree.map(lambda a: a[i], tree)

    together = cmorl.update_population(cfg, spec, False)
    alone = jax.jit(lambda m, r, w, o, kk: cmorl.update(cfg, spec, False, m, r, w, o, kk))
    parts = [(member(members, i), member(rollout, i), weights[i], objs[i]) for i in range(P)]
    keys = jax.random.split(key, P)
    t_vmap = median_time(lambda: together(members, rollout, weights, objs, key)[0].params, args.repeats)
    t_loop = median_time(lambda: [alone(*x, kk)[0].params for x, kk in zip(parts, keys)], args.repeats)

    act_all = jax.jit(partial(cmorl.act, cfg, spec, False))
    act_one = jax.jit(
        lambda m, o, kk: cmorl.act(cfg, spec, False, jax.tree.map(lambda a: a[None], m), o[None], kk)
    )
    obs = jnp.asarray(rng.standard_normal((P, E, *spec.obs_shape)).astype(np.float32))
    singles = [member(members, i) for i in range(P)]
    a_vmap = median_time(lambda: act_all(members, obs, key)[2], 50 * args.repeats)
    a_loop = median_time(
        lambda: [act_one(m, obs[i], key)[2] for i, m in enumerate(singles)], 50 * args.repeats
    )

    steps = P * T * E
    print(
        f"{args.env}, {P} members x {E} envs x {T} steps ({steps:,} env steps per rollout); {jax.devices()[0]}"
    )
    print("| | vmapped | loop over members | speed-up |")
    print("|---|---|---|---|")
    print(f"| stage-1 update (10 epochs x 32 minibatches) | {t_vmap * 1e3:,.0f} ms | {t_loop * 1e3:,.0f} ms | {t_loop / t_vmap:.2f}x |")  # fmt: skip
    print(f"| action sampling, one env step | {a_vmap * 1e6:,.0f} us | {a_loop * 1e6:,.0f} us | {a_loop / a_vmap:.2f}x |")  # fmt: skip
    per_step = (t_vmap + T * a_vmap) / steps, (t_loop + T * a_loop) / steps
    print(f"| learner time per env step (update + sampling) | {per_step[0] * 1e6:.1f} us | {per_step[1] * 1e6:.1f} us | {per_step[1] / per_step[0]:.2f}x |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
