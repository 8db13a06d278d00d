"""PGMORL (rl.agents.pgmorl) against numpy transcriptions of its reference (mit-gfx/PGMORL,
``morl/population_2d.py``: ``predict_hyperbolic``, ``Population.insert_pbuffer`` / ``update``,
the candidate weights and the greedy loop of ``prediction_guided_selection``, with its
``compute_hypervolume`` / ``compute_sparsity``), the prediction model against the closed form it
fits, bad input, and ``rl train pgmorl`` writing a front and resuming at a smoke budget."""

import json
import shutil

import numpy as np
import pytest
from scipy.optimize import least_squares

from rl import checkpoint
from rl import config as config_lib
from rl.agents import pgmorl
from rl.runs import Run

ENV = "mo:mo-halfcheetah-v5"


def _history(rng, true_params, roots=6, chain=4, noise=0.0):
    """A graph like the warm-up's: a chain per preference, each step's change of objective d
    ``hyperbolic(w_d, *true_params[d])`` (+ noise)."""
    g = pgmorl.OptGraph()
    for w0 in np.linspace(0, 1, roots):
        w = np.array([w0, 1 - w0])
        node = g.insert(w, rng.uniform(90, 110, 2), -1)
        for _ in range(chain):
            step = np.array([pgmorl.hyperbolic(w[d], *true_params[d]) for d in range(2)])
            node = g.insert(w, g.objs[node] + step + noise * rng.normal(size=2), node)
    return g


def _np_predict(g, node, test_weights):
    """``predict_hyperbolic``, loop by loop."""
    test_weights = np.array(test_weights, np.float64)
    for tw in test_weights:
        tw /= np.sum(tw)
    threshold, sigma = 0.1, 0.03
    while True:
        objs_data, weights_data, delta_data = [], [], []
        for i in range(len(g.objs)):
            if np.all(np.abs(g.objs[node] - g.objs[i]) < np.abs(g.objs[node]) * threshold):
                for j in g.succ[i]:
                    objs_data.append(g.objs[i])
                    weights_data.append(g.weights[j] / np.sum(g.weights[j]))
                    delta_data.append(g.delta[j])
        cnt = 0
        for i in range(len(weights_data)):
            if all(np.linalg.norm(weights_data[i] - weights_data[j]) >= 1e-5 for j in range(i)):
                cnt += 1
                if cnt > 3:
                    break
        if cnt > 3:
            break
        threshold *= 2.0
        sigma *= 2.0
    preds = []
    for dim in range(2):
        x = np.array([wd[dim] for wd in weights_data])
        y = np.array([dd[dim] for dd in delta_data])
        w = np.array(
            [
                np.exp(-((np.linalg.norm(np.abs(o - g.objs[node]) / np.abs(g.objs[node])) / sigma) ** 2) / 2)
                for o in objs_data
            ]
        )

        def fun(p, x, y, w=w):
            e = np.exp(p[1] * (x - p[2]))
            return (p[0] * (e - 1.0) / (e + 1) + p[3] - y) * w

        def jac(p, x, y, w=w):
            A, a, b = p[0], p[1], p[2]
            e = np.exp(a * (x - b))
            J = np.zeros([4, len(x)])
            J[0] = (e - 1) / (e + 1) * w
            J[1] = A * (x - b) * 2.0 * e / (e + 1) ** 2 * w
            J[2] = A * (-a) * 2.0 * e / (e + 1) ** 2 * w
            J[3] = w
            return J.T

        upper = np.clip(np.max(y) - np.min(y), 1.0, 500.0)
        res = least_squares(fun, np.ones(4), loss="soft_l1", f_scale=20.0, args=(x, y), jac=jac,
                            bounds=([0, 0.1, -5.0, -500.0], [upper, 20.0, 5.0, 500.0]))  # fmt: skip
        e = np.exp(res.x[1] * (test_weights[:, dim] - res.x[2]))
        preds.append(res.x[0] * (e - 1) / (e + 1) + res.x[3])
    return g.objs[node] + np.array(preds).T


TRUE = [(8.0, 6.0, 0.5, 1.0), (8.0, 6.0, 0.5, 1.0)]


def test_prediction_matches_predict_hyperbolic():
    rng = np.random.default_rng(0)
    g = _history(rng, TRUE, noise=0.5)
    tests = [[0.1, 0.9], [0.5, 0.5], [0.95, 0.05]]
    for node in (4, 14, len(g.objs) - 1):
        np.testing.assert_allclose(pgmorl.predict(g, node, tests), _np_predict(g, node, tests), rtol=1e-6)


