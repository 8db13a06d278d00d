"""The `rl` command end to end, in subprocesses, on real envs and files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rl.runs import read_metrics

RL = [sys.executable, "-m", "rl.cli"]


def rl(*args, cwd, check=True, timeout=300):
    out = subprocess.run(
        [*RL, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    if check and out.returncode != 0:
        raise AssertionError(f"rl {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out


def test_envs_lists_every_namespace(tmp_path):
    out = rl("envs", cwd=tmp_path).stdout
    for ns in ("gym", "dmc", "atari", "mo", "minigrid"):
        assert f"{ns} (" in out
    assert "dmc:cheetah-run" in rl("envs", "dmc", cwd=tmp_path).stdout


def test_bad_config_fails_before_any_work(tmp_path):
    out = rl("train", "random", "--env", "gym:CartPole-v1", "total_stepz=10", cwd=tmp_path, check=False)
    assert (
        out.returncode == 2
        and "unknown config key 'total_stepz'" in out.stderr
        and "total_steps" in out.stderr
    )
    assert not (tmp_path / "runs").exists()
    out = rl(
        "train", "random", "--env", "dmc:cheetah-run", "env_options.pixel=true", cwd=tmp_path, check=False
    )
    assert out.returncode == 2 and "unknown option(s) ['pixel']" in out.stderr and "pixels" in out.stderr
    assert not (tmp_path / "runs").exists()
    out = rl("train", "randm", cwd=tmp_path, check=False)
    assert out.returncode == 2 and "did you mean random" in out.stderr


def test_train_then_eval_with_video(tmp_path):
    out = rl(
        "train",
        "random",
        "--env",
        "gym:CartPole-v1",
        "total_steps=3000",
        "log_every=1000",
        "run_name=t",
        "eval_episodes=2",
        cwd=tmp_path,
    )
    run = tmp_path / "runs" / "default" / "t"
    assert "learning curve" in out.stdout and (run / "curve.png").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3000 and 8 < summary["eval/episode_return"] < 60  # random CartPole ~22
    out = rl("eval", str(run), "--episodes", "3", "--video", cwd=tmp_path)
    result = json.loads((run / "eval.json").read_text())
    assert result["episodes"] == 3 and Path(result["video"]).stat().st_size > 1000


def test_sigkill_then_resume_loses_and_duplicates_no_metrics_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    args = [
        *RL,
        "train",
        "random",
        "--env",
        "gym:CartPole-v1",
        "total_steps=10000000",
        "log_every=500",
        "checkpoint_every=2000",
        "run_name=k",
        "eval_episodes=2",
    ]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "runs" / "default" / "k"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            rows = read_metrics(run / "metrics.jsonl")
            if (run / "checkpoints" / "step_000000002000").exists() and rows and rows[-1]["step"] >= 3000:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the run wrote no checkpoint in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = read_metrics(run / "metrics.jsonl")[-1]["step"]
    ckpt_step = max(int(p.name.split("_")[1]) for p in (run / "checkpoints").glob("step_*"))
    assert killed_at >= ckpt_step >= 2000  # lines up to the kill; those after the checkpoint are redone once
    end = ckpt_step + 3000
    out = rl("resume", str(run), f"total_steps={end}", cwd=tmp_path)
    assert f"resuming {run}" in out.stdout
    rows = read_metrics(run / "metrics.jsonl")
    train_steps = [r["step"] for r in rows if "perf/sps" in r]
    assert train_steps == list(range(500, end + 1, 500))
    replay_sizes = [r["replay/size"] for r in rows if "replay/size" in r]
    assert all(b > a for a, b in zip(replay_sizes, replay_sizes[1:]))  # the buffer came back, and grew
    assert json.loads((run / "summary.json").read_text())["steps"] == end


def test_bench_runs_in_its_quick_mode(tmp_path):
    out = rl("bench", "--quick", cwd=tmp_path)
    for title in ("Env steps/s", "Offscreen render fps", "Replay"):
        assert title in out.stdout
    results = json.loads((tmp_path / "bench-foundation.json").read_text())
    assert results["replay pixels 64x64x3, 1 env"]["bytes/step"] < 2 * 64 * 64 * 3
    assert all(v["4 envs"] > 0 for k, v in results.items() if k.startswith("env "))
