"""Preference-based reward learning (rl.rewards.preference) against numpy transcriptions of
B-Pref's reward_model.py (rll-research/BPref): the Bradley-Terry loss and its gradient, the
scripted teachers' get_label, query selection, and recovery of a known reward."""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import envs
from rl.rewards.preference import (
    EQUAL,
    TEACHERS,
    PreferenceReward,
    Teacher,
    append_labels,
    bradley_terry_loss,
    read_labels,
    teacher_margin,
)


def test_bradley_terry_loss_and_gradient_match_numpy_with_equal_labels():
    ret1 = np.array([0.3, -1.2, 2.0, 0.0])
    ret2 = np.array([1.1, -0.4, -3.0, 0.0])
    label = np.array([1.0, 0.0, 0.5, 0.5])
    z = np.stack([ret1, ret2], -1)
    logp = z - np.logaddexp(z[:, :1], z[:, 1:])
    target = np.stack([1 - label, label], -1)  # B-Pref's one-hot, 0.5 / 0.5 for equal (softXEnt)
    np.testing.assert_allclose(bradley_terry_loss(ret1, ret2, label), -(target * logp).sum(-1), rtol=1e-6)
    g1, g2 = jax.grad(lambda a, b: bradley_terry_loss(a, b, label).sum(), argnums=(0, 1))(ret1, ret2)
    p = np.exp(logp)
    np.testing.assert_allclose(g1, p[:, 0] - target[:, 0], rtol=1e-5)  # softmax minus target
    np.testing.assert_allclose(g2, p[:, 1] - target[:, 1], rtol=1e-5)


def np_get_label(r_t_1, r_t_2, beta, gamma, eps_mistake, thres_skip, thres_equal, rng):
    """B-Pref's RewardModel.get_label, transcribed (its loops kept), on [N, H] rewards; the
    Bernoulli draw as a uniform comparison from ``rng``, then the mistake draw, as ours."""
    sum_r_t_1, sum_r_t_2 = r_t_1.sum(1), r_t_2.sum(1)
    keep = np.ones(len(sum_r_t_1), bool)
    if thres_skip > 0:
        keep = np.maximum(sum_r_t_1, sum_r_t_2) > thres_skip
        r_t_1, r_t_2 = r_t_1[keep], r_t_2[keep]
        sum_r_t_1, sum_r_t_2 = r_t_1.sum(1), r_t_2.sum(1)
    margin_index = np.abs(sum_r_t_1 - sum_r_t_2) < thres_equal
    temp_1, temp_2 = r_t_1.copy(), r_t_2.copy()
    for index in range(r_t_1.shape[1] - 1):
        temp_1[:, : index + 1] *= gamma
        temp_2[:, : index + 1] *= gamma
    s1, s2 = temp_1.sum(1), temp_2.sum(1)
    rational = 1.0 * (s1 < s2)
    if beta > 0:
        z = beta * np.stack([s1, s2], -1)
        ent = np.exp(z[:, 1]) / np.exp(z).sum(-1)
        labels = 1.0 * (rng.random(len(ent)) < ent)
    else:
        labels = rational
    noise = rng.random(len(labels)) <= eps_mistake
    labels[noise] = 1 - labels[noise]
    labels[margin_index] = -1
    return keep, labels


@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_each_teacher_matches_b_prefs_get_label(name):
    rng = np.random.default_rng(0)
    r1, r2 = rng.uniform(0, 1, (400, 50)), rng.uniform(0, 1, (400, 50))
    r2[:40] = r1[:40] + 1e-3  # nearly equal pairs
    r1[40:80] *= 0.05  # low-return pairs (skip)
    r2[40:80] *= 0.05
    margin = teacher_margin([500.0] * 12, 50, 1000)  # 25: the returns' scale over 50 steps
    t = TEACHERS[name]
    keep, labels = t.label(r1, r2, margin, np.random.default_rng(1))
    ref_keep, ref = np_get_label(r1, r2, t.beta, t.gamma, t.eps_mistake, t.eps_skip * margin,
                                 t.eps_equal * margin, np.random.default_rng(1))  # fmt: skip
    np.testing.assert_array_equal(keep, ref_keep)
    np.testing.assert_array_equal(labels, np.where(ref == -1, EQUAL, ref))
    if name == "skip":
        assert not keep[40:80].any() and keep[80:].all()
    if name == "equal":
        assert (labels[:40] == EQUAL).all()
    if name == "mistake":
        oracle = TEACHERS["oracle"].label(r1, r2, margin, np.random.default_rng(1))[1]
        assert 0.05 < np.mean(labels != oracle) < 0.15