def test_prediction_recovers_the_hyperbolic_it_fits():
    """Noiseless history from a known improvement curve: the predicted change is that curve."""
    rng = np.random.default_rng(1)
    g = _history(rng, TRUE, roots=11, chain=3)
    for node in range(len(g.objs)):  # every node's neighbourhood the whole history
        g.objs[node] = np.array([100.0, 100.0]) + 1e-3 * node
    tests = np.array([[0.2, 0.8], [0.5, 0.5], [0.7, 0.3]])
    want = np.stack([pgmorl.hyperbolic(tests[:, d], *TRUE[d]) for d in range(2)], 1)
    got = pgmorl.predict(g, 5, tests) - g.objs[5]
    np.testing.assert_allclose(got, want, atol=0.3)
    # mutation: fitting objective d against the other objective's preference gets the slope backwards
    g.weights = [w[::-1] for w in g.weights]
    assert not np.allclose(pgmorl.predict(g, 5, tests) - g.objs[5], want, atol=1.0)


def _np_pbuffer(points, num, size):
    """``Population.update`` with ``insert_pbuffer`` (z_min = 0)."""
    dtheta = np.pi / 2.0 / num
    pbuffers, dists = [[] for _ in range(num)], [[] for _ in range(num)]
    for index, objs in enumerate(points):
        f = objs - np.zeros(2)
        if np.min(f) < 1e-7:
            continue
        dist = np.linalg.norm(f)
        bid = int(np.arccos(np.clip(f[1] / dist, -1.0, 1.0)) // dtheta)
        if bid < 0 or bid >= num:
            continue
        inserted = False
        for i in range(len(pbuffers[bid])):
            if dists[bid][i] < dist:
                pbuffers[bid].insert(i, index)
                dists[bid].insert(i, dist)
                inserted = True
                break
        if inserted and len(pbuffers[bid]) > size:
            pbuffers[bid], dists[bid] = pbuffers[bid][:size], dists[bid][:size]
        elif not inserted and len(pbuffers[bid]) < size:
            pbuffers[bid].append(index)
            dists[bid].append(dist)
    return [i for b in pbuffers for i in b]


def test_performance_buffers_match_insert_pbuffer():
    rng = np.random.default_rng(2)
    points = rng.uniform(-5, 100, (300, 2))
    points[10:20] = points[0]  # equal distances: the earlier stays first
    for num, size in ((100, 2), (7, 3), (1, 5)):
        assert pgmorl.performance_buffers(points, np.zeros(2), num, size) == _np_pbuffer(points, num, size)
    kept = pgmorl.performance_buffers(points, np.zeros(2), 10, 2)
    assert len(kept) <= 20 and all(points[i].min() > 0 for i in kept)
    # the origin matters: shifted to the points' minimum, every point is a candidate
    assert len(pgmorl.performance_buffers(points, points.min(0) - 1, 100, 300)) == len(points)


def test_candidate_weights_stay_in_the_quadrant_and_skip_tried_ones():
    g = pgmorl.OptGraph()
    root = g.insert([1.0, 1.0], [1.0, 1.0], -1)
    assert len(pgmorl.candidate_weights(g, root, 7)) == 7  # 0 to 90 degrees
    np.testing.assert_allclose(
        pgmorl.candidate_weights(g, root, 3), [[1, 0], [2**-0.5, 2**-0.5], [0, 1]], atol=1e-7
    )
    g.insert([1.0, 1.0], [2.0, 2.0], root)  # a child already trained at 45 degrees
    assert len(pgmorl.candidate_weights(g, root, 7)) == 6
    edge = g.insert([1.0, 0.0], [1.0, 1.0], -1)
    w = pgmorl.candidate_weights(g, edge, 7)  # -45..45 degrees: the negative half dropped
    assert len(w) == 4 and (w >= -1e-7).all()


def _np_hv(objs):  # compute_hypervolume, reference (0, 0)
    x, hv = 0.0, 0.0
    for o in objs:
        hv += (max(0.0, o[0]) - x) * (max(0.0, o[1]) - 0.0)
        x = max(0.0, o[0])
    return hv


def _np_ep(batch):  # get_ep_indices
    batch = np.asarray(batch)
    out = []
    for i in np.argsort(batch.T[0]):
        dominated = np.logical_and((batch >= batch[i]).all(1), (batch > batch[i]).any(1)).any()
        if (batch[i] >= 0).all() and not dominated:
            out.append(i)
    return batch[out]


def _np_sparsity(ep):
    if len(ep) < 2:
        return 0.0
    return sum(np.sum(np.square(ep[i] - ep[i - 1])) for i in range(1, len(ep))) / (len(ep) - 1)


def _np_greedy(candidates, ep, n, alpha):
    virtual, mask, chosen = [list(p) for p in ep], np.ones(len(candidates), bool), []
    for _ in range(n):
        best, best_id = -np.inf, -1
        for i, c in enumerate(candidates):
            if mask[i]:
                e = _np_ep(np.array(virtual + [list(c)]))
                score = _np_hv(e) - alpha * _np_sparsity(e)
                if score > best:
                    best, best_id = score, i
        chosen.append(best_id)
        mask[best_id] = False
        virtual = _np_ep(np.array(virtual + [list(candidates[best_id])])).tolist()
    return chosen


def test_selection_matches_the_greedy_knapsack():
    rng = np.random.default_rng(4)
    for alpha in (0.0, 1.0, 30.0):
        ep = rng.uniform(1, 10, (5, 2))
        candidates = rng.uniform(0.5, 12, (20, 2))
        got = pgmorl.select_tasks(candidates, ep, np.zeros(2), 6, alpha)
        assert got == _np_greedy(candidates, ep, 6, alpha)
        assert len(set(got)) == 6  # each candidate once
    # mutation: without the sparsity term the far point wins; with it, the one that halves the gaps
    ep = np.array([[0.5, 10.0], [10.0, 0.5]])
    cands = np.array([[9.0, 9.0], [5.25, 5.25]])  # HV 82 vs 32.3; sparsity 73.3 vs 45.1
    assert pgmorl.select_tasks(cands, ep, np.zeros(2), 1, 0.0) == [0]
    assert pgmorl.select_tasks(cands, ep, np.zeros(2), 1, 10.0) == [1]


def test_bad_config_fails_early():
    with pytest.raises(config_lib.ConfigError, match="warmup_iter"):
        config_lib.build(pgmorl.Config, overrides={"warmup_iter": 5, "update_iter": 10})
    with pytest.raises(config_lib.ConfigError, match="num_weight_candidates"):
        config_lib.build(pgmorl.Config, overrides={"num_weight_candidates": 1})
    cfg = config_lib.build(pgmorl.Config, overrides={**TINY, "total_steps": 10})
    with pytest.raises(ValueError, match="fewer than one update"):
        pgmorl.train(cfg)
    with pytest.raises(ValueError, match="2 objectives"):
        pgmorl.train(config_lib.build(pgmorl.Config, overrides={"env": "mo:mo-hopper-v5"}))


TINY = {
    "env": ENV,
    "num_envs": 2,
    "num_steps": 16,
    "num_minibatches": 2,
    "update_epochs": 2,
    "env_options": {"max_episode_steps": 20},
    "warmup_iter": 2,
    "update_iter": 1,
    "eval_episodes": 1,
    "mb_episode_steps": 25,
}


def test_train_writes_a_front_and_resumes(tmp_path):
    rollout = 2 * 16
    cfg = config_lib.build(
        pgmorl.Config,
        overrides={**TINY, "total_steps": 6 * rollout * 2 + 3 * 6 * rollout, "runs_dir": str(tmp_path)},
    )
    summary = pgmorl.train(cfg)
    run_dir = next((tmp_path / "default").iterdir())
    front = json.loads((run_dir / "front.json").read_text())
    assert (run_dir / "front.png").exists() and set(front["protocols"]) == {"cmorl", "morl_baselines"}
    assert np.isclose(summary["eval/cardinality"], len(front["points"]))
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    gens = [line["pgmorl/generation"] for line in lines if "pgmorl/generation" in line]
    assert gens == [1, 2, 3, 4]  # the warm-up and three generations of one update each
    assert max(line["pgmorl/updates"] for line in lines if "pgmorl/updates" in line) == 5
    # a crash during the last generation: its checkpoint and the summary never written
    first, last = checkpoint.all_checkpoints(run_dir / "checkpoints")
    meta = json.loads((first / "meta.json").read_text())
    assert meta["generation"] == 3 and len(meta["tasks"]) == 6 and len(meta["graph"]["prev"]) >= 6 + 2 * 6
    shutil.rmtree(last)
    (run_dir / "summary.json").unlink()
    run, ckpt = Run.resume(run_dir, pgmorl.Config)
    assert ckpt == first
    again = pgmorl.train(run.cfg, run=run, resume=ckpt)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["pgmorl/generation"] for line in lines if "pgmorl/generation" in line] == [1, 2, 3, 4]
    assert again["eval/cardinality"] >= 1
