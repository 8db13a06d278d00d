"""Demonstrations (rl.demos) and their two uses in Ibarz et al. (2018): behaviour cloning before
PPO, and demo-preferred pairs in a preference term's label buffer; the frame reward model."""

import json

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import config as config_lib
from rl import demos, envs
from rl.agents import ppo
from rl.rewards.preference import PreferenceReward, read_labels


def _expert_demos(path, episodes=4, seed=0, shuffle=False):
    """CartPole's linear expert (a = [3 theta + theta_dot > 0], 500 of 500), recorded by hand."""
    env = gym.make("CartPole-v1")
    rows = {k: [] for k in demos.FIELDS}
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        for t in range(10_000):
            a = int(3 * obs[2] + obs[3] > 0)
            nxt, r, term, trunc, _ = env.step(a)
            for k, v in zip(demos.FIELDS, (obs, a, r, term, trunc, e, t), strict=True):
                rows[k].append(v)
            obs = nxt
            if term or trunc:
                break
    arrays = {k: np.asarray(v) for k, v in rows.items()}
    arrays["obs"] = arrays["obs"].astype(np.float32)
    if shuffle:
        arrays["action"] = np.random.default_rng(0).permutation(arrays["action"])
    return demos.save(path, arrays, {"env": "gym:CartPole-v1"})


def test_recorded_demos_load_and_give_segments_inside_episodes(tmp_path):
    cfg = config_lib.build(ppo.Config, ["ppo-cartpole"], {"total_steps": 512, "num_steps": 128, "num_envs": 4,
                                                          "runs_dir": str(tmp_path), "run_name": "r"})  # fmt: skip
    ppo.train(cfg)
    run_dir = next(tmp_path.glob("*/r"))
    path = demos.record(run_dir, 3, tmp_path / "d" / "demos")
    data = demos.load(path, envs.make_spec("gym:CartPole-v1", 1, 0))
    assert (
        path.name == "demos"
        and data["meta"]["env"] == "gym:CartPole-v1"
        and len(data["meta"]["returns"]) == 3
    )
    ep, t = data["episode"], data["step"]
    assert set(ep) == {0, 1, 2} and (t[ep == 1] == np.arange((ep == 1).sum())).all()
    ends = data["terminated"] | data["truncated"]
    assert ends.sum() == 3 and ends[-1]  # each episode closes once, the last at the end
    np.testing.assert_allclose(
        data["meta"]["returns"], [(ep == e).sum() for e in range(3)]
    )  # CartPole: 1 a step
    seg = demos.segments(data, 50, 5, np.random.default_rng(0))
    for i in range(50):  # five consecutive steps of one episode
        rows = np.flatnonzero((ep == seg["episode"][i]) & (t >= seg["start"][i]))[:5]
        np.testing.assert_array_equal(seg["obs"][i], data["obs"][rows])
        assert len(rows) == 5
    with pytest.raises(ValueError, match="observations"):
        demos.load(path, envs.make_spec("gym:Pendulum-v1", 1, 0))
    with pytest.raises(FileNotFoundError, match="rl demos"):
        demos.load(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="segment length"):
        demos.segments(data, 1, 10_000, np.random.default_rng(0))


def test_behaviour_cloning_imitates_the_expert_and_not_shuffled_actions(tmp_path):
    """Cloned from four expert episodes, the untrained PPO policy balances the pole (a random one
    lasts about 20 steps); with the same demos' actions shuffled it cannot."""
    cfg = config_lib.build(ppo.Config, ["ppo-cartpole"], {"bc_epochs": 30, "demos": "x"})
    spec = envs.make_spec(cfg.env, 1, 0)
    state = ppo.init(cfg, spec, jax.random.PRNGKey(0))
    stats = ppo.init_loop(cfg, spec)["obs_stats"]
    scores = {}
    for shuffle in (False, True):
        data = demos.load(_expert_demos(tmp_path / f"{shuffle}.npz", shuffle=shuffle), spec)
        params, s, m = ppo.behaviour_cloning(cfg, spec, state.params, stats, data)
        assert m["bc/loss"] < m["bc/loss_before"] or shuffle
        result = ppo.evaluate(cfg, state._replace(params=params), 3, loop={"obs_stats": s.host()})
        scores[shuffle] = (result["eval/episode_return"], m["bc/fit"])
    assert scores[False][0] > 150 and scores[False][1] > 0.75, scores
    assert scores[True][0] < 60 and scores[True][1] < 0.6, scores
    with pytest.raises(config_lib.ConfigError, match="demos"):
        config_lib.build(ppo.Config, ["ppo-cartpole"], {"bc_epochs": 3})


