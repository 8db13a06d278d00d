"""Every namespace makes, resets and steps real environments with the vector-env contract."""

import numpy as np
import pytest

from rl import envs

CASES = [
    ("gym:CartPole-v1", {}, (4,), "float32", ()),
    ("gym:HalfCheetah-v5", {}, (17,), "float32", ()),
    ("dmc:cheetah-run", {}, (17,), "float32", ()),
    ("atari:Pong", {}, (84, 84, 4), "uint8", ()),
    ("mo:mo-halfcheetah-v5", {}, (17,), "float32", (2,)),
    ("minigrid:MiniGrid-DoorKey-8x8-v0", {}, (7, 7, 3), "uint8", ()),
    ("minigrid:MiniGrid-DoorKey-8x8-v0", {"obs": "flat"}, (147,), "uint8", ()),
]


@pytest.mark.parametrize("env_id,options,obs_shape,dtype,reward_shape", CASES)
def test_make_reset_step(env_id, options, obs_shape, dtype, reward_shape):
    env, spec = envs.make(env_id, num_envs=2, seed=0, **options)
    assert spec.obs_shape == obs_shape and spec.obs_dtype == dtype and spec.reward_shape == reward_shape
    obs, _ = env.reset()
    assert obs.shape == (2, *obs_shape) and obs.dtype == np.dtype(dtype)
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert reward.shape == (2, *reward_shape)
        assert terminated.dtype == bool and truncated.dtype == bool
        assert info["next_obs"].shape == obs.shape
    assert spec.max_episode_steps is not None and spec.max_episode_steps > 0
    env.close()


def _run_until_done(env, max_steps=10_000):
    env.reset()
    for _ in range(max_steps):
        obs, r, terminated, truncated, info = env.step(env.action_space.sample())
        if (terminated | truncated).any():
            return obs, terminated, truncated, info
    raise AssertionError("no episode ended")


def test_truncation_is_not_termination_and_final_obs_is_kept():
    env, spec = envs.make("gym:HalfCheetah-v5", num_envs=2, seed=0, max_episode_steps=7)
    assert spec.max_episode_steps == 7
    env.reset()
    for _ in range(7):
        obs, _, terminated, truncated, info = env.step(env.action_space.sample())
    assert truncated.all() and not terminated.any()
    # the returned obs is the next episode's first; the final one is in next_obs
    assert not np.allclose(obs, info["next_obs"])
    first_two = [e["length"] for e in info["episodes"]]
    assert first_two == [7, 7]
    # step 8 continues the new episodes
    obs, _, te, tr, info = env.step(env.action_space.sample())
    assert not (te | tr).any() and np.array_equal(info["next_obs"], obs)


def test_termination_on_failure_cartpole():
    env, _ = envs.make("gym:CartPole-v1", num_envs=1, seed=0)
    obs, terminated, truncated, info = _run_until_done(env)
    assert terminated[0] and not truncated[0]
    # the final observation is outside the pole-angle / cart bounds, the reset one is not
    final = info["next_obs"][0]
    assert abs(final[2]) > 0.2095 or abs(final[0]) > 2.4
    assert abs(obs[0][2]) < 0.05


def test_dmc_time_limit_is_truncation_with_action_repeat():
    env, spec = envs.make("dmc:cartpole-balance", num_envs=1, seed=0, action_repeat=8)
    assert spec.max_episode_steps == 125
    _, terminated, truncated, info = _run_until_done(env)
    assert truncated[0] and not terminated[0] and info["episodes"][0]["length"] == 125


def test_dmc_event_rewards_fire_each_level_once_per_episode():
    """cartpole-balance starts upright (per-step reward near 1): every level fires at the
    episode's first step and never again until the next episode's first step."""
    env, _ = envs.make("dmc:cartpole-balance_events", num_envs=1, seed=0, action_repeat=8)
    env.reset()
    rewards, fired = [], []
    for _ in range(126):  # one episode of 125 steps, and the next one's first
        _, reward, _, _, _ = env.step(np.zeros((1, 1), np.float32))
        rewards.append(float(reward[0]))
        fired.append(env.envs[0].unwrapped.last_events)
    assert rewards[0] == 4.0 and fired[0] == [0, 1, 2, 3] and rewards[125] == 4.0
    assert sum(rewards[1:125]) == 0.0 and not any(fired[1:125])
    with pytest.raises(ValueError, match="levels of the per-step reward"):
        envs.make("dmc:cartpole-swingup", events=[0.5, 2.0])