def test_the_myopic_teacher_weighs_step_k_by_gamma_to_the_steps_after_it():
    r1 = np.zeros((1, 4))
    r1[0, 0] = 10.0  # early reward: weighted 0.5^3
    r2 = np.zeros((1, 4))
    r2[0, 3] = 2.0  # late reward: weighted 1
    assert Teacher(gamma=0.5).label(r1, r2, 0.0, np.random.default_rng(0))[1][0] == 1.0  # 1.25 < 2
    assert Teacher().label(r1, r2, 0.0, np.random.default_rng(0))[1][0] == 0.0  # 10 > 2


def _spec():
    return envs.make_spec("gym:Pendulum-v1", 1, 0)  # obs 3, action 1


def test_query_selection_picks_the_pairs_the_members_disagree_on_and_the_most_uncertain():
    """Linear members that agree on feature 1 and disagree in sign on feature 0: the pairs whose
    segments differ in feature 0 have the largest disagreement; identical segments (p = 0.5 for
    every member) the largest entropy."""
    term = PreferenceReward(hidden=(), segment=2, capacity=8)
    state = term.init(jax.random.PRNGKey(0), _spec())
    kernel = np.zeros((3, 4, 1), np.float32)
    kernel[:, 1, 0] = 0.5  # every member: +feature 1
    kernel[:, 0, 0] = [1.0, 1.0, -1.0]  # feature 0: the third member disagrees
    state = state.replace(params={"Dense_0": {"kernel": jnp.asarray(kernel), "bias": jnp.zeros((3, 1))}})
    obs = np.zeros((10, 2, 2, 3), np.float32)
    obs[:, 1, :, 1] = np.linspace(0.1, 1.0, 10)[:, None]  # every pair differs in feature 1...
    obs[[2, 5, 7], 1, :, 0] = 1.0  # ...and these also in feature 0
    obs[[0, 9], 1] = obs[[0, 9], 0]  # identical segments
    action = np.zeros((10, 2, 2, 1), np.float32)
    pick = jax.jit(term.select, static_argnums=(3, 4))
    assert sorted(np.asarray(pick(state, obs, action, 3, "disagreement")).tolist()) == [2, 5, 7]
    assert sorted(np.asarray(pick(state, obs, action, 2, "entropy")).tolist()) == [0, 9]
    assert np.asarray(pick(state, obs, action, 4, "uniform")).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="query selection"):
        term.select(state, obs, action, 2, "kcenter")


