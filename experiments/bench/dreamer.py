"""Dreamer's update cost per preset: time per update, FLOPs (XLA's cost analysis), the fraction
of the CPU's matmul peak, memory, and the env steps/s it allows at the preset's train ratio.

    python experiments/bench/dreamer.py              # a few minutes on 2 cores
    python experiments/bench/dreamer.py --quick      # a smoke run of the script
    python experiments/bench/dreamer.py --official DV3_VENV/bin/python,DV3_SRC   # beside DreamerV3

Each preset runs in a fresh process on ``dmc:cartpole-swingup`` (state; ``xs-pixels``: 64x64
frames): a replay filled with 2,000 random steps, then the jitted update (world model,
imagination, actor and critic; the Shaper's reward) timed over ``--updates`` calls after one
warm-up call, and the collect step (policy, replay add, env step) over 200 steps. The
projected rate is 1 / (collect + updates per env step x update); 100k steps at it is the XS
target (< 90 minutes). Peak: the CPU does about 174 GFLOP/s on large matmuls (README).

``--official``: the official DreamerV3 (danijar/dreamerv3, in its own virtualenv with JAX 0.4.33:
setup in ``dreamerv3_official.py``) and ours at its ``size1m`` preset, batch 16 x 64, float32,
on the same 5-d observation / 1-d action shapes (cartpole-swingup's), alternated in fresh
processes ``--repeats`` times; the ratio of the medians of their train-step times.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # rl, when run as a script

from rl import experiment as experiment_lib  # noqa: E402

PEAK_GFLOPS = 174.0
PRESETS = {  # name: (config presets, overrides)
    "xs": (["dreamer-xs"], {}),
    "size1m": (["dreamer-size1m"], {}),
    "size12m": (["dreamer-size12m"], {}),
    "xs-pixels": (["dreamer-xs"], {"env_options": {"pixels": True}}),
    "xs-pixels-strided": (["dreamer-xs"], {"env_options": {"pixels": True}, "strided": True}),
}


def worker(name: str, updates: int) -> dict:
    import jax
    import numpy as np

    from rl import config as config_lib
    from rl import envs
    from rl.agents import dreamer
    from rl.replay import Replay

    presets, over = PRESETS[name]
    cfg = config_lib.build(
        dreamer.Config, presets, {"env": "dmc:cartpole-swingup", "buffer_size": 20_000, **over}
    )
    env, spec = envs.make(cfg.env, 1, 0, **cfg.env_options)
    nets, shaper = dreamer.networks(cfg, spec), dreamer.build_shaper(cfg)
    replay = Replay.from_spec(spec, cfg.buffer_size)
    state, rs = dreamer.init(cfg, spec, jax.random.PRNGKey(0), shaper), replay.init()
    collect = jax.jit(
        partial(dreamer.train_step, cfg, spec, nets, shaper, replay, False), donate_argnums=(0, 1)
    )
    carry = dreamer.initial_carry(cfg, nets, 1)
    obs, _ = env.reset(seed=0)
    action = np.asarray(spec.action_space.sample()[None])
    times = []
    for i in range(2000):
        t0 = time.perf_counter()
        nxt, r, te, tr, info = env.step(action)
        t = dict(obs=obs, action=action, reward=r, terminated=te, truncated=tr, next_obs=info["next_obs"])
        state, rs, carry, action, _ = collect(state, rs, carry, t, nxt)
        action = np.asarray(action)
        obs = nxt
        if i >= 1800:
            times.append(time.perf_counter() - t0)
    collect_s = statistics.median(times)

    def one(state, key):
        batch = replay.sample_chunks(rs, key, cfg.batch_size, cfg.batch_length)
        return dreamer.update(cfg, spec, nets, shaper, state, batch)

    fn = jax.jit(one, donate_argnums=0)
    t0 = time.perf_counter()
    compiled = fn.lower(state, jax.random.PRNGKey(0)).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan")))
    mem = compiled.memory_analysis()
    state, m = compiled(state, jax.random.PRNGKey(1))
    jax.block_until_ready(m)
    times = []
    for i in range(updates):
        t0 = time.perf_counter()
        state, m = compiled(state, jax.random.PRNGKey(2 + i))
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    update_s = statistics.median(times)
    per_step = cfg.updates_per_step
    sps = 1.0 / (collect_s + per_step * update_s)
    params = sum(x.size for x in jax.tree.leaves(state.params))
    env.close()
    return {
        "preset": name,
        "params": int(params),
        "train_ratio": cfg.train_ratio,
        "updates_per_step": per_step,
        "compile_s": compile_s,
        "update_ms": 1000 * update_s,
        "gflop_per_update": flops / 1e9,
        "gflops": flops / 1e9 / update_s,
        "peak_fraction": flops / 1e9 / update_s / PEAK_GFLOPS,
        "temp_mib": mem.temp_size_in_bytes / 2**20 if mem is not None else float("nan"),
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "collect_ms": 1000 * collect_s,
        "env_sps": sps,
        "minutes_per_100k": 100_000 / sps / 60,
        "finite": bool(all(np.isfinite(float(v)) for v in jax.tree.leaves(m))),
    }


def side_by_side(python: str, src: str, repeats: int, updates: int) -> int:
    """The official DreamerV3's train step and ours at size1m, alternated in fresh processes."""
    import subprocess

    if not Path(python).exists() or not (Path(src) / "dreamerv3" / "configs.yaml").exists():
        raise SystemExit(f"--official needs DreamerV3's virtualenv python and checkout; got {python}, {src}")
    script = Path(__file__).with_name("dreamerv3_official.py")
    theirs, ours = [], []
    for _ in range(repeats):
        out = subprocess.run([python, str(script), "--src", src, "--steps", str(updates)],
                             capture_output=True, text=True)  # fmt: skip
        lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            raise SystemExit(f"the official worker failed:\n{out.stderr[-3000:]}")
        theirs.append(json.loads(lines[-1][7:])["seconds_per_update_median"] * 1000)
        ours.append(experiment_lib.worker_result(Path(__file__), "size1m", updates)["update_ms"])
        print(f"official {theirs[-1]:.0f} ms, ours {ours[-1]:.0f} ms", flush=True)
    a, b = statistics.median(theirs), statistics.median(ours)
    print("| size1m, batch 16 x 64, float32 | official DreamerV3 (JAX 0.4.33) | ours | ours faster by |")
    print("|---|---|---|---|")
    print(f"| train step (ms), median of {repeats} | {a:.0f} | {b:.0f} | {a / b:.2f}x |")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: xs only, 3 updates")
    p.add_argument("--presets", default=",".join(PRESETS), help="comma-separated subset")
    p.add_argument("--updates", type=int, default=20, help="timed updates per preset")
    p.add_argument("--official", metavar="PYTHON,SRC", help="DreamerV3's virtualenv python and checkout")
    p.add_argument("--repeats", type=int, default=3, help="--official: alternating runs per side")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker[0], int(args.worker[1]))), flush=True)
        return 0
    if args.official:
        return side_by_side(*args.official.split(","), args.repeats, args.updates)
    names = ["xs"] if args.quick else args.presets.split(",")
    updates = 3 if args.quick else args.updates
    rows = [experiment_lib.worker_result(Path(__file__), n, updates) for n in names]
    print("| preset | params | train ratio | update (ms) | GFLOP/update | GFLOP/s | of peak | temp MiB | "
          "collect (ms) | env steps/s | min per 100k |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['preset']} | {r['params']:,} | {r['train_ratio']:g} | {r['update_ms']:.0f} | "
            f"{r['gflop_per_update']:.2f} | {r['gflops']:.1f} | {100 * r['peak_fraction']:.0f}% | "
            f"{r['temp_mib']:.0f} | {r['collect_ms']:.1f} | {r['env_sps']:.1f} | {r['minutes_per_100k']:.0f} |"
        )
    return 0 if all(r["finite"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
