"""PPO: GAE and reward scaling against numpy loops, sampling, CartPole, determinism, smoke runs,
the Shaper's reward reaching the loss, resume after SIGKILL."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import config as config_lib
from rl import envs
from rl.agents import ppo
from rl.returns import gae
from rl.rewards import Extrinsic, Fixed, Linear, RunningStats, Shaper, Stream


def gae_reference(reward, value, last_value, final_value, terminated, truncated, gamma, lam):
    T, E = reward.shape
    adv = np.zeros((T, E))
    for e in range(E):
        running = 0.0
        for t in reversed(range(T)):
            if terminated[t, e]:
                next_v, running = 0.0, 0.0
            elif truncated[t, e]:
                next_v, running = final_value[t, e], 0.0
            else:
                next_v = value[t + 1, e] if t + 1 < T else last_value[e]
            delta = reward[t, e] + gamma * next_v - value[t, e]
            running = delta + gamma * lam * running
            adv[t, e] = running
    return adv, adv + value


def test_gae_matches_numpy_loop_with_truncation():
    rng = np.random.default_rng(0)
    T, E = 9, 3
    reward, value = rng.normal(size=(T, E)), rng.normal(size=(T, E))
    last_value, final_value = rng.normal(size=E), rng.normal(size=(T, E))
    terminated = np.zeros((T, E), bool)
    truncated = np.zeros((T, E), bool)
    terminated[2, 0] = terminated[8, 1] = True
    truncated[5, 0] = truncated[3, 2] = truncated[8, 2] = True
    args = (reward, value, last_value, final_value, terminated, truncated, 0.99, 0.95)
    as_jax = [jnp.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
    # time-major per env, vmapped over envs at the call site (as in ppo.update)
    adv, ret = jax.vmap(gae, in_axes=(1, 1, 0, 1, 1, 1, None, None), out_axes=1)(*as_jax)
    adv_ref, ret_ref = gae_reference(*args)
    np.testing.assert_allclose(adv, adv_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, ret_ref, rtol=1e-5, atol=1e-5)
    # a truncated step bootstraps from its final observation's value, not the next episode's
    assert not np.isclose(adv_ref[5, 0], reward[5, 0] + 0.99 * value[6, 0] - value[5, 0])


def test_two_value_heads_gae_matches_numpy_with_non_episodic_intrinsic_returns():
    """Head 0: the extrinsic reward with gamma and episode ends; head 1: the intrinsic reward
    with gamma_int and no episode ends (RND's non-episodic intrinsic return, CleanRL's
    ppo_rnd_envpool.py); the advantage 2 A_ext + 1 A_int. Mutations caught: an episodic
    intrinsic return, one gamma for both, the coefficients ignored."""
    cfg = config_lib.build(ppo.Config, overrides={"intrinsic_head": True, "gamma": 0.999, "gamma_int": 0.9,
                                                  "adv_coef_ext": 2.0, "adv_coef_int": 1.0})  # fmt: skip
    rng = np.random.default_rng(0)
    T, E = 9, 3
    terminated, truncated = rng.random((T, E)) < 0.2, rng.random((T, E)) < 0.1
    truncated &= ~terminated
    value, final = rng.normal(size=(T, E, 2)), rng.normal(size=(T, E, 2))
    last = rng.normal(size=(E, 2))
    r_ext, r_int = rng.normal(size=(T, E)), rng.random((T, E))
    rollout = {k: jnp.asarray(v, jnp.float32) for k, v in
               {"value": value, "final_value": final, "last_value": last}.items()}  # fmt: skip
    rollout.update(terminated=jnp.asarray(terminated), truncated=jnp.asarray(truncated))
    adv, ret = ppo.advantages(cfg, rollout, jnp.asarray(r_ext, jnp.float32), jnp.asarray(r_int, jnp.float32))
    a_e, ret_e = gae_reference(
        r_ext, value[..., 0], last[:, 0], final[..., 0], terminated, truncated, 0.999, cfg.gae_lambda
    )
    never = np.zeros((T, E), bool)
    a_i, ret_i = gae_reference(
        r_int, value[..., 1], last[:, 1], final[..., 1], never, never, 0.9, cfg.gae_lambda
    )
    np.testing.assert_allclose(adv, 2 * a_e + a_i, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ret, np.stack([ret_e, ret_i], -1), rtol=1e-4, atol=1e-5)


def test_the_intrinsic_head_learns_the_fused_bonus_and_only_it(tmp_path):
    """A constant intrinsic bonus with zero env reward on the jitted path: the intrinsic return
    is that of the bonus (about 1 / (1 - gamma_int) for a non-episodic 1 a step), the extrinsic
    one 0: the streams reach their own heads."""
    shaper = Shaper((Stream("extrinsic", Extrinsic(), weight=0.0), Stream("bonus", ConstantBonus())))
    cfg = config_lib.build(ppo.Config, overrides={
        "env": "gymnax:CartPole-v1", "num_envs": 4, "num_steps": 32, "num_minibatches": 2, "update_epochs": 1,
        "total_steps": 256, "log_every": 128, "eval_episodes": 1, "runs_dir": str(tmp_path),
        "intrinsic_head": True, "gamma_int": 0.9, "norm_reward": False})  # fmt: skip
    rows = [json.loads(x) for x in open(ppo.train(cfg, shaper=shaper)["metrics"])]
    assert abs(rows[0]["ppo/return"]) < 0.5  # bootstrapped values only (a bonus in head 0: about 10)
    assert 1.0 < rows[0]["ppo/intrinsic_return"] < 10.0


def test_reward_scaling_matches_a_numpy_loop():
    cfg = config_lib.build(ppo.Config, overrides={"env": "gym:Pendulum-v1"})
    rng = np.random.default_rng(1)
    T, E = 20, 2
    reward = rng.normal(size=(T, E)).astype(np.float32) * 5
    done = rng.random((T, E)) < 0.15
    _, _, scaled = ppo.scale_rewards(
        cfg, RunningStats.zeros(), jnp.zeros(E), jnp.asarray(reward), jnp.asarray(done)
    )
    ret, seen, expected = np.zeros(E), [], np.zeros((T, E))
    for t in range(T):
        ret = ret * cfg.gamma + reward[t]
        seen += list(ret)
        var = np.var(seen) * len(seen) / (len(seen) + 1e-4)  # the 1e-4 prior count of gymnasium
        expected[t] = np.clip(reward[t] / np.sqrt(var + 1e-8), -10, 10)
        ret = np.where(done[t], 0.0, ret)
    np.testing.assert_allclose(scaled, expected, rtol=2e-3)


def test_gumbel_max_sampling_follows_the_softmax():
    env, spec = envs.make("gym:CartPole-v1", 1, 0)
    env.close()
    logits = np.array([0.5, -0.7], np.float32)
    noise = np.random.default_rng(0).gumbel(size=(20000, 2)).astype(np.float32)
    actions = np.argmax(logits + noise, -1)
    np.testing.assert_allclose(np.mean(actions == 0), jax.nn.softmax(logits)[0], atol=0.01)


@pytest.mark.parametrize("env_id", ["gym:HalfCheetah-v5", "gym:CartPole-v1"])
def test_host_actor_samples_from_the_network(env_id):
    cfg = config_lib.build(ppo.Config, overrides={"env": env_id})
    spec = envs.make_spec(cfg.env, 3, 0)
    state = ppo.init(cfg, spec, jax.random.PRNGKey(0))
    host, act = ppo.rollout_actor(cfg, spec)
    assert host  # vector observations: numpy on the host
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, *spec.obs_shape)).astype(np.float32)
    noise = ppo.draw_noise(spec, rng)
    action = act(jax.device_get(state.params), x, noise)
    pi, _ = ppo.network(cfg, spec).apply({"params": state.params}, x)
    if spec.discrete:
        np.testing.assert_array_equal(action, np.argmax(pi + noise, -1))
    else:
        np.testing.assert_allclose(action, pi[0] + np.exp(pi[1]) * noise, rtol=1e-5, atol=1e-6)


def test_rollout_values_and_observation_statistics():
    cfg = config_lib.build(ppo.Config, overrides={"env": "gym:HalfCheetah-v5"})
    spec = envs.make_spec(cfg.env, 2, 0)
    state = ppo.init(cfg, spec, jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    raw = rng.normal(2.0, 3.0, size=(5, 2, 17)).astype(np.float32)
    stats, xs = ppo.init_loop(cfg, spec)["obs_stats"], []
    for t in range(5):
        stats, x = ppo.observe(cfg, spec, stats, raw[t])
        xs.append(x)
    np.testing.assert_allclose(stats.mean, raw.reshape(10, 17).mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        xs[-1], np.clip((raw[4] - stats.mean) / np.sqrt(stats.var + 1e-8), -10, 10), rtol=1e-5
    )
    truncated = np.zeros((5, 2), bool)
    truncated[3, 1] = True
    rollout = {
        "policy_obs": np.stack(xs), "final_obs": np.stack(xs)[::-1].copy(), "last_obs": xs[0],
        "action": rng.normal(size=(5, 2, 6)).astype(np.float32), "truncated": truncated,
    }  # fmt: skip
    out = jax.jit(lambda p, r: ppo.rollout_values(cfg, spec, p, r))(state.params, rollout)
    net = ppo.network(cfg, spec)
    pi, v = net.apply({"params": state.params}, rollout["policy_obs"])
    np.testing.assert_allclose(out["value"], v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["logp"], ppo.log_prob(spec, pi, rollout["action"])[0], rtol=1e-5)
    final = net.apply({"params": state.params}, rollout["final_obs"])[1]
    np.testing.assert_allclose(out["final_value"], np.where(truncated, final, 0.0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["last_value"], v[0], rtol=1e-5, atol=1e-6)


@pytest.mark.optimized  # execution-bound: XLA level 2 (tests/conftest.py)
def test_ppo_solves_cartpole(tmp_path):
    cfg = config_lib.build(ppo.Config, ["ppo-cartpole"], {"runs_dir": str(tmp_path)})
    summary = ppo.train(cfg)
    assert summary["eval/episode_return"] >= 475, summary


def test_same_seed_same_metrics(tmp_path):
    rows = []
    for name in ("a", "b"):
        cfg = config_lib.build(
            ppo.Config,
            overrides={"env": "gym:HalfCheetah-v5", "total_steps": 1024, "num_steps": 256, "num_minibatches": 4,
                       "update_epochs": 2, "log_every": 256, "eval_episodes": 1, "runs_dir": str(tmp_path),
                       "run_name": name, "env_options": {"max_episode_steps": 100}},
        )  # fmt: skip
        summary = ppo.train(cfg)
        lines = [json.loads(x) for x in open(summary["metrics"])]
        rows.append([{k: v for k, v in r.items() if not k.startswith("perf/")} for r in lines])
    assert rows[0] == rows[1] and len(rows[0]) >= 4


@pytest.mark.parametrize(
    "env_id,preset,extra",
    [
        (
            "atari:Breakout",
            ["ppo-atari"],
            {"num_envs": 2, "num_steps": 64, "env_options": {"max_episode_steps": 50}},
        ),
        ("minigrid:MiniGrid-Empty-5x5-v0", ["ppo-minigrid"], {"num_envs": 2, "num_steps": 64}),
        ("dmc:cheetah-run", [], {"num_steps": 256, "num_minibatches": 4, "update_epochs": 1}),
    ],
)
def test_ppo_smoke_on_images_grids_and_dmc(tmp_path, env_id, preset, extra):
    cfg = config_lib.build(
        ppo.Config,
        preset,
        {"env": env_id, "total_steps": 256, "eval_episodes": 1, "runs_dir": str(tmp_path), **extra},
    )
    summary = ppo.train(cfg)
    assert np.isfinite(summary["eval/episode_return"])
    rows = [json.loads(x) for x in open(summary["metrics"])]
    assert any(np.isfinite(r.get("loss/value", np.nan)) for r in rows)


class ConstantBonus(Fixed):
    """A reward term: +1 a step (to check that PPO trains on the Shaper's output)."""

    reads = frozenset({"value"})

    def reward(self, state, batch):
        return jnp.ones_like(batch.get("value"))


class ObsBonus(Fixed):
    """A bonus that varies per step: the first observation coordinate."""

    reads = frozenset({"obs"})

    def reward(self, state, batch):
        return batch.obs[..., 0]


def test_ppo_trains_on_the_shaper_reward(tmp_path):
    from rl.rewards import Extrinsic, Shaper, Stream

    shaper = Shaper(
        (Stream("extrinsic", Extrinsic()), Stream("bonus", ConstantBonus(), weight=2.0, normalize="meanstd"))
    )
    cfg = config_lib.build(
        ppo.Config,
        overrides={"env": "gym:Pendulum-v1", "total_steps": 512, "num_steps": 256, "num_minibatches": 2,
                   "update_epochs": 1, "log_every": 256, "eval_episodes": 1, "runs_dir": str(tmp_path)},
    )  # fmt: skip
    summary = ppo.train(cfg, shaper=shaper)
    rows = [json.loads(x) for x in open(summary["metrics"])]
    logged = [r for r in rows if "reward/bonus" in r]
    assert logged and logged[0]["reward/bonus"] == 1.0 and "reward/bonus_norm" in logged[0]
    assert logged[0]["reward/extrinsic"] < 0  # Pendulum's reward


def _rollout(cfg, spec, T, E, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(T, E, *spec.obs_shape)).astype(np.float32)
    terminated = rng.random((T, E)) < 0.1
    return {
        "obs": obs, "policy_obs": obs, "next_obs": obs, "final_obs": obs, "last_obs": obs[0],
        "action": rng.normal(size=(T, E, *spec.action_shape)).astype(np.float32),
        "reward": rng.normal(size=(T, E)).astype(np.float32),
        "terminated": terminated, "truncated": np.zeros((T, E), bool),
    }  # fmt: skip


def test_the_update_trains_on_the_shaper_total_not_the_env_reward():
    """Mutation check: an update that fed GAE the env reward would give the same parameters
    with a bonus of weight 0 and weight 1, and the GAE returns would not move by the bonus."""
    cfg = config_lib.build(ppo.Config, overrides={"env": "gym:Pendulum-v1", "num_steps": 16, "num_envs": 2,
                           "num_minibatches": 2, "update_epochs": 1, "norm_reward": False, "total_steps": 32})  # fmt: skip
    spec = envs.make_spec(cfg.env, 2, 0)
    rollout = _rollout(cfg, spec, 16, 2)
    out = {}
    for w in (0.0, 1.0):
        shaper = Shaper((Stream("extrinsic", Extrinsic()), Stream("bonus", ObsBonus(), weight=w)))
        state = ppo.init(cfg, spec, jax.random.PRNGKey(0), shaper)
        new, m = jax.jit(lambda s, r, sh=shaper: ppo.update(cfg, spec, sh.bind(cfg.gamma), s, r))(
            state, rollout
        )
        out[w] = (jax.tree.leaves(new.params), float(m["ppo/return"]), float(m["reward/bonus"]))
    base = jax.jit(lambda s, r: ppo.update(cfg, spec, ppo.build_shaper(cfg), s, r))(
        ppo.init(cfg, spec, jax.random.PRNGKey(0)), rollout
    )[0]
    for a, b in zip(out[0.0][0], jax.tree.leaves(base.params)):  # weight 0 == no bonus, exactly
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, b) for a, b in zip(out[0.0][0], out[1.0][0]))
    # GAE is linear in the reward: the mean return moves by the GAE of the bonus alone
    bonus, zeros = rollout["obs"][..., 0], np.zeros((16, 2))
    shift = gae_reference(bonus, zeros, zeros[0], zeros, rollout["terminated"], rollout["truncated"],
                          cfg.gamma, cfg.gae_lambda)[1].mean()  # fmt: skip
    assert out[1.0][1] - out[0.0][1] == pytest.approx(shift, rel=1e-3, abs=1e-4) and abs(shift) > 1e-2


