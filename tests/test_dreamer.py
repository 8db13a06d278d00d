"""Dreamer: the world model's distributions and losses against numpy transcriptions of
danijar/dreamerv3 (embodied/jax/outs.py, dreamerv3/agent.py), the time alignment of replay
chunks, the Shaper's reward reaching the reward head, one compilation, resume after SIGKILL."""

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import batch as batch_lib
from rl import config as config_lib
from rl import envs
from rl.agents import dreamer
from rl.models import rssm
from rl.replay import Replay

TINY = {
    "deter": 16, "hidden": 16, "stoch": 4, "classes": 4, "blocks": 2, "units": 16, "layers": 1,
    "batch_size": 4, "batch_length": 8, "imag_length": 4, "learning_starts": 64, "train_ratio": 32,
    "warmup": 0, "lr": 1e-3,
}  # fmt: skip


def _cfg(**over):
    return config_lib.build(dreamer.Config, overrides={"env": "gym:Pendulum-v1", **TINY, **over})


# -- distributions and returns ---------------------------------------------------------------


def np_twohot(target, bins):
    """embodied/jax/outs.py TwoHot.loss's target construction, in numpy."""
    below = np.clip((bins <= target[..., None]).sum(-1) - 1, 0, len(bins) - 1)
    above = np.clip(len(bins) - (bins > target[..., None]).sum(-1), 0, len(bins) - 1)
    equal = below == above
    d_below = np.where(equal, 1, np.abs(bins[below] - target))
    d_above = np.where(equal, 1, np.abs(bins[above] - target))
    total = d_below + d_above
    eye = np.eye(len(bins))
    return eye[below] * (d_above / total)[..., None] + eye[above] * (d_below / total)[..., None]


def test_symlog_symexp_and_twohot_round_trip():
    x = jnp.array([-1e4, -3.5, -1.0, 0.0, 0.3, 2.0, 777.0])
    np.testing.assert_allclose(rssm.symexp(rssm.symlog(x)), x, rtol=1e-5)
    bins = rssm.twohot_bins(255)
    assert bins.shape == (255,) and float(bins[127]) == 0.0 and np.allclose(bins, -bins[::-1])
    w = rssm.twohot(x, bins)
    np.testing.assert_allclose(w, np_twohot(np.asarray(x), np.asarray(bins)), atol=1e-6)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(
        (np.asarray(w) * np.asarray(bins)).sum(-1), x, rtol=1e-4
    )  # the two-hot's mean is the target
    # logits that put the two-hot's weights in place predict the target back
    np.testing.assert_allclose(rssm.twohot_mean(jnp.log(w + 1e-30), bins), x, rtol=1e-3)
    # uniform logits predict exactly 0 (the zero-initialised heads start at 0)
    assert float(rssm.twohot_mean(jnp.zeros((3, 255)), bins)[0]) == 0.0
    logits = jax.random.normal(jax.random.PRNGKey(0), (7, 255))
    ref = -(np_twohot(np.asarray(x), np.asarray(bins)) * jax.nn.log_softmax(logits)).sum(-1)
    np.testing.assert_allclose(rssm.twohot_loss(logits, x, bins), ref, rtol=1e-5)


def test_kl_balancing_and_free_bits_on_hand_made_categoricals():
    post = jnp.log(jnp.array([[[0.4, 0.2, 0.2, 0.2], [0.25, 0.25, 0.25, 0.25]]]))  # [1, S=2, C=4]
    prior = jnp.log(jnp.array([[[0.1, 0.3, 0.3, 0.3], [0.25, 0.25, 0.25, 0.25]]]))
    p, q = np.exp(np.asarray(post)), np.exp(np.asarray(prior))
    kl = float((p * (np.log(p) - np.log(q))).sum())  # summed over the latents
    dyn, rep = rssm.kl_losses(post, prior, free_nats=0.1)
    assert float(dyn[0]) == pytest.approx(kl, rel=1e-5) and float(rep[0]) == pytest.approx(kl, rel=1e-5)
    dyn, rep = rssm.kl_losses(post, prior, free_nats=1.0)  # kl ~ 0.31 < 1 nat: clipped, no gradient
    assert float(dyn[0]) == 1.0 and float(rep[0]) == 1.0
    g = jax.grad(lambda a, b: rssm.kl_losses(a, b, 1.0)[0].sum(), argnums=(0, 1))(post, prior)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in g)
    # balancing: dyn trains only the prior, rep only the posterior
    g_dyn = jax.grad(lambda a, b: rssm.kl_losses(a, b, 0.0)[0].sum(), argnums=(0, 1))(post, prior)
    g_rep = jax.grad(lambda a, b: rssm.kl_losses(a, b, 0.0)[1].sum(), argnums=(0, 1))(post, prior)
    assert float(jnp.abs(g_dyn[0]).max()) == 0.0 < float(jnp.abs(g_dyn[1]).max())
    assert float(jnp.abs(g_rep[1]).max()) == 0.0 < float(jnp.abs(g_rep[0]).max())


