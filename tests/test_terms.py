"""Reward terms against numpy references on fixed inputs ([B] transitions and [B, T]
sequences); potential-based shaping on a tabular MDP; DreamSmooth kernels against scipy and
through config into the training reward; every term with SAC and PPO through config alone and
on sequences sampled from the replay."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.ndimage

from rl import batch as batch_lib
from rl import config as config_lib
from rl import envs
from rl.agents import ppo, sac
from rl.nets import mlp_numpy
from rl.rewards import (
    E3B,
    ICM,
    NGU,
    RE3,
    RND,
    Disagreement,
    PotentialShaping,
    Shaper,
    StateEntropy,
    Stream,
    learned,
    smoothing,
)


def relu(x):
    return np.maximum(x, 0.0)


def transitions(env_id, n=32, seed=0):
    spec = envs.make_spec(env_id, 1, 0)
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, *spec.obs_shape)).astype(np.float32)
    next_obs = obs + 0.1 * rng.normal(size=obs.shape).astype(np.float32)
    if spec.discrete:
        action = rng.integers(0, spec.num_actions, size=n).astype(np.int32)
    else:
        action = rng.uniform(-1, 1, size=(n, *spec.action_shape)).astype(np.float32)
    batch = batch_lib.transitions(
        jnp.asarray(obs), jnp.asarray(action), jnp.zeros(n), jnp.asarray(next_obs), np.zeros(n, bool),
        np.zeros(n, bool),
    )  # fmt: skip
    return spec, batch


def host(tree):
    return jax.device_get(tree)


@pytest.mark.parametrize("env_id", ["gym:CartPole-v1", "gym:Pendulum-v1"])
def test_icm_reward_and_losses_match_numpy(env_id):
    spec, batch = transitions(env_id)
    term = ICM(eta=0.5, beta=0.2, features=16, hidden=(32,))
    state = term.init(jax.random.PRNGKey(0), spec)
    p = host(state.params)
    obs, next_obs, a = (np.asarray(x) for x in (batch.obs, batch.next_obs, batch.action))
    phi, phi_next = (mlp_numpy(p["dynamics"]["encoder"]["MLP_0"], x, relu) for x in (obs, next_obs))
    a_in = np.eye(spec.num_actions)[a] if spec.discrete else a.reshape(len(a), -1)
    pred = mlp_numpy(p["forward_model"], np.concatenate([phi, a_in], -1), relu)
    a_hat = mlp_numpy(p["dynamics"]["inverse"], np.concatenate([phi, phi_next], -1), relu)
    err = np.mean((pred - phi_next) ** 2, -1)  # RLeXplore's icm.py: the mean over feature units
    np.testing.assert_allclose(term.reward(state, batch), 0.5 * err, rtol=1e-4, atol=1e-6)
    if spec.discrete:
        logz = np.log(np.sum(np.exp(a_hat - a_hat.max(-1, keepdims=True)), -1)) + a_hat.max(-1)
        inverse = np.mean(logz - a_hat[np.arange(len(a)), a])
    else:
        inverse = 0.5 * np.mean(np.sum((a_hat - a_in) ** 2, -1))
    got_inverse, got_forward = term.losses(state, state.params, batch)
    np.testing.assert_allclose(got_inverse, inverse, rtol=1e-4)
    np.testing.assert_allclose(got_forward, err.mean(), rtol=1e-4)
    # training lowers eq. 7's loss on the data it sees
    update = jax.jit(lambda s: term.update(s, batch, jax.random.PRNGKey(1)))
    first = float(update(state)[1]["loss"])
    for _ in range(100):
        state, metrics = update(state)
    assert float(metrics["loss"]) < 0.5 * first


def test_rnd_reward_normalization_and_training():
    spec, batch = transitions("gym:HalfCheetah-v5", n=64)
    states = batch.next_obs * 3.0 + 1.0
    batch = batch.replace(obs=states, next_obs=states)  # the predictor trains on obs, rewards next_obs
    term = RND(features=8, hidden=(32,), lr=1e-3)
    state = term.init(jax.random.PRNGKey(0), spec)
    p, f = host(state.params), host(state.fixed)
    x = np.clip(np.asarray(batch.next_obs), -5, 5)  # the prior statistics: mean 0, std 1
    target = mlp_numpy(f["target"]["MLP_0"], x, relu)
    pred = mlp_numpy(p["MLP_0"], x, relu)
    np.testing.assert_allclose(term.reward(state, batch), np.mean((pred - target) ** 2, -1), rtol=1e-4)
    # ``prepare`` folds the batch's observations in before its reward (rllte BaseReward.compute)
    prepared = term.prepare(state, batch)
    stats = prepared.fixed["obs_stats"]
    np.testing.assert_allclose(stats.mean, np.asarray(states).mean(0), rtol=1e-3, atol=1e-3)
    shaper = Shaper((Stream("rnd", term),))
    ss = shaper.init(jax.random.PRNGKey(0), spec)
    rewards = shaper.step(ss, batch, jax.random.PRNGKey(1), 0)[1]
    t0 = ss.terms["rnd"]
    np.testing.assert_allclose(rewards.raw["rnd"], term.reward(term.prepare(t0, batch), batch), rtol=1e-5)
    assert not np.allclose(rewards.raw["rnd"], term.reward(t0, batch))  # not the stale statistics
    state = prepared
    update = jax.jit(lambda s: term.update(s, batch, jax.random.PRNGKey(1)))
    before = float(jnp.mean(term.reward(state, batch)))
    for _ in range(200):
        state, _ = update(state)
    assert float(jnp.mean(term.reward(state, batch))) < 0.2 * before  # seen states: low bonus
    novel = batch.replace(next_obs=batch.next_obs + 2.0)
    assert float(jnp.mean(term.reward(state, novel))) > float(jnp.mean(term.reward(state, batch)))
    # obs_norm='none': vectors as they are
    raw = RND(features=8, hidden=(32,), obs_norm="none")
    s_raw = raw.init(jax.random.PRNGKey(0), spec)
    pred = mlp_numpy(host(s_raw.params)["MLP_0"], np.asarray(states), relu)
    target = mlp_numpy(host(s_raw.fixed)["target"]["MLP_0"], np.asarray(states), relu)
    np.testing.assert_allclose(raw.reward(s_raw, batch), np.mean((pred - target) ** 2, -1), rtol=1e-4)


def test_disagreement_is_the_ensemble_variance():
    spec, batch = transitions("gym:Pendulum-v1")
    term = Disagreement(ensemble=4, features=0, hidden=(16,))
    state = term.init(jax.random.PRNGKey(0), spec)
    params = host(state.params)
    (models,) = params.values()
    x = np.concatenate([np.asarray(batch.obs), np.asarray(batch.action)], -1)
    preds = np.stack([mlp_numpy(jax.tree.map(lambda a, k=k: a[k], models), x, relu) for k in range(4)])
    np.testing.assert_allclose(term.reward(state, batch), preds.var(0, ddof=1).mean(-1), rtol=1e-4, atol=1e-7)
    update = jax.jit(lambda s: term.update(s, batch, jax.random.PRNGKey(1)))
    before = float(jnp.mean(term.reward(state, batch)))
    for _ in range(200):
        state, _ = update(state)
    assert float(jnp.mean(term.reward(state, batch))) < before  # trained models agree on seen data


def knn_reference(x, k):
    x = x.reshape(len(x), -1).astype(np.float64)
    out = np.zeros(len(x))
    for i in range(len(x)):
        d = sorted(np.linalg.norm(x[i] - x[j]) for j in range(len(x)) if j != i)
        out[i] = d[k - 1]
    return out


def test_knn_terms_match_a_brute_force_loop():
    spec, batch = transitions("gym:HalfCheetah-v5", n=40)
    got = StateEntropy(k=5).reward((), batch)
    np.testing.assert_allclose(got, knn_reference(np.asarray(batch.obs), 5), rtol=1e-4, atol=1e-4)
    term = RE3(k=3, features=8, hidden=(16,))
    state = term.init(jax.random.PRNGKey(0), spec)
    y = mlp_numpy(host(state["params"])["MLP_0"], np.asarray(batch.obs), relu)
    np.testing.assert_allclose(
        term.reward(state, batch), np.log(knn_reference(y, 3) + 1), rtol=1e-4, atol=1e-4
    )
    # [B, T] sequences: one value per step, the same as the flattened batch
    seq = batch_lib.Sequences(**{k: jax.tree.map(lambda v: v.reshape(8, 5, *v.shape[1:]), getattr(batch, k))
                                 for k in (*batch_lib.FIELDS, "extras")})  # fmt: skip
    np.testing.assert_allclose(
        StateEntropy(5).reward((), seq).reshape(-1), StateEntropy(5).reward((), batch), rtol=1e-5
    )


def test_re3_on_rollouts_matches_the_reference_per_env_memory():
    """A transcription of RLeXplore's re3.py over three rollouts: each env's embeddings kept in
    a ring of the last ``memory`` steps across rollouts; a state's reward log(1 + d) with d the
    distance to its k-th nearest among its env's memory and the rollout's other steps.
    Mutations caught: neighbours from other envs, a memory cut at the rollout's edge."""
    T, E, M = 5, 2, 7
    term = RE3(k=2, features=4, hidden=(8,), memory=M)
    spec = envs.make_spec("gym:CartPole-v1", E, 0)
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(3 * T, E, 4)).astype(np.float32)
    state = term.init(jax.random.PRNGKey(0), spec)
    y = mlp_numpy(host(state["params"])["MLP_0"], obs, relu)
    expected, got = np.zeros((3 * T, E)), []
    for r in range(3):
        for e in range(E):
            past = [y[t, e] for t in range(max(0, r * T - M), r * T)]  # the ring's content
            for t in range(r * T, (r + 1) * T):
                others = past + [y[j, e] for j in range(r * T, (r + 1) * T) if j != t]
                d = sorted(np.linalg.norm(y[t, e] - o) for o in others)
                expected[t, e] = np.log(d[term.k - 1] + 1)
        sl = slice(r * T, (r + 1) * T)
        data = {"obs": obs[sl], "next_obs": obs[sl], "action": np.zeros((T, E), np.int32),
                "reward": np.zeros((T, E), np.float32), "terminated": np.zeros((T, E), bool),
                "truncated": np.zeros((T, E), bool)}  # fmt: skip
        batch = batch_lib.time_major_to_sequences(data)
        got.append(np.asarray(term.reward(state, batch)).T)
        state = term.update(state, batch, jax.random.PRNGKey(r))[0]
    np.testing.assert_allclose(np.concatenate(got), expected, rtol=1e-4, atol=1e-5)


