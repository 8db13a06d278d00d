"""JAX-native envs (xminigrid, gymnax) and PPO's jitted path: terminated vs truncated and the
same-step autoreset, the host adapter, CartPole solved, vmapped seeds equal separate runs,
every built-in term inside the jitted program, the Shaper reaching the loss, resume."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import batch as batch_lib
from rl import config as config_lib
from rl import envs, jaxenvs
from rl.agents import ppo
from rl.rewards import Extrinsic, Fixed, Shaper, Stream


def test_gymnax_truncation_is_not_termination_and_the_final_obs_is_kept():
    env = jaxenvs.make("gymnax:CartPole-v1", 3, max_episode_steps=5)
    assert env.spec.max_episode_steps == 5 and env.spec.discrete and env.spec.obs_shape == (4,)
    state, obs = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    for t in range(5):
        prev = state
        state, obs, reward, terminated, truncated, info = step(
            state, jnp.zeros(3, jnp.int32), jax.random.PRNGKey(t)
        )
    # pushing left for 5 steps does not topple the pole: the step limit truncates, never terminates
    assert not terminated.any() and truncated.all()
    assert np.all(info["episode_length"] == 5) and np.allclose(info["episode_return"], 5.0)
    assert not np.allclose(obs, info["next_obs"])  # obs: the next episode's first; next_obs: the final one
    assert np.all(state.episode_length == 0) and np.all(prev.episode_length == 4)


def test_gymnax_termination_is_terminated():
    env = jaxenvs.make("gymnax:CartPole-v1", 2)
    state, _ = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    seen = False
    for t in range(60):  # always pushing left: the pole falls within a few dozen steps
        state, _, _, terminated, truncated, info = step(state, jnp.zeros(2, jnp.int32), jax.random.PRNGKey(t))
        assert not truncated.any()
        seen |= bool(terminated.any())
        assert np.array_equal(info["done"], terminated)
    assert seen


def test_xminigrid_spec_truncation_and_host_adapter():
    env, spec = envs.make("xminigrid:MiniGrid-DoorKey-5x5", 2, seed=3, max_episode_steps=7)
    assert spec.obs_shape == (7, 7, 2) and spec.obs_dtype == "uint8" and spec.num_actions == 6
    assert spec.max_episode_steps == 7
    obs, _ = env.reset()
    assert obs.shape == (2, 7, 7, 2)
    episodes, rewards = [], np.zeros(2)
    for _ in range(21):
        obs, reward, terminated, truncated, info = env.step(np.array([1, 2]))  # turning only: never the goal
        rewards += reward
        assert not terminated.any()
        episodes += info["episodes"]
        assert info["next_obs"].shape == obs.shape
    assert [e["length"] for e in episodes] == [7] * 6 and all(e["return"] == 0.0 for e in episodes)


def test_xminigrid_reward_on_reaching_the_goal_follows_minigrid():
    """Empty-5x5: the goal is two cells down and two right of the agent's start (facing
    right): forward, forward, right turn, forward, forward reaches it at step 5 of 100."""
    env = jaxenvs.make("xminigrid:MiniGrid-Empty-5x5", 1)
    state, _ = env.reset(jax.random.PRNGKey(0))
    for a in (0, 0, 1, 0, 0):  # forward, forward, turn right, forward, forward
        state, _, reward, terminated, truncated, info = env.step(state, jnp.array([a]), jax.random.PRNGKey(1))
    assert bool(terminated[0]) and not bool(truncated[0])
    np.testing.assert_allclose(reward[0], 1 - 0.9 * 5 / 100, rtol=1e-6)  # MiniGrid's 1 - 0.9 t / T


def test_bad_options_and_ids_fail_clearly():
    with pytest.raises(ValueError, match="unknown xminigrid option"):
        jaxenvs.make("xminigrid:MiniGrid-DoorKey-5x5", 1, obs="flat")
    with pytest.raises(ValueError, match="unknown xminigrid interface 'farama'; interfaces: xland, minigrid"):
        jaxenvs.make("xminigrid:MiniGrid-DoorKey-5x5", 1, interface="farama")
    with pytest.raises(ValueError, match="closest valid ids"):
        envs.parse_id("xminigrid:MiniGrid-DoorKey-9x9")
    with pytest.raises(ValueError, match="do not render"):
        envs.make("gymnax:CartPole-v1", 1, render=True)


def _farama_image(fenv, grid, agent):
    """Farama MiniGrid's own ``gen_obs`` on the same layout: the XLand grid rebuilt as a
    ``minigrid.core.grid.Grid`` of its world objects, the agent placed and carrying the same."""
    from minigrid.core.grid import Grid
    from minigrid.core.world_object import Ball, Box, Door, Goal, Key, Wall
    from xminigrid.core.constants import Colors, Tiles

    names = {Colors.RED: "red", Colors.GREEN: "green", Colors.BLUE: "blue", Colors.PURPLE: "purple",
             Colors.YELLOW: "yellow", Colors.GREY: "grey"}  # fmt: skip

    def obj(tile, colour):
        c = names.get(int(colour), "grey")
        return {
            Tiles.WALL: lambda: Wall(), Tiles.GOAL: lambda: Goal(), Tiles.KEY: lambda: Key(c),
            Tiles.BALL: lambda: Ball(c), Tiles.SQUARE: lambda: Box(c),
            Tiles.DOOR_LOCKED: lambda: Door(c, is_locked=True),
            Tiles.DOOR_CLOSED: lambda: Door(c), Tiles.DOOR_OPEN: lambda: Door(c, is_open=True),
        }.get(int(tile), lambda: None)()  # fmt: skip

    grid = np.asarray(grid)
    h, w = grid.shape[:2]
    g = Grid(w, h)
    for y in range(h):
        for x in range(w):
            g.set(x, y, obj(*grid[y, x]))
    fenv.grid = g
    y, x = (int(v) for v in agent.position)
    fenv.agent_pos, fenv.agent_dir = (x, y), (int(agent.direction) - 1) % 4  # XLand: 0 up, 1 right
    fenv.carrying = obj(*np.asarray(agent.pocket))
    return fenv.gen_obs()["image"]


@pytest.mark.parametrize("task", ["MiniGrid-DoorKey-5x5", "MiniGrid-DoorKey-16x16"])
def test_minigrid_interface_sees_what_farama_minigrid_shows(task):
    """``interface=minigrid``: the observation equals Farama MiniGrid's ``gen_obs`` image on the
    same layout, cell for cell, along a random walk that picks up the key and opens the door
    (occlusion by walls and closed doors, (object, colour, state) ids, the carried key on the
    agent's cell, [x, y] indexing). Breaks if the view is the transparent one, the pocket is
    not drawn, an id is off, or the axes are not swapped."""
    import gymnasium as gym
    import minigrid  # noqa: F401  (registers the MiniGrid ids)

    fenv = gym.make("MiniGrid-DoorKey-5x5-v0").unwrapped
    fenv.reset(seed=0)
    env = jaxenvs.make(f"xminigrid:{task}", 1, interface="minigrid")
    assert env.spec.obs_shape == (7, 7, 3) and env.spec.num_actions == 7
    state, obs = env.reset(jax.random.PRNGKey(1))
    step = jax.jit(env.step)
    rng = np.random.default_rng(0)
    carried = opened = occluded = 0
    for t in range(300):
        inner = state.inner.state
        np.testing.assert_array_equal(
            np.asarray(obs[0]), _farama_image(fenv, inner.grid[0], jax.tree.map(lambda a: a[0], inner.agent))
        )
        carried += int(inner.agent.pocket[0, 0]) != 0
        opened += int((inner.grid[..., 0] == 10).any())  # Tiles.DOOR_OPEN
        occluded += int((np.asarray(obs[0])[..., 0] == 0).any())
        # the toggle/pick-up-heavy walk of a 5x5 room finds the key and the door
        a = rng.choice(7, p=[0.15, 0.15, 0.3, 0.15, 0.05, 0.15, 0.05])
        state, obs, *_ = step(state, jnp.array([a]), jax.random.PRNGKey(t))
    assert occluded > 0
    if task.endswith("5x5"):
        assert carried > 0 and opened > 0


def test_minigrid_interface_actions_follow_farama_and_done_only_counts_a_step():
    """MiniGrid's action ids map onto XLand's (left, right, forward, ...), and ``done`` (6)
    leaves the agent and grid as they were while the step counter advances."""
    env = jaxenvs.make("xminigrid:MiniGrid-Empty-5x5", 1, interface="minigrid")
    state, _ = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    before = state.inner.state
    state, *_ = step(state, jnp.array([6]), jax.random.PRNGKey(1))
    after = state.inner.state
    assert int(after.step_num[0]) == int(before.step_num[0]) + 1
    assert np.array_equal(after.agent.direction, before.agent.direction)
    assert np.array_equal(after.agent.position, before.agent.position) and np.array_equal(
        after.grid, before.grid
    )
    state, *_ = step(
        state, jnp.array([0]), jax.random.PRNGKey(2)
    )  # MiniGrid's left: XLand's counterclockwise
    assert int(state.inner.state.agent.direction[0]) == (int(before.agent.direction[0]) - 1) % 4
    # Empty-5x5 as in the XLand test above, in MiniGrid's ids: forward 2, right 1
    state, _ = env.reset(jax.random.PRNGKey(0))
    for a in (2, 2, 1, 2, 2):
        state, _, reward, terminated, _, _ = step(state, jnp.array([a]), jax.random.PRNGKey(3))
    assert bool(terminated[0])
    np.testing.assert_allclose(reward[0], 1 - 0.9 * 5 / 100, rtol=1e-6)


# -- PPO's jitted path ----------------------------------------------------------------------

TINY = {"env": "gymnax:CartPole-v1", "num_envs": 4, "num_steps": 32, "total_steps": 1024, "num_minibatches": 4,
        "update_epochs": 2, "log_every": 256, "eval_episodes": 2}  # fmt: skip


def _rows(summary):
    return [json.loads(x) for x in open(summary["metrics"])]


@pytest.mark.optimized  # execution-bound: XLA level 2 (tests/conftest.py)
def test_jitted_ppo_solves_cartpole(tmp_path):
    cfg = config_lib.build(
        ppo.Config,
        ["ppo-cartpole"],
        {"env": "gymnax:CartPole-v1", "runs_dir": str(tmp_path), "eval_episodes": 5},
    )
    summary = ppo.train(cfg)
    assert summary["eval/episode_return"] >= 475, summary


def test_vmapped_seeds_equal_separate_runs(tmp_path):
    cfg = config_lib.build(ppo.Config, overrides={**TINY, "runs_dir": str(tmp_path)})
    both = ppo.train_jitted(cfg, seeds=[0, 1])
    alone = ppo.train_jitted(
        config_lib.build(ppo.Config, overrides={**TINY, "seed": 1, "runs_dir": str(tmp_path)})
    )
    a, b = _rows(both[1]), _rows(alone[0])
    assert len(a) == len(b) > 2
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if k.startswith(("perf/", "time")):
                continue
            np.testing.assert_allclose(x[k], y[k], rtol=1e-4, atol=1e-6, err_msg=k)
    assert _rows(both[0])[-2]["ppo/return"] != a[-2]["ppo/return"]  # the two seeds differ


class ObsBonus(Fixed):
    reads = frozenset({"obs"})

    def reward(self, state, batch):
        return batch.obs[..., 0]


def test_the_jitted_path_trains_on_the_shaper_total(tmp_path):
    """Mutation check: a jitted iteration that trained on the env reward would give the same
    value loss with a bonus of weight 0 and of weight 5."""
    losses = []
    for w in (0.0, 5.0):
        shaper = Shaper((Stream("extrinsic", Extrinsic()), Stream("bonus", ObsBonus(), weight=w)))
        cfg = config_lib.build(ppo.Config, overrides={**TINY, "runs_dir": str(tmp_path), "total_steps": 256})
        rows = _rows(ppo.train(cfg, shaper=shaper))
        losses.append(rows[0]["loss/value"])
        assert rows[0]["reward/bonus_weight"] == w
    assert losses[0] != pytest.approx(losses[1], rel=1e-3)


def test_every_built_in_term_runs_inside_the_jitted_iteration(tmp_path):
    terms = ["icm", "rnd", "ngu", "e3b", "re3", "disagreement", "state_entropy"]
    cfg = config_lib.build(
        ppo.Config,
        overrides={**TINY, "runs_dir": str(tmp_path), "total_steps": 256, "shaper": {"terms": terms}},
    )
    rows = _rows(ppo.train(cfg))
    for t in terms:
        assert np.isfinite(rows[0][f"reward/{t}"]), t
    assert any(k.startswith("reward/icm/") for k in rows[0])  # the learned terms trained


def test_annotating_terms_are_refused_before_the_run(tmp_path):
    cfg = config_lib.build(
        ppo.Config, overrides={**TINY, "runs_dir": str(tmp_path), "shaper": {"smoothing": "gaussian"}}
    )
    with pytest.raises(ValueError, match="jit_env=false"):
        ppo.train(cfg)
    assert not any(tmp_path.iterdir())


def test_jitted_resume_extends_a_run_without_repeating_lines(tmp_path):
    from rl.runs import Run

    over = {**TINY, "runs_dir": str(tmp_path), "checkpoint_every": 512, "experiment": "t", "run_name": "r"}
    ppo.train(config_lib.build(ppo.Config, overrides=over))
    run, ckpt = Run.resume(tmp_path / "t" / "r", ppo.Config, {"total_steps": 2048})
    summary = ppo.train(run.cfg, run=run, resume=ckpt)
    assert summary["steps"] == 2048
    steps = [r["step"] for r in _rows(summary) if "ppo/return" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 2048 and 1024 in steps


def test_rnd_observation_statistics_warm_up_on_random_steps(tmp_path):
    """``warmup_steps`` random-action steps per env fill RND's observation statistics before
    training, on the jitted path and in the host loop (Burda et al. 2019's initialization)."""
    from rl import checkpoint
    from rl.rewards import RND

    shaper = Shaper(
        (Stream("extrinsic", Extrinsic()), Stream("rnd", RND(features=4, hidden=(8,), warmup_steps=25)))
    )
    cfg = config_lib.build(ppo.Config, overrides={**TINY, "runs_dir": str(tmp_path)})
    built = ppo.build_shaper(cfg, shaper)
    env = jaxenvs.make(cfg.env, cfg.num_envs)
    carry = ppo.init_carry(cfg, env.spec, env, built, 0)
    stats = carry.state.shaper.terms["rnd"].fixed["obs_stats"]
    assert float(stats.count) == pytest.approx(25 * 4, abs=1e-3)
    assert float(jnp.max(stats.var)) > 1e-3 and not np.allclose(stats.var, 1.0)  # real observations
    # NGU's RND (its life-long modulator) warms up the same way
    from rl.rewards import NGU

    ngu = Shaper((Stream("ngu", NGU(rnd=RND(features=4, hidden=(8,), warmup_steps=25))),))
    assert ngu.warmup_steps() == 25
    obs = jax.random.uniform(jax.random.PRNGKey(1), (10, *env.spec.obs_shape))
    seen = batch_lib.transitions(
        obs, jnp.zeros((10,), jnp.int32), jnp.zeros(10), obs, jnp.zeros(10), jnp.zeros(10)
    )
    state = ngu.warm_up(ngu.init(jax.random.PRNGKey(0), env.spec), seen)
    assert float(state.terms["ngu"].fixed["rnd"].fixed["obs_stats"].count) == pytest.approx(10, abs=1e-3)
    # the host loop: after one rollout the statistics hold the warm-up and the rollout
    host = config_lib.build(ppo.Config, overrides={**TINY, "env": "gym:CartPole-v1", "total_steps": 128,
                                                   "runs_dir": str(tmp_path), "experiment": "h", "run_name": "h"})  # fmt: skip
    ppo.train(host, shaper=shaper)
    spec = envs.make_spec(host.env, host.num_envs, 0)
    template = ppo.init(host, spec, jax.random.PRNGKey(0), ppo.build_shaper(host, shaper))
    state = checkpoint.load(
        checkpoint.latest(tmp_path / "h" / "h" / "checkpoints"), template, ppo.init_loop(host, spec)
    )[0]
    assert float(state.shaper.terms["rnd"].fixed["obs_stats"].count) == pytest.approx(25 * 4 + 128, abs=1e-3)


def test_rl_train_seeds_vmaps_them_into_one_run_directory_each(tmp_path, capsys):
    """``rl train ppo --seeds 0,1``: one program, a run directory per seed named by ``{seed}``,
    each seed's run the one ``seed=N`` alone trains (the test above); bad uses fail first."""
    from rl import cli

    args = ["train", "ppo", "--seeds", "0,1", *(f"{k}={v}" for k, v in TINY.items()), f"runs_dir={tmp_path}"]
    assert cli.main([*args, "experiment=g", "run_name=tiny__s{seed}"]) == 0
    dirs = sorted(p.name for p in (tmp_path / "g").iterdir())
    assert dirs == ["tiny__s0", "tiny__s1"]
    seeds = [config_lib.load_yaml(tmp_path / "g" / d / "config.yaml")["seed"] for d in dirs]
    assert seeds == [0, 1]
    assert all((tmp_path / "g" / d / "summary.json").exists() for d in dirs)
    # the same names again: refused before either directory is touched
    written = (tmp_path / "g" / "tiny__s1" / "metrics.jsonl").read_bytes()
    assert cli.main([*args, "experiment=g", "run_name=tiny__s{seed}"]) == 2
    assert "resume them one by one" in capsys.readouterr().err
    assert (tmp_path / "g" / "tiny__s1" / "metrics.jsonl").read_bytes() == written
    for bad, why in [
        ([*args, "run_name=tiny"], "needs a {seed} field"),
        (["train", "ppo", "--seeds", "0,1", "--env", "gym:CartPole-v1", f"runs_dir={tmp_path}/h"], "host loop"),
        (["train", "sac", "--seeds", "0,1", "--env", "gym:Pendulum-v1", f"runs_dir={tmp_path}/h"], "one seed per process"),
        ([*args, "--seeds", "0,0"], "repeated"),
    ]:  # fmt: skip
        assert cli.main(bad) == 2
        assert why in capsys.readouterr().err
    assert not (tmp_path / "h").exists()