def test_unimix_keeps_every_class_above_its_floor():
    logits = jnp.array([[50.0, -50.0, -50.0, -50.0]])
    probs = jax.nn.softmax(rssm.unimix(logits, 0.01))
    np.testing.assert_allclose(probs[0], [0.99 + 0.0025, 0.0025, 0.0025, 0.0025], rtol=1e-5)


def np_lambda_return(last, term, rew, boot, disc, lam):
    """dreamerv3/agent.py lambda_return, in numpy."""
    rets = [boot[:, -1]]
    live = (1 - term)[:, 1:] * disc
    cont = (1 - last)[:, 1:] * lam
    interm = rew[:, 1:] + (1 - cont) * live * boot[:, 1:]
    for t in reversed(range(live.shape[1])):
        rets.append(interm[:, t] + live[:, t] * cont[:, t] * rets[-1])
    return np.stack(list(reversed(rets))[:-1], 1)


def test_lambda_return_matches_the_reference_loop_with_continue_flags():
    rng = np.random.default_rng(0)
    B, T = 3, 9
    rew, boot = rng.normal(size=(B, T)), rng.normal(size=(B, T))
    term = (rng.random((B, T)) < 0.2).astype(np.float32)
    last = np.maximum(term, (rng.random((B, T)) < 0.2)).astype(np.float32)
    got = rssm.lambda_return(*(jnp.asarray(x, jnp.float32) for x in (last, term, rew, boot)), 0.99, 0.95)
    np.testing.assert_allclose(got, np_lambda_return(last, term, rew, boot, 0.99, 0.95), rtol=1e-5, atol=1e-5)
    # lam = 1 without episode ends: the discounted sum of rewards plus the discounted last value
    z = np.zeros((1, 4), np.float32)
    r, v = np.array([[0.0, 1.0, 2.0, 3.0]], np.float32), np.array([[0.0, 0.0, 0.0, 10.0]], np.float32)
    got = rssm.lambda_return(jnp.asarray(z), jnp.asarray(z), jnp.asarray(r), jnp.asarray(v), 0.5, 1.0)
    assert float(got[0, 0]) == pytest.approx(1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 10)


def test_percentile_return_scale_matches_numpy():
    ret = jax.random.normal(jax.random.PRNGKey(1), (64, 15)) * 30.0
    norm, scale = dreamer.percentile_scale(jnp.array([1.0, 2.0]), ret, 0.01)
    lo, hi = np.percentile(np.asarray(ret), 5), np.percentile(np.asarray(ret), 95)
    np.testing.assert_allclose(norm, [0.99 * 1 + 0.01 * lo, 0.99 * 2 + 0.01 * hi], rtol=1e-5)
    assert float(scale) == pytest.approx(max(1.0, float(norm[1] - norm[0])))
    assert float(dreamer.percentile_scale(jnp.zeros(2), ret * 0, 0.01)[1]) == 1.0  # floor 1


def test_laprop_and_agc_match_numpy():
    params = {"w": jnp.array([3.0, 4.0]), "b": jnp.array([0.0])}
    grads = [
        {"w": jnp.array([1.0, -2.0]), "b": jnp.array([5.0])},
        {"w": jnp.array([0.5, 0.5]), "b": jnp.array([-1.0])},
    ]
    tx = dreamer.scale_by_laprop(0.9, 0.999, 1e-20)
    state = tx.init(params)
    nu, mu = {k: 0.0 for k in params}, {k: 0.0 for k in params}
    for i, g in enumerate(grads, 1):
        out, state = tx.update(g, state)
        for k in params:
            gk = np.asarray(g[k])
            nu[k] = 0.999 * nu[k] + 0.001 * gk**2
            mu[k] = 0.9 * mu[k] + 0.1 * gk / np.sqrt(nu[k] / (1 - 0.999**i))
            np.testing.assert_allclose(out[k], mu[k] / (1 - 0.9**i), rtol=1e-5)
    clipped, _ = dreamer.clip_by_agc(0.3).update(grads[0], None, params)
    # ||g_w|| = sqrt(5) > 0.3 * ||w|| = 1.5: scaled to norm 1.5; b's norm is 0: the floor 1e-3
    assert float(jnp.linalg.norm(clipped["w"])) == pytest.approx(1.5, rel=1e-5)
    assert float(jnp.linalg.norm(clipped["b"])) == pytest.approx(0.3e-3, rel=1e-4)


