"""Where one SAC env step goes on this machine: a ``jax.profiler`` trace of training, read back.

    python experiments/bench/sac_profile.py                 # HalfCheetah-v5, 300 learning steps
    python experiments/bench/sac_profile.py --steps 100 --top 30

Trains our SAC with the throughput benchmark's settings (256x256, batch 256, one update per
env step, 1 env) under the profiler, then splits a learning step's wall time (median over
the learning steps) into the jitted call before XLA starts (argument handling, transfers,
launch), XLA's execution, and the rest (env step, host bookkeeping), and lists XLA's ops by
thread time per learning step (both cores together, so it can exceed the wall time; the run's
few non-learning calls are included). The profiler's per-op events slow a step by about 20%,
and per-op times are inflated where two ops share the two cores.
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
    p.add_argument("--steps", type=int, default=300, help="learning steps traced (after 100 random ones)")
    p.add_argument("--top", type=int, default=20, help="XLA ops listed")
    args = p.parse_args(argv)

    import jax.profiler as profiler

    from rl import config as config_lib
    from rl.agents import sac

    tmp = tempfile.mkdtemp(prefix="sac-profile-")
    cfg = config_lib.build(
        sac.Config,
        overrides=dict(
            env=args.env, total_steps=100 + args.steps, learning_starts=100, runs_dir=tmp,
            buffer_size=100 + args.steps, eval_every=0, checkpoint_every=0, eval_episodes=1,
        ),
    )  # fmt: skip
    trace_dir = Path(tmp) / "trace"
    options = profiler.ProfileOptions()
    options.python_tracer_level = 0  # Python function events would slow every step several-fold
    t0 = time.perf_counter()
    with profiler.trace(str(trace_dir), profiler_options=options):
        sac.train(cfg)
    print(f"traced run: {time.perf_counter() - t0:.1f} s for {cfg.total_steps} env steps, JIT included")

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
    # medians: the first learning call also compiles
    step = statistics.median(b - a for a, b in zip(starts, starts[1:])) / 1e6
    launch, execute = statistics.median(launch) / 1e6, statistics.median(execute) / 1e6
    print(f"per learning step: {step:.2f} ms wall ({1e3 / step:.0f} steps/s under the profiler)")
    print(f"  jitted call until XLA starts:          {launch:.2f} ms")
    print(f"  XLA execution:                         {execute:.2f} ms")
    print(f"  the rest (env step, host bookkeeping): {step - launch - execute:.2f} ms")
    print(f"XLA ops by thread time per learning step (top {args.top}):")
    for name, ns in ops.most_common(args.top):
        print(f"  {ns / args.steps / 1e3:8.1f} us  {name}")
    rest = sum(ops.values()) - sum(ns for _, ns in ops.most_common(args.top))
    print(f"  {rest / args.steps / 1e3:8.1f} us  the other {len(ops) - args.top} ops")


if __name__ == "__main__":
    main()