def test_the_reward_model_recovers_a_linear_reward_from_oracle_labels():
    """600 oracle-labelled pairs of 50-step segments (B-Pref's length) of a linear reward of
    (s, a): the ensemble's mean reward orders >= 95% of held-out pairs right; the fit stops at
    97% training accuracy, before its 50 passes."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=4)

    def pairs(n):
        obs = rng.uniform(-1, 1, (n, 2, 50, 3)).astype(np.float32)
        action = rng.uniform(-1, 1, (n, 2, 50, 1)).astype(np.float32)
        r = np.concatenate([obs, action], -1) @ w
        return obs, action, TEACHERS["oracle"].label(r[:, 0], r[:, 1], 0.0, rng)[1]

    term = PreferenceReward(hidden=(64, 64), lr=1e-3, segment=50, capacity=600)
    state = term.init(jax.random.PRNGKey(0), _spec())
    untrained = jax.tree.map(jnp.copy, state.params)
    fit = jax.jit(term.fit)
    same, m = fit(state, None, jax.random.PRNGKey(1))  # no labels yet: nothing moves
    assert int(m["epochs"]) == 0 and all(
        bool((a == b).all()) for a, b in zip(jax.tree.leaves(same.params), jax.tree.leaves(untrained))
    )
    state = jax.jit(term.add_labels)(state, *map(jnp.asarray, pairs(600)))
    state, m = fit(state, None, jax.random.PRNGKey(1))
    assert float(m["accuracy"]) > 0.97 and 0 < int(m["epochs"]) < 50
    held = float(term.accuracy(state, *map(jnp.asarray, pairs(500))))
    assert held >= 0.95, held
    # the term's reward is the members' mean, per step
    from rl import batch as batch_lib

    obs, action = jnp.zeros((4, 3)), jnp.ones((4, 1))
    r = term.reward(state, batch_lib.transitions(obs, action, jnp.zeros(4), obs, jnp.zeros(4), jnp.zeros(4)))
    np.testing.assert_allclose(r, term.member_rewards(state, state.params, obs, action).mean(0), rtol=1e-6)


def test_the_label_buffer_keeps_the_budget_and_drops_the_rest():
    term = PreferenceReward(hidden=(8,), segment=2, capacity=3)
    state = term.init(jax.random.PRNGKey(0), _spec())
    add = jax.jit(term.add_labels)
    obs = jnp.arange(2 * 2 * 2 * 3, dtype=jnp.float32).reshape(2, 2, 2, 3)
    state = add(state, obs, jnp.zeros((2, 2, 2, 1)), jnp.array([1.0, 0.0]))
    state = add(state, obs + 100, jnp.zeros((2, 2, 2, 1)), jnp.array([0.5, 1.0]))
    assert int(state.fixed["count"]) == 3
    np.testing.assert_array_equal(state.fixed["label"], [1.0, 0.0, 0.5])
    assert float(state.fixed["obs"][2, 0, 0, 0]) == 100.0  # the third pair is the second call's first


def test_labels_file_appends_and_reads_back_ignoring_a_torn_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    rows = [{"step": 10, "pair": [[0, 3], [1, 7]], "episodes": [0, 1], "label": 1, "by": "oracle"}]
    append_labels(path, rows)
    append_labels(path, [{**rows[0], "step": 20, "label": 0.5}])
    with open(path, "a") as f:
        f.write('{"step": 30, "pa')  # a crash mid-write
    assert [r["step"] for r in read_labels(path)] == [10, 20] and read_labels(tmp_path / "none") == []
    assert json.loads(path.read_text().splitlines()[1])["label"] == 0.5


# -- PEBBLE on SAC ---------------------------------------------------------------------------


def test_the_pebble_preset_switches_from_state_entropy_to_the_learned_reward_at_10k():
    from rl import config as config_lib
    from rl.agents import sac

    cfg = config_lib.build(sac.Config, ["pebble"], {"env": "dmc:walker-walk"})
    shaper = sac.build_shaper(cfg)
    names = [s.name for s in shaper.streams]
    assert names == ["extrinsic", "state_entropy", "preference"] and cfg.reset_critic_at == 10_000
    w = {s.name: (float(s.weight(9_999)), float(s.weight(10_000))) for s in shaper.streams}
    assert w == {"extrinsic": (0.0, 0.0), "state_entropy": (1.0, 0.0), "preference": (0.0, 1.0)}
    pref = shaper.streams[2].term
    assert (pref.feedback_start, pref.feedback_every, pref.per_session, pref.capacity) == (
        10_000,
        20_000,
        100,
        1000,
    )
    assert (pref.members, pref.hidden, pref.lr, pref.segment) == (3, (256, 256, 256), 3e-4, 50)  # B-Pref's


def test_reset_critic_restarts_the_critic_its_target_and_its_optimizer():
    from rl import config as config_lib
    from rl.agents import sac

    cfg = config_lib.build(sac.Config, overrides={"env": "gym:Pendulum-v1", "hidden": [8, 8]})
    spec = envs.make_spec(cfg.env, 1, 0)
    state = jax.jit(lambda k: sac.init(cfg, spec, k))(
        jax.random.PRNGKey(0)
    )  # one program: eager init is slow
    state = state._replace(critic_opt=jax.tree.map(lambda x: x + 1, state.critic_opt))
    new = jax.jit(lambda s: sac.reset_critic(cfg, spec, s))(state)
    moved = jax.tree_util.tree_leaves_with_path(
        jax.tree.map(lambda a, b: bool((a != b).any()), new.critic, state.critic)
    )
    assert all(
        m for path, m in moved if "kernel" in jax.tree_util.keystr(path)
    )  # fresh weights (biases start at 0)
    assert all(bool((a == b).all()) for a, b in zip(jax.tree.leaves(new.target), jax.tree.leaves(new.critic)))
    assert all(bool((x == 0).all()) for x in jax.tree.leaves(new.critic_opt))  # Adam's moments and count
    assert all(bool((a == b).all()) for a, b in zip(jax.tree.leaves(new.actor), jax.tree.leaves(state.actor)))


def test_pebble_on_pendulum_queries_labels_fits_and_relabels_at_sample_time(tmp_path):
    """Sessions at 100, 200 and 300 env steps (4 queries each, a budget of 10): the labels file
    holds them with their steps, the term's buffer is full, its fit ran; the Shaper's reward
    of a replay sample is then the learned one while the replay keeps the env's rewards."""
    from rl import checkpoint
    from rl import config as config_lib
    from rl.agents import sac

    streams = {
        "state_entropy": {"weight": 1.0, "stop": 100, "k": 3},
        "preference": {"start": 100, "feedback_start": 100, "feedback_every": 100, "per_session": 4,
                       "capacity": 10, "segment": 10, "hidden": [16], "query": "disagreement"},
    }  # fmt: skip
    over = {"env": "gym:Pendulum-v1", "hidden": [16, 16], "batch_size": 32, "learning_starts": 50,
            "total_steps": 300, "reset_critic_at": 100, "eval_episodes": 1, "log_every": 100,
            "checkpoint_every": 300, "runs_dir": str(tmp_path), "experiment": "p", "run_name": "r",
            "shaper": {"terms": ["state_entropy", "preference"], "extrinsic": {"weight": 0.0}, "streams": streams}}  # fmt: skip
    cfg = config_lib.build(sac.Config, overrides=over)
    # the ensemble is fitted by the sessions only, not by the agent's per-update fit (a fit of up
    # to 50 epochs every env step made PEBBLE on walker-walk about 10x slower than SAC)
    assert sac.build_shaper(cfg).fitted() == []
    sac.train(cfg)
    run = tmp_path / "p" / "r"
    rows = read_labels(run / "labels.jsonl")
    assert [r["step"] for r in rows] == [100] * 4 + [200] * 4 + [300] * 2
    assert all(r["by"] == "oracle" and r["label"] in (0.0, 1.0) and len(r["episodes"]) == 2 for r in rows)
    metrics = [json.loads(x) for x in open(run / "metrics.jsonl")]
    assert any("reward/preference/accuracy" in m for m in metrics)
    spec = envs.make_spec(cfg.env, 1, 0)
    shaper = sac.build_shaper(cfg)
    template = sac.init(cfg, spec, jax.random.PRNGKey(0), shaper)
    state, loop, replay, rstate, _ = checkpoint.load(
        checkpoint.latest(run / "checkpoints"), template, sac.init_loop(cfg, spec)
    )
    # the teachers' margin survives a resume: the checkpoint holds the true episode returns
    episodes = [m["train/episode_return"] for m in metrics if "train/episode_return" in m]  # one, at 200
    kept = loop["teacher_returns"][np.isfinite(loop["teacher_returns"])]
    assert len(episodes) == 1 and kept.tolist() == pytest.approx(episodes, rel=1e-6)
    term_state = state.shaper.terms["preference"]
    assert int(term_state.fixed["count"]) == 10
    batch = replay.sample(rstate, jax.random.PRNGKey(5), 64)
    learned = shaper.streams[2].term.reward(term_state, batch)
    np.testing.assert_allclose(shaper(state.shaper, batch, 300).total, learned, rtol=1e-5)
    assert float(jnp.max(batch.reward)) <= 0.0 and float(jnp.abs(learned).max()) < 1.0  # stored: Pendulum's
    # the held-out check of experiments/pebble.py reads this run: fresh episodes, greedy and random
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
    import pebble

    held = pebble.held_out_accuracy(run, episodes=2, pairs=300)
    assert held["steps"] == 400 and 0 < held["pairs"] <= 300 and 0.0 <= held["accuracy"] <= 1.0
    assert held["checkpoint"] == "step_000000000300" and -1.0 <= held["pearson"] <= 1.0