# -- time alignment --------------------------------------------------------------------------


def _hand_made_replay():
    """One env; obs value v, action v, reward of (v -> v+1) = 10 + v (episode A, terminated at
    obs 3) and 20 + v - 100 (episode B, truncated at obs 102), then an open episode C."""
    spec = envs.EnvSpec("hand", 1, (1,), "float32", gym.spaces.Discrete(256), (), None)
    replay = Replay.from_spec(spec, 64)
    rs = replay.init()
    steps = [(0, 10, 0, 0), (1, 11, 0, 0), (2, 12, 1, 0), (100, 20, 0, 0), (101, 21, 0, 1)]
    steps += [(200 + i, 30 + i, 0, 0) for i in range(6)]
    for v, r, term, trunc in steps:
        nxt = v + 1
        rs = replay.add(rs, obs=np.full((1, 1), v, np.float32), action=np.array([v]), reward=np.array([float(r)]),
                        terminated=np.array([bool(term)]), truncated=np.array([bool(trunc)]),
                        next_obs=np.full((1, 1), nxt, np.float32))  # fmt: skip
    return spec, replay, rs


def test_each_latent_predicts_the_reward_of_the_transition_into_it():
    spec, replay, rs = _hand_made_replay()
    cfg = _cfg()
    nets = dreamer.networks(cfg, spec)
    batch = replay.sample_chunks(rs, jax.random.PRNGKey(0), 256, 5)
    data = dreamer.model_inputs(nets, spec, batch, batch.reward)
    reward = {1: 10, 2: 11, 3: 12, 100: 0, 101: 20, 102: 21, 200: 0, **{201 + i: 30 + i for i in range(5)}}
    seen = set()
    for b in range(256):
        for k in range(5):
            v = int(data.obs[b, k, 0])
            seen.add(v)
            assert float(data.reward[b, k]) == reward[v], (v, float(data.reward[b, k]))
            assert bool(data.first[b, k]) == (v in (100, 200)), v
            assert bool(data.term[b, k]) == (v == 3) and bool(data.last[b, k]) == (v in (3, 102))
            prev = np.asarray(data.prev_action[b, k])
            if v in (100, 200):
                assert prev.sum() == 0  # an episode's first latent has no previous action
            else:
                assert int(prev.argmax()) == v - 1 and prev.sum() == 1
    assert seen >= {1, 2, 3, 100, 101, 102, 200, 201}  # chunks run across both episode ends


@pytest.fixture(scope="module")
def compiled():
    """One compiled update on Pendulum-sized chunks [4, 8], its Shaper from config: the
    smoothed env reward (``shaper.smoothing=gaussian``) and Plan2Explore's latent disagreement,
    shared by the tests below (a compile takes seconds)."""
    p2e = {"terms": ["plan2explore"], "streams": {"plan2explore": {"hidden": [16], "members": 3}}}
    cfg = _cfg(lr=3e-3, shaper={"smoothing": "gaussian", **p2e})
    spec = envs.make_spec(cfg.env, 1, 0)
    nets = dreamer.networks(cfg, spec)
    shaper = dreamer.build_shaper(cfg)
    assert shaper.streams[0].term.reads == {"smoothed_reward"}
    step = jax.jit(lambda s, b: dreamer.update(cfg, spec, nets, shaper, s, b))
    return cfg, spec, nets, shaper, step


