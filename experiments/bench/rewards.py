"""PPO's time per env step with each intrinsic reward term, against PPO alone, in one run.

    python experiments/bench/rewards.py            # about 10 minutes on 2 cores
    python experiments/bench/rewards.py --quick    # a smoke run of the script

Task: MiniGrid DoorKey-8x8 with PPO's MiniGrid preset (16 envs x 128 steps, 4 epochs), the
setting the intrinsic-reward experiments use. Every arm trains in a fresh process twice, for a
short and a long budget; the steady-state rate is (steps_long - steps_short) / (time_long -
time_short), so start-up and JIT compilation are left out. The ratio is the arm's time per
step over PPO's. Targets: ICM and RND at most 1.3x, the k-NN terms (NGU, RE3, state entropy)
at most 2x.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # rl, when run as a script

from rl import experiment as experiment_lib  # noqa: E402

ENV = "minigrid:MiniGrid-DoorKey-8x8-v0"
TERMS = ["none", "icm", "rnd", "ngu", "e3b", "disagreement", "re3", "state_entropy"]
TARGETS = {"icm": 1.3, "rnd": 1.3, "ngu": 2.0, "re3": 2.0, "state_entropy": 2.0}
BUDGETS = (2048 * 4, 2048 * 24)
QUICK = (2048, 4096)


def worker(term: str, steps: int) -> None:
    from rl import config as config_lib
    from rl.agents import ppo

    overrides = {"env": ENV, "total_steps": steps, "runs_dir": tempfile.mkdtemp(prefix="bench-"),
                 "eval_episodes": 1, "log_every": steps}  # fmt: skip
    if term != "none":
        overrides["shaper"] = {"terms": [term]}
    cfg = config_lib.build(ppo.Config, ["ppo-minigrid"], overrides)
    t0 = time.perf_counter()
    ppo.train(cfg)
    print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0}), flush=True)


def measure(term: str, steps: int) -> float:
    return experiment_lib.worker_result(__file__, term, steps)["seconds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--terms", default=",".join(TERMS))
    p.add_argument("--out", default="bench-rewards.json")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker[0], int(args.worker[1]))
    short, long = QUICK if args.quick else BUDGETS
    rates = {}
    for term in args.terms.split(","):
        a, b = measure(term, short), measure(term, long)
        rates[term] = (long - short) / max(b - a, 1e-9)
        print(f"{term:14s} {rates[term]:8.0f} steps/s", flush=True)
    base = rates.get("none")
    print(f"\n| PPO on {ENV} with | env steps/s | time per step / PPO alone | target |\n|---|---|---|---|")
    for term, rate in rates.items():
        ratio = f"{base / rate:.2f}x" if base else "-"
        target = f"<= {TARGETS[term]}x" if term in TARGETS else "-"
        print(f"| {term if term != 'none' else 'nothing (PPO alone)'} | {rate:,.0f} | {ratio} | {target} |")
    Path(args.out).write_text(json.dumps(rates, indent=2))


if __name__ == "__main__":
    main()
