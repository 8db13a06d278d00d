"""SAC: losses against hand-computed values, n-step targets from shaped per-step rewards, the
Shaper's reward reaching the critic, learning on Pendulum, determinism, resume."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import batch as batch_lib
from rl import config as config_lib
from rl import envs
from rl.agents import sac
from rl.nets import tanh_gaussian_sample
from rl.rewards import Extrinsic, Fixed, Shaper, Stream
from rl.runs import Run


def test_soft_q_target_by_hand():
    # r + gamma^n (1 - terminated) (min(Q1', Q2') - alpha log pi); truncation still bootstraps
    reward = jnp.array([1.0, 2.0, -1.0])
    bootstrap = jnp.array([0.99, 0.0, 0.99**3])  # gamma^m (1 - terminated)
    next_q = jnp.array([[3.0, 5.0, 2.0], [4.0, 1.0, 0.5]])
    next_logp = jnp.array([-1.0, 0.5, 2.0])
    target = sac.soft_q_target(reward, bootstrap, next_q, next_logp, alpha=0.2)
    expected = [1 + 0.99 * (3 + 0.2), 2.0, -1 + 0.99**3 * (0.5 - 0.4)]
    np.testing.assert_allclose(target, expected, rtol=1e-6)


def test_temperature_loss_by_hand():
    logp = jnp.array([-2.0, 1.0])
    log_alpha = jnp.log(0.5)
    loss, grad = jax.value_and_grad(sac.temperature_loss)(log_alpha, logp, -6.0)
    # J = mean(-alpha (logp + H)) = -0.5 * mean(-8, -5) = 3.25; dJ/dlog_alpha = J
    np.testing.assert_allclose(loss, 3.25, rtol=1e-6)
    np.testing.assert_allclose(grad, 3.25, rtol=1e-6)
    # entropy above target (logp + H < 0) -> positive gradient -> alpha decreases under descent


def test_tanh_gaussian_logp_matches_change_of_variables():
    key = jax.random.PRNGKey(3)
    mean = jnp.array([[0.3, -1.2], [2.0, 0.1]])
    log_std = jnp.array([[-0.5, 0.2], [0.0, -1.0]])
    a, logp = tanh_gaussian_sample(key, mean, log_std)
    u = np.asarray(mean) + np.exp(log_std) * np.asarray(jax.random.normal(key, mean.shape))
    std = np.exp(log_std)
    log_n = np.sum(-0.5 * ((u - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi), -1)
    expected = log_n - np.sum(np.log(1 - np.tanh(u) ** 2), -1)
    np.testing.assert_allclose(a, np.tanh(u), rtol=1e-5)
    np.testing.assert_allclose(logp, expected, rtol=1e-4, atol=1e-4)


def _mlp_np(params, x, layers):
    for i in range(layers):
        d = params[f"Dense_{i}"]
        x = x @ np.asarray(d["kernel"]) + np.asarray(d["bias"])
        if i < layers - 1:
            x = np.maximum(x, 0)
    return x


def test_critic_loss_matches_numpy_on_a_tiny_batch():
    cfg = config_lib.build(sac.Config, overrides={"env": "gym:Pendulum-v1", "hidden": [8, 8]})
    env, spec = envs.make(cfg.env, 1, 0)
    env.close()
    state = sac.init(cfg, spec, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    B = 5
    raw = {
        "obs": rng.normal(size=(B, 3)).astype(np.float32),
        "next_obs": rng.normal(size=(B, 3)).astype(np.float32),
        "action": rng.uniform(-2, 2, size=(B, 1)).astype(np.float32),
        "reward": rng.normal(size=B).astype(np.float32),
        "terminated": np.array([0, 1, 0, 0, 1], bool),
    }
    batch = batch_lib.transitions(**raw, truncated=np.zeros(B, bool))
    _, metrics = jax.jit(lambda s, b: sac.update(cfg, spec, Shaper(), s, b))(state, batch)
    batch = raw

    # the same computation in numpy, with the update's next-action noise
    k_next = jax.random.split(state.key, 4)[1]
    a_params = state.actor["MLP_0"]
    out = _mlp_np(a_params, batch["next_obs"], 3)
    mean, log_std = out[:, :1], np.clip(out[:, 1:], -20, 2)
    u = mean + np.exp(log_std) * np.asarray(jax.random.normal(k_next, mean.shape))
    a_next = np.tanh(u)
    logp = np.sum(
        -0.5 * ((u - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi), -1
    ) - np.sum(np.log(1 - a_next**2 + 1e-12), -1)

    def q(params, obs, act, i):
        p = jax.tree.map(lambda x: np.asarray(x)[i], params["VmapQNet_0"]["MLP_0"])
        return _mlp_np(p, np.concatenate([obs, act], -1), 3)[:, 0]

    next_q = np.stack([q(state.target, batch["next_obs"], a_next, i) for i in range(2)])
    target = batch["reward"] + 0.99 * (1 - batch["terminated"]) * (next_q.min(0) - 1.0 * logp)
    act = batch["action"] / 2.0  # Pendulum's bounds are [-2, 2]
    qs = np.stack([q(state.critic, batch["obs"], act, i) for i in range(2)])
    expected = 0.5 * np.mean(np.sum((qs - target) ** 2, 0))
    np.testing.assert_allclose(metrics["loss/critic"], expected, rtol=1e-4)
    np.testing.assert_allclose(metrics["sac/q"], qs.mean(), rtol=1e-4)


def _pendulum_cfg(tmp_path, **kw):
    return config_lib.build(
        sac.Config,
        ["sac-pendulum"],
        {"runs_dir": str(tmp_path), "experiment": "t", **kw},
    )


def test_sac_learns_pendulum(tmp_path):
    summary = sac.train(
        _pendulum_cfg(tmp_path, run_name="learn", total_steps=4000)
    )  # seeds 0-2: -116 to -189
    assert summary["eval/episode_return"] >= -250, summary


def test_same_seed_same_metrics(tmp_path):
    rows = []
    for name in ("a", "b"):
        cfg = _pendulum_cfg(tmp_path, run_name=name, total_steps=600, learning_starts=300, log_every=100)
        summary = sac.train(cfg)
        lines = [json.loads(x) for x in open(summary["metrics"])]
        rows.append([{k: v for k, v in r.items() if not k.startswith("perf/")} for r in lines])
    assert rows[0] == rows[1]
    assert any("loss/critic" in r for r in rows[0])


def test_discrete_env_is_refused_before_a_run_exists(tmp_path):
    cfg = config_lib.build(sac.Config, overrides={"env": "gym:CartPole-v1", "runs_dir": str(tmp_path)})
    with pytest.raises(ValueError, match="bounded continuous"):
        sac.train(cfg)
    assert not any(tmp_path.iterdir())


def test_resume_from_a_checkpoint_is_reproducible(tmp_path):
    """Resuming twice from the same checkpoint gives the same continuation. (It is not the
    uninterrupted run's continuation: the simulator state is not checkpointed; README.)"""
    cfg = _pendulum_cfg(
        tmp_path, run_name="base", total_steps=500, learning_starts=200, log_every=100, eval_episodes=1
    )
    cfg.checkpoint_every = 300
    sac.train(cfg)
    base = tmp_path / "t" / "base"
    shutil.rmtree(base / "checkpoints" / "step_000000000500")
    (base / "summary.json").unlink()  # as if it had crashed after step 300
    runs = []
    for name in ("r1", "r2"):
        shutil.copytree(base, tmp_path / "t" / name)
        cfg_file = tmp_path / "t" / name / "config.yaml"
        cfg_file.write_text(cfg_file.read_text().replace("run_name: base", f"run_name: {name}"))
        run, ckpt = Run.resume(tmp_path / "t" / name, sac.Config)  # what `rl resume` does, in process
        sac.train(run.cfg, run=run, resume=ckpt)
        lines = [json.loads(x) for x in open(tmp_path / "t" / name / "metrics.jsonl")]
        runs.append([{k: v for k, v in r.items() if not k.startswith("perf/")} for r in lines])
    assert runs[0] == runs[1]
    assert runs[0][-1]["step"] == 500
    assert any("loss/critic" in r for r in runs[0] if r["step"] > 300)


class ObsBonus(Fixed):
    reads = frozenset({"obs"})

    def reward(self, state, batch):
        return batch.obs[..., 0]


def _tiny(cfg_over=None):
    cfg = config_lib.build(
        sac.Config, overrides={"env": "gym:Pendulum-v1", "hidden": [8, 8], **(cfg_over or {})}
    )
    spec = envs.make_spec(cfg.env, 1, 0)
    return cfg, spec


def test_the_critic_trains_on_the_shaper_total_not_the_env_reward():
    """Mutation check: with the env reward in the target, a bonus of weight 1 would leave the
    target and the critic unchanged from weight 0."""
    cfg, spec = _tiny()
    rng = np.random.default_rng(0)
    batch = batch_lib.transitions(
        rng.normal(size=(6, 3)).astype(np.float32), rng.uniform(-2, 2, (6, 1)).astype(np.float32),
        rng.normal(size=6).astype(np.float32), rng.normal(size=(6, 3)).astype(np.float32),
        np.zeros(6, bool), np.zeros(6, bool),
    )  # fmt: skip
    out = {}
    for w in (0.0, 1.0):
        shaper = sac.build_shaper(
            cfg, Shaper((Stream("extrinsic", Extrinsic()), Stream("b", ObsBonus(), weight=w)))
        )
        state = sac.init(cfg, spec, jax.random.PRNGKey(0), shaper)
        new, m = jax.jit(lambda s, b, shaper=shaper: sac.update(cfg, spec, shaper, s, b))(state, batch)
        out[w] = (float(m["sac/target"]), jax.tree.leaves(new.critic))
    shift = float(np.mean(np.asarray(batch.obs)[:, 0]))
    assert out[1.0][0] - out[0.0][0] == pytest.approx(shift, rel=1e-4)  # the target moved by the bonus
    assert any(not np.allclose(a, b) for a, b in zip(out[0.0][1], out[1.0][1]))


def test_n_step_target_sums_shaped_per_step_rewards_and_cuts_at_the_episode_end():
    cfg, spec = _tiny({"n_step": 3, "gamma": 0.5})
    obs = np.arange(8, dtype=np.float32)[None, :3, None].repeat(3, -1).repeat(2, 0)  # [2, 3, 3]
    obs[1] += 10
    terminated = np.array([[False, True, False], [False, False, False]])
    mask = np.array([[True, True, False], [True, True, True]])
    seq = batch_lib.sequences(obs, np.zeros((2, 3, 1), np.float32), np.ones((2, 3), np.float32), obs + 0.5,
                              terminated, np.zeros((2, 3), bool), mask=mask)  # fmt: skip
    shaper = Shaper((Stream("extrinsic", Extrinsic()), Stream("b", ObsBonus(), weight=1.0)))
    reward = shaper(shaper.init(jax.random.PRNGKey(0), spec), seq, 0).total  # 1 + obs[..., 0]
    o, a, g, bootstrap, next_obs = sac.returns_and_successors(cfg, seq, reward)
    r = 1 + obs[..., 0]
    np.testing.assert_allclose(g, [r[0, 0] + 0.5 * r[0, 1], r[1, 0] + 0.5 * r[1, 1] + 0.25 * r[1, 2]])
    np.testing.assert_allclose(bootstrap, [0.0, 0.125])  # terminated after 2 steps; 3 steps then bootstrap
    np.testing.assert_allclose(next_obs, [obs[0, 1] + 0.5, obs[1, 2] + 0.5])
    np.testing.assert_allclose(o, obs[:, 0])


def test_n_step_sac_runs_on_replay_sequences(tmp_path):
    cfg = _pendulum_cfg(tmp_path, run_name="n3", total_steps=400, learning_starts=300, log_every=100,
                        n_step=3, eval_episodes=1, shaper={"terms": ["rnd"]})  # fmt: skip
    summary = sac.train(cfg)
    rows = [json.loads(x) for x in open(summary["metrics"])]
    assert any(np.isfinite(r.get("loss/critic", np.nan)) and "reward/rnd_norm" in r for r in rows)