def _chunks(rng, reward, smoothed, B=4, T=8):
    obs = rng.normal(size=(B, T + 1, 3)).astype(np.float32)
    return batch_lib.sequences(
        jnp.asarray(obs[:, :-1]), jnp.asarray(rng.uniform(-2, 2, (B, T, 1)), jnp.float32), jnp.asarray(reward),
        jnp.asarray(obs[:, 1:]), np.zeros((B, T), bool), np.zeros((B, T), bool),
        smoothed_reward=jnp.asarray(smoothed, jnp.float32))  # fmt: skip


def test_the_reward_head_target_is_the_shaper_total_and_smoothing_changes_only_it(compiled):
    """One compiled update on two batches that differ only in the smoothed field: the reward
    head moves differently, the decoder (whose loss sees no reward) identically. Fails if the
    update trained the reward head on ``batch.reward`` instead of the Shaper's total."""
    cfg, spec, nets, shaper, step = compiled
    state = dreamer.init(cfg, spec, jax.random.PRNGKey(0), shaper)
    reward = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    plain = _chunks(np.random.default_rng(1), reward, reward)
    smoothed = _chunks(np.random.default_rng(1), reward, reward[:, ::-1] * 5.0)
    a, ma = step(state, plain)
    b, mb = step(state, smoothed)
    differ = jax.tree.map(lambda x, y: float(jnp.abs(x - y).max()), a.params, b.params)
    assert max(jax.tree.leaves(differ["rew"])) > 0
    assert max(jax.tree.leaves(differ["dec"])) == 0.0
    assert float(ma["reward/extrinsic"]) == pytest.approx(reward.mean(), rel=1e-5)
    assert float(mb["reward/extrinsic"]) == pytest.approx(5 * reward.mean(), rel=1e-5)


# -- the world model and imagination ---------------------------------------------------------


def test_world_model_loss_decreases_on_a_fixed_batch_and_the_reward_head_fits_it(compiled):
    cfg, spec, nets, shaper, step = compiled
    state = dreamer.init(cfg, spec, jax.random.PRNGKey(0), shaper)
    batch = _chunks(np.random.default_rng(1), np.zeros((4, 8), np.float32), np.zeros((4, 8), np.float32))
    reward = batch.next_obs[..., 0] * 3.0  # a function of the latent's own observation
    batch = batch.replace(reward=reward, extras={"smoothed_reward": reward})
    first = None
    for _ in range(300):
        state, m = step(state, batch)
        first = first or {k: float(m[k]) for k in ("loss/rec", "loss/rew", "loss/dyn")}
    assert float(m["loss/rec"]) < 0.5 * first["loss/rec"]
    assert float(m["loss/rew"]) < 0.5 * first["loss/rew"]
    data = dreamer.model_inputs(nets, spec, batch, reward)
    pred = jax.jit(lambda p: dreamer.reward_predictions(cfg, nets, p, data, jax.random.PRNGKey(2)))(
        state.params
    )
    err = float(jnp.abs(pred - reward).mean())
    assert err < 0.4 * float(jnp.abs(reward).mean()), err  # the reward head reads next_obs's latent


def test_imagination_shapes_and_continue_weights():
    cfg = _cfg()
    spec = envs.make_spec("gym:CartPole-v1", 1, 0)
    nets = dreamer.networks(cfg, spec)
    state = dreamer.init(cfg, spec, jax.random.PRNGKey(0))
    N = 6
    deter, stoch = jnp.zeros((N, cfg.deter)), jax.nn.one_hot(jnp.zeros((N, cfg.stoch), int), cfg.classes)
    feats, actions = jax.jit(lambda p: dreamer.imagine(cfg, nets, p, deter, stoch, jax.random.PRNGKey(1)))(
        state.params
    )
    assert feats.shape == (N, cfg.imag_length + 1, cfg.deter + cfg.stoch * cfg.classes)
    assert actions.shape == (N, cfg.imag_length + 1, 2) and bool((actions.sum(-1) == 1).all())  # one-hot
    env_actions = dreamer.to_env_action(nets, spec, actions[:, 0])
    assert env_actions.dtype == jnp.int32 and bool((env_actions == actions[:, 0].argmax(-1)).all())
    np.testing.assert_array_equal(feats[:, 0], rssm.features(deter, stoch))  # index 0 is the start
    # the continue head says "terminal" everywhere: every step after the start weighs ~0
    params = dict(state.params)
    params["con"] = jax.tree.map(lambda x: jnp.full_like(x, -0.0), params["con"])
    params["con"]["Dense_0"]["bias"] = jnp.full_like(params["con"]["Dense_0"]["bias"], -30.0)
    losses = jax.jit(lambda p: dreamer.actor_critic_losses(
        cfg, nets, p, state.slow_critic, state.retnorm, feats, actions, rssm.twohot_bins(cfg.bins)))  # fmt: skip
    policy, value, ret, _, _ = losses(params)
    assert ret.shape == (N, cfg.imag_length)
    assert float(jnp.abs(policy).max()) < 1e-10 and float(jnp.abs(value).max()) < 1e-10


