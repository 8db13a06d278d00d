"""Where one SAC env step goes on this machine: a ``jax.profiler`` trace of training, read back.

    python experiments/bench/sac_profile.py                 # HalfCheetah-v5, 300 learning steps
    python experiments/bench/sac_profile.py --steps 100 --top 30

Trains our SAC with the throughput benchmark's settings (256x256, batch 256, one update per
env step, 1 env) under the profiler, then splits a learning step's wall time into the env
step, the jitted call before XLA starts (argument handling, transfers, launch) and XLA's
execution, and lists XLA's ops by thread time (both cores together, so it can exceed the
wall time). Per-op times are inflated where two ops share the two cores.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # rl, when run as a script

SCHEDULING = ("ThunkExecutor", "Slinky")  # XLA's executor and pool events enclose the ops


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="gym:HalfCheetah-v5")
    p.add_argument("--steps", type=int, default=300, help="learning steps traced (after warm-up)")
    p.add_argument("--top", type=int, default=20, help="XLA ops listed")
    args = p.parse_args(argv)

    import jax.profiler as profiler

    from rl import config as config_lib
    from rl.agents import sac

    warmup, tmp = 200, tempfile.mkdtemp(prefix="sac-profile-")
    cfg = config_lib.build(
        sac.Config,
        overrides=dict(
            env=args.env, total_steps=warmup + args.steps, learning_starts=100, runs_dir=tmp,
            buffer_size=warmup + args.steps, eval_every=0, checkpoint_every=0, eval_episodes=1,
        ),
    )  # fmt: skip
    sac.train(cfg)  # compiles, so the traced run below reuses the cache
    trace_dir = Path(tmp) / "trace"
    t0 = time.perf_counter()
    options = profiler.ProfileOptions()
    options.python_tracer_level = 0  # Python function events would slow every step several-fold
    with profiler.trace(str(trace_dir), profiler_options=options):
        sac.train(config_lib.build(sac.Config, overrides={**config_lib.to_dict(cfg), "run_name": "traced"}))
    print(f"traced run: {time.perf_counter() - t0:.1f} s for {cfg.total_steps} env steps")

    data = profiler.ProfileData.from_file(str(next(trace_dir.rglob("*.xplane.pb"))))
    calls, xla, ops = [], [], collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            for ev in line.events:
                if line.name == "python" and ev.name.startswith("PjitFunction(train_step)"):
                    calls.append((ev.start_ns, ev.duration_ns))
                elif "wait for completion" in ev.name:
                    xla.append((ev.start_ns, ev.duration_ns))
                elif line.name.startswith("tf_XLAEigen") and not ev.name.startswith(SCHEDULING):
                    ops[ev.name] += ev.duration_ns
    # pair each train_step call with the XLA execution it launched; learning steps run > 1 ms
    starts = sorted(start for start, _ in calls)
    calls = [b for a, b in zip([-1e18, *starts], starts) if b - a > 1e5]  # nested events: one call
    xla.sort()
    launch, execute, starts = [], [], []
    for start in calls:
        i = bisect.bisect_left(xla, (start, 0))
        if i < len(xla) and xla[i][1] > 1e6:
            starts.append(start)
            launch.append(xla[i][0] - start)
            execute.append(xla[i][1])
    starts, launch, execute = starts[-args.steps :], launch[-args.steps :], execute[-args.steps :]
    step = statistics.median(b - a for a, b in zip(starts, starts[1:])) / 1e6
    launch, execute = sum(launch) / len(launch) / 1e6, sum(execute) / len(execute) / 1e6
    n_learn = args.steps + (warmup - cfg.learning_starts)  # learning calls in the traced run
    print(f"per learning step: {step:.2f} ms wall ({1e3 / step:.0f} steps/s under the profiler)")
    print(f"  jitted call until XLA starts:          {launch:.2f} ms")
    print(f"  XLA execution:                         {execute:.2f} ms")
    print(f"  the rest (env step, host bookkeeping): {step - launch - execute:.2f} ms")
    print(f"XLA ops by thread time per learning step (top {args.top}):")
    for name, ns in ops.most_common(args.top):
        print(f"  {ns / n_learn / 1e3:8.1f} us  {name}")
    rest = sum(ops.values()) - sum(ns for _, ns in ops.most_common(args.top))
    print(f"  {rest / n_learn / 1e3:8.1f} us  the other {len(ops) - args.top} ops")


if __name__ == "__main__":
    main()