# -- reward distances ------------------------------------------------------------------------


def _linear_reward(w):
    def r(obs, action, next_obs):
        return jnp.concatenate([obs, action, next_obs], -1) @ jnp.asarray(w, jnp.float32)

    return r


def np_canonical(reward, obs, action, next_obs, S, A, gamma):
    """Gleave et al.'s eq. 3 by loops: each expectation a mean over the M samples."""
    S_next = np.roll(S, 1, axis=0)
    out = []
    for i in range(len(obs)):
        after = np.mean([reward(next_obs[i], A[j], S[j]) for j in range(len(S))])
        before = np.mean([reward(obs[i], A[j], S[j]) for j in range(len(S))])
        const = np.mean([reward(S[j], A[j], S_next[j]) for j in range(len(S))])
        out.append(reward(obs[i], action[i], next_obs[i]) + gamma * after - before - gamma * const)
    return np.array(out)


def test_epic_and_starc_ignore_shaping_and_scaling_and_match_numpy():
    from rl.rewards.distances import canonicalize, epic_distance, starc_distance

    rng = np.random.default_rng(0)
    obs, next_obs = rng.normal(size=(40, 3)).astype(np.float32), rng.normal(size=(40, 3)).astype(np.float32)
    action = rng.normal(size=(40, 1)).astype(np.float32)
    S, A = rng.normal(size=(25, 3)).astype(np.float32), rng.normal(size=(25, 1)).astype(np.float32)
    gamma, w = 0.9, rng.normal(size=7)
    base = _linear_reward(w)
    phi = lambda s: jnp.sin(s[..., 0]) + s[..., 1] ** 2  # noqa: E731

    def shaped(o, a, n):  # 3 R + gamma Phi(s') - Phi(s): the same optimal policies
        return 3.0 * base(o, a, n) + gamma * phi(n) - phi(o)

    other = _linear_reward(rng.normal(size=7))
    cov, mean = (obs, action, next_obs), (S, A)
    assert float(epic_distance(base, shaped, cov, mean, gamma)) < 1e-3
    assert float(starc_distance(base, shaped, cov, mean, gamma)) < 1e-3
    assert float(epic_distance(base, other, cov, mean, gamma)) > 0.1
    assert float(starc_distance(base, other, cov, mean, gamma)) > 0.1
    neg = lambda o, a, n: -base(o, a, n)  # noqa: E731
    assert float(epic_distance(base, neg, cov, mean, gamma)) == pytest.approx(1.0, abs=1e-5)  # rho = -1
    np_r = lambda o, a, n: float(np.concatenate([o, a, n]) @ w)  # noqa: E731
    ref = np_canonical(np_r, obs, action, next_obs, S, A, gamma)
    np.testing.assert_allclose(canonicalize(base, cov, mean, gamma), ref, rtol=1e-4, atol=1e-4)
    x, y = (
        ref,
        np_canonical(
            lambda o, a, n: float(shaped(o[None], a[None], n[None])[0]), obs, action, next_obs, S, A, gamma
        ),
    )
    rho = np.corrcoef(x, y)[0, 1]
    assert float(epic_distance(base, shaped, cov, mean, gamma)) == pytest.approx(
        np.sqrt(max(1 - rho, 0) / 2), abs=1e-3
    )