# -- the agent end to end --------------------------------------------------------------------


def test_bad_input_fails_before_a_run_exists(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="train_ratio"):
        _cfg(train_ratio=48)  # 48 / 32 updates per step is not whole
    with pytest.raises(config_lib.ConfigError, match="learning_starts"):
        _cfg(learning_starts=8)
    cfg = _cfg(env="minigrid:MiniGrid-Empty-5x5-v0", runs_dir=str(tmp_path))
    with pytest.raises(ValueError, match="Dreamer's CNN needs image sides divisible by 16"):
        dreamer.train(cfg)
    assert not (tmp_path / "default").exists()


def test_the_cnn_encoder_and_decoder_fit_64x64_frames(strided=False):
    """The pixel path: 64x64 uint8 frames through the CNN encoder (down to 4x4) and back; a
    few steps on the reconstruction loss of real DMC frames halve it. (The strided variant's
    layers are checked against lax below; its shapes there too.)"""
    import optax

    env, _ = envs.make("dmc:cartpole-balance", 1, 0, pixels=True)
    frames = [env.reset(seed=0)[0]]
    for _ in range(3):
        frames.append(env.step(np.zeros((1, 1), np.float32))[0])
    env.close()
    obs = jnp.asarray(np.concatenate(frames))  # [4, 64, 64, 3] uint8
    enc = rssm.Encoder(True, depth=2, strided=strided)
    dec = rssm.Decoder((64, 64, 3), True, depth=2, strided=strided)
    # jitted init and apply: the eager op-by-op path takes seconds per conv stack
    params = {"enc": jax.jit(enc.init)(jax.random.PRNGKey(0), obs)["params"]}
    embed = jax.jit(enc.apply)({"params": params["enc"]}, obs)
    assert embed.shape == (4, 4 * 4 * 2 * 4)
    params["dec"] = jax.jit(dec.init)(jax.random.PRNGKey(1), embed)["params"]
    tx = optax.adam(3e-3)

    def loss(p):
        pred = dec.apply({"params": p["dec"]}, enc.apply({"params": p["enc"]}, obs))
        return rssm.reconstruction_loss(True, pred, obs).mean()

    @jax.jit
    def step(p, o):
        value, g = jax.value_and_grad(loss)(p)
        u, o = tx.update(g, o)
        return optax.apply_updates(p, u), o, value

    opt, first = tx.init(params), None
    for _ in range(40):
        params, opt, value = step(params, opt)
        first = first or float(value)
    assert float(value) < 0.5 * first


def test_strided_convolutions_match_lax_and_upsampling_lays_out_2x2_blocks():
    """``conv_same(stride=2)`` is ``lax.conv`` with SAME padding; ``upsample_conv`` puts the
    3x3 convolution's channels (a, b, c) at output pixel (2i + a, 2j + b), channel c; the
    strided encoder and decoder keep the pooled ones' shapes."""
    import flax.linen as nn

    obs = jax.ShapeDtypeStruct((4, 64, 64, 3), jnp.uint8)
    enc = rssm.Encoder(True, depth=2, strided=True)
    dec = rssm.Decoder((64, 64, 3), True, depth=2, strided=True)
    embed = jax.eval_shape(lambda o: enc.apply(enc.init(jax.random.PRNGKey(0), o), o), obs)
    assert embed.shape == (4, 4 * 4 * 2 * 4)
    image = jax.eval_shape(lambda e: dec.apply(dec.init(jax.random.PRNGKey(0), e), e), embed)
    assert image.shape == (4, 64, 64, 3)

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
    dn = ("NHWC", "HWIO", "NHWC")

    class Down(nn.Module):
        @nn.compact
        def __call__(self, x):
            return rssm.conv_same(5, 4, x, stride=2)

    class Up(nn.Module):
        @nn.compact
        def __call__(self, x):
            return rssm.upsample_conv(5, x)

    for module, stride, shape in ((Down(), 2, (2, 8, 8, 5)), (Up(), 1, (2, 32, 32, 5))):
        params = module.init(jax.random.PRNGKey(1), x)
        y = jax.jit(module.apply)(params, x)
        k, b = params["params"]["MatmulConv_0"]["kernel"], params["params"]["MatmulConv_0"]["bias"]
        conv = partial(
            jax.lax.conv_general_dilated,
            window_strides=(stride, stride),
            padding="SAME",
            dimension_numbers=dn,
        )
        ref = jax.jit(conv)(x, k)
        ref = np.asarray(ref) + np.asarray(b)
        assert y.shape == shape
        if stride == 2:
            np.testing.assert_allclose(y, ref, atol=1e-5)
        else:
            blocks = np.asarray(ref).reshape(2, 16, 16, 2, 2, 5)
            for a in (0, 1):
                for c in (0, 1):
                    np.testing.assert_allclose(y[:, a::2, c::2, :], blocks[:, :, :, a, c, :], atol=1e-5)


