"""Preference-conditioned MO-PPO (rl.agents.mo_ppo): the per-sample scalarized advantage
against numpy, one preference per episode (the truncation bootstrap under the finished
episode's), a learning check on a two-objective bandit whose best action depends on the
preference (and its failure when the policy cannot see the preference), the front and resume."""

import json
import shutil

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import checkpoint, envs
from rl import config as config_lib
from rl.agents import cmorl, mo_ppo
from rl.runs import Run


class _MOBandit(gym.Env):
    """8 steps; action 0 pays (1, 0), 1 pays (0, 1), 2 pays (0.6, 0.6): the best linear utility
    takes 1 for w_0 < 0.4, 2 between, 0 above 0.6."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(3)
    reward_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
    PAY = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.6]], np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([1.0, 0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([1.0, self.t / 8], np.float32), self.PAY[int(action)].copy(), False, self.t >= 8, {}


gym.register("RewardlabMOBandit-v0", entry_point=_MOBandit)
ENV = "mo:RewardlabMOBandit-v0"
BANDIT = {"env": ENV, "env_options": {}, "num_envs": 8, "num_steps": 32, "num_minibatches": 4,
          "update_epochs": 4, "total_steps": 5120, "eval_interval": 10, "eval_episodes": 1, "eval_gamma": 1.0,
          "mb_episode_steps": 8, "ref_point": [0, 0], "ent_coef": 0.01, "lr": 1e-3}  # fmt: skip


def _ideal_eum(grid):
    return float(np.mean(np.max(grid @ (8 * _MOBandit.PAY).T, 1)))


def test_advantage_with_a_preference_per_sample_matches_numpy():
    rng = np.random.default_rng(0)
    ret, value = rng.normal(size=(2, 16, 3, 2))
    var = rng.uniform(0.5, 4, 2)
    w = rng.dirichlet(np.ones(2), (16, 3))
    raw = (ret - value) * np.sqrt(var + 1e-8)
    want = (raw * w).sum(-1)
    want = (want - want.mean()) / (want.std() + 1e-5)
    got = cmorl.advantage(*map(jnp.asarray, (ret, value, var, w)), 0, False)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # mutation: one preference for every sample (their mean) is another advantage
    mean_w = cmorl.advantage(*map(jnp.asarray, (ret, value, var, w.mean((0, 1)))), 0, False)
    assert not np.allclose(mean_w, want, atol=1e-2)


def test_each_episode_keeps_one_preference_and_bootstraps_under_it():
    cfg = config_lib.build(mo_ppo.Config, overrides={**BANDIT, "num_envs": 3, "num_steps": 20})
    spec = envs.make_spec(ENV, 3, 0)
    cspec = mo_ppo.conditioned(spec)
    assert cspec.obs_shape == (4,)
    progs = cmorl.programs(cfg, cspec)
    member = jax.jit(lambda k: cmorl.init_member(cfg, cspec, k))(jax.random.PRNGKey(0))
    sampler = mo_ppo.Sampler(cfg, spec, 0, progs)

    class NoRun:
        def record_episodes(self, episodes):
            pass

        def progress(self, step, total):
            pass

    try:
        _, r, _ = sampler.rollout(member, jax.random.PRNGKey(1), NoRun(), 0, 10**6)
    finally:
        sampler.close()
    w, trunc = r["weight"][0], r["truncated"][0]
    assert trunc[7].all() and trunc[15].all() and trunc.sum() == 6  # 8-step episodes
    changed = np.any(w[1:] != w[:-1], -1)  # [T - 1, E]
    np.testing.assert_array_equal(changed, trunc[:-1])  # a new preference exactly at episode starts
    np.testing.assert_allclose(w.sum(-1), 1, rtol=1e-5)
    # the bootstrap input carries the finished episode's preference: its weight columns are the step's
    x, final = r["x"][0], r["final_x"][0]
    np.testing.assert_allclose(final[7][:, 2:], x[7][:, 2:], rtol=1e-6)
    assert not np.allclose(final[7][:, 2:], x[8][:, 2:])  # (the next episode's differs)


def test_the_conditioned_policy_learns_the_front_and_fails_blind(tmp_path, monkeypatch):
    """About 6.02 of the ideal 6.08 EU within 5k env steps (a single point scores at most 4.8):
    three front points from one network. Blind to the preference (zeroed in its input) the
    policy can only learn one action mix: its front collapses."""
    grid = np.stack([np.linspace(0, 1, 101), 1 - np.linspace(0, 1, 101)], 1)
    summary = mo_ppo.train(
        config_lib.build(mo_ppo.Config, overrides={**BANDIT, "runs_dir": str(tmp_path / "a")})
    )
    assert summary["eval/eum"] > 5.6 and summary["eval/eum"] <= _ideal_eum(grid) + 1e-6, summary
    assert summary["eval/cardinality"] >= 3
    run_dir = tmp_path / "a" / "default" / next(p.name for p in (tmp_path / "a" / "default").iterdir())
    front = json.loads((run_dir / "front.json").read_text())
    assert set(front["protocols"]) == {"cmorl", "morl_baselines"} and len(front["evaluated"]) == 11
    assert (run_dir / "front.png").exists()

    # a crash before the last evaluation: resume from the one before and finish the budget
    first, last = checkpoint.all_checkpoints(run_dir / "checkpoints")
    assert json.loads((first / "meta.json").read_text())["next_update"] == 10
    shutil.rmtree(last)
    (run_dir / "summary.json").unlink()
    run, ckpt = Run.resume(run_dir, mo_ppo.Config)
    assert ckpt == first
    again = mo_ppo.train(run.cfg, run=run, resume=ckpt)
    assert json.loads((run_dir / "front.json").read_text())["step"] == 5120 and again["eval/eum"] > 5.0

    monkeypatch.setattr(
        mo_ppo, "with_weights", lambda obs, w: np.concatenate([obs, 0 * w], -1).astype(np.float32)
    )
    blind = mo_ppo.train(
        config_lib.build(mo_ppo.Config, overrides={**BANDIT, "runs_dir": str(tmp_path / "b")})
    )
    assert blind["eval/eum"] < 4.9 and blind["eval/cardinality"] == 1, blind


def test_bad_input_fails_early():
    with pytest.raises(config_lib.ConfigError, match="eval_interval"):
        config_lib.build(mo_ppo.Config, overrides={**BANDIT, "eval_interval": 0})
    with pytest.raises(config_lib.ConfigError, match="scalarize"):
        config_lib.build(mo_ppo.Config, overrides={**BANDIT, "shaper": {"scalarize": "linear"}})
    with pytest.raises(ValueError, match="fewer than one rollout"):
        mo_ppo.train(config_lib.build(mo_ppo.Config, overrides={**BANDIT, "total_steps": 100}))
    with pytest.raises(ValueError, match="vector reward"):
        mo_ppo.train(config_lib.build(mo_ppo.Config, overrides={"env": "gym:Pendulum-v1"}))