def test_schedules_count_env_steps_under_ppo_and_sac():
    """The same schedule gives the same weight at the same env step under both agents."""
    from rl.agents import sac

    sched = Linear(1.0, 0.0, 10_000)
    shaper = Shaper((Stream("extrinsic", Extrinsic()), Stream("bonus", ObsBonus(), weight=sched)))
    pcfg = config_lib.build(ppo.Config, overrides={"env": "gym:Pendulum-v1", "num_steps": 16, "num_envs": 2,
                            "num_minibatches": 2, "update_epochs": 1, "total_steps": 32})  # fmt: skip
    spec = envs.make_spec(pcfg.env, 2, 0)
    state = ppo.init(pcfg, spec, jax.random.PRNGKey(0), shaper)._replace(step=jnp.int32(4000 - 32))
    learn = jax.jit(lambda s, r: ppo.update(pcfg, spec, ppo.build_shaper(pcfg, shaper), s, r))
    new, m = learn(state, _rollout(pcfg, spec, 16, 2))
    assert int(new.step) == 4000  # PPO advances its clock by the rollout's env steps
    assert float(m["reward/bonus_weight"]) == pytest.approx(float(sched(4000)))
    scfg = config_lib.build(sac.Config, overrides={"env": "gym:Pendulum-v1", "hidden": [8]})
    sspec = envs.make_spec(scfg.env, 1, 0)
    sstate = sac.init(scfg, sspec, jax.random.PRNGKey(0), shaper)._replace(step=jnp.int32(4000))
    from rl import batch as batch_lib

    b = batch_lib.transitions(jnp.ones((4, 3)), jnp.zeros((4, 1)), jnp.zeros(4), jnp.ones((4, 3)),
                              np.zeros(4, bool), np.zeros(4, bool))  # fmt: skip
    _, sm = jax.jit(lambda s, b: sac.update(scfg, sspec, sac.build_shaper(scfg, shaper), s, b))(sstate, b)
    assert float(sm["reward/bonus_weight"]) == pytest.approx(float(m["reward/bonus_weight"]))