def test_episode_return_is_raw_with_clipping_and_episodic_life():
    env, spec = envs.make("atari:Breakout", seed=1, clip_rewards=True, episodic_life=True)
    env.reset()
    clipped_sum, lives_lost, ended_game = 0.0, 0, None
    for _ in range(5_000):
        _, r, te, tr, info = env.step(env.action_space.sample())
        assert abs(r[0]) <= 1.0
        clipped_sum += r[0]
        lives_lost += int(te[0])
        if info["episodes"]:
            ended_game = info["episodes"][0]
            break
    assert ended_game is not None and lives_lost == 5  # five lives: four life-loss ends, then game over
    assert ended_game["return"] >= clipped_sum  # Breakout bricks are worth >= 1 point


def test_fire_reset_launches_breakouts_ball_after_every_reset_and_lost_life():
    """Doing nothing loses Breakout's lives only once something presses FIRE for each ball."""

    def lives_lost(fire_reset, steps=2_000):
        env, _ = envs.make("atari:Breakout", seed=0, episodic_life=True, fire_reset=fire_reset)
        env.reset()
        lost = 0
        for _ in range(steps):
            lost += int(env.step(np.zeros(1, np.int64))[2][0])  # NOOP
        return lost

    assert lives_lost(fire_reset=False) == 0  # the ball is never launched
    assert lives_lost(fire_reset=True) >= 5  # a game over and more: every reset relaunches it


@pytest.mark.parametrize("env_id,size", [("gym:HalfCheetah-v5", 64), ("dmc:cheetah-run", 84)])
def test_pixel_observations(env_id, size):
    env, spec = envs.make(env_id, num_envs=1, seed=0, pixels=True, size=size)
    obs, _ = env.reset()
    assert spec.obs_shape == (size, size, 3) and obs.shape == (1, size, size, 3) and obs.dtype == np.uint8
    obs2, *_ = env.step(env.action_space.sample())
    assert obs.std() > 1.0  # a rendered scene, not a blank frame
    assert not np.array_equal(obs, obs2)


@pytest.mark.parametrize(
    "env_id", ["gym:HalfCheetah-v5", "dmc:walker-walk", "minigrid:MiniGrid-DoorKey-8x8-v0"]
)
def test_seeding_is_reproducible(env_id):
    def rollout(seed):
        env, _ = envs.make(env_id, num_envs=2, seed=seed)
        out = [env.reset()[0]]
        for _ in range(60):
            out.append(env.step(env.action_space.sample())[0])
        return np.stack(out)

    a, b, c = rollout(3), rollout(3), rollout(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_unknown_ids_list_namespaces_and_close_matches():
    with pytest.raises(ValueError, match="gym:HalfCheetah-v5"):
        envs.make("gym:HalfCheeta-v5")
    with pytest.raises(ValueError, match="namespaces: gym, dmc, atari, mo, minigrid"):
        envs.make("foo:bar")
    with pytest.raises(ValueError, match="dmc:cheetah-run"):
        envs.make("dmc:cheetah-rn")
    with pytest.raises(ValueError, match="no namespace"):
        envs.make("Pong")
    with pytest.raises(ValueError, match="valid options"):
        envs.make("dmc:cheetah-run", pixel=True)


@pytest.mark.parametrize(
    "env_id,options",
    [
        ("gym:Pendulum-v1", {"max_episode_steps": 5}),
        ("mo:mo-halfcheetah-v5", {"max_episode_steps": 5}),
        ("minigrid:MiniGrid-Empty-5x5-v0", {"max_episode_steps": 5}),
        ("dmc:cartpole-swingup", {"action_repeat": 200}),
    ],
)
def test_every_namespace_truncates_and_keeps_the_final_observation(env_id, options):
    env, spec = envs.make(env_id, num_envs=2, seed=0, **options)
    first, _ = env.reset()
    for t in range(1, 100):  # noqa: B007 (t is read after the loop)
        obs, _, terminated, truncated, info = env.step(env.action_space.sample())
        if (terminated | truncated).any():
            break
    assert truncated.all() and not terminated.any() and t == spec.max_episode_steps == 5
    assert [e["length"] for e in info["episodes"]] == [5, 5]
    # the returned obs starts the next episode; the final one differs from it and is kept
    assert not np.array_equal(info["next_obs"], obs)
