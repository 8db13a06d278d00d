"""Shared network pieces: the numpy MLP against flax's."""

import jax
import numpy as np
import pytest

from rl.nets import MLP, mlp_numpy


@pytest.mark.parametrize(
    "activation,np_activation", [(jax.nn.tanh, np.tanh), (jax.nn.relu, lambda x: np.maximum(x, 0))]
)
def test_mlp_numpy_matches_flax(activation, np_activation):
    x = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    net = MLP((32, 16), 3, activation)
    params = net.init(jax.random.PRNGKey(0), x)["params"]
    expected = net.apply({"params": params}, x)
    got = mlp_numpy(jax.device_get(params), x, np_activation)
    assert got.shape == (5, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
