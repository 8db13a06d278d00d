"""Envelope Q-learning (rl.agents.envelope): its target, loss and schedules against numpy
transcriptions of MORL-Baselines (``morl_baselines/multi_policy/envelope/envelope.py``,
``common/utils.py``), the evaluation's per-objective discounted returns by hand, learning most
of Deep Sea Treasure's known front at a CI budget, bad input, resume after SIGKILL."""

import dataclasses
import json
import subprocess
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import config as config_lib
from rl import envs
from rl.agents import envelope
from rl.evaluation import preference_returns
from rl.replay import Replay
from rl.rewards import multiobjective as mo

DST = "mo:deep-sea-treasure-v0"


def _np_envelope_target(w, q_next, q_next_target):
    """The reference's ``envelope_target``: per sampled w', the best action's scalarized value
    under w; the best w'; the target network's vector at (w', a)."""
    scal = np.einsum("nk,nmak->nma", w, q_next)
    ac = scal.argmax(2)  # [n, m]
    pref = scal.max(2).argmax(1)  # [n]
    rows = np.arange(len(w))
    return q_next_target[rows, pref, ac[rows, pref]]


def test_envelope_and_ddqn_targets_match_the_reference():
    rng = np.random.default_rng(0)
    n, m, a, k = 6, 4, 3, 2
    w = rng.dirichlet(np.ones(k), n).astype(np.float32)
    q_next, q_target = rng.normal(size=(2, n, m, a, k)).astype(np.float32)
    got = envelope.envelope_target(jnp.asarray(w), jnp.asarray(q_next), jnp.asarray(q_target))
    np.testing.assert_allclose(got, _np_envelope_target(w, q_next, q_target), rtol=1e-6)
    # mutation: evaluating the chosen entry with the online network instead gives other values
    assert not np.allclose(got, _np_envelope_target(w, q_next, q_next))
    best = np.einsum("nk,nak->na", w, q_next[:, 0]).argmax(1)
    np.testing.assert_allclose(
        envelope.ddqn_target(jnp.asarray(w), jnp.asarray(q_next[:, 0]), jnp.asarray(q_target[:, 0])),
        q_target[np.arange(n), 0, best],
    )


def test_the_update_bootstraps_as_the_reference_over_every_row_and_preference():
    """The reference runs both networks on all m * B x m (s', w') inputs; ours on the B x m
    distinct ones and shares them across each transition's m rows: the same vectors, row by row."""
    spec = envs.make_spec(DST, 1, 0)
    cfg = config_lib.build(envelope.Config, overrides={"env": DST, "hidden": [32, 32]})
    net = envelope.network(cfg, spec)
    rng = np.random.default_rng(3)
    b, m, k = 5, 4, spec.reward_dim
    params, target = (envelope.init_params(cfg, spec, jax.random.PRNGKey(s))["params"] for s in (0, 1))
    next_obs = jnp.asarray(rng.integers(0, 11, size=(b, *spec.obs_shape)), jnp.float32)
    sampled = jnp.asarray(rng.dirichlet(np.ones(k), m), jnp.float32)
    w = np.repeat(np.asarray(sampled), b, 0)  # the reference's repeat_interleave: row i * B + j has w_i
    rows_obs = np.tile(np.asarray(next_obs), (m, 1))  # and transition j (``repeat``)
    wide = np.repeat(rows_obs, m, 0).reshape(m * b, m, -1)  # envelope_target: every row with every w'
    pairs = np.tile(np.asarray(sampled), (m * b, 1)).reshape(m * b, m, k)
    q_next, q_target = (np.asarray(net.apply({"params": p}, wide, pairs)) for p in (params, target))
    expected = _np_envelope_target(w, q_next, q_target)
    got = envelope.bootstrap(cfg, net, params, target, next_obs, sampled)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # mutation: the online network's vectors instead of the target's differ
    assert not np.allclose(
        envelope.bootstrap(cfg, net, params, params, next_obs, sampled), expected, atol=1e-3
    )
    ddqn = envelope.bootstrap(
        dataclasses.replace(cfg, envelope=False), net, params, target, next_obs, sampled
    )
    online, tgt = (np.asarray(net.apply({"params": p}, rows_obs, w)) for p in (params, target))
    best = np.einsum("nk,nak->na", w, online).argmax(1)
    np.testing.assert_allclose(ddqn, tgt[np.arange(m * b), best], rtol=1e-5, atol=1e-6)


