"""The reward core's Shaper: running statistics, weights and decay, names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl.rewards import Extrinsic, RunningStats, Shaper, Stream


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
        (Stream("extrinsic", Extrinsic()), Stream("half", Half(), weight=2.0, decay=0.5, normalize=True))
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
        Shaper(fuse="product")
