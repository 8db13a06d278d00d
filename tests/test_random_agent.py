"""The loop template: the same seed gives the same run; another seed does not."""

from rl import config as C
from rl.agents import random as agent
from rl.runs import read_metrics


def run_metrics(tmp_path, seed, name):
    cfg = C.build(
        agent.Config,
        overrides={
            "env": "gym:CartPole-v1",
            "total_steps": 2000,
            "log_every": 500,
            "seed": seed,
            "eval_episodes": 2,
            "runs_dir": str(tmp_path),
            "run_name": name,
        },
    )
    agent.train(cfg)
    rows = read_metrics(tmp_path / "default" / name / "metrics.jsonl")
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


def test_same_seed_same_metrics(tmp_path):
    a, b, c = run_metrics(tmp_path, 0, "a"), run_metrics(tmp_path, 0, "b"), run_metrics(tmp_path, 1, "c")
    assert a == b and len(a) == 5  # four log lines and the final evaluation
    assert a != c
