"""C-MORL (rl.agents.cmorl) against numpy transcriptions of its reference (RuohLiuq/C-MORL:
``ipo_update`` in ``externals/pytorch-a2c-ppo-acktr-gail/a2c_ppo_acktr/algo/ppo.py``, the
scalarized advantage of its ``update``, ``EP.calculate_crowding_distance`` and
``filter_by_crowding_distance`` in ``morl/ep.py``), the vmapped population against separate
updates, bad input, and ``rl train cmorl`` writing a front at a smoke budget."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import checkpoint, envs
from rl import config as config_lib
from rl.agents import cmorl
from rl.rewards import multiobjective as mo
from rl.runs import Run

ENV = "mo:mo-halfcheetah-v5"
TINY = {
    "env": ENV,
    "num_envs": 2,
    "num_steps": 16,
    "num_minibatches": 2,
    "update_epochs": 2,
    "env_options": {"max_episode_steps": 20},
}


def _np_barrier(ratio, returns, obj, clip, beta, t):
    """``ipo_update``'s barrier: cost = clamp(ratio) * return_batch.mean(0); hat_cost =
    clamp(beta * mean - cost, max=-0.001) without column obj; -mean(log(-hat_cost)) / t."""
    mean = returns.mean(0)
    cost = np.clip(ratio, 1 - clip, 1 + clip)[:, None] * mean
    hat = np.minimum(beta * mean - cost, -0.001)
    hat = np.concatenate([hat[:, :obj], hat[:, obj + 1 :]], 1)
    return -np.log(-hat).mean() / t


def test_barrier_matches_ipo_update():
    cfg = config_lib.build(cmorl.Config, overrides={"env": ENV})
    rng = np.random.default_rng(0)
    ratio = rng.uniform(0.7, 1.3, 64)
    returns = rng.normal([2.0, -1.0, 0.5], 1.0, (64, 3))
    for obj in range(3):
        got = cmorl.barrier(cfg, jnp.asarray(ratio), jnp.asarray(returns), obj)
        want = _np_barrier(ratio, returns, obj, cfg.clip_coef, cfg.beta, cfg.barrier_t)
        np.testing.assert_allclose(got, want, rtol=1e-5)
    # mutation: keeping the improved objective's own column changes the value
    with_own = (
        -np.log(
            -np.minimum(
                cfg.beta * returns.mean(0) - np.clip(ratio, 0.8, 1.2)[:, None] * returns.mean(0), -0.001
            )
        ).mean()
        / 20
    )
    assert not np.isclose(float(cmorl.barrier(cfg, jnp.asarray(ratio), jnp.asarray(returns), 0)), with_own)


def test_advantage_is_the_scalarized_unscaled_difference():
    rng = np.random.default_rng(1)
    ret, value = rng.normal(size=(2, 8, 3, 2))
    var = np.array([4.0, 0.25])
    w = np.array([0.3, 0.7])
    raw = (ret - value) * np.sqrt(
        var + 1e-8
    )  # the reference: returns * sqrt(obj_var) - values * sqrt(obj_var)
    for ipo, obj, a in ((False, 0, raw @ w), (True, 1, raw[..., 1])):
        want = (a - a.mean()) / (a.std() + 1e-5)
        got = cmorl.advantage(
            jnp.asarray(ret), jnp.asarray(value), jnp.asarray(var), jnp.asarray(w), obj, ipo
        )
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # mutation: scalarizing the scaled values (ignoring the return std) gives another advantage
    scaled = (ret - value) @ w
    assert not np.allclose(
        cmorl.advantage(jnp.asarray(ret), jnp.asarray(value), jnp.asarray(var), jnp.asarray(w), 0, False),
        (scaled - scaled.mean()) / (scaled.std() + 1e-5),
        atol=1e-3,
    )


def _np_crowding(obj_batch):
    """``EP.calculate_crowding_distance(obj_batch, extreme=True)``, transcribed."""
    n, k = obj_batch.shape
    out = np.zeros(n)
    for i in range(k):
        v = obj_batch[:, i]
        s = np.argsort(v)
        d = np.zeros(n)
        d[1:-1] = (v[s[2:]] - v[s[:-2]]) / (v[s[-1]] - v[s[0]])
        d[0] = d[-1] = np.inf
        out[s] += d
    return out


def test_crowding_distance_and_selection_match_ep():
    rng = np.random.default_rng(2)
    x = np.sort(rng.uniform(0, 10, 9))
    points = np.stack([x, 10 - x**1.3 / 3], 1)  # a front: no point dominates another
    np.testing.assert_allclose(cmorl.crowding_distance(points), _np_crowding(points))
    archive = cmorl.Archive(ref=[-1.0, -100.0], size=200)
    dominated = points[4] - 0.5
    below_ref = np.array([[-5.0, 50.0]])
    archive.add(np.concatenate([points, [dominated], below_ref]), list(range(11)), [None] * 11)
    assert len(archive.points) == 9 and set(archive.policies) == set(range(9))  # pareto and ref filtered
    order = np.argsort(-_np_crowding(archive.points), kind="stable")
    assert archive.select(3) == order[:3].tolist()  # the boundary points first, then the widest gap
    assert archive.select(3) == order[3:6].tolist()  # never the same point twice
    # pruning keeps the most isolated points, boundaries included
    small = cmorl.Archive(ref=[-1.0, -100.0], size=4)
    small.add(points, list(range(9)), [None] * 9)
    assert {0, 8} <= set(small.policies) and len(small.points) == 4


def test_vmapped_population_matches_separate_updates():
    cfg = config_lib.build(cmorl.Config, overrides=TINY)
    spec = envs.make_spec(ENV, cfg.num_envs, 0, **cfg.env_options)
    init = jax.jit(lambda k: cmorl.init_member(cfg, spec, k))
    members = [init(k) for k in jax.random.split(jax.random.PRNGKey(0), 2)]
    pop = cmorl.Population(cfg, spec, cmorl.stack(members), 0)

    class NoRun:
        def record_episodes(self, episodes):
            pass

        def progress(self, step, total):
            pass

    try:
        rollout, _ = pop.rollout(jax.random.PRNGKey(1), NoRun(), 0, 10**6)
    finally:
        pop.close()
    w = jnp.asarray([[0.2, 0.8], [1.0, 0.0]])
    objs = jnp.asarray([0, 1])
    key = jax.random.PRNGKey(3)
    learn = cmorl.update_population(cfg, spec, True)  # the IPO path: the advantage and the barrier
    together, _ = learn(pop.members, rollout, w, objs, key)
    alone_fn = jax.jit(lambda m, r, wi, o, k_: cmorl.update(cfg, spec, True, m, r, wi, o, k_))
    for i, k_i in enumerate(jax.random.split(key, 2)):
        alone, _ = alone_fn(
            *(jax.tree.map(lambda a, i=i: a[i], x) for x in (pop.members, rollout, w, objs)), k_i
        )
        got = jax.tree.map(lambda a, i=i: a[i], together.params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6), got, alone.params)
    # mutation: swapping the members' objectives gives other parameters
    swapped, _ = learn(pop.members, rollout, w, objs[::-1], key)
    kernel = [jax.tree.leaves(m.params["actor"])[-1] for m in (together, swapped)]
    assert not np.allclose(*kernel)


def test_bad_config_fails_early():
    with pytest.raises(config_lib.ConfigError, match="scalarize"):
        config_lib.build(cmorl.Config, overrides={"env": ENV, "shaper": {"scalarize": "linear"}})
    with pytest.raises(config_lib.ConfigError, match="beta"):
        config_lib.build(cmorl.Config, overrides={"env": ENV, "beta": 1.5})
    cfg = config_lib.build(cmorl.Config, overrides={**TINY, "total_steps": 10})
    with pytest.raises(ValueError, match="fewer than one rollout"):
        cmorl.train(cfg)
    cfg = config_lib.build(cmorl.Config, overrides={"env": "gym:Pendulum-v1"})
    with pytest.raises(ValueError, match="vector reward"):
        cmorl.train(cfg)


def test_train_writes_a_front_under_both_protocols(tmp_path):
    steps = (
        6 * 2 * 16 * 2 + 2 * 2 * 2 * 16 * 2
    )  # one stage-1 update (half the budget), three extension rounds
    cfg = config_lib.build(
        cmorl.Config,
        overrides={
            **TINY,
            "total_steps": steps,
            "init_fraction": 0.5,
            "init_eval_interval": 1,
            "eval_episodes": 1,
            "num_select": 2,
            "update_iter": 1,
            "mb_episode_steps": 25,
            "runs_dir": str(tmp_path),
        },
    )
    summary = cmorl.train(cfg)
    run_dir = tmp_path / "default" / next(p.name for p in (tmp_path / "default").iterdir())
    front = json.loads((run_dir / "front.json").read_text())
    assert (run_dir / "front.png").exists()
    points = np.asarray(front["points"])
    assert points.ndim == 2 and points.shape[1] == 2 and len(points) >= 1
    assert mo.pareto_mask(points).all()  # the archive holds its Pareto front only
    assert set(front["protocols"]) == {"cmorl", "morl_baselines"} and "stage" not in front  # the final one
    assert front["protocols"]["morl_baselines"]["episode_steps"] == 25
    hv = mo.hypervolume(points, front["ref_point"])
    assert np.isclose(summary["eval/hypervolume"], hv)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(line.get("cmorl/updates", 0) for line in lines) == 4  # both stages ran
    # resume from the older of the two kept checkpoints: the last extension round runs again
    first = checkpoint.all_checkpoints(run_dir / "checkpoints")[0]
    assert json.loads((first / "meta.json").read_text())["done_ext"] == 2  # of 3
    resumed_at = json.loads((first / "meta.json").read_text())["step"]
    run, ckpt = Run.resume(run_dir, cmorl.Config)
    assert ckpt.name == checkpoint.latest(run_dir / "checkpoints").name
    again = cmorl.train(run.cfg, run=run, resume=first)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(line.get("cmorl/updates", 0) for line in lines) == 4 and again["eval/cardinality"] >= 1
    assert json.loads((run_dir / "front.json").read_text())["step"] > resumed_at  # it trained on


def test_each_objective_is_scaled_by_its_own_return_statistics():
    """Vector rewards through PPO's reward scaling (the reference's per-objective ``obj_rms``):
    each column equals the scalar scaling of that column alone."""
    from rl.agents import ppo
    from rl.rewards import RunningStats

    cfg = config_lib.build(cmorl.Config, overrides={"env": ENV})
    rng = np.random.default_rng(3)
    reward = jnp.asarray(rng.normal([1.0, -20.0], [0.5, 5.0], (40, 3, 2)), jnp.float32)
    done = jnp.asarray(rng.random((40, 3)) < 0.1)
    _, _, both = ppo.scale_rewards(cfg, RunningStats.zeros((2,)), jnp.zeros((3, 2)), reward, done)
    for j in range(2):
        _, _, one = ppo.scale_rewards(cfg, RunningStats.zeros(), jnp.zeros(3), reward[..., j], done)
        np.testing.assert_allclose(both[..., j], one, rtol=1e-5)
    # mutation: one statistic shared by both objectives scales them alike
    assert not np.allclose(
        np.std(both[..., 0]) / np.std(reward[..., 0]), np.std(both[..., 1]) / np.std(reward[..., 1]), rtol=0.1
    )