def test_the_loss_is_the_homotopy_of_the_vector_and_scalarized_errors():
    rng = np.random.default_rng(1)
    q, y = rng.normal(size=(2, 8, 3)).astype(np.float32)
    w = rng.dirichlet(np.ones(3), 8).astype(np.float32)
    vector = np.mean((q - y) ** 2)  # F.mse_loss(q_value, target_q)
    scalar = np.mean(((w * q).sum(1) - (w * y).sum(1)) ** 2)  # F.mse_loss(wQ, wTQ)
    for lam in (0.0, 0.3, 1.0):
        got = envelope.envelope_loss(jnp.asarray(q), jnp.asarray(y), jnp.asarray(w), lam)
        assert float(got) == pytest.approx((1 - lam) * vector + lam * scalar, rel=1e-5)


def _np_linearly_decaying_value(initial, decay_period, step, warmup, final):
    """MORL-Baselines' ``linearly_decaying_value``."""
    steps_left = decay_period + warmup - step
    value = final + (initial - final) * steps_left / decay_period
    return np.clip(value, min(initial, final), max(initial, final))


def test_epsilon_and_homotopy_schedules_follow_the_reference():
    over = {"learning_starts": 100, "epsilon_steps": 1000, "homotopy_steps": 1000, "epsilon_end": 0.05}
    cfg = config_lib.build(envelope.Config, overrides=over)
    for step in (0, 50, 100, 600, 1100, 5000):
        want = 1.0 if step < 100 else _np_linearly_decaying_value(1.0, 1000, step, 100, 0.05)
        assert float(envelope.epsilon(cfg, step)) == pytest.approx(want, abs=1e-6)
        lam = _np_linearly_decaying_value(0.0, 1000, step, 100, 1.0)
        assert float(envelope.homotopy(cfg, step)) == pytest.approx(lam, abs=1e-6)


def test_evaluation_returns_stay_per_objective_and_discount_by_hand():
    """Right in the first column, then down: treasure 8.2 after 3 steps on Deep Sea Treasure,
    (8.2, -3) undiscounted and (0.99^2 * 8.2, -(1 + 0.99 + 0.99^2)) discounted."""
    cfg = config_lib.build(envelope.Config, overrides={"env": DST, "env_options": {"max_episode_steps": 50}})

    def policy(obs, w):
        return np.where(obs[:, 1] == 0, 3, 1)

    undisc, disc = preference_returns(cfg, policy, np.array([[0.5, 0.5], [1.0, 0.0]]), 2, 0.99)
    np.testing.assert_allclose(undisc, [[8.2, -3.0]] * 2, rtol=1e-6)
    np.testing.assert_allclose(disc, [[0.99**2 * 8.2, -(1 + 0.99 + 0.99**2)]] * 2, rtol=1e-6)


class _NpPrioritizedBuffer:
    """The reference's priority bookkeeping (MORL-Baselines ``common/prioritized_buffer.py``:
    ``SumTree.batch_set`` with ``np.unique``'s first index, ``update_priorities``) and
    ``Envelope.update``'s priority of the first B rows, transcribed with leaf priorities in a
    plain array."""

    def __init__(self, size, min_priority=1e-5):
        self.leaves, self.min_priority = np.zeros(size), min_priority

    def update(self, idxes, q, y, w, alpha):
        priority = np.abs(np.einsum("sr,sr->s", q - y, w))
        priority = (priority + self.min_priority) ** alpha
        self.min_priority = max(self.min_priority, priority.max())
        node, first = np.unique(idxes, return_index=True)
        self.leaves[node] = priority[first]