def test_minibatch_epochs_visits_each_sample_once_per_epoch():
    """With SGD at lr 1 on loss = -sum(mask * w[id]), each w counts how often its sample
    trained: ``epochs`` times, padding of the last minibatch never."""
    n, size, epochs = 10, 4, 3
    ids = jnp.arange(n)
    batch = batch_lib.transitions(ids, ids, jnp.zeros(n), ids, np.zeros(n, bool), np.zeros(n, bool))
    state = learned.LearnedState(jnp.zeros(n), optax.sgd(1.0).init(jnp.zeros(n)))

    def loss_fn(w, mb, j):
        return -jnp.sum(mb.mask * w[mb.obs]), {"j": j}

    state, metrics = learned.minibatch_epochs(
        state, batch, jax.random.PRNGKey(0), loss_fn, optax.sgd(1.0), size, epochs
    )
    np.testing.assert_allclose(state.params, np.full(n, float(epochs)))
    assert float(metrics["j"]) == (3 * epochs - 1) / 2  # 3 minibatches an epoch, steps 0..8


def test_disagreement_trains_one_member_per_minibatch():
    spec, batch = transitions("gym:Pendulum-v1", n=64)
    term = Disagreement(ensemble=4, features=0, hidden=(16,), batch_size=32)
    state = term.init(jax.random.PRNGKey(0), spec)

    def moved(a, b):  # which members' first layer changed from b to a
        first = lambda p, k: jax.tree.leaves(jax.tree.map(lambda x: x[k], p))[0]  # noqa: E731
        return [not np.allclose(first(a.params, k), first(b.params, k)) for k in range(4)]

    new = term.update(state, batch, jax.random.PRNGKey(1))[0]  # two minibatches: members 0 and 1
    assert moved(new, state) == [True, True, False, False]
    newer = term.update(new, batch, jax.random.PRNGKey(2))[0]  # the next call goes on with 2 and 3
    assert moved(newer, new) == [False, False, True, True]


