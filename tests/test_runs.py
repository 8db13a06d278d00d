"""Run directories, metrics, mirrors and checkpoints, on real files."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import checkpoint
from rl import config as C
from rl.agents import random as agent
from rl.replay import Replay
from rl.runs import NonFiniteError, Run, read_metrics, truncate_metrics


def cfg_for(tmp_path, **kw):
    return C.build(agent.Config, overrides={"runs_dir": str(tmp_path), "run_name": "r", **kw})


def test_run_directory_contents(tmp_path):
    cfg = cfg_for(tmp_path, experiment="exp")
    run = Run.create(cfg, "random")
    assert run.dir == tmp_path / "exp" / "r"
    run.log(10, {"train/episode_return": 1.5, "perf/sps": np.float32(3.0)})
    run.log(20, {"train/episode_return": 2.5})
    summary = run.finish({"steps": 20})
    files = {p.name for p in run.dir.iterdir()}
    assert {
        "config.yaml",
        "meta.json",
        "metrics.jsonl",
        "tb",
        "checkpoints",
        "videos",
        "summary.json",
        "curve.png",
    } <= files
    meta = json.loads((run.dir / "meta.json").read_text())
    assert meta["libraries"]["jax"] and "git_commit" in meta and meta["agent"] == "random"
    assert [r["step"] for r in read_metrics(run.dir / "metrics.jsonl")] == [10, 20]
    assert summary["curve"].endswith("curve.png")
    assert any(p.name.startswith("events.out.tfevents") for p in (run.dir / "tb").iterdir())
    assert C.load_yaml(run.dir / "config.yaml")["agent"] == "random"
    with pytest.raises(FileExistsError, match="rl resume"):
        Run.create(cfg, "random")


def test_wandb_offline_mirror_writes_locally(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = Run.create(cfg_for(tmp_path, wandb="offline"), "random")
    run.log(1, {"x": 1.0})
    run.finish({})
    offline = list((run.dir / "wandb").glob("offline-run-*"))
    assert offline and run.wandb_id and any(p.suffix == ".wandb" for p in offline[0].iterdir())


def test_wandb_online_without_key_never_crashes(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with pytest.warns(UserWarning, match="no wandb API key"):
        run = Run.create(cfg_for(tmp_path, wandb="online"), "random")
    run.log(1, {"x": 1.0})
    run.finish({})
    assert read_metrics(run.dir / "metrics.jsonl")[0]["x"] == 1.0


def test_metrics_truncation_drops_partial_and_later_lines(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "x": ')
    truncate_metrics(p, 2)
    assert [r["step"] for r in read_metrics(p)] == [1, 2]


def test_nan_stops_names_the_term_and_keeps_the_last_good_checkpoint(tmp_path):
    run = Run.create(cfg_for(tmp_path), "random")
    good = {"w": jnp.ones(3), "step": jnp.int32(4)}
    run.save_checkpoint(4, good)
    bad = {"w": jnp.full(3, jnp.nan), "step": jnp.int32(5)}
    with pytest.raises(NonFiniteError, match="reward/icm_norm.*failed.*rl resume"):
        run.check_finite(5, {"reward/icm_norm": float("nan"), "loss/actor": 1.0},
                         save_fn=lambda: run.save_failed(5, bad))  # fmt: skip
    latest = checkpoint.latest(run.checkpoints)
    assert latest.name.endswith("4")  # what `rl resume` picks: the last good state
    np.testing.assert_array_equal(checkpoint.load(latest, good)[0]["w"], np.ones(3))
    failed = checkpoint.latest(run.dir / "failed")  # the failing state, kept apart for inspection
    assert np.isnan(checkpoint.load(failed, good)[0]["w"]).all()
    run.close()


def test_resume_cuts_metrics_to_the_lines_the_checkpoint_had_seen(tmp_path):
    """A line written at the checkpoint's own step after the checkpoint (the final evaluation)
    is cut on resume, so the resumed run writes it exactly once."""
    run = Run.create(cfg_for(tmp_path, total_steps=200), "random")
    run.log(100, {"train/x": 1.0})
    run.save_checkpoint(100, {"step": jnp.int32(100)})
    run.log(100, {"eval/episode_return": 3.0})  # after the checkpoint, at its step
    run.close()
    resumed, ckpt = Run.resume(run.dir, agent.Config)
    assert [r for r in read_metrics(run.dir / "metrics.jsonl")] == [{"step": 100, "train/x": 1.0}]
    resumed.log(100, {"eval/episode_return": 3.0})
    resumed.close()
    assert len([r for r in read_metrics(run.dir / "metrics.jsonl") if "eval/episode_return" in r]) == 1


def test_resume_cuts_the_labels_file_to_what_the_checkpoint_holds(tmp_path):
    """Preference labels given after the checkpoint are not in its state: a resume drops their
    lines (their sessions run again), so ``labels.jsonl`` and the label buffer agree."""
    from rl.rewards.preference import append_labels, read_labels

    run = Run.create(cfg_for(tmp_path, total_steps=200), "random")
    append_labels(run.dir / "labels.jsonl", [{"step": 50, "label": 1.0}, {"step": 50, "label": 0.0}])
    run.save_checkpoint(100, {"step": jnp.int32(100)})
    append_labels(run.dir / "labels.jsonl", [{"step": 150, "label": 0.5}])
    run.close()
    Run.resume(run.dir, agent.Config)[0].close()
    assert [r["step"] for r in read_labels(run.dir / "labels.jsonl")] == [50, 50]


def test_checkpoint_round_trip_and_atomicity(tmp_path):
    state = {
        "params": {"w": jnp.arange(6.0).reshape(2, 3)},
        "key": jax.random.PRNGKey(3),
        "step": jnp.int32(7),
    }
    replay = Replay(
        capacity=8, num_envs=1, obs_shape=(2,), obs_dtype="float32", action_shape=(), action_dtype="int32"
    )
    rs = replay.add(
        replay.init(),
        np.ones((1, 2)),
        np.array([1]),
        np.array([2.0]),
        np.array([True]),
        np.array([False]),
        np.full((1, 2), 5.0),
    )
    root = tmp_path / "ckpt"
    checkpoint.save(root, 7, state, replay, rs, meta={"wandb_id": "abc"})
    # a crash mid-write leaves only a temporary directory, which is never taken as a checkpoint
    (root / ".tmp-crashed").mkdir()
    (root / f"{checkpoint.PREFIX}000000000009").mkdir()  # no meta.json: incomplete
    path = checkpoint.latest(root)
    assert path.name.endswith("7")
    template = jax.tree.map(jnp.zeros_like, state)
    restored, r2, rs2, meta = checkpoint.load(path, template)
    assert meta == {"step": 7, "wandb_id": "abc"} and r2 == replay
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(rs), jax.tree.leaves(rs2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for s in (10, 11, 12):
        checkpoint.save(root, s, state, keep=2)
    assert [p.name[-2:] for p in checkpoint.all_checkpoints(root)] == ["11", "12"]
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        checkpoint.load(tmp_path / "nothing", template)


def test_checkpoint_files_are_not_pickles(tmp_path):
    checkpoint.save(tmp_path, 1, {"a": jnp.ones(3)})
    raw = (checkpoint.latest(tmp_path) / "state.msgpack").read_bytes()
    assert not raw.startswith(b"\x80")  # pickle protocol marker
    assert os.path.getsize(checkpoint.latest(tmp_path) / "state.msgpack") < 200
