"""Our Envelope Q-learning beside MORL-Baselines' on Deep Sea Treasure, in one run: the same
settings, the same evaluation, the fronts at every evaluation side by side. Does the
reference itself keep all ten true points?

    pip install -e '.[peers]'           # the peer (morl-baselines 1.3.0, torch CPU)
    python experiments/envelope_peer.py [--seeds 0,1,2] [--steps 50000] [--report experiments/envelope]

Ours: ``experiments/envelope_dst.py --budget paper --tasks mo:deep-sea-treasure-v0`` (skipped
when its runs are finished). The peer: ``morl_baselines.multi_policy.envelope.Envelope`` with
the settings ours copies from its ``examples/envelope_minecart.py`` (4 x 256, lr 3e-4, batch
64 x 4 preferences, gradient-norm clip 0.1, target copies every 1,000 updates, prioritized
replay, epsilon 1 -> 0.05 and homotopy lambda 0 -> 1 over half the run, 100 random steps
first), gamma 0.99, DST cut at 100 steps, our replay size (100,000). Its ``train`` is called
once per evaluation interval (``reset_num_timesteps=False``: its schedules run on; each call
starts a fresh episode and preference, one extra reset per 10,000 steps). Both sides are
scored the same way: the greedy policy for each of the 1,000 equally spaced preferences
(``mo.equally_spaced_weights``, MORL-Baselines' own weight set), one episode each, the
undiscounted return vectors' hypervolume at (0, -25) and the true points among them. The peer
runs in its own process; its fronts are cached per seed in the runs folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # rl, when run as a script

from rl import experiment as experiment_lib  # noqa: E402

TASK = "mo:deep-sea-treasure-v0"
EVAL_EVERY, EVAL_WEIGHTS, MAX_STEPS, GAMMA = 10_000, 1000, 100, 0.99


def peer(seed: int, steps: int) -> dict:
    """MORL-Baselines' Envelope, evaluated every ``EVAL_EVERY`` steps: {step: points}."""
    import gymnasium as gym
    import mo_gymnasium as mo_gym
    from morl_baselines.multi_policy.envelope.envelope import Envelope

    from rl.rewards import multiobjective as mo

    def make():
        return gym.wrappers.TimeLimit(mo_gym.make("deep-sea-treasure-v0"), MAX_STEPS)

    weights = mo.equally_spaced_weights(2, EVAL_WEIGHTS)
    agent = Envelope(
        make(), learning_rate=3e-4, initial_epsilon=1.0, final_epsilon=0.05, epsilon_decay_steps=steps // 2,
        tau=1.0, target_net_update_freq=1000, buffer_size=100_000, net_arch=[256, 256, 256, 256], batch_size=64,
        learning_starts=100, gradient_updates=1, gamma=GAMMA, max_grad_norm=0.1, envelope=True, num_sample_w=4,
        per=True, per_alpha=0.6, initial_homotopy_lambda=0.0, final_homotopy_lambda=1.0,
        homotopy_decay_steps=steps // 2, log=False, seed=seed, device="cpu",
    )  # fmt: skip
    env, fronts, t0 = make(), {}, time.perf_counter()
    for step in range(EVAL_EVERY, steps + 1, EVAL_EVERY):
        agent.train(total_timesteps=EVAL_EVERY, eval_env=None, reset_num_timesteps=False)
        points = []
        for w in weights:  # DST is deterministic: one greedy episode per preference
            obs, _ = env.reset(seed=seed)
            ret, done = np.zeros(2), False
            while not done:
                obs, r, term, trunc, _ = env.step(agent.eval(obs, w))
                ret, done = ret + r, term or trunc
            points.append(ret.tolist())
        fronts[str(step)] = points
        print(
            f"peer seed {seed}: {step} steps, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True
        )
    return {"fronts": fronts, "wall_s": time.perf_counter() - t0}