def test_sigkill_then_resume_with_one_compile_per_step_program(tmp_path, sigkill_after_checkpoint):
    """Killed after its first checkpoint (still collecting), resumed to the end; the resumed
    process compiles its two step programs (collect, learn) once each, however many updates
    it runs."""
    run = tmp_path / "t" / "k"
    over = [f"{k}={v}" for k, v in TINY.items()]
    cmd = [sys.executable, "-m", "rl.cli", "train", "dreamer", "--env", "gym:Pendulum-v1", *over,
           "total_steps=120", "log_every=20", "checkpoint_every=40", "eval_episodes=1", f"runs_dir={tmp_path}",
           "experiment=t", "run_name=k"]  # fmt: skip
    sigkill_after_checkpoint(cmd, run, settle=0.5)
    env = {**os.environ, "JAX_LOG_COMPILES": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "rl.cli", "resume", str(run)], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.count("Finished XLA compilation of jit(train_step)") == 2
    rows = [json.loads(x) for x in open(run / "metrics.jsonl")]
    steps = [r["step"] for r in rows if "perf/sps" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 120
    assert rows[-2]["perf/updates"] == 120 - 64 + 1 and "loss/rec" in rows[-2]
    assert np.isfinite(json.loads((run / "summary.json").read_text())["eval/episode_return"])
    # DreamSmooth's diagnostic reads the checkpoint: held-out episodes and the reward head's plot
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
    import dreamsmooth

    rows = dreamsmooth.diagnose([run], episodes=1)
    assert rows["k"]["events"] == {} and (run / "rewards.png").stat().st_size > 0  # Pendulum: no events


def test_chunk_episode_starts_fall_on_each_episodes_first_observation():
    """Episodic terms (E3B, NGU) on Dreamer's chunks: the step after an episode's final slot
    starts the next episode (its obs is the first observation), so no memory carries over."""
    spec, replay, rs = _hand_made_replay()
    batch = replay.sample_chunks(rs, jax.random.PRNGKey(0), 64, 6)
    starts = np.asarray(batch.episode_starts())
    for b in range(64):
        for k in range(1, 6):
            v = int(batch.obs[b, k, 0])
            if v in (100, 200):  # first observations of episodes B and C
                assert starts[b, k], (b, k, v)
            elif bool(batch.mask[b, k]) and v not in (3, 102):
                assert not starts[b, k], (b, k, v)


# -- Plan2Explore: latent disagreement ---------------------------------------------------------


def _latent_batch(rng, B=3, T=5, F=12, A=2, S=8, mask=None):
    return dreamer.latent_sequences(
        jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32),
        jnp.asarray(rng.normal(size=(B, T, A)), jnp.float32),
        jnp.ones((B, T), bool) if mask is None else mask,
        jnp.zeros((B, T), bool),
        next_stoch=jnp.asarray(rng.integers(0, 2, (B, T, S)), jnp.float32),
    )


def _latent_spec(F=12, A=2, S=8):
    spec = envs.make_spec("gym:Pendulum-v1", 1, 0)
    import dataclasses

    return dataclasses.replace(spec, fields={"latent": (F,), "latent_action": (A,), "next_stoch": (S,)})