def test_priority_update_matches_the_reference_with_repeated_slots():
    """Drawn slots with repeats (the reference keeps a repeated slot's first row), two updates
    in a row so p_max carries over. Fails if p_max is left out of the priority, if it does not
    grow, or if a repeat's later row wins."""
    rng = np.random.default_rng(0)
    T, E, B, k = 16, 2, 12, 2
    ref, priority, top = _NpPrioritizedBuffer(T * E), jnp.zeros((T, E)), jnp.float32(1e-5)
    for _ in range(2):
        flat = rng.integers(0, 6, B)  # few slots: repeats are certain
        q, y = rng.normal(size=(B, k)) * 3, rng.normal(size=(B, k)) * 3
        w = mo.sample_preferences(jax.random.PRNGKey(0), B, k, "gaussian")
        slots = (jnp.asarray(flat // E), jnp.asarray(flat % E))
        priority, top = envelope.new_priorities(priority, top, slots, q, y, w, 0.6)
        ref.update(flat, q, y, np.asarray(w), 0.6)
        np.testing.assert_allclose(np.asarray(priority).reshape(-1), ref.leaves, rtol=1e-5)
        assert float(top) == pytest.approx(ref.min_priority, rel=1e-6)
    assert ref.min_priority > 1.0  # p_max has grown past the first priorities' offset


def test_the_q_network_starts_as_the_references_layer_init():
    """Every kernel orthogonal with gain 1 (rows or columns orthonormal), every bias zero: the
    reference's ``layer_init``. Fails under flax's default lecun normal."""
    cfg = config_lib.build(envelope.Config, overrides={"env": DST, "hidden": [64, 32]})
    params = envelope.init_params(cfg, envs.make_spec(DST, 1, 0), jax.random.PRNGKey(0))["params"]
    layers = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, dict) and "kernel" in x)
    assert len(layers) == 3
    for layer in layers:
        w = np.asarray(layer["kernel"])
        gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        np.testing.assert_allclose(gram, np.eye(len(gram)), atol=1e-5)
        assert not np.asarray(layer["bias"]).any()


def test_gaussian_preferences_follow_the_reference_distribution():
    """``pref_dist=gaussian`` is MORL-Baselines' ``random_weights(dist="gaussian")``: |x| / L1.
    Its first component against numpy samples of the reference's formula (two-sample KS); the
    uniform Dirichlet, the mutation, is rejected by the same test."""
    from scipy import stats

    x = np.abs(np.random.default_rng(0).standard_normal((20_000, 2)))
    reference = (x / x.sum(1, keepdims=True))[:, 0]
    ours = np.asarray(mo.sample_preferences(jax.random.PRNGKey(1), 20_000, 2, "gaussian"))
    uniform = np.asarray(mo.sample_preferences(jax.random.PRNGKey(1), 20_000, 2, "dirichlet"))
    assert np.allclose(ours.sum(1), 1.0) and (ours >= 0).all()
    assert stats.ks_2samp(ours[:, 0], reference).pvalue > 1e-3
    assert stats.ks_2samp(uniform[:, 0], reference).pvalue < 1e-6


def test_prioritized_updates_draw_by_priority_and_new_slots_start_at_the_largest():
    """Inside the agent's jitted step: the slot each step writes gets the largest priority so
    far; with every priority but one set to zero, an update draws only that slot, so only its
    priority changes. Fails if the agent samples its replay uniformly under per=true."""
    cfg = config_lib.build(envelope.Config, overrides={"env": DST, "hidden": [16], "buffer_size": 64})
    spec = envs.make_spec(DST, 1, 0)
    shaper = envelope.build_shaper(cfg)
    replay = Replay.from_spec(spec, cfg.buffer_size)
    state, rstate = envelope.init(cfg, spec, jax.random.PRNGKey(0), shaper), replay.init()
    step = {
        learn: jax.jit(partial(envelope.train_step, cfg, spec, shaper, replay, learn)) for learn in (0, 1)
    }
    obs = np.zeros((1, *spec.obs_shape), np.float32)
    for i in range(10):
        nxt = obs + i + 1
        tr = dict(obs=obs, action=np.zeros(1, np.int32), reward=np.ones((1, 2), np.float32),
                  terminated=np.zeros(1, bool), truncated=np.zeros(1, bool), next_obs=nxt)  # fmt: skip
        state, rstate, _, _ = step[0](state, rstate, tr, nxt)
        obs = nxt
    p = np.asarray(state.priority)
    assert np.all(p[:10, 0] == pytest.approx(1e-5)) and np.all(p[10:] == 0)
    keep = np.zeros_like(p)
    keep[3, 0] = 1.0
    state = state._replace(priority=jnp.asarray(keep), max_priority=jnp.float32(1.0))
    state, rstate, _, _ = step[1](state, rstate, tr, obs + 1)
    after = np.asarray(state.priority)
    assert after[10, 0] == 1.0  # this step's slot, written at the largest priority so far
    changed = np.argwhere(after[:10] != keep[:10])
    assert changed.tolist() == [[3, 0]] and after[3, 0] > 1.0  # (|w.td| + 1)^0.6 > 1