def phi_table(obs):  # a potential over one-hot states
    return obs @ jnp.asarray([0.0, 3.0, -2.0, 5.0, 1.0])


def value_iteration(P, R, gamma, iters=2000):
    Q = np.zeros(P.shape[:2])
    for _ in range(iters):
        Q = np.sum(P * (R + gamma * Q.max(1)[None, None, :]), axis=2)
    return Q


def test_potential_shaping_keeps_the_optimal_policy_and_a_bonus_does_not():
    rng = np.random.default_rng(3)
    S, A, gamma = 5, 3, 0.9
    P = rng.dirichlet(np.ones(S), size=(S, A))  # [S, A, S']
    R = rng.normal(size=(S, A, S))
    s, a, s2 = np.meshgrid(np.arange(S), np.arange(A), np.arange(S), indexing="ij")
    eye = np.eye(S, dtype=np.float32)
    n = s.size
    batch = batch_lib.transitions(
        jnp.asarray(eye[s.reshape(-1)]), jnp.zeros(n), jnp.zeros(n), jnp.asarray(eye[s2.reshape(-1)]),
        np.zeros(n, bool), np.zeros(n, bool),
    )  # fmt: skip
    F = np.asarray(PotentialShaping(phi_table, gamma).reward((), batch)).reshape(S, A, S)
    Q, Q_shaped = value_iteration(P, R, gamma), value_iteration(P, R + F, gamma)
    np.testing.assert_array_equal(Q.argmax(1), Q_shaped.argmax(1))
    np.testing.assert_allclose(
        Q_shaped, Q - np.asarray(phi_table(jnp.asarray(eye)))[:, None], atol=1e-6
    )  # Q' = Q - Phi
    bonus = np.zeros((S, A, S))
    bonus[:, 0, :] = 3.0  # an arbitrary bonus for action 0 changes what is optimal
    assert not np.array_equal(Q.argmax(1), value_iteration(P, R + bonus, gamma).argmax(1))
    # a terminal transition has the absorbing state's potential, 0
    ended = batch.replace(terminated=jnp.ones(n, bool), discount=jnp.zeros(n))
    np.testing.assert_allclose(
        PotentialShaping(phi_table, gamma).reward((), ended), -phi_table(batch.obs), atol=1e-6
    )
    # one gamma: an agent binds its own into the shaping term
    from rl.rewards import Extrinsic, Shaper, Stream

    bound = Shaper((Stream("extrinsic", Extrinsic()), Stream("phi", PotentialShaping(phi_table)))).bind(0.5)
    assert bound.streams[1].term.gamma == 0.5
    cfg = config_lib.build(sac.Config, overrides={"gamma": 0.97})
    assert sac.build_shaper(cfg, bound).streams[1].term.gamma == 0.97
    with pytest.raises(ValueError, match="unset"):
        PotentialShaping(phi_table).reward((), batch)