def test_plan2explore_is_the_members_std_and_novel_latents_score_higher():
    """The bonus against each member applied on its own (numpy std over members, mean over
    units: the reference's ``preds.std(0).mean(-1)``); masked samples train nothing; after
    training on one batch its latents score below unseen ones."""
    from rl.rewards.latent import LatentDisagreement, Member

    term = LatentDisagreement(members=3, hidden=(16,), lr=3e-3)
    state = term.init(jax.random.PRNGKey(0), _latent_spec())
    seen = _latent_batch(np.random.default_rng(0))
    r = np.asarray(jax.jit(term.reward)(state, seen))
    x = np.concatenate([np.asarray(seen.extras["latent"]), np.asarray(seen.extras["latent_action"])], -1)
    preds = np.stack([
        np.asarray(Member((16,), 8).apply({"params": jax.tree.map(lambda p, k=k: p[k], state.params)}, x))
        for k in range(3)
    ])  # fmt: skip
    np.testing.assert_allclose(r, preds.std(0).mean(-1), rtol=1e-5, atol=1e-6)
    update = jax.jit(term.update)
    masked, _ = update(state, seen.replace(mask=jnp.zeros((3, 5), bool)), jax.random.PRNGKey(1))
    assert all(
        bool((a == b).all()) for a, b in zip(jax.tree.leaves(masked.params), jax.tree.leaves(state.params))
    )
    for i in range(150):
        state, m = update(state, seen, jax.random.PRNGKey(i))
    novel = _latent_batch(np.random.default_rng(1))
    assert float(term.reward(state, seen).mean()) < 0.5 * float(term.reward(state, novel).mean())


def test_plan2explore_needs_a_world_model_and_is_refused_elsewhere(tmp_path):
    from rl.agents import ppo

    cfg = config_lib.build(
        ppo.Config,
        overrides={
            "env": "gym:CartPole-v1",
            "runs_dir": str(tmp_path),
            "shaper": {"terms": ["plan2explore"]},
        },
    )
    with pytest.raises(ValueError, match="reads \\['latent', 'latent_action', 'next_stoch'\\].*world model"):
        ppo.train(cfg)
    assert not any(tmp_path.iterdir())


def test_replayed_latents_pair_each_state_with_the_action_taken_from_it():
    """On the hand-made replay: the transition into latent k reads latent k - 1 (whose
    observation the action was taken from) and z_k; the step into an episode's first latent
    is masked. Fails if the latent were feature k (the successor) or the mask ignored firsts."""
    spec, replay, rs = _hand_made_replay()
    cfg = _cfg()
    nets = dreamer.networks(cfg, spec)
    batch = replay.sample_chunks(rs, jax.random.PRNGKey(0), 64, 5)
    data = dreamer.model_inputs(nets, spec, batch, batch.reward)
    value = data.obs[..., 0]  # stand-in latents that say which observation they encode
    deter = jnp.broadcast_to(value[..., None], (*value.shape, cfg.deter))
    stoch = jnp.broadcast_to(value[..., None, None], (*value.shape, cfg.stoch, cfg.classes))
    lat = dreamer.replayed_latents(data, deter, stoch)
    assert lat.lead == (64, 4)
    np.testing.assert_array_equal(lat.mask, ~data.first[:, 1:])
    m = np.asarray(lat.mask)
    v_from, v_to = np.asarray(value[:, :-1]), np.asarray(value[:, 1:])
    np.testing.assert_array_equal(np.asarray(lat.extras["latent"])[..., 0][m], v_from[m])
    np.testing.assert_array_equal(np.asarray(lat.extras["next_stoch"])[..., 0][m], v_to[m])
    np.testing.assert_array_equal(np.asarray(lat.extras["latent_action"]).argmax(-1)[m], v_from[m])
    assert (v_to[m] == v_from[m] + 1).all() and (~m).any()


