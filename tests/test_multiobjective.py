"""Multi-objective tools (rl.rewards.multiobjective): hypervolume against hand-computed fronts,
pymoo and the environments' published fronts; Pareto filtering with ties and duplicates;
EUM, sparsity and IGD against transcriptions of MORL-Baselines
(``morl_baselines/common/performance_indicators.py``); scalarizations against numpy."""

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl.rewards import multiobjective as mo


def test_hypervolume_of_hand_computed_2d_and_3d_fronts():
    # 2-D staircase: boxes [0,3]x[0,1], [0,2]x[0,2], [0,1]x[0,3]: 3 + 2 + 1
    assert mo.hypervolume([[1, 3], [2, 2], [3, 1]], [0, 0]) == pytest.approx(6.0)
    # a dominated point, a duplicate and a point below the reference change nothing
    assert mo.hypervolume([[1, 3], [2, 2], [3, 1], [1, 1], [2, 2], [-1, 5]], [0, 0]) == pytest.approx(6.0)
    assert mo.hypervolume([[1, 3]], [2, 0]) == 0.0  # not above the reference in x
    # 3-D: three unit-overlapping boxes 2x1x1, 1x2x1, 1x1x2 (inclusion-exclusion: 6 - 3 + 1)
    assert mo.hypervolume([[2, 1, 1], [1, 2, 1], [1, 1, 2]], [0, 0, 0]) == pytest.approx(4.0)
    assert mo.hypervolume([[1, 1, 1]], [-1, -1, -1]) == pytest.approx(8.0)
    assert mo.hypervolume(np.zeros((0, 2)), [0, 0]) == 0.0


@pytest.mark.parametrize("k", [2, 3, 4])
def test_hypervolume_matches_pymoo_on_random_fronts(k):
    from pymoo.indicators.hv import HV

    rng = np.random.default_rng(k)
    for n in (1, 5, 40):
        pts = rng.normal(size=(n, k))
        ref = np.full(k, -2.5)
        ours = mo.hypervolume(pts, ref)
        theirs = HV(ref_point=-ref)(-pts)  # MORL-Baselines' call: minimization on negated points
        assert ours == pytest.approx(theirs, rel=1e-9), (k, n)


def test_the_environments_published_fronts_have_their_published_hypervolumes():
    """Our hypervolume on mo-gymnasium's known fronts: Deep Sea Treasure (401.8 undiscounted,
    360.4 at gamma 0.99, reference (0, -25)), Fruit Tree (12575.9 at 0, six objectives, via
    pymoo) and Minecart (100.3 at (0, 0, -200), gamma 0.98)."""
    import mo_gymnasium

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dst = mo_gymnasium.make("deep-sea-treasure-v0").unwrapped
        fruit = mo_gymnasium.make("fruit-tree-v0").unwrapped
        cart = mo_gymnasium.make("minecart-v0").unwrapped
    assert mo.hypervolume(dst.pareto_front(gamma=1.0), [0, -25]) == pytest.approx(401.8, abs=0.05)
    assert mo.hypervolume(dst.pareto_front(gamma=0.99), [0, -25]) == pytest.approx(360.4, abs=0.05)
    assert mo.hypervolume(fruit.pareto_front(gamma=1.0), np.zeros(6)) == pytest.approx(12575.9, abs=0.05)
    assert mo.hypervolume(cart.pareto_front(gamma=0.98), [0, 0, -200]) == pytest.approx(100.3, abs=0.05)


def test_pareto_filtering_with_ties_and_duplicates():
    pts = np.array([[1, 2], [1, 2], [2, 1], [1, 1], [0, 2], [2, 1], [-1, 3]], float)
    mask = mo.pareto_mask(pts)
    # [1, 2] and [2, 1] once each (first copies), [1, 1] and [0, 2] (tied in y, worse in x)
    # dominated, [-1, 3] the best in y
    assert mask.tolist() == [True, False, True, False, False, False, True]
    np.testing.assert_array_equal(mo.pareto_front(pts), [[1, 2], [2, 1], [-1, 3]])
    assert mo.cardinality(pts) == 3
    assert mo.pareto_front(np.zeros((0, 3))).shape == (0, 3)
    with pytest.raises(ValueError, match="finite"):
        mo.pareto_front([[np.nan, 1.0]])
    with pytest.raises(ValueError, match=r"\[n, k\]"):
        mo.pareto_front([1.0, 2.0])