def test_dreamsmooth_kernels_match_scipy_and_keep_the_sum():
    r = np.random.default_rng(0).normal(size=(40,))
    np.testing.assert_allclose(
        smoothing.smooth(r, "gaussian"),
        scipy.ndimage.gaussian_filter1d(r, 3, mode="nearest"),
        rtol=1e-5,
        atol=1e-6,
    )
    for size in (9, 4):
        np.testing.assert_allclose(
            smoothing.smooth(r, "uniform", size=size),
            scipy.ndimage.uniform_filter1d(r, size, mode="nearest"),
            rtol=1e-5,
            atol=1e-6,
        )
    acc, ema = 0.0, []
    for x in r:
        acc = 0.33 * x + 0.67 * acc
        ema.append(acc)
    np.testing.assert_allclose(smoothing.smooth(r, "ema"), ema, rtol=1e-5)
    sparse = np.zeros(100)
    sparse[[40, 41, 60]] = [1.0, 2.0, 5.0]  # rewards away from the episode's ends
    for mode in ("gaussian", "uniform"):
        out = smoothing.smooth(sparse, mode)
        assert out.sum() == pytest.approx(sparse.sum(), rel=1e-5) and out.max() < 5.0
    with pytest.raises(ValueError, match="unknown smoothing"):
        smoothing.smooth(r, "median")


@pytest.mark.parametrize("agent", ["ppo", "sac"])
def test_every_term_trains_with_the_agent_from_config(tmp_path, agent):
    terms = ["icm", "rnd", "ngu", "e3b", "disagreement", "re3", "state_entropy"]
    common = {"eval_episodes": 1, "runs_dir": str(tmp_path), "shaper": {"terms": terms, "fuse": "max"}}
    if agent == "ppo":
        overrides = {"env": "gym:CartPole-v1", "total_steps": 256, "num_steps": 64, "num_envs": 2,
                     "num_minibatches": 2, "update_epochs": 1, "log_every": 64, **common}  # fmt: skip
        summary = ppo.train(config_lib.build(ppo.Config, overrides=overrides))
    else:
        overrides = {"env": "gym:Pendulum-v1", "total_steps": 300, "learning_starts": 200, "batch_size": 32,
                     "log_every": 50, **common}  # fmt: skip
        summary = sac.train(config_lib.build(sac.Config, overrides=overrides))
    rows = [json.loads(x) for x in open(summary["metrics"])]
    last = [r for r in rows if "reward/intrinsic" in r][-1]
    for t in terms:
        assert np.isfinite(last[f"reward/{t}"]) and np.isfinite(last[f"reward/{t}_norm"])
    assert np.isfinite(last["reward/icm/loss"]) and np.isfinite(last["reward/rnd/loss"])


def rollout_batch(T=12, E=2, seed=0, rollout=True):
    """A [T, E] rollout with episode ends inside, as the Shaper sees it: ``Sequences`` [E, T]."""
    spec = envs.make_spec("gym:CartPole-v1", E, 0)
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(T, E, 4)).astype(np.float32)
    terminated = np.zeros((T, E), bool)
    truncated = np.zeros((T, E), bool)
    terminated[4, 0], truncated[7, 1] = True, True  # episodes end inside the rollout
    data = {
        "obs": obs, "next_obs": obs + 0.1, "action": rng.integers(0, 2, size=(T, E)).astype(np.int32),
        "reward": np.zeros((T, E), np.float32), "terminated": terminated, "truncated": truncated,
    }  # fmt: skip
    seq = batch_lib.time_major_to_sequences(data)
    return spec, (seq if rollout else seq.replace(rollout=False)), data


def starts_of(data):
    """[T, E] episode starts inside the rollout (time-major, as the numpy loops run)."""
    done = data["terminated"] | data["truncated"]
    return np.concatenate([np.zeros_like(done[:1]), done[:-1]])


