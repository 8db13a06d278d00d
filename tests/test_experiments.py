"""Experiment scripts at their smoke budget, and `rl train | eval | report` end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rl import report as report_lib

ROOT = Path(__file__).resolve().parent.parent
# one MuJoCo task for both agents and one Atari game; PPO's DMC, Atari and MiniGrid paths
# have their own smoke tests in test_ppo.py
TASKS = "gym:Hopper-v5,atari:Pong"


def rl(*args, cwd):
    return subprocess.run([sys.executable, "-m", "rl.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_baselines_smoke_budget_runs_every_task_and_reports(tmp_path):
    script = [sys.executable, str(ROOT / "experiments" / "baselines.py"), "--budget", "smoke"]
    out = subprocess.run(
        [*script, "--runs-dir", str(tmp_path), "--tasks", TASKS], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    root = tmp_path / "baselines-smoke"
    runs = report_lib.find_runs(root)
    assert len(runs) == 3  # SAC and PPO on Hopper, PPO on Pong
    assert all(r["finished"] for r in runs)
    md = (root / "report.md").read_text()
    assert "| sac | gym:Hopper-v5 | 1 |" in md and "2,310 (CleanRL" in md
    assert "| ppo | atari:Pong | 1 |" in md
    assert (root / "curves.png").stat().st_size > 0
    # a rerun launches nothing new and reports the same runs
    again = subprocess.run(
        [*script, "--runs-dir", str(tmp_path), "--tasks", TASKS, "--report-only"],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0 and len(report_lib.find_runs(root)) == len(runs)


def test_train_eval_report_end_to_end(tmp_path):
    for seed in (0, 1):
        out = rl(
            "train", "ppo", "--config", "ppo-cartpole", "total_steps=2048", "eval_episodes=2",
            f"seed={seed}", f"run_name=cp{seed}", "runs_dir=runs", cwd=tmp_path,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        assert "done: eval/episode_return" in out.stdout
    run = tmp_path / "runs" / "quickstart" / "cp0"
    out = rl("eval", str(run), "--episodes", "3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((run / "eval.json").read_text())["episodes"] == 3
    out = rl("report", "runs", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    md = (tmp_path / "runs" / "report.md").read_text()
    assert "| ppo | gym:CartPole-v1 | 2 |" in md


def test_report_iqm_matches_a_direct_computation():
    import numpy as np
    from scipy import stats

    scores = np.array([[1.0], [2.0], [3.0], [4.0], [100.0], [5.0], [6.0], [7.0]])
    point, lo, hi = report_lib.iqm_ci({"x": scores}, reps=500)["x"]
    assert point == pytest.approx(stats.trim_mean(scores[:, 0], 0.25))
    assert lo <= point <= hi


def test_report_of_an_empty_directory_says_so(tmp_path):
    out = rl("report", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 2 and "no runs under" in out.stderr


@pytest.mark.parametrize(
    "script,tasks,arms",
    [
        ("icm.py", None, ["ppo", "ppo+icm", "ppo+icm-decay"]),
        (
            "hire.py",
            "minigrid:MiniGrid-DoorKey-8x8-v0",
            ["icm", "rnd", "ngu", "e3b", "sum", "product", "max", "cycle"],
        ),
    ],
)
def test_reward_experiments_at_smoke_budget(tmp_path, script, tasks, arms):
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / script),
        "--budget",
        "smoke",
        "--runs-dir",
        str(tmp_path),
    ]
    out = subprocess.run(cmd + (["--tasks", tasks] if tasks else []), capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    root = tmp_path / f"{script[:-3]}-smoke"
    runs = report_lib.find_runs(root)
    assert {r["arm"] for r in runs} == set(arms) and all(r["finished"] for r in runs)
    md = (root / "report.md").read_text()
    assert "| task | " + " | ".join(arms) + " |" in md  # the paper's layout: tasks x arms
    if script == "hire.py":  # each fusion ran on the four intrinsic streams
        metrics = [
            json.loads(x) for x in open(root / "max__minigrid-MiniGrid-DoorKey-8x8-v0__s0" / "metrics.jsonl")
        ]
        assert any(all(f"reward/{t}_norm" in m for t in ("icm", "rnd", "ngu", "e3b")) for m in metrics)