def test_sigkill_then_resume_continues_from_the_checkpoint(tmp_path, sigkill_after_checkpoint):
    import subprocess
    import sys

    run = tmp_path / "t" / "k"
    cmd = [sys.executable, "-m", "rl.cli", "train", "ppo", "--env", "gym:CartPole-v1", "total_steps=8192",
           "num_envs=2", "num_steps=128", "num_minibatches=2", "update_epochs=1", "log_every=256",
           "checkpoint_every=1024", "eval_episodes=1", f"runs_dir={tmp_path}", "experiment=t", "run_name=k"]  # fmt: skip
    sigkill_after_checkpoint(cmd, run, settle=1.0, timeout=240)
    out = subprocess.run([sys.executable, "-m", "rl.cli", "resume", str(run)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(x) for x in open(run / "metrics.jsonl")]
    train_steps = [r["step"] for r in rows if "perf/sps" in r]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 8192  # none lost or repeated
    assert (run / "summary.json").exists()
    again = subprocess.run(
        [sys.executable, "-m", "rl.cli", "resume", str(run)], capture_output=True, text=True
    )
    assert again.returncode == 0 and "finished" in again.stdout
    assert [json.loads(x) for x in open(run / "metrics.jsonl")] == rows  # a finished run: nothing written


def test_a_shaper_built_in_code_survives_resume_in_code_or_resume_refuses(tmp_path):
    import subprocess
    import sys

    from rl.runs import Run

    shaper = Shaper((Stream("extrinsic", Extrinsic()), Stream("bonus", ObsBonus(), weight=0.5)))
    cfg = config_lib.build(ppo.Config, overrides={"env": "gym:CartPole-v1", "total_steps": 256, "num_steps": 64,
                           "num_envs": 2, "num_minibatches": 2, "update_epochs": 1, "log_every": 128,
                           "eval_episodes": 1, "runs_dir": str(tmp_path), "experiment": "t", "run_name": "code"})  # fmt: skip
    ppo.train(cfg, shaper=shaper)
    run_dir = tmp_path / "t" / "code"
    out = subprocess.run([sys.executable, "-m", "rl.cli", "resume", str(run_dir), "total_steps=512"],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 2 and "another Shaper" in out.stderr and "bonus" in out.stderr
    lines = open(run_dir / "metrics.jsonl").read()
    run, ckpt = Run.resume(run_dir, ppo.Config, {"total_steps": 512})
    summary = ppo.train(run.cfg, run=run, resume=ckpt, shaper=shaper)  # the same Shaper, in code
    assert summary["steps"] == 512 and len(open(run_dir / "metrics.jsonl").read()) > len(lines)
    # a checkpoint whose term state does not match the Shaper is refused, never silently dropped
    from rl import checkpoint

    other = Shaper((Stream("extrinsic", Extrinsic()),))
    template = (
        ppo.init(cfg, envs.make_spec(cfg.env, 2, 0), jax.random.PRNGKey(0), other),
        ppo.init_loop(cfg, envs.make_spec(cfg.env, 2, 0)),
    )
    with pytest.raises(ValueError, match="not the Shaper the run trained with"):
        checkpoint.load(checkpoint.latest(run_dir / "checkpoints"), *template)


def test_ppo_trains_on_a_scalarized_vector_reward_and_evaluates_its_utility(tmp_path):
    """A multi-objective env: the Shaper keeps [E, T, k] until shaper.scalarize, and evaluation
    scores the same per-step utility (linear: w . R), with each objective beside it."""
    cfg = config_lib.build(ppo.Config, overrides={"env": "mo:mo-mountaincarcontinuous-v0", "total_steps": 128,
                           "num_steps": 64, "num_envs": 2, "num_minibatches": 2, "update_epochs": 1,
                           "log_every": 64, "eval_episodes": 2, "runs_dir": str(tmp_path),
                           "env_options": {"max_episode_steps": 30},
                           "shaper": {"scalarize": "linear", "preference": [0.25, 0.75]}})  # fmt: skip
    summary = ppo.train(cfg)
    w = np.array([0.25, 0.75])
    per_objective = np.array([summary[f"eval/episode_return/{i}"] for i in range(2)])
    assert summary["eval/episode_return"] == pytest.approx(float(w @ per_objective), rel=1e-5)
    unscalarized = config_lib.build(ppo.Config, overrides={"env": "mo:mo-mountaincarcontinuous-v0",
                                    "runs_dir": str(tmp_path), "total_steps": 4096})  # fmt: skip
    runs = list((tmp_path / "default").iterdir())
    with pytest.raises(ValueError, match="shape \\(2,\\).*scalarize"):
        ppo.train(unscalarized)
    assert list((tmp_path / "default").iterdir()) == runs  # refused before a run directory exists