def stream_rewards(term, state, obs, dones, T):
    """A term's rewards [N, E] over a stream of steps handed over as PPO does, rollouts of T
    steps (``Sequences`` [E, T], ``rollout=True``), updating between them with the encoder
    held at its initial parameters (so a reference can use one embedding)."""
    params, got = state.params, []
    E = obs.shape[1]
    reward, update = jax.jit(term.reward), jax.jit(term.update)  # one compile for all rollouts
    for r in range(obs.shape[0] // T):
        sl = slice(r * T, (r + 1) * T)
        data = {"obs": obs[sl], "next_obs": obs[sl] + 0.1, "action": np.zeros((T, E), np.int32),
                "reward": np.zeros((T, E), np.float32), "terminated": dones[sl], "truncated": np.zeros((T, E), bool)}  # fmt: skip
        batch = batch_lib.time_major_to_sequences(data)
        got.append(np.asarray(reward(state, batch)).T)
        state = update(state, batch, jax.random.PRNGKey(r))[0].replace(params=params)
    return np.concatenate(got)


def e3b_reference(phi, dones, ridge):
    """A transcription of facebookresearch/e3b's actor loop (minihack/torchbeast/src/utils.py,
    ``act``) over a stream of steps: phi [N, E, D] of each step's obs, dones [N, E] of each
    step. Per env: C^-1 = I / ridge at an episode's start; the bonus u = C^-1 h, b = h.u, then
    C^-1 -= u u^T / (1 + b); b = 0 at the episode's first step."""
    N, E, D = phi.shape
    out = np.zeros((N, E))
    for e in range(E):
        cov_inverse, step = np.eye(D) / ridge, 0
        for t in range(N):
            if t > 0 and dones[t - 1, e]:  # the frame after a done is the reset frame
                cov_inverse, step = np.eye(D) / ridge, 0
            h = phi[t, e].astype(np.float64)
            u = cov_inverse @ h
            b = float(h @ u)
            cov_inverse = cov_inverse - np.outer(u, u) / (1.0 + b)
            out[t, e] = 0.0 if step == 0 else b
            step += 1
    return out


def test_e3b_elliptical_bonus_matches_the_reference_across_rollouts():
    """Three consecutive rollouts of two envs as PPO hands them over, against the reference
    loop over the whole stream: episodes end inside a rollout and (env 1) at a rollout's last
    step, so the next one starts an episode; the encoder held fixed. Mutations caught: a
    first-step bonus of ||phi||^2 / lambda, a carry that ignores the rollout-end reset, a
    matrix updated before the bonus."""
    T, E, term = 8, 2, E3B(features=6, hidden=(16,), ridge=0.1)
    spec = envs.make_spec("gym:CartPole-v1", E, 0)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(3 * T, E, 4)).astype(np.float32)
    dones = np.zeros((3 * T, E), bool)
    dones[3, 0], dones[T - 1, 1], dones[T + 5, 0] = True, True, True
    state = term.init(jax.random.PRNGKey(0), spec)
    params = state.params
    phi = mlp_numpy(host(params)["encoder"]["MLP_0"], obs, relu)
    expected = e3b_reference(phi, dones, 0.1)
    np.testing.assert_allclose(stream_rewards(term, state, obs, dones, T), expected, rtol=3e-3, atol=1e-4)
    assert expected[0].tolist() == [0.0, 0.0] and expected[4, 0] == 0.0 and expected[T, 1] == 0.0
    # replay windows start afresh: a window's first step is an episode's first
    spec2, window, data = rollout_batch(rollout=False)
    s2 = term.init(jax.random.PRNGKey(1), spec2)
    phi2 = mlp_numpy(host(s2.params)["encoder"]["MLP_0"], data["obs"], relu)
    ref = e3b_reference(phi2, data["terminated"] | data["truncated"], 0.1)
    np.testing.assert_allclose(term.reward(s2, window), ref.T, rtol=3e-3, atol=1e-4)
    # transitions [B]: the ellipse of the batch, phi_i^T (lambda I + sum_j phi_j phi_j^T)^-1 phi_i
    spec_t, trans = transitions("gym:CartPole-v1", n=20)
    s_t = term.init(jax.random.PRNGKey(2), spec_t)
    phi_t = mlp_numpy(host(s_t.params)["encoder"]["MLP_0"], np.asarray(trans.obs), relu)
    C = 0.1 * np.eye(6) + phi_t.T @ phi_t
    ref = np.einsum("bi,bi->b", phi_t, np.linalg.solve(C, phi_t.T).T)
    np.testing.assert_allclose(term.reward(s_t, trans), ref, rtol=2e-3, atol=1e-6)


def ngu_reference(term, phi, dones, T):
    """A transcription of RLeXplore's episodic count (rllte ``pseudo_counts.py``, ``watch``
    per step and ``compute`` per rollout) over a stream of rollouts of T steps: phi [N, E, D],
    dones [N, E]. Per env a memory of the episode's embeddings, cleared after a done; each
    step's k nearest squared distances to it; r = 0 on an empty memory or where
    sqrt(sum K) + c > s_m. The running mean of squared distances (count 1e-4, mean 0 at
    first, as TorchRunningMeanStd) takes in each rollout's distances before its rewards:
    our one departure from the reference, which folds them in after."""
    N, E, _ = phi.shape
    out, memory = np.zeros((N, E)), [[] for _ in range(E)]
    mean, count = 0.0, 1e-4
    for start in range(0, N, T):
        found = {}
        for t in range(start, start + T):
            for e in range(E):
                if memory[e]:
                    found[t, e] = np.sort([np.sum((phi[t, e] - m) ** 2) for m in memory[e]])[: term.k]
                memory[e].append(phi[t, e])
                if dones[t, e]:
                    memory[e] = []
        dists = np.concatenate(list(found.values())) if found else np.zeros(0)
        if len(dists):
            mean = mean + (dists.mean() - mean) * len(dists) / (count + len(dists))
            count += len(dists)
        for (t, e), d2 in found.items():
            d = np.maximum(d2 / max(mean, 1e-8) - term.cluster, 0.0)
            s = np.sqrt(np.sum(term.kernel_eps / (d + term.kernel_eps))) + term.c
            out[t, e] = 0.0 if s > term.max_similarity else 1.0 / s
    return out