def test_the_latent_bonus_of_step_i_is_added_where_the_reward_head_predicts_step_i():
    """``imagined_bonus`` with a fixed latent term (bonus = latent[..., 0]) puts the bonus of
    the step from feature i at index i + 1, weighted; the imagined returns grow by it."""
    from rl.rewards import Shaper, Stream
    from rl.rewards.term import Fixed

    class First(Fixed):
        reads = frozenset({"latent"})

        def reward(self, state, batch):
            return batch.get("latent")[..., 0]

    explore = Shaper((Stream("first", First(), weight=0.5),))
    rng = np.random.default_rng(0)
    feats, actions = jnp.asarray(rng.normal(size=(4, 6, 5)), jnp.float32), jnp.zeros((4, 6, 2))
    bonus = dreamer.imagined_bonus(explore, explore.init(jax.random.PRNGKey(0), None), feats, actions, 0)
    np.testing.assert_allclose(bonus[:, 0], 0.0)
    np.testing.assert_allclose(bonus[:, 1:], 0.5 * feats[:, :-1, 0], rtol=1e-6)
    cfg = _cfg()
    spec = envs.make_spec("gym:CartPole-v1", 1, 0)
    nets = dreamer.networks(cfg, spec)
    state = dreamer.init(cfg, spec, jax.random.PRNGKey(0))
    feats = jnp.zeros((4, cfg.imag_length + 1, cfg.deter + cfg.stoch * cfg.classes))
    actions = jax.nn.one_hot(jnp.zeros((4, cfg.imag_length + 1), int), 2)
    losses = jax.jit(lambda b: dreamer.actor_critic_losses(
        cfg, nets, state.params, state.slow_critic, state.retnorm, feats, actions, rssm.twohot_bins(cfg.bins), b))  # fmt: skip
    plain, more = losses(None)[2], losses(jnp.ones((4, cfg.imag_length + 1)))[2]
    assert float((more - plain).min()) > 0.9  # at least the next step's bonus of 1


def test_dreamer_trains_plan2explore_from_config_and_its_bonus_reaches_imagination(compiled):
    cfg, spec, nets, shaper, step = compiled
    real, explore = dreamer.split_shaper(shaper)
    assert [s.name for s in real.streams] == ["extrinsic"] and [s.name for s in explore.streams] == [
        "plan2explore"
    ]
    assert explore.streams[0].weight(0) == 0.1  # the reference's expl_rewards.disag
    state = dreamer.init(cfg, spec, jax.random.PRNGKey(0), shaper)
    rng = np.random.default_rng(0)
    reward = rng.normal(size=(4, 8)).astype(np.float32)
    new, m = step(state, _chunks(rng, reward, reward))
    assert float(m["dreamer/imag_bonus"]) > 0 and np.isfinite(float(m["reward/plan2explore"]))
    assert float(m["reward/extrinsic"]) == pytest.approx(reward.mean(), rel=1e-5)  # the head's target
    assert "reward/plan2explore/loss" in m
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new.explore.terms, state.explore.terms)
    assert max(jax.tree.leaves(moved)) > 0  # the ensemble trained on the posterior latents


class _Bandit(gym.Env):
    """16 steps of reward 1 - |a - 0.6| for a 1-D action in [-1, 1]."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([1.0, 0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        reward = 1.0 - abs(float(action[0]) - 0.6)
        return np.array([1.0, self.t / 16], np.float32), reward, False, self.t >= 16, {}


@pytest.mark.optimized  # execution-bound: XLA level 2 (tests/conftest.py)
def test_dreamer_learns_a_continuous_bandit_through_imagination(tmp_path):
    """The whole path (replay chunks, world model, reward head, imagination, the actor's
    REINFORCE loss, LaProp) moves the policy: a random policy scores about 3 of 16, a learned
    one over 9 within 800 env steps (400 updates: 9.8 at seed 0). Flipping the policy loss's
    sign scores about -9. (Zeroing
    the imagined rewards alone does not break it: the critic's replayed returns, ``repval``,
    still carry the real rewards into the advantages.)"""
    gym.register("RewardlabDreamerBandit-v0", entry_point=_Bandit)
    over = {"env": "gym:RewardlabDreamerBandit-v0", "deter": 32, "hidden": 32, "stoch": 8, "classes": 4,
            "blocks": 2, "units": 32, "layers": 2, "batch_size": 8, "batch_length": 16, "imag_length": 8,
            "learning_starts": 160, "train_ratio": 64, "warmup": 0, "lr": 1e-3, "total_steps": 800,
            "log_every": 160, "eval_episodes": 2, "runs_dir": str(tmp_path)}  # fmt: skip
    summary = dreamer.train(config_lib.build(dreamer.Config, overrides=over))
    rows = [json.loads(x) for x in open(summary["metrics"])]
    assert rows[0]["train/episode_return"] < 5, rows[0]  # the untrained policy
    assert summary["eval/episode_return"] > 9, summary
