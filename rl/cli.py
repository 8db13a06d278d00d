"""``rl``: train, resume, evaluate, list envs, benchmark.

rl train AGENT --env ID [--config PRESET ...] [--seeds 0,1,2] [key=value ...]
rl resume RUN_DIR
rl eval RUN_DIR [--episodes N] [--video]
rl demos RUN_DIR --episodes N --out FILE
rl label RUN_DIR [--port 8000]
rl report RUNS_DIR [--out DIR]
rl envs [NAMESPACE]
rl bench [foundation | throughput | rewards] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
from pathlib import Path

from rl import agents  # noqa: I001
from rl import config as config_lib


def _train(args) -> None:
    module = agents.get(args.agent)
    presets = [args.agent] if (config_lib.CONFIGS_DIR / f"{args.agent}.yaml").exists() else []
    overrides = config_lib.parse_overrides(args.overrides)
    if args.env:
        overrides["env"] = args.env
    cfg = config_lib.build(module.Config, presets + (args.config or []), overrides)
    if args.seeds is None:
        module.train(cfg)
        return
    seeds = _seed_list(args.seeds)
    if not hasattr(module, "train_seeds"):
        raise ValueError(f"--seeds: {args.agent} trains one seed per process; pass seed=N instead")
    if len(seeds) > 1 and cfg.run_name and "{seed}" not in cfg.run_name:
        raise ValueError(
            f"--seeds: run_name={cfg.run_name!r} needs a {{seed}} field, one run directory per seed"
        )
    module.train_seeds(cfg, seeds)


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: a seed is repeated")
    return seeds


def _resume(args) -> None:
    from rl.runs import Run, RunFinished

    data = (
        config_lib.load_yaml(Path(args.run_dir) / "config.yaml")
        if (Path(args.run_dir) / "config.yaml").exists()
        else {}
    )
    if "agent" not in data:
        raise FileNotFoundError(f"{args.run_dir} is not a run directory (no config.yaml naming its agent)")
    module = agents.get(data["agent"])
    try:
        run, ckpt = Run.resume(args.run_dir, module.Config, config_lib.parse_overrides(args.overrides))
    except RunFinished as done:
        print(done)
        return
    print(f"resuming {run.dir} from {ckpt.name}")
    module.train(run.cfg, run=run, resume=ckpt)


def _demos(args) -> None:
    from rl import demos

    path = demos.record(args.run_dir, args.episodes, args.out, seed=args.seed)
    returns = demos.load(path)["meta"]["returns"]
    print(f"{path}: {len(returns)} episodes, mean return {sum(returns) / len(returns):.4g}")


def _label(args) -> None:
    from rl import label

    label.serve(args.run_dir, args.port)


def _eval(args) -> None:
    run_dir = Path(args.run_dir)
    module, cfg, state, loop, ckpt = agents.restore(run_dir)
    video = run_dir / "videos" / f"eval-{ckpt.name}.mp4" if args.video else None
    result = module.evaluate(cfg, state, args.episodes, video_path=video, loop=loop)
    result = {"checkpoint": ckpt.name, "episodes": args.episodes, **result}
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def _report(args) -> None:
    from rl.report import report

    md = report(args.runs_dir, args.out)
    print(md.read_text())
    print(f"written {md} (and results.json, curves.png beside it)")


def _envs(args) -> None:
    from rl import envs

    for ns in [args.namespace] if args.namespace else envs.NAMESPACES:
        ids = envs.list_ids(ns)
        print(f"{ns} ({len(ids)} ids, e.g. {envs._EXAMPLES[ns]})")
        if args.namespace or args.all:
            for i in ids:
                print(f"  {ns}:{i}")


def _bench(args) -> None:
    script = Path(__file__).resolve().parent.parent / "experiments" / "bench" / f"{args.which}.py"
    if not script.exists():
        raise FileNotFoundError(f"benchmark script {script} not found (it ships with the repository)")
    sys.argv = [str(script), *(["--quick"] if args.quick else [])]
    runpy.run_path(str(script), run_name="__main__")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="rl", description="rewardlab: reward design on JAX agents")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an agent")
    t.add_argument("agent", help=f"one of: {', '.join(agents.AGENTS)}")
    t.add_argument("--env", help="namespace:id, e.g. gym:HalfCheetah-v5 (see `rl envs`)")
    t.add_argument("--config", action="append", help="YAML preset in configs/ or a path (repeatable)")
    t.add_argument(
        "--seeds",
        help="comma-separated seeds trained side by side in one vmapped program (PPO on a JAX-native "
        "env), one run directory each; run_name, if set, takes a {seed} field",
    )
    t.add_argument("overrides", nargs="*", help="key=value config overrides (nested keys with dots)")
    t.set_defaults(fn=_train)

    r = sub.add_parser("resume", help="continue a run from its latest checkpoint")
    r.add_argument("run_dir")
    r.add_argument("overrides", nargs="*", help="key=value changes, e.g. total_steps=2000000 to extend a run")
    r.set_defaults(fn=_resume)

    e = sub.add_parser("eval", help="evaluate a run's latest checkpoint")
    e.add_argument("run_dir")
    e.add_argument("--episodes", type=int, default=10)
    e.add_argument("--video", action="store_true", help="record the first episode to videos/")
    e.set_defaults(fn=_eval)

    d = sub.add_parser("demos", help="record demonstrations with a run's latest checkpoint (an .npz file)")
    d.add_argument("run_dir")
    d.add_argument("--episodes", type=int, default=10)
    d.add_argument("--out", required=True, help="the .npz file to write")
    d.add_argument("--seed", type=int, default=0, help="seeds the env and the policy's sampling")
    d.set_defaults(fn=_demos)

    lb = sub.add_parser("label", help="a local page to label a run's preference queries (teacher=human)")
    lb.add_argument("run_dir")
    lb.add_argument("--port", type=int, default=8000)
    lb.set_defaults(fn=_label)

    rp = sub.add_parser("report", help="aggregate runs: IQM with bootstrap CIs, learning curves, report.md")
    rp.add_argument("runs_dir", help="a directory holding run directories (searched recursively)")
    rp.add_argument("--out", help="where report.md, results.json and curves.png go (default: runs_dir)")
    rp.set_defaults(fn=_report)

    v = sub.add_parser("envs", help="list supported environments")
    v.add_argument("namespace", nargs="?", help="list every id of one namespace")
    v.add_argument("--all", action="store_true", help="list every id of every namespace")
    v.set_defaults(fn=_envs)

    b = sub.add_parser("bench", help="throughput benchmarks (scripts in experiments/bench/)")
    b.add_argument(
        "which",
        nargs="?",
        default="foundation",
        choices=["foundation", "throughput", "rewards"],
        help="foundation: envs, rendering, replay; throughput: SAC/PPO vs SB3 and SBX; rewards: PPO with each intrinsic term",
    )
    b.add_argument("--quick", action="store_true", help="fewer steps: a smoke run of the benchmark")
    b.set_defaults(fn=_bench)

    # key=value overrides may stand anywhere after the agent, between options too
    args, extra = p.parse_known_args(argv)
    if extra:
        bad = [
            x for x in extra if "=" not in x or x.startswith("-") or args.command not in ("train", "resume")
        ]
        if bad:
            p.error(f"unrecognized arguments: {' '.join(bad)}")
        args.overrides = list(args.overrides) + extra
    try:
        args.fn(args)
    except (config_lib.ConfigError, ValueError, FileNotFoundError, FileExistsError, MemoryError) as err:
        if os.environ.get("RL_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        print("(set RL_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