def test_ngu_episodic_count_matches_the_reference_across_rollouts():
    """Mutations caught: a memory cut at the rollout's edge (the old behaviour), no s_m
    cut-off, a first-step bonus, d_m^2 left out of date."""
    T, E = 6, 2
    term = NGU(features=5, hidden=(16,), k=3, lifelong=False, memory=64)
    spec = envs.make_spec("gym:CartPole-v1", E, 0)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(3 * T, E, 4)).astype(np.float32)
    obs[8, 1] = obs[7, 1]  # a repeated state: a large kernel sum (the s_m cut-off)
    obs[9, 1] = obs[7, 1]
    dones = np.zeros((3 * T, E), bool)
    dones[2, 0], dones[T - 1, 1], dones[T + 3, 0] = True, True, True
    state = term.init(jax.random.PRNGKey(0), spec)
    params = state.params
    phi = mlp_numpy(host(params)["encoder"]["MLP_0"], obs, relu)
    expected = ngu_reference(term, phi, dones, T)
    np.testing.assert_allclose(stream_rewards(term, state, obs, dones, T), expected, rtol=3e-3, atol=1e-4)
    assert expected[T, 0] > 0  # env 0's episode goes on across the rollout edge: memory kept
    assert expected[T, 1] == 0  # env 1's ended at the last step: the next rollout starts afresh
    # transitions [B]: the memory is the rest of the batch
    spec_t, trans = transitions("gym:CartPole-v1", n=12)
    s_t = term.init(jax.random.PRNGKey(3), spec_t)
    phi_t = mlp_numpy(host(s_t.params)["encoder"]["MLP_0"], np.asarray(trans.obs), relu)
    d2s = [np.sort([np.sum((phi_t[i] - phi_t[j]) ** 2) for j in range(12) if j != i])[:3] for i in range(12)]
    mean = np.concatenate(d2s).mean()
    expected = np.zeros(12)
    for i, d2 in enumerate(d2s):
        kernel = term.kernel_eps / (np.maximum(d2 / mean - term.cluster, 0.0) + term.kernel_eps)
        s = np.sqrt(kernel.sum()) + term.c
        expected[i] = 0.0 if s > term.max_similarity else 1.0 / s
    np.testing.assert_allclose(jax.jit(term.reward)(s_t, trans), expected, rtol=3e-3, atol=1e-4)
    # the life-long modulator: alpha = clip(1 + err / std(err), 1, L) of the RND error
    lifelong = NGU(features=5, hidden=(16,), k=3, lifelong=True, rnd=RND(features=4, hidden=(8,)))
    _, batch, _ = rollout_batch()
    s = lifelong.init(jax.random.PRNGKey(0), spec)
    s = jax.jit(lifelong.update)(s, batch, jax.random.PRNGKey(1))[0]  # jitted: one compile, not op by op
    episodic = jax.jit(NGU(features=5, hidden=(16,), k=3, lifelong=False).reward)(s, batch)
    err = np.asarray(jax.jit(lifelong.rnd.reward)(s.fixed["rnd"], batch)).reshape(-1)
    stats = s.fixed["err"].merge_masked(jnp.asarray(err), jnp.ones(err.shape, bool))
    alpha = np.clip(1 + err / np.sqrt(float(stats.var) + 1e-8), 1, 5).reshape(episodic.shape)
    got = jax.jit(lifelong.reward)(s, batch)
    np.testing.assert_allclose(got, np.asarray(episodic) * alpha, rtol=3e-3, atol=1e-5)


def test_every_built_in_term_on_sequences_from_the_replay():
    """Each registered term on ``Sequences`` [B, T] sampled from a real replay: one finite
    value per step, and its update runs; masked (past-the-episode) steps stay out of the
    Shaper's statistics."""
    from rl.replay import Replay
    from rl.rewards import TERMS, Shaper, Stream

    env, spec = envs.make("gym:CartPole-v1", 2, 0)
    replay = Replay.from_spec(spec, 400)
    rstate, obs = replay.init(), env.reset(seed=0)[0]
    for _ in range(120):
        action = np.random.default_rng(len(obs)).integers(0, 2, 2)
        next_obs, reward, te, tr, info = env.step(action)
        rstate = replay.add(rstate, obs, action, reward, te, tr, info["next_obs"])
        obs = next_obs
    env.close()
    seq = replay.sample_sequences(rstate, jax.random.PRNGKey(0), 16, 6)
    assert isinstance(seq, batch_lib.Sequences) and seq.obs.shape == (16, 6, 4) and not seq.rollout
    assert not np.asarray(seq.mask).all()  # some windows run past their episode's end
    skip = {"extrinsic", "dreamsmooth", "plan2explore"}  # plan2explore reads latents: tests/test_dreamer.py
    for name, cls in TERMS.items():
        if name in skip:
            continue
        term = cls(k=3) if name in ("re3", "state_entropy") else cls()
        shaper = Shaper((Stream("extrinsic", batch_lib_extrinsic()), Stream(name, term, normalize="std")))
        state = shaper.init(jax.random.PRNGKey(1), spec)
        state, rewards, _ = jax.jit(shaper.step)(state, seq, jax.random.PRNGKey(2), 100)
        assert rewards.raw[name].shape == (16, 6) and np.all(np.isfinite(rewards.total)), name
        m = np.asarray(seq.mask)
        np.testing.assert_allclose(state.stats[name].mean, np.asarray(rewards.raw[name])[m].mean(), rtol=1e-3)


