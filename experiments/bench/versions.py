"""Our training throughput at two commits, side by side in one run: did a change cost speed?

    python experiments/bench/versions.py --base <commit>          # about 25 minutes on 2 cores
    python experiments/bench/versions.py --base <commit> --quick  # a smoke run of the script

The base commit is checked out into a temporary git worktree; each measurement runs the
benchmark workers of ``throughput.py`` (SAC and PPO on HalfCheetah-v5) and ``rewards.py``
(PPO with each intrinsic term on MiniGrid DoorKey-8x8) from that tree and from this one, in
fresh processes, alternating base and this tree so machine drift hits both alike. Rates are
steady-state (two budgets, start-up and JIT left out; the difference of each budget's median
time), as in those scripts. A ratio below
0.95 (more than 5% slower) is flagged.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # rl, when run as a script

from rl import experiment as experiment_lib  # noqa: E402

TERMS = ["none", "icm", "rnd", "ngu", "e3b", "disagreement", "re3", "state_entropy"]


def items(quick: bool) -> list[tuple[str, str, tuple, tuple[int, int]]]:
    """(label, script, worker args before the steps, (short, long) budgets)."""
    sac, ppo, terms = ((300, 600), (2_048, 4_096), (2_048, 4_096)) if quick else (
        (1_000, 5_000), (8_192, 57_344), (8_192, 49_152))  # fmt: skip
    out = [("SAC HalfCheetah-v5", "throughput.py", ("ours", "sac"), sac),
           ("PPO HalfCheetah-v5", "throughput.py", ("ours", "ppo"), ppo)]  # fmt: skip
    out += [(f"PPO DoorKey-8x8 + {t}", "rewards.py", (t,), terms) for t in TERMS]
    return out


def seconds(tree: Path, script: str, args: tuple, budgets: tuple[int, int]) -> tuple[float, float]:
    """Fresh-process training seconds of the two budgets."""
    path = tree / "experiments" / "bench" / script
    short, long = (experiment_lib.worker_result(path, *args, n)["seconds"] for n in budgets)
    return short, long


def rate(times: list[tuple[float, float]], budgets: tuple[int, int]) -> float:
    """Steady-state env steps/s from the median time of each budget: the difference of two
    noisy times is noisier than either, so the medians are taken before it, not after."""
    short = statistics.median(t[0] for t in times)
    long = statistics.median(t[1] for t in times)
    return (budgets[1] - budgets[0]) / max(long - short, 1e-9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--base", required=True, help="the commit to compare against (e.g. the one before a change)"
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", help="comma-separated label prefixes to keep (e.g. SAC,PPO Half)")
    p.add_argument("--repeats", type=int, default=3, help="alternating base / this measurements per item")
    p.add_argument("--out", default="bench-versions.json")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-base-"))
    base = tmp / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base], check=True)
    results = {}
    try:
        for label, script, wargs, budgets in items(args.quick):
            if args.only and not any(label.startswith(x) for x in args.only.split(",")):
                continue
            olds, news = [], []
            for _ in range(args.repeats):
                olds.append(seconds(base, script, wargs, budgets))
                news.append(seconds(ROOT, script, wargs, budgets))
            old, new = rate(olds, budgets), rate(news, budgets)
            results[label] = {
                "base": old,
                "this": new,
                "ratio": new / old,
                "budgets": budgets,
                "base_seconds": olds,
                "this_seconds": news,
            }
            med = [statistics.median(t[i] for t in ts) for ts in (olds, news) for i in (0, 1)]
            times = f"median s: base {med[0]:.2f} / {med[1]:.2f}, this {med[2]:.2f} / {med[3]:.2f}"
            print(f"{label:32s} base {old:9.1f}  this {new:9.1f}  {new / old:5.2f}x  ({times})", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    print(f"\n| median env steps/s ({args.repeats} runs each) | {args.base[:10]} | this tree | ratio |")
    print("|---|---|---|---|")
    for label, r in results.items():
        flag = " (more than 5% slower)" if r["ratio"] < 0.95 else ""
        print(f"| {label} | {r['base']:,.0f} | {r['this']:,.0f} | {r['ratio']:.2f}{flag} |")
    Path(args.out).write_text(json.dumps({"base": args.base, "results": results}, indent=2))


if __name__ == "__main__":
    main()