def _morlb_sparsity(front):
    """MORL-Baselines' sparsity, transcribed: per objective, sorted squared gaps, / (n - 1)."""
    if len(front) < 2:
        return 0.0
    front, value = np.array(front), 0.0
    for dim in range(front.shape[1]):
        objs = np.sort(front.T[dim])
        for i in range(1, len(objs)):
            value += np.square(objs[i] - objs[i - 1])
    return value / (len(front) - 1)


def _morlb_eum(front, weights):
    return np.mean([np.max([np.dot(w, p) for p in front]) for w in weights])


def test_eum_sparsity_and_igd_on_small_fronts():
    front = np.array([[0.0, 3.0], [1.0, 2.0], [3.0, 0.0]])
    w = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    # best utilities: 3 (at [3, 0]); max(1.5, 1.5, 1.5) = 1.5; 3 (at [0, 3])
    assert mo.expected_utility(front, w) == pytest.approx((3 + 1.5 + 3) / 3)
    # sorted x: 0, 1, 3 -> gaps 1, 2; sorted y: 0, 2, 3 -> 2, 1; (1 + 4 + 4 + 1) / 2
    assert mo.sparsity(front) == pytest.approx(5.0)
    assert mo.sparsity(front[:1]) == 0.0
    rng = np.random.default_rng(0)
    for _ in range(5):
        pts, ws = rng.normal(size=(7, 3)), rng.dirichlet(np.ones(3), 11)
        assert mo.sparsity(pts) == pytest.approx(_morlb_sparsity(pts))
        assert mo.expected_utility(pts, ws) == pytest.approx(_morlb_eum(pts, ws))
    from pymoo.indicators.igd import IGD

    known, found = rng.normal(size=(9, 2)), rng.normal(size=(4, 2))
    assert mo.igd(found, known) == pytest.approx(IGD(known)(found))
    assert mo.igd(known, known) == 0.0


def test_linear_optimal_front_keeps_each_weights_linear_optimum():
    """A concave-hull point no weight prefers is never reached; too few weights miss supported
    points; the utility front (discounted) picks, the points returned are the front's own."""
    front = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.6], [0.4, 0.4]])  # (0.4, 0.4) dominated
    w3 = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    np.testing.assert_array_equal(mo.linear_optimal_front(front, w3), front[:3])
    np.testing.assert_array_equal(mo.linear_optimal_front(front, [[0.5, 0.5]]), [[0.6, 0.6]])
    concave = np.array([[1.0, 0.0], [0.0, 1.0], [0.45, 0.45]])  # below the segment: never optimal
    assert (
        len(mo.linear_optimal_front(concave, np.stack([np.linspace(0, 1, 101), np.linspace(1, 0, 101)], 1)))
        == 2
    )
    utility = front * np.array([1.0, 0.1])  # the second objective discounted away: always the first
    np.testing.assert_array_equal(mo.linear_optimal_front(front, [[0.5, 0.5]], utility), [[1.0, 0.0]])
    with pytest.raises(ValueError, match="must match"):
        mo.linear_optimal_front(front, w3, utility[:2])