def batch_lib_extrinsic():
    from rl.rewards import Extrinsic

    return Extrinsic()


def test_dreamsmooth_replay_field_holds_each_finished_episode_smoothed():
    from rl.loop import replay_transition, write_annotations
    from rl.replay import Replay
    from rl.rewards import DreamSmooth
    from rl.rewards.annotate import EpisodeAnnotator

    spec = envs.make_spec("gym:Pendulum-v1", 2, 0)
    term = DreamSmooth("gaussian", sigma=1.5)
    replay = Replay.from_spec(spec, 60, extras=term.annotations(spec))  # 30 slots per env: wraps
    state = replay.init()
    annotator = EpisodeAnnotator([term], 2)
    rng = np.random.default_rng(0)
    lengths, t = [[7, 4, 9, 3, 6, 5, 8, 2, 7, 6], [5, 6, 3, 8, 4, 9, 2, 7, 5, 6]], [0, 0]
    episode_index = [0, 0]
    for _ in range(45):  # the off-policy agents' loop body (rl.loop)
        reward = rng.normal(size=2).astype(np.float32)
        done = np.array([t[e] + 1 == lengths[e][episode_index[e]] for e in range(2)])
        zeros = np.zeros((2, 3), np.float32)
        step = replay_transition(zeros, np.zeros((2, 1), np.float32), reward, done, np.zeros(2, bool),
                                 {"next_obs": zeros}, annotator)  # fmt: skip
        state = replay.add(state, **step)
        state = write_annotations(replay, state, annotator, zeros, reward, done)
        for e in range(2):
            t[e] = 0 if done[e] else t[e] + 1
            episode_index[e] += int(done[e])
    d = jax.device_get(state.data)
    checked = 0
    for e in range(2):
        rows = [i for i in range(30) if not d["final"][i, e]]
        finished = {int(d["episode"][i, e]) for i in range(30) if d["final"][i, e]}
        for ep in finished:
            steps = sorted((int(d["step"][i, e]), i) for i in rows if d["episode"][i, e] == ep)
            if not steps or steps[0][0] != 0:
                continue  # its start was overwritten by the ring
            raw = np.array([d["reward"][i, e] for _, i in steps])
            got = np.array([d["smoothed_reward"][i, e] for _, i in steps])
            np.testing.assert_allclose(got, smoothing.gaussian(raw, 1.5), rtol=1e-5, atol=1e-6)
            checked += 1
    assert checked >= 4


def test_annotate_segments_smooths_each_episode_of_a_rollout():
    from rl.rewards import DreamSmooth
    from rl.rewards.annotate import annotate_segments

    rng = np.random.default_rng(1)
    reward, done = rng.normal(size=(20, 2)), np.zeros((20, 2), bool)
    done[6, 0] = done[12, 1] = True
    out = annotate_segments([DreamSmooth("uniform", size=3)], {"reward": reward, "obs": reward}, done)
    out = out["smoothed_reward"]
    np.testing.assert_allclose(out[:7, 0], smoothing.uniform(reward[:7, 0], 3), rtol=1e-5)
    np.testing.assert_allclose(out[7:, 0], smoothing.uniform(reward[7:, 0], 3), rtol=1e-5)
    np.testing.assert_allclose(out[13:, 1], smoothing.uniform(reward[13:, 1], 3), rtol=1e-5)


def test_dreamsmooth_through_config_is_the_training_reward():
    """``shaper.smoothing`` makes the env-reward stream the smoothed field, for both agents:
    the Shaper's total is the smoothed reward, not the raw one."""
    shaper = config_lib.build(
        ppo.Config, overrides={"shaper": {"smoothing": "uniform", "smoothing_window": 3}}
    )
    shaper = ppo.build_shaper(shaper)
    assert shaper.annotators() and "smoothed_reward" in shaper.reads()["extrinsic"]
    _, seq, data = rollout_batch()
    raw = np.zeros((12, 2), np.float32)
    raw[5, 0] = raw[9, 1] = 3.0  # sparse rewards
    data = {**data, "reward": raw}
    fields = __import__("rl.rewards.annotate", fromlist=["x"]).annotate_segments(
        shaper.annotators(), data, data["terminated"] | data["truncated"]
    )
    seq = batch_lib.time_major_to_sequences({**data, **fields}, ("smoothed_reward",))
    state = shaper.init(jax.random.PRNGKey(0), envs.make_spec("gym:CartPole-v1", 2, 0))
    total = np.asarray(shaper(state, seq, 0).total)
    np.testing.assert_allclose(total, fields["smoothed_reward"].T, rtol=1e-6)
    assert not np.allclose(total, raw.T)
    for agent in (ppo, sac):  # both agents provide the field their config's Shaper reads
        cfg = config_lib.build(agent.Config, overrides={"shaper": {"smoothing": "gaussian"}})
        assert agent.build_shaper(cfg).reads()["extrinsic"] == {"smoothed_reward"}