def test_demo_pairs_join_the_labels_demo_preferred(tmp_path):
    """PrefPPO on CartPole with demos: each session adds the teacher's labels and two
    demo-vs-agent pairs labelled by the demo's side; the stored pair holds the demo's segment."""
    path = _expert_demos(tmp_path / "demos.npz", episodes=2)
    streams = {"preference": {"feedback_start": 128, "feedback_every": 128, "per_session": 3, "capacity": 10,
                              "segment": 8, "hidden": [16], "query": "uniform", "demos": str(path),
                              "demo_pairs": 2}}  # fmt: skip
    over = {"env": "gym:CartPole-v1", "num_envs": 2, "num_steps": 32, "num_minibatches": 2, "update_epochs": 1,
            "total_steps": 256, "eval_episodes": 1, "log_every": 64, "runs_dir": str(tmp_path), "experiment": "p",
            "run_name": "r", "preference_buffer": 512,
            "shaper": {"terms": ["preference"], "extrinsic": {"weight": 0.0}, "streams": streams}}  # fmt: skip
    summary = ppo.train(config_lib.build(ppo.Config, overrides=over))
    rows = read_labels(tmp_path / "p" / "r" / "labels.jsonl")
    by = [r["by"] for r in rows]
    assert by == ["oracle"] * 3 + ["demo"] * 2 + ["oracle"] * 3 + ["demo"] * 2, by
    for r in rows:
        if r["by"] == "demo":
            assert r["label"] == r["demo_side"] and r["demo_side"] in (0, 1)
    metrics = [json.loads(x) for x in open(summary["metrics"])]
    assert any(m.get("reward/preference/demo_pairs") == 2 for m in metrics)
    # the buffer's pair holds the demonstration's segment on its side
    from rl import checkpoint

    cfg = config_lib.build(ppo.Config, overrides=over)
    spec = envs.make_spec(cfg.env, 2, 0)
    template = ppo.init(cfg, spec, jax.random.PRNGKey(0), ppo.build_shaper(cfg)), ppo.init_loop(cfg, spec)
    state = checkpoint.load(checkpoint.latest(tmp_path / "p" / "r" / "checkpoints"), *template)[0]
    fixed = state.shaper.terms["preference"].fixed
    assert int(fixed["count"]) == 10
    data = demos.load(path)
    r, i = rows[3], 3
    side, e, st = r["demo_side"], r["episodes"][r["demo_side"]], r["starts"][r["demo_side"]]
    want = data["obs"][(data["episode"] == e) & (data["step"] >= st)][:8]
    np.testing.assert_allclose(np.asarray(fixed["obs"][i, side]), want)
    # demonstrations of another env fail before any step
    bad = {**streams["preference"], "demos": str(_expert_demos(tmp_path / "cp.npz", 1))}
    pend = {**over, "env": "gym:Pendulum-v1", "shaper": {**over["shaper"], "streams": {"preference": bad}}}
    with pytest.raises(ValueError, match="demonstrations"):
        ppo.train(config_lib.build(ppo.Config, overrides={**pend, "run_name": "bad"}))


def test_the_frame_reward_model_learns_brightness_from_labels():
    """On 84x84x4 frames the reward model is Ibarz et al.'s small CNN; its labels stay uint8;
    from 24 labelled pairs (the brighter segment preferred) it ranks held-out pairs."""
    spec = envs.EnvSpec("frames", 1, (84, 84, 4), "uint8", gym.spaces.Discrete(3), (), None)
    term = PreferenceReward(members=2, hidden=(16,), inputs="obs", segment=2, capacity=24, epochs=30)
    state = term.init(jax.random.PRNGKey(0), spec)
    assert state.fixed["obs"].dtype == jnp.uint8 and state.fixed["obs"].shape == (24, 2, 2, 84, 84, 4)
    rng = np.random.default_rng(0)

    def pairs(n):
        level = rng.uniform(0, 200, (n, 2, 1, 1, 1, 1))
        obs = (level + rng.uniform(0, 50, (n, 2, 2, 84, 84, 4))).astype(np.uint8)
        label = (level[:, 1, 0, 0, 0, 0] > level[:, 0, 0, 0, 0, 0]).astype(np.float32)
        return jnp.asarray(obs), jnp.zeros((n, 2, 2), jnp.int32), jnp.asarray(label)

    state = term.add_labels(state, *pairs(24))
    state, fit = jax.jit(lambda s, k: term.fit(s, None, k))(state, jax.random.PRNGKey(1))
    obs, action, label = pairs(32)
    assert float(term.accuracy(state, obs, action, label)) > 0.9
    with pytest.raises(ValueError, match="inputs=obs"):
        PreferenceReward(inputs="obs_action").init(jax.random.PRNGKey(0), spec)