def score(points) -> dict:
    from rl.rewards import multiobjective as mo

    points, true = np.asarray(points, np.float64), mo.known_front(TASK, 1.0)
    found = mo.pareto_front(points)
    hit = [bool(np.any(np.all(np.isclose(found, t, atol=1e-3), 1))) for t in true]
    return {"hv": mo.hypervolume(points, np.array([0.0, -25.0])), "hits": sum(hit),
            "missed": [f"({t[0]:g}, {t[1]:g})" for t, h in zip(true, hit) if not h]}  # fmt: skip


def ours(root: Path, seed: int) -> dict:
    run = root / f"envelope__{TASK.replace(':', '-')}__s{seed}"
    return {str(int(p.stem.split("_")[1])): json.loads(p.read_text())["points"]
            for p in sorted((run / "fronts").glob("step_*.json"))}  # fmt: skip


def table(side: str, fronts: dict[int, dict]) -> list[str]:
    steps = sorted({int(s) for f in fronts.values() for s in f})
    rows = [f"| {side}, seed | " + " | ".join(f"{s // 1000}k" for s in steps) + " | missed at the end |",
            "|---" * (len(steps) + 2) + "|"]  # fmt: skip
    for seed, f in sorted(fronts.items()):
        cells = [score(f[str(s)]) if str(s) in f else None for s in steps]
        last = next(c for c in reversed(cells) if c)
        rows.append(f"| {seed} | " + " | ".join(f"{c['hv']:.1f} ({c['hits']})" if c else "-" for c in cells)
                    + f" | {', '.join(last['missed']) or 'none'} |")  # fmt: skip
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=50_000)
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--report", help="folder for peer.md (default: the runs folder)")
    p.add_argument("--worker", nargs=2, type=int, metavar=("SEED", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(peer(*args.worker)), flush=True)
        return 0
    try:
        import morl_baselines  # noqa: F401
    except ImportError:
        p.error("the peer is not installed: pip install -e '.[peers]'")
    if args.steps % EVAL_EVERY:
        p.error(f"--steps must be a multiple of {EVAL_EVERY}")
    seeds, runs_dir = [int(s) for s in args.seeds.split(",")], Path(args.runs_dir)
    import envelope_dst

    custom = [] if args.steps == envelope_dst.STEPS[TASK] else ["--steps", str(args.steps)]
    name = "envelope-custom" if custom else "envelope-paper"  # the folder envelope_dst.py names
    envelope_dst.main(["--budget", "paper", "--tasks", TASK, "--seeds", args.seeds, *custom, "--jobs", "1",
                       "--runs-dir", str(runs_dir)])  # fmt: skip
    theirs = {}
    for seed in seeds:
        cache = runs_dir / "envelope-peer" / f"morl_baselines__s{seed}_{args.steps}.json"
        if not cache.exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(experiment_lib.worker_result(__file__, seed, args.steps)))
        theirs[seed] = json.loads(cache.read_text())
    mine = {s: ours(runs_dir / name, s) for s in seeds}
    lines = [
        "# Envelope on Deep Sea Treasure: ours beside MORL-Baselines'",
        "",
        f"`python experiments/envelope_peer.py --seeds {args.seeds} --steps {args.steps}`; the settings in the "
        "script's docstring. Each cell: the hypervolume of the greedy front on 1,000 preferences at (0, -25) "
        "(true front 401.8), and in brackets how many of the 10 true points it holds; the check asks for "
        "at least 397.8 and all 10.",
        "",
        *table("ours", mine),
        "",
        *table("MORL-Baselines 1.3.0", {s: t["fronts"] for s, t in theirs.items()}),
        "",
        "Peer wall time per run (training and its evaluations): "
        + ", ".join(f"seed {s} {t['wall_s'] / 60:.1f} min" for s, t in theirs.items()) + ".",
    ]  # fmt: skip
    out = Path(args.report or runs_dir / "envelope-peer")
    out.mkdir(parents=True, exist_ok=True)
    (out / "peer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