def test_prefppo_queries_from_its_own_replay_and_trains_on_the_learned_reward(tmp_path):
    """PPO with a preference stream (PrefPPO): sessions at 128 and 256 env steps fill the labels
    file and the term's buffer from the replay PPO keeps for them; the rollouts' reward is the
    learned one (its accuracy logged); a resumed run finds the replay and the labels. The
    jitted path refuses it."""
    from rl import config as config_lib
    from rl.agents import ppo

    streams = {"preference": {"feedback_start": 128, "feedback_every": 128, "per_session": 4, "capacity": 8,
                              "segment": 8, "hidden": [16], "query": "entropy"}}  # fmt: skip
    over = {"env": "gym:Pendulum-v1", "num_envs": 2, "num_steps": 32, "num_minibatches": 2, "update_epochs": 1,
            "total_steps": 256, "eval_episodes": 1, "log_every": 64, "checkpoint_every": 128,
            "runs_dir": str(tmp_path), "experiment": "p", "run_name": "r", "preference_buffer": 512,
            "shaper": {"terms": ["preference"], "extrinsic": {"weight": 0.0}, "streams": streams}}  # fmt: skip
    cfg = config_lib.build(ppo.Config, overrides=over)
    ppo.train(cfg)
    run = tmp_path / "p" / "r"
    rows = read_labels(run / "labels.jsonl")
    assert [r["step"] for r in rows] == [128] * 4 + [256] * 4
    metrics = [json.loads(x) for x in open(run / "metrics.jsonl")]
    assert any("reward/preference/accuracy" in m for m in metrics)
    assert any("reward/preference" in m for m in metrics)  # the stream's reward reached the rollouts
    from rl import checkpoint

    spec = envs.make_spec(cfg.env, 2, 0)
    template = ppo.init(cfg, spec, jax.random.PRNGKey(0), ppo.build_shaper(cfg)), ppo.init_loop(cfg, spec)
    state, _, replay, rstate, _ = checkpoint.load(checkpoint.latest(run / "checkpoints"), *template)
    assert replay is not None and int(state.shaper.terms["preference"].fixed["count"]) == 8
    preset = config_lib.build(ppo.Config, ["prefppo"], {"env": "dmc:walker-walk"})  # B-Pref's settings
    assert (
        preset.batch_size // preset.num_minibatches == 64
        and preset.shaper.streams["preference"]["capacity"] == 1000
    )
    jitted = config_lib.build(ppo.Config, overrides={**over, "env": "gymnax:CartPole-v1", "num_envs": 2})
    with pytest.raises(ValueError, match="jitted path has no loop"):
        ppo.train(jitted)


