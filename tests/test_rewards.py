"""The reward core's Shaper: running statistics, weights and schedules of env steps, fusions,
normalizations, vector rewards and scalarization, the batch contract's field checks, the
config registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import batch as batch_lib
from rl import config as config_lib
from rl.rewards import Constant, Decay, Extrinsic, Fixed, Linear, RunningStats, Shaper, Stream, from_config
from rl.rewards.config import ShaperConfig


def trans(reward, **extras):
    reward = jnp.asarray(reward, jnp.float32)
    n = reward.shape[0]
    z = jnp.zeros((n, 1))
    return batch_lib.transitions(z, jnp.zeros(n), reward, z, jnp.zeros(n, bool), jnp.zeros(n, bool), **extras)


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
    reads = frozenset({"reward"})
    calls = 0  # reward() calls, counted on the class (un-jitted use)

    def init(self, key, spec):
        return ()

    def reward(self, state, batch):
        Half.calls += 1
        return 0.5 * batch.reward

    def update(self, state, batch, key):
        return state, {"calls": jnp.float32(1)}


def test_shaper_weights_decay_and_normalization_before_use():
    shaper = Shaper(
        (
            Stream("extrinsic", Extrinsic()),
            Stream("half", Half(), weight=Decay(2.0, 0.5), normalize="meanstd"),
        )
    )
    state = shaper.init(jax.random.PRNGKey(0), None)
    batch = trans([1.0, 3.0])
    r = np.asarray(batch.reward)
    rewards = shaper(state, batch, 0)
    # the pure call uses the prior statistics (mean 0, var 1): normalized == raw, weight 2 at t=0
    np.testing.assert_allclose(rewards.total, r + 2.0 * 0.5 * r, rtol=1e-5)
    assert float(rewards.means()["reward/half"]) == pytest.approx(1.0)
    Half.calls = 0
    state, rewards, metrics = shaper.step(state, batch, jax.random.PRNGKey(1), 3)
    assert Half.calls == 1  # each term's reward is computed once per call
    assert float(metrics["reward/half/calls"]) == 1.0
    s = state.stats["half"]  # the batch is folded in *before* it is normalized (as the references)
    assert float(s.mean) == pytest.approx(1.0, rel=1e-3)
    norm = (0.5 * r - np.asarray(s.mean)) / np.sqrt(np.asarray(s.var) + 1e-8)
    np.testing.assert_allclose(rewards.total, r + 2.0 * 0.5**3 * norm, rtol=1e-4, atol=1e-5)  # w(t=3)
    np.testing.assert_allclose(rewards.means()["reward/half_norm"], norm.mean(), atol=1e-5)
    assert float(rewards.means()["reward/half_weight"]) == pytest.approx(2.0 * 0.5**3)


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
    # a per-env-step kappa over millions of steps stays exact in float32
    assert float(Decay(1.0, 2.45e-6)(2_000_000)) == pytest.approx((1 - 2.45e-6) ** 2_000_000, rel=1e-4)


class Value(Fixed):
    """A fixed term returning the batch's field ``key``."""

    def __init__(self, key):
        self.key = key
        self.reads = frozenset({key})

    def reward(self, state, batch):
        return batch.get(self.key)


def _batch(T=6, E=2, seed=0):
    """A PPO-style rollout [T, E] as Sequences [E, T] (rollout=True), extras a and b."""
    rng = np.random.default_rng(seed)
    data = {
        "obs": np.zeros((T, E, 1), np.float32), "next_obs": np.zeros((T, E, 1), np.float32),
        "action": np.zeros((T, E)), "reward": rng.normal(size=(T, E)).astype(np.float32),
        "a": rng.uniform(0.5, 2.0, size=(T, E)).astype(np.float32),
        "b": rng.uniform(0.5, 2.0, size=(T, E)).astype(np.float32),
        "terminated": np.zeros((T, E), bool), "truncated": np.zeros((T, E), bool),
    }  # fmt: skip
    return batch_lib.time_major_to_sequences(data, ("a", "b"))