def test_smallest_matches_top_k_with_ties_and_masked_rows():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 7, 50))
    x = x.at[0, 0, :5].set(-1.0).at[1, 2, :].set(jnp.inf)  # ties; a row with no candidates
    np.testing.assert_array_equal(learned.smallest(x, 6), -jax.lax.top_k(-x, 6)[0])


@pytest.mark.parametrize("make", [lambda: E3B(features=6, hidden=(16,)), lambda: NGU(features=5, hidden=(16,), k=3),
                                  lambda: RE3(k=2, features=4, hidden=(8,), memory=7)])  # fmt: skip
def test_a_terms_one_pass_step_equals_its_reward_then_update(make):
    """``step`` (what the Shaper's training call uses) against ``reward`` then ``update``, over
    two rollouts: the same rewards and the same carried state. A ``step`` that updated before
    rewarding, or forgot a carry, would differ on the second rollout."""
    term = make()
    spec, batch, _ = rollout_batch()
    a = b = term.init(jax.random.PRNGKey(0), spec)
    for r in range(2):
        key = jax.random.PRNGKey(r)
        reward_a, a, _ = term.step(a, batch, key)
        reward_b = term.reward(b, batch)
        b = term.update(b, batch, key)[0]
        np.testing.assert_allclose(reward_a, reward_b, rtol=1e-5, atol=1e-6)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["disagreement", "re3", "e3b", "icm", "ngu"])
def test_obs_rms_standardizes_the_embedding_inputs_before_the_reward(name):
    """rllte's ``obs_rms`` (``BaseReward.normalize``, ``rllte/common/prototype/base_reward.py``)
    on the terms whose embedding it feeds:
    with ``obs_norm='rms'`` the Shaper's raw bonus equals the ``'none'`` term's (same params) on
    numpy-standardized inputs, the rollout folded into the statistics before its reward,
    (x - mean) / std clipped to +-5 (one outlier passes the clip). Mutations caught: the
    statistics folded after the reward or never, the clip left out, the inputs left raw."""
    cls = {"disagreement": Disagreement, "re3": RE3, "e3b": E3B, "icm": ICM, "ngu": NGU}[name]
    kw = {"features": 5, "hidden": (16,), **({"k": 3} if name in ("re3", "ngu") else {})}
    if name == "ngu":  # the episodic count alone (its RND standardizes its own inputs)
        kw["lifelong"] = False
    spec, _, data = rollout_batch(T=48, E=2)
    data["obs"][5, 0, 0] = data["next_obs"][5, 0, 0] = 50.0  # about 9.7 std from the mean
    seq = batch_lib.time_major_to_sequences(data)
    warmup = {} if name == "ngu" else {"warmup_steps": 7}  # NGU's: its RND's
    shaper = Shaper((Stream(name, cls(obs_norm="rms", **warmup, **kw)),))
    assert shaper.warmup_steps() == (0 if name == "ngu" else 7)
    state = shaper.init(jax.random.PRNGKey(0), spec)
    new, rewards, _ = jax.jit(shaper.step)(state, seq, jax.random.PRNGKey(1), 100)
    kept = new.terms[name]["obs_stats"] if name == "re3" else new.terms[name].fixed["obs_stats"]
    assert float(kept.count) == pytest.approx(96, rel=1e-4)  # the update carries them on
    x = data["obs"].reshape(-1, 4).astype(np.float64)
    n = len(x)  # RunningStats' prior: mean 0, var 1 at a count of 1e-4
    mean = x.sum(0) / (n + 1e-4)
    var = (1e-4 + n * x.var(0) + x.mean(0) ** 2 * 1e-4 * n / (n + 1e-4)) / (n + 1e-4)
    std = {
        k: np.clip((data[k] - mean) / np.sqrt(var + 1e-8), -5, 5).astype(np.float32)
        for k in ("obs", "next_obs")
    }
    assert std["obs"][5, 0, 0] == 5.0
    plain = cls(obs_norm="none", **kw)
    expected = plain.reward(state.terms[name], batch_lib.time_major_to_sequences({**data, **std}))
    np.testing.assert_allclose(rewards.raw[name], expected, rtol=1e-4, atol=1e-6)
    raw = plain.reward(state.terms[name], seq)
    assert not np.allclose(rewards.raw[name], raw, rtol=1e-2)