def test_the_teachers_recent_returns_round_trip_through_the_loop_state():
    from rl.rewards.feedback import RECENT, Feedback

    class Nothing:
        streams = ()

    fb = Feedback(Nothing(), type("R", (), {"sample_segments": lambda self, *a: None})(), None, 100)
    assert np.isnan(fb.recent()).all() and fb.recent().shape == (RECENT,)
    fb.returns = [float(i) for i in range(14)]
    kept = fb.recent()
    np.testing.assert_array_equal(kept, np.arange(4, 14))
    again = Feedback(Nothing(), type("R", (), {"sample_segments": lambda self, *a: None})(), None, 100)
    again.restore(kept)
    assert again.returns == list(map(float, range(4, 14)))
    again.returns = [3.0]
    again.restore(again.recent())
    assert again.returns == [3.0]


def test_the_reward_ensemble_starts_unsaturated_on_raw_locomotion_scales():
    """B-Pref's reward nets keep torch's nn.Linear init. On inputs of walker-walk's scale (raw
    velocities: std about 10) no member starts with its tanh saturated; with lecun normal
    (the mutation) about half the outputs start beyond |r| > 0.99, where the Bradley-Terry
    gradient vanishes (two of three members stalled at 33% accuracy on walker-walk so)."""
    from rl.nets import ensemble
    from rl.rewards.preference import RewardNet

    x = 10.0 * jax.random.normal(jax.random.PRNGKey(0), (4096, 30))
    net = ensemble(RewardNet, 3)((256, 256, 256), False)
    r = net.apply({"params": net.init(jax.random.PRNGKey(1), x[:1])["params"]}, x)
    assert r.shape == (3, 4096)
    saturated = np.asarray((jnp.abs(r) > 0.99).mean(1))
    assert (saturated < 0.05).all(), saturated
    assert (np.asarray(r.std(1)) > 0.05).all()  # and not flat: the members tell inputs apart