@pytest.mark.parametrize("fuse", ["sum", "product", "max", "cycle"])
def test_fusions_on_hand_made_streams(fuse):
    batch = _batch()
    streams = (
        Stream("extrinsic", Extrinsic()),
        Stream("a", Value("a"), weight=0.5),
        Stream("b", Value("b"), weight=2.0),
    )
    shaper = Shaper(streams, fuse=fuse, cycle_every=200, intrinsic_weight=0.1)
    state = shaper.init(jax.random.PRNGKey(0), None)
    a, b, r = (np.asarray(batch.get(k)) for k in ("a", "b", "reward"))
    for t in range(0, 1000, 100):  # env steps
        expected = {
            "sum": 0.5 * a + 2.0 * b,
            "product": (0.5 * a) * (2.0 * b),
            "max": np.maximum(0.5 * a, 2.0 * b),
            "cycle": [0.5 * a, 2.0 * b][(t // 200) % 2],  # switches every 200 env steps
        }[fuse]
        state, rewards, _ = shaper.step(state, batch, jax.random.PRNGKey(t), t)
        np.testing.assert_allclose(rewards.total, r + 0.1 * expected, rtol=1e-5)
        np.testing.assert_allclose(rewards.means()["reward/intrinsic"], 0.1 * expected.mean(), rtol=1e-5)


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
        state = shaper.step(state, b, jax.random.PRNGKey(0), 0)[0]
    a = np.concatenate([np.asarray(b1.get("a")).T, np.asarray(b2.get("a")).T])  # [12, 2] in time order
    ret, rets = np.zeros(2), []
    for t in range(len(a)):  # RND's non-episodic discounted intrinsic return, carried across rollouts
        ret = 0.9 * ret + a[t]
        rets.append(ret.copy())
    info = shaper(state, b2, 0).means()
    x = np.asarray(b2.get("a"))
    np.testing.assert_allclose(info["reward/std_norm"], np.mean(x / a.std()), rtol=1e-3)
    np.testing.assert_allclose(
        info["reward/meanstd_norm"], np.mean((x - a.mean()) / a.std()), rtol=1e-3, atol=1e-4
    )
    np.testing.assert_allclose(info["reward/ret_norm"], np.mean(x / np.std(rets)), rtol=1e-3)
    r = np.asarray(b2.reward)
    np.testing.assert_allclose(
        info["reward/sym_norm"], np.mean(np.clip(np.sign(r) * np.log1p(np.abs(r)), -0.5, 0.5)), rtol=1e-5
    )


def test_vector_rewards_keep_objectives_with_an_intrinsic_term():
    """[B, k] env rewards stay [B, k] with a scalar bonus (added to every objective, even when
    B == k), statistics are per objective, and a scalarization stage makes them [B]."""
    rng = np.random.default_rng(0)
    for B in (5, 3):
        reward = rng.normal([0.0, 10.0, -5.0], [1.0, 4.0, 0.5], size=(B, 3)).astype(np.float32)
        bonus = rng.uniform(size=B).astype(np.float32)
        batch = trans(reward, bonus=jnp.asarray(bonus))
        shaper = Shaper(
            (Stream("extrinsic", Extrinsic(), normalize="meanstd"), Stream("bonus", Value("bonus")))
        )
        spec = type("Spec", (), {"num_envs": 1, "reward_shape": (3,)})()
        state = shaper.init(jax.random.PRNGKey(0), spec)
        assert state.stats["extrinsic"].mean.shape == (3,)
        state, rewards, _ = shaper.step(state, batch, jax.random.PRNGKey(1), 0)
        assert rewards.total.shape == (B, 3)
        np.testing.assert_allclose(state.stats["extrinsic"].mean, reward.mean(0), rtol=1e-3, atol=1e-3)
        st = state.stats["extrinsic"]
        norm = (reward - np.asarray(st.mean)) / np.sqrt(np.asarray(st.var) + 1e-8)
        np.testing.assert_allclose(rewards.total, norm + bonus[:, None], rtol=1e-4, atol=1e-5)
    w = np.array([0.2, 0.3, 0.5], np.float32)
    lin = Shaper(shaper.streams, scalarize="linear", preference=tuple(w))
    cheb = Shaper(shaper.streams, scalarize="chebyshev", utopia=(1.0, 1.0, 1.0))
    total = np.asarray(rewards.total)
    np.testing.assert_allclose(lin(state, batch, 0).total, total @ w, rtol=1e-5)
    pref = np.tile(w, (3, 1))  # from the batch when the Shaper holds none
    got = cheb(state, batch.with_extras(preference=jnp.asarray(pref)), 0).total
    np.testing.assert_allclose(got, -np.max(w * np.abs(1.0 - total), -1), rtol=1e-5)
    aug = Shaper(shaper.streams, scalarize="augmented_chebyshev", preference=tuple(w), augment=0.1)
    gap = w * np.abs(total)  # about the default utopia, zeros
    np.testing.assert_allclose(aug(state, batch, 0).total, -gap.max(-1) - 0.1 * gap.sum(-1), rtol=1e-5)
    with pytest.raises(ValueError, match="needs a vector reward"):
        lin(state, trans(np.zeros(3), bonus=jnp.zeros(3)), 0)


def test_a_term_reading_a_missing_field_fails_when_the_agent_is_built(tmp_path):
    from rl.agents import ppo, sac

    shaper = Shaper((Stream("extrinsic", Extrinsic()), Stream("v", Value("value"))))
    with pytest.raises(ValueError, match="stream 'v'.*reads \\['value'\\].*SAC does not provide"):
        shaper.check(
            sac.provided(
                __import__("rl.replay", fromlist=["Replay"]).Replay(8, 1, (1,), "float32", (1,), "float32")
            ),
            "SAC",
        )
    cfg = config_lib.build(sac.Config, overrides={"runs_dir": str(tmp_path), "total_steps": 10})
    with pytest.raises(ValueError, match="reads \\['value'\\]"):
        sac.train(cfg, shaper=shaper)
    assert not any(tmp_path.iterdir())  # before a run directory exists
    cfg = config_lib.build(ppo.Config, overrides={"env": "gym:CartPole-v1", "runs_dir": str(tmp_path)})
    ppo_provides = ppo.provided(ppo.build_shaper(cfg), None)
    assert "value" in ppo_provides and "logp" in ppo_provides


class NotebookBonus(Fixed):
    """A term as a notebook would write it."""

    reads = frozenset({"obs"})
    scale: float = 1.0

    def reward(self, state, batch):
        return batch.flat(batch.obs).sum(-1).reshape(batch.lead) * self.scale


class ReturnNormalized(NotebookBonus):
    stream_defaults = {"normalize": "return"}  # a term's own stream defaults win over the section's


def test_config_registry_names_terms_and_rejects_unknown_keys():
    from dataclasses import dataclass

    from rl.rewards import register, resolve

    shaper = from_config(config_lib.apply(ShaperConfig(), {"terms": ["icm", "mine"],
        "streams": {"icm": {"weight": 0.5, "beta": 0.3}, "mine": {"kind": "tests.test_rewards:NotebookBonus"}}}))  # fmt: skip
    assert [s.name for s in shaper.streams] == ["extrinsic", "icm", "mine"]
    assert shaper.streams[1].term.beta == 0.3 and float(shaper.streams[1].weight(0)) == 0.5
    assert type(shaper.streams[2].term).__qualname__ == "NotebookBonus"  # imported by module:Class
    assert shaper.streams[1].normalize == "std" and from_config(ShaperConfig(
        terms=["r"], streams={"r": {"kind": "tests.test_rewards:ReturnNormalized"}})).streams[1].normalize == "return"  # fmt: skip

    @dataclass(frozen=True)
    class Registered(NotebookBonus):
        scale: float = 2.0

    register("registered_bonus_for_tests", Registered)
    assert resolve("registered_bonus_for_tests") is Registered
    built = from_config(ShaperConfig(terms=["registered_bonus_for_tests"],
                                     streams={"registered_bonus_for_tests": {"scale": 3.0}}))  # fmt: skip
    assert built.streams[1].term.scale == 3.0
    bad = [
        (
            {"terms": ["icm"], "streams": {"icm": {"betta": 0.2}}},
            "shaper.streams.icm.betta.*did you mean.*beta",
        ),
        ({"terms": ["icm"], "streams": {"imc": {}}}, "imc.*shaper.terms does not use"),
        ({"terms": ["icn"]}, "unknown term kind 'icn'.*did you mean icm"),
        ({"extrinsic": {"wieght": 2}}, "shaper.extrinsic.wieght"),
        ({"terms": ["x"], "streams": {"x": {"kind": "__main__:X"}}}, "__main__"),
        ({"terms": ["x"], "streams": {"x": {"kind": "no_such_module:X"}}}, "cannot import"),
    ]
    for section, message in bad:
        with pytest.raises(config_lib.ConfigError, match=message):
            config_lib.validate(config_lib.apply(ShaperConfig(), section))
    with pytest.raises(config_lib.ConfigError, match="unknown config key 'shaper.icm'"):
        from rl.agents import ppo

        config_lib.build(ppo.Config, overrides=["shaper.icm.weight=1"])


class FitCounter(Fixed):
    """A fitted term: ``fit`` counts its calls and the samples it saw; ``update`` does nothing."""

    reads = frozenset({"obs"})

    def init(self, key, spec):
        return {"fits": jnp.int32(0), "seen": jnp.int32(0)}

    def reward(self, state, batch):
        return jnp.zeros(batch.lead)

    def fit(self, state, data, key):
        return {"fits": state["fits"] + 1, "seen": state["seen"] + data.mask.size}, {}


def test_fit_runs_at_its_env_step_cadence_under_both_agents(tmp_path):
    from rl.agents import ppo, sac

    shaper = Shaper((Stream("extrinsic", Extrinsic()), Stream("c", FitCounter())), fit_every=128)
    assert shaper.fitted() and not Shaper().fitted()
    assert [bool(shaper.fit_due(t, t + 64)) for t in (0, 64, 128, 192)] == [False, True, False, True]
    common = {"eval_episodes": 1, "runs_dir": str(tmp_path), "log_every": 64}
    cfg = config_lib.build(ppo.Config, overrides={"env": "gym:CartPole-v1", "total_steps": 512, "num_steps": 32,
                           "num_envs": 2, "num_minibatches": 2, "update_epochs": 1, "checkpoint_every": 512,
                           "run_name": "p", **common})  # fmt: skip
    ppo.train(cfg, shaper=shaper)  # 8 rollouts of 64 env steps: fit every other one
    from rl import checkpoint

    spec = __import__("rl.envs", fromlist=["x"]).make_spec(cfg.env, 2, 0)
    template = ppo.init(cfg, spec, jax.random.PRNGKey(0), shaper), ppo.init_loop(cfg, spec)
    state = checkpoint.load(checkpoint.latest(tmp_path / "default" / "p" / "checkpoints"), *template)[0]
    assert int(state.shaper.terms["c"]["fits"]) == 4 and int(state.shaper.terms["c"]["seen"]) == 4 * 64
    scfg = config_lib.build(sac.Config, overrides={"env": "gym:Pendulum-v1", "total_steps": 400, "learning_starts": 100,
                            "batch_size": 16, "hidden": [8], "run_name": "s", **common})  # fmt: skip
    sspec = __import__("rl.envs", fromlist=["x"]).make_spec(scfg.env, 1, 0)
    sac.train(scfg, shaper=shaper)  # learning from step 100: fits at 128, 256, 384
    template = sac.init(scfg, sspec, jax.random.PRNGKey(0), shaper), sac.init_loop(scfg, sspec)
    state = checkpoint.load(checkpoint.latest(tmp_path / "default" / "s" / "checkpoints"), *template)[0]
    assert int(state.shaper.terms["c"]["fits"]) == 3 and int(state.shaper.terms["c"]["seen"]) == 3 * 16


class Weights(Fixed):
    """A term with frozen assets read from a file (as model weights would be)."""

    reads = frozenset({"reward"})

    def __init__(self, path):
        self.path = path

    def frozen(self):
        import os

        if not os.path.exists(self.path):
            raise FileNotFoundError(f"weights file {self.path} is missing; write it with np.save first")
        return {"scale": jnp.asarray(np.load(self.path))}

    def reward(self, state, batch, assets):
        return assets["scale"] * batch.reward

    def update(self, state, batch, key, assets):
        return state, {}


def test_frozen_assets_are_loaded_once_passed_to_jit_and_never_checkpointed(tmp_path):
    from flax import serialization

    path = tmp_path / "w.npy"
    np.save(path, np.float32(3.0))
    shaper = Shaper(
        (Stream("extrinsic", Extrinsic()), Stream("w", Weights(str(path)), weight=1.0, intrinsic=False))
    )
    state = shaper.init(jax.random.PRNGKey(0), None)
    batch = trans([1.0, 2.0])
    total = jax.jit(shaper.__call__)(state, batch, 0).total  # the assets are a jit argument
    np.testing.assert_allclose(total, [4.0, 8.0])
    saved = serialization.to_state_dict(state)
    assert "frozen" not in saved  # kept out of checkpoints
    np.save(path, np.float32(5.0))  # a resume reloads them from the file
    restored = serialization.from_state_dict(shaper.init(jax.random.PRNGKey(0), None), saved)
    np.testing.assert_allclose(shaper(restored, batch, 0).total, [6.0, 12.0])
    state, _, _ = shaper.step(state, batch, jax.random.PRNGKey(1), 0)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="w.npy is missing"):
        shaper.init(jax.random.PRNGKey(0), None)


def test_a_shaper_splits_into_two_whose_totals_add_up_and_refuses_a_split_fusion():
    """``Shaper.split``: the streams outside and inside ``names``, the same head settings; for a
    scalar reward with fuse=sum the two totals add up to the whole one; a non-sum fusion of
    intrinsic streams on both sides is refused (it does not split)."""

    class Obs(Fixed):
        reads = frozenset({"obs"})

        def reward(self, state, batch):
            return batch.obs[..., 0]

    class Act(Fixed):
        reads = frozenset({"action"})

        def reward(self, state, batch):
            return batch.action[..., 0]

    whole = Shaper(
        (Stream("extrinsic", Extrinsic()), Stream("a", Obs(), weight=0.5), Stream("b", Act(), weight=2.0)),
        intrinsic_weight=Constant(3.0),
    )
    rest, picked = whole.split(["b"])
    assert [s.name for s in rest.streams] == ["extrinsic", "a"] and [s.name for s in picked.streams] == ["b"]
    rng = np.random.default_rng(0)
    batch = batch_lib.transitions(jnp.asarray(rng.normal(size=(6, 2)), jnp.float32), jnp.asarray(rng.normal(size=(6, 1)), jnp.float32),
                                  jnp.asarray(rng.normal(size=6), jnp.float32), jnp.zeros((6, 2)), jnp.zeros(6), jnp.zeros(6))  # fmt: skip
    parts = [sh(sh.init(jax.random.PRNGKey(0), None), batch, 0).total for sh in (rest, picked)]
    total = whole(whole.init(jax.random.PRNGKey(0), None), batch, 0).total
    np.testing.assert_allclose(parts[0] + parts[1], total, rtol=1e-6)
    assert whole.split(["nothing"])[1] is None
    with pytest.raises(ValueError, match="only fuse='sum' splits"):
        Shaper(whole.streams, fuse="max").split(["b"])
    Shaper(whole.streams, fuse="max").split(["a", "b"])  # all intrinsic streams on one side: fine


class Poison(Fixed):
    """A term whose reward is NaN: computing it anywhere shows in the total (0 x NaN = NaN)."""

    reads = frozenset({"a"})

    def reward(self, state, batch):
        return batch.get("a") * jnp.nan


class SteppedPoison(Poison):
    """The same through ``step`` (reward and update in one pass, as the k-NN terms)."""

    def step(self, state, batch, key):
        return self.reward(state, batch), state, {"calls": jnp.float32(1.0)}


@pytest.mark.parametrize("term", [Poison(), SteppedPoison()])
def test_a_windowed_stream_is_not_computed_outside_its_window(term):
    """PEBBLE's phases: the k-NN state entropy stops at 10k env steps, the learned reward starts
    there. Outside its ``Window`` a stream's weight is 0; it is not computed at all (the NaN
    term leaves the total finite), and its running statistics stand still. Mutation: computing
    it and multiplying by the zero weight makes the total NaN."""
    from rl.rewards.schedules import Window

    batch = _batch()
    shaper = Shaper((Stream("extrinsic", Extrinsic()), Stream("p", term, Window(1.0, 100, 200), "std")))
    state = shaper.init(jax.random.PRNGKey(0), None)
    for call in (
        jax.jit(shaper.__call__),
        lambda s, b, t: jax.jit(shaper.step)(s, b, jax.random.PRNGKey(1), t)[1],
    ):
        for t in (0, 99, 200, 5000):
            np.testing.assert_allclose(call(state, batch, t).total, batch.reward, err_msg=str(t))
        assert np.isnan(np.asarray(call(state, batch, 150).total)).all()  # inside: computed
    new, _, metrics = jax.jit(shaper.step)(state, batch, jax.random.PRNGKey(1), 50)
    assert float(new.stats["p"].count) == float(state.stats["p"].count)
    if isinstance(term, SteppedPoison):
        assert float(metrics["reward/p/calls"]) == 0.0