def test_scalarizations_match_numpy_on_jax_and_numpy_inputs():
    rng = np.random.default_rng(1)
    r, w, z = rng.normal(size=(5, 3)), rng.dirichlet(np.ones(3), 5), np.array([1.0, 2.0, 0.5])
    gap = w * np.abs(z - r)
    expected = {"linear": (w * r).sum(-1), "chebyshev": -gap.max(-1),
                "augmented_chebyshev": -gap.max(-1) - 0.05 * gap.sum(-1)}  # fmt: skip
    for kind, want in expected.items():
        host = mo.scalarize(kind, r, w, z, augment=0.05)
        assert isinstance(host, np.ndarray)
        np.testing.assert_allclose(host, want, rtol=1e-12)
        dev = jax.jit(lambda r, w, kind=kind: mo.scalarize(kind, r, w, z, augment=0.05))(jnp.asarray(r), w)
        np.testing.assert_allclose(dev, want, rtol=1e-5)
    # the augmentation ranks a weakly dominated point below its dominator; plain Chebyshev ties
    a, b = np.array([0.0, -1.0]), np.array([-0.5, -1.0])  # a dominates b
    cheb = [mo.scalarize("chebyshev", p, [0.5, 0.5]) for p in (a, b)]
    aug = [mo.scalarize("augmented_chebyshev", p, [0.5, 0.5]) for p in (a, b)]
    assert cheb[0] == cheb[1] and aug[0] > aug[1]
    with pytest.raises(ValueError, match="unknown scalarization"):
        mo.scalarize("max", r, w)


def test_preferences_on_the_simplex():
    grid = mo.simplex_grid(2, 0.01)
    assert grid.shape == (101, 2) and np.allclose(grid.sum(1), 1) and (grid >= 0).all()
    assert mo.simplex_grid(3, 0.01).shape == (5151, 3)
    g3 = mo.simplex_grid(3, 0.5)
    assert sorted(map(tuple, g3.tolist())) == sorted(
        [(0, 0, 1), (0, 0.5, 0.5), (0, 1, 0), (0.5, 0, 0.5), (0.5, 0.5, 0), (1, 0, 0)]
    )
    with pytest.raises(ValueError, match="step dividing 1"):
        mo.simplex_grid(2, 0.3)
    w = mo.equally_spaced_weights(2, 50)
    assert w.shape == (50, 2) and np.allclose(w.sum(1), 1) and (w >= -1e-12).all()
    np.testing.assert_array_equal(w, mo.equally_spaced_weights(2, 50))  # seeded: the same set each time
    s = np.asarray(mo.sample_simplex(jax.random.PRNGKey(0), 4000, 3))
    assert np.allclose(s.sum(1), 1, atol=1e-5) and (s >= 0).all()
    np.testing.assert_allclose(s.mean(0), [1 / 3] * 3, atol=0.02)  # Dirichlet(1): uniform on the simplex
    np.testing.assert_allclose(s[:, 0].var(), 1 / 18, atol=0.01)  # Beta(1, 2)'s variance


def test_front_file_metrics_and_plot(tmp_path):
    pts = np.array([[0.0, 3.0], [1.0, 2.0], [0.5, 0.5], [3.0, 0.0]])
    weights = np.array([[0, 1], [0.5, 0.5], [0.6, 0.4], [1, 0]])
    known = np.array([[0.0, 3.0], [2.0, 2.0], [3.0, 0.0]])
    m = mo.front_metrics(pts, [-1, -1], mo.equally_spaced_weights(2, 10), known_front=known)
    assert m["cardinality"] == 3 and m["hypervolume"] == pytest.approx(4 * 1 + 2 * 2 + 1 * 1)
    assert m["known_hypervolume"] > m["hypervolume"] and m["igd"] == pytest.approx(1 / 3)
    path = mo.write_front(tmp_path / "front.json", pts, weights, m, env="mo:test")
    doc = mo.read_front(path)
    assert doc["pareto"] == [True, True, False, True] and doc["env"] == "mo:test"
    np.testing.assert_array_equal(doc["points"], pts)
    assert json.loads(path.read_text())["metrics"]["cardinality"] == 3
    assert not list(tmp_path.glob("*.tmp"))
    for k in (2, 3):
        png = mo.plot_front(tmp_path / f"front{k}.png", np.random.default_rng(0).normal(size=(8, k)))
        assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="2 or 3"):
        mo.plot_front(tmp_path / "x.png", np.zeros((3, 4)))
