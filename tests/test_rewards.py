"""The reward core's Shaper: running statistics, weights and decay, names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl.rewards import Constant, Decay, Extrinsic, Linear, RunningStats, Shaper, Stream


def test_running_stats_merge_equals_whole_data_moments():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(3.0, 2.0, size=(n, 4)).astype(np.float32) for n in (5, 17, 1, 40)]
    stats = RunningStats.zeros((4,))
    for c in chunks:
        stats = stats.merge(jnp.asarray(c), (0,))
    data = np.concatenate(chunks)
    np.testing.assert_allclose(stats.mean, data.mean(0), rtol=1e-4)
    np.testing.assert_allclose(stats.var, data.var(0), rtol=1e-3)
    host = RunningStats.zeros((4,)).host()  # the same merge in numpy, for host loops
    for c in chunks:
        host = host.merge(c, (0,))
    assert isinstance(host.mean, np.ndarray)
    np.testing.assert_allclose(host.mean, stats.mean, rtol=1e-5)
    np.testing.assert_allclose(host.var, stats.var, rtol=1e-4)


class Half:
    def init(self, key, spec):
        return ()

    def reward(self, state, batch):
        return 0.5 * batch["reward"]

    def update(self, state, batch, key):
        return state, {"calls": jnp.float32(1)}


def test_shaper_weights_decay_and_normalization():
    shaper = Shaper(
        (
            Stream("extrinsic", Extrinsic()),
            Stream("half", Half(), weight=Decay(2.0, 0.5), normalize="meanstd"),
        )
    )
    state = shaper.init(jax.random.PRNGKey(0), None)
    batch = {"reward": jnp.array([1.0, 3.0])}
    total, info = shaper.reward(state, batch)
    # before any update the stream's stats are the prior (mean 0, var 1): normalized == raw
    np.testing.assert_allclose(total, batch["reward"] + 2.0 * 0.5 * batch["reward"], rtol=1e-5)
    assert float(info["reward/half"]) == pytest.approx(1.0)
    state, metrics = shaper.update(state, batch, jax.random.PRNGKey(1))
    assert float(metrics["reward/half/calls"]) == 1.0
    total, info = shaper.reward(state, batch)
    s = state.stats["half"]
    norm = (0.5 * batch["reward"] - s.mean) / jnp.sqrt(s.var + 1e-8)
    np.testing.assert_allclose(total, batch["reward"] + 2.0 * 0.5 * norm, rtol=1e-5)  # weight decayed once
    np.testing.assert_allclose(info["reward/half_norm"], norm.mean(), atol=1e-5)


def test_shaper_refuses_duplicate_names_and_unknown_fusion():
    with pytest.raises(ValueError, match="unique"):
        Shaper((Stream("a", Extrinsic()), Stream("a", Extrinsic())))
    with pytest.raises(ValueError, match="unknown fusion"):
        Shaper(fuse="mean")
    with pytest.raises(ValueError, match="normalize"):
        Stream("a", Half(), normalize="minmax")


def test_schedules():
    assert float(Constant(0.3)(7)) == pytest.approx(0.3)
    lin = Linear(1.0, 0.0, 10)
    assert [float(lin(t)) for t in (0, 5, 10, 20)] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert float(Decay(0.05, 0.1)(3)) == pytest.approx(0.05 * 0.9**3)


class Value:
    """A fixed term returning ``batch[key]``."""

    def __init__(self, key):
        self.key = key

    def init(self, key, spec):
        return ()

    def reward(self, state, batch):
        return batch[self.key]

    def update(self, state, batch, key):
        return state, {}


def _batch(T=6, E=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "reward": jnp.asarray(rng.normal(size=(T, E)), jnp.float32),
        "a": jnp.asarray(rng.uniform(0.5, 2.0, size=(T, E)), jnp.float32),
        "b": jnp.asarray(rng.uniform(0.5, 2.0, size=(T, E)), jnp.float32),
        "terminated": jnp.zeros((T, E), bool),
    }


@pytest.mark.parametrize("fuse", ["sum", "product", "max", "cycle"])
def test_fusions_on_hand_made_streams(fuse):
    batch = _batch()
    streams = (
        Stream("extrinsic", Extrinsic()),
        Stream("a", Value("a"), weight=0.5),
        Stream("b", Value("b"), weight=2.0),
    )
    shaper = Shaper(streams, fuse=fuse, cycle_every=2, intrinsic_weight=0.1)
    state = shaper.init(jax.random.PRNGKey(0), None)
    a, b, r = (np.asarray(batch[k]) for k in ("a", "b", "reward"))
    for updates in range(5):
        expected = {
            "sum": 0.5 * a + 2.0 * b,
            "product": (0.5 * a) * (2.0 * b),
            "max": np.maximum(0.5 * a, 2.0 * b),
            "cycle": [0.5 * a, 2.0 * b][(updates // 2) % 2],  # switches every 2 updates
        }[fuse]
        total, info = shaper.reward(state, batch)
        np.testing.assert_allclose(total, r + 0.1 * expected, rtol=1e-5)
        np.testing.assert_allclose(info["reward/intrinsic"], 0.1 * expected.mean(), rtol=1e-5)
        state = shaper.update(state, batch, jax.random.PRNGKey(updates))[0]


def test_stream_normalizations_and_transforms():
    b1, b2 = _batch(seed=1), _batch(seed=2)
    streams = (
        Stream("std", Value("a"), normalize="std"),
        Stream("meanstd", Value("a"), normalize="meanstd"),
        Stream("ret", Value("a"), normalize="return", gamma=0.9),
        Stream("sym", Value("reward"), symlog=True, clip=0.5),
    )
    shaper = Shaper(streams)
    state = shaper.init(jax.random.PRNGKey(0), type("Spec", (), {"num_envs": 2})())
    for b in (b1, b2):
        state = shaper.update(state, b, jax.random.PRNGKey(0))[0]
    a = np.concatenate([np.asarray(b1["a"]), np.asarray(b2["a"])])  # [12, 2] in time order
    ret, rets = np.zeros(2), []
    for t in range(len(a)):  # RND's non-episodic discounted intrinsic return
        ret = 0.9 * ret + a[t]
        rets.append(ret.copy())
    _, info = shaper.reward(state, b2)
    x = np.asarray(b2["a"])
    np.testing.assert_allclose(info["reward/std_norm"], np.mean(x / a.std()), rtol=1e-3)
    np.testing.assert_allclose(
        info["reward/meanstd_norm"], np.mean((x - a.mean()) / a.std()), rtol=1e-3, atol=1e-4
    )
    np.testing.assert_allclose(info["reward/ret_norm"], np.mean(x / np.std(rets)), rtol=1e-3)
    r = np.asarray(b2["reward"])
    np.testing.assert_allclose(
        info["reward/sym_norm"], np.mean(np.clip(np.sign(r) * np.log1p(np.abs(r)), -0.5, 0.5)), rtol=1e-5
    )
