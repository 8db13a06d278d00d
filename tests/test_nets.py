"""Shared network pieces against flax's own: the numpy MLP, the matmul convolution and pooling."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl.nets import MLP, MatmulConv, max_pool_2x2, mlp_numpy


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


@pytest.mark.parametrize(
    "shape,kernel,stride",
    [
        ((5, 7, 7, 3), 2, 1),  # GridCNN
        ((2, 3, 6, 5, 4), 2, 1),  # leading axes; odd sizes
        ((2, 84, 84, 4), 8, 4),  # the Nature CNN's three layers
        ((2, 20, 20, 5), 4, 2),
        ((2, 9, 9, 6), 3, 1),
        ((2, 23, 22, 3), 4, 2),  # sizes that leave rows and columns VALID never reads
    ],
)
def test_matmul_conv_and_max_pool_match_flax(shape, kernel, stride):
    """The matmul convolution and reshape pooling: same parameters, values and gradients."""
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    ours = MatmulConv(8, kernel, stride)
    ref = nn.Conv(8, (kernel, kernel), (stride, stride), padding="VALID")
    params = ref.init(jax.random.PRNGKey(1), x)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)) == jax.tree.map(jnp.shape, params)

    def loss(net, pool):
        return lambda p, x: jnp.sum(jnp.sin(pool(net.apply(p, x))))

    f_ours = loss(ours, max_pool_2x2)
    f_ref = loss(ref, lambda y: nn.max_pool(y, (2, 2), (2, 2)))
    np.testing.assert_allclose(jax.jit(f_ours)(params, x), jax.jit(f_ref)(params, x), rtol=1e-4)
    g_ours = jax.jit(jax.grad(f_ours, (0, 1)))(params, x)  # compiled: the eager op-by-op path is slow
    g_ref = jax.jit(jax.grad(f_ref, (0, 1)))(params, x)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_rlexplores_minigrid_encoder_is_its_layers_on_obs_over_255():
    """rllte's MinigridEncoder: 2x2 VALID convs 16-32-64 with ReLU on obs / 255, then Dense 512
    + ReLU (fails if the scaling or a ReLU goes missing)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rl.nets import MinigridEncoder

    x = jnp.asarray(np.random.default_rng(0).integers(0, 11, (3, 7, 7, 2)), jnp.uint8)
    enc = MinigridEncoder()
    p = enc.init(jax.random.PRNGKey(0), x)["params"]
    h = x.astype(jnp.float32) / 255.0
    for i, c in enumerate((16, 32, 64)):
        h = nn.relu(nn.Conv(c, (2, 2), padding="VALID").apply({"params": p[f"Conv_{i}"]}, h))
    h = nn.relu(h.reshape(3, -1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"][None])
    out = enc.apply({"params": p}, x)
    assert out.shape == (3, 512)
    np.testing.assert_allclose(out, h, rtol=1e-4, atol=1e-6)


def test_minigrid_encoder_inits_follow_rllte():
    """rllte's agent initializes its whole policy orthogonally (``rllte/common/initialization.py``:
    conv gain sqrt(2), linear gain 1, zero biases), its reward modules keep torch's default
    (weights and biases U(+-1/sqrt(fan_in))). Fails if a law, a gain or a fan-in is wrong, or if
    the agent's torso (``encoder_for(torso="rlexplore")``) scales its raw ids or uses another init."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rl.nets import MinigridEncoder, encoder_for

    x = jnp.zeros((1, 7, 7, 2), jnp.float32)
    p = MinigridEncoder(weight_init="orthogonal").init(jax.random.PRNGKey(0), x)["params"]
    fans = {"Conv_0": 8, "Conv_1": 64, "Conv_2": 128, "Dense_0": 4 * 4 * 64}
    for name, fan in fans.items():
        w = np.asarray(p[name]["kernel"]).reshape(fan, -1)
        gain2 = 2.0 if name.startswith("Conv") else 1.0
        small = w @ w.T if w.shape[0] < w.shape[1] else w.T @ w  # orthonormal along the shorter side
        np.testing.assert_allclose(small, gain2 * np.eye(len(small)), atol=1e-4)
        assert not np.asarray(p[name]["bias"]).any()
    p = MinigridEncoder(weight_init="torch").init(jax.random.PRNGKey(0), x)["params"]
    for name, fan in fans.items():
        bound = 1 / np.sqrt(fan)
        for leaf in (p[name]["kernel"], p[name]["bias"]):
            leaf = np.asarray(leaf)
            assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > 0.9 * bound, name
        assert np.std(p[name]["kernel"]) == pytest.approx(bound / np.sqrt(3), rel=0.1)
    agent = encoder_for((7, 7, 2), torso="rlexplore")
    assert (agent.scale, agent.weight_init) == (False, "orthogonal")
    with pytest.raises(ValueError, match="unknown MinigridEncoder init"):
        MinigridEncoder(weight_init="xavier").init(jax.random.PRNGKey(0), x)