def _dst_cfg(tmp_path, **over):
    base = {"env": DST, "env_options": {"max_episode_steps": 100}, "hidden": [64, 64], "total_steps": 2000,
            "epsilon_steps": 1500, "homotopy_steps": 1500, "target_every": 100, "eval_weights": 50,
            "log_every": 500, "runs_dir": str(tmp_path)}  # fmt: skip
    return config_lib.build(envelope.Config, overrides={**base, **over})


@pytest.mark.optimized  # execution-bound: XLA level 2 (tests/conftest.py)
def test_envelope_learns_most_of_deep_sea_treasures_front(tmp_path):
    """2,000 env steps (the experiment runs the full check: every one of the 10 points): the
    greedy front's hypervolume over 65% of the true front's 401.8 at (0, -25), at least 3 of
    its points found exactly, the files written. Over seeds 0-5 this budget gives HV 278-328
    with 3-6 true points (at both XLA CPU optimization levels, whose last bits differ), so the
    bounds sit below the seed spread. Training Q on action 0 whatever the action taken scores
    0. (Zeroing the preference input does not fail it at this budget: the greedy action
    w . Q(s, a) still differs by w.)"""
    summary = envelope.train(_dst_cfg(tmp_path))
    assert summary["eval/known_hypervolume"] == pytest.approx(401.8, abs=0.05)
    assert summary["eval/hypervolume"] > 0.65 * 401.8, summary
    run = next((tmp_path / "default").iterdir())
    doc = mo.read_front(run / "front.json")
    found = doc["points"][np.asarray(doc["pareto"])]
    true = mo.known_front(DST, 1.0)
    hits = sum(np.any(np.all(np.isclose(found, p, atol=1e-4), 1)) for p in true)
    assert hits >= 3, found
    assert len(doc["weights"]) == 50 and (run / "front.png").stat().st_size > 0
    assert doc["metrics"]["eval/cardinality"] == summary["eval/cardinality"]
    history = sorted((run / "fronts").glob("step_*.json"))  # every evaluation's front kept
    assert history[-1].name == "step_000000002000.json"
    assert history[-1].read_text() == (run / "front.json").read_text()


def test_bad_input_fails_before_a_run_exists(tmp_path):
    with pytest.raises(ValueError, match="discrete actions and a vector reward"):
        envelope.train(_dst_cfg(tmp_path, env="mo:mo-hopper-2obj-v5"))
    with pytest.raises(ValueError, match="no known hypervolume reference point"):
        envelope.train(_dst_cfg(tmp_path, env="mo:mo-mountaincar-v0"))
    with pytest.raises(ValueError, match="has 3 values"):
        envelope.train(_dst_cfg(tmp_path, ref_point=[0, 0, 0]))
    with pytest.raises(config_lib.ConfigError, match="scalarize must be 'none'"):
        _dst_cfg(tmp_path, shaper={"scalarize": "linear", "preference": [0.5, 0.5]})
    assert not any(tmp_path.iterdir())


def test_sigkill_then_resume_continues_the_run(tmp_path, sigkill_after_checkpoint):
    run = tmp_path / "t" / "k"
    cmd = [sys.executable, "-m", "rl.cli", "train", "envelope", "--env", DST, "env_options={max_episode_steps: 100}",
           "hidden=[32]", "total_steps=400", "log_every=100", "checkpoint_every=100", "eval_weights=4",
           f"runs_dir={tmp_path}", "experiment=t", "run_name=k"]  # fmt: skip
    sigkill_after_checkpoint(cmd, run)
    out = subprocess.run([sys.executable, "-m", "rl.cli", "resume", str(run)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(x) for x in open(run / "metrics.jsonl")]
    steps = [r["step"] for r in rows if "perf/sps" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 400  # no line lost or repeated
    assert mo.read_front(run / "front.json")["step"] == 400
