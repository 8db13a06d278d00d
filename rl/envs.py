"""One environment layer for every agent: ``make("namespace:id", num_envs, seed, **options)``.

Namespaces: ``gym`` (any gymnasium id), ``dmc`` (DeepMind Control suite), ``atari`` (ALE v5
with the standard preprocessing), ``mo`` (MO-Gymnasium, vector reward), ``minigrid``, and the
JAX-native ``xminigrid`` (XLand-MiniGrid) and ``gymnax``, which ``rl.jaxenvs`` also serves as
pure functions for fully jitted training (here: a host vector env over their jitted step).

Every namespace returns the same thing: a synchronous gymnasium vector env whose ``step``
keeps ``terminated`` and ``truncated`` distinct and autoresets in the same step, and an
:class:`EnvSpec`. Because the observation returned at an episode end is already the next
episode's first one, ``step`` also puts ``info["next_obs"]``: the true next observation of
every env (the final observation where an episode ended). Agents bootstrap from it on
truncation and the replay stores it as the episode's final slot, so it is never lost.
Finished episodes are listed in ``info["episodes"]`` with their raw (unclipped) return.
"""

from __future__ import annotations

import ctypes.util
import dataclasses
import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# Offscreen MuJoCo rendering must be chosen before mujoco is first imported: EGL (headless
# GPU or Mesa) when its library is present, OSMesa (software) otherwise.
if "MUJOCO_GL" not in os.environ:
    os.environ["MUJOCO_GL"] = "egl" if ctypes.util.find_library("EGL") else "osmesa"
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import gymnasium as gym  # noqa: E402
from gymnasium.vector import AutoresetMode, VectorEnv  # noqa: E402
from gymnasium.vector.utils import batch_space  # noqa: E402

NAMESPACES = ("gym", "dmc", "atari", "mo", "minigrid", "xminigrid", "gymnax")


@dataclass(frozen=True)
class EnvSpec:
    """What an agent needs to know to build networks and buffers for an env."""

    env_id: str
    num_envs: int
    obs_shape: tuple[int, ...]
    obs_dtype: str
    action_space: gym.Space  # the space of one env's action
    reward_shape: tuple[int, ...]  # () for a scalar reward, (k,) for k objectives
    max_episode_steps: int | None
    # shapes of the fields an agent adds to its batches beyond the env's (a world model's
    # latents, ``rl.rewards.latent``): terms that read them size their networks from here
    fields: dict = dataclasses.field(default_factory=dict, compare=False)

    @property
    def discrete(self) -> bool:
        return isinstance(self.action_space, gym.spaces.Discrete)

    @property
    def action_shape(self) -> tuple[int, ...]:
        return tuple(self.action_space.shape or ())

    @property
    def action_dtype(self) -> str:
        return str(self.action_space.dtype)

    @property
    def num_actions(self) -> int:
        """Number of discrete actions, or the action dimension for continuous actions."""
        if self.discrete:
            return int(self.action_space.n)
        return int(np.prod(self.action_shape))

    @property
    def reward_dim(self) -> int:
        return int(np.prod(self.reward_shape)) if self.reward_shape else 1


class VecEnv(VectorEnv):
    """A synchronous vector env with same-step autoreset, vector rewards and batched final
    observations (gymnasium's ``SyncVectorEnv`` semantics with ``AutoresetMode.SAME_STEP``).

    Written out rather than subclassed: SyncVectorEnv's per-step info merging cost about
    80 us a step, as much as a MuJoCo step. Synchronous on purpose: on 2 cores the
    subprocess version measured slower.
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]], seed: int, reward_shape=()):
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)
        first = self.envs[0]
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(first.observation_space, self.num_envs)
        self.action_space = batch_space(first.action_space, self.num_envs)
        self.metadata = {**first.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}
        self.render_mode = first.render_mode
        self.spec = first.spec
        self.reward_shape = tuple(reward_shape)
        self._seed = seed
        self._seeded = False
        self.action_space.seed(seed)
        self.single_action_space.seed(seed)

    def _empty_obs(self):
        space = self.single_observation_space
        return np.empty((self.num_envs, *space.shape), space.dtype)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        # The first reset uses make()'s seed so a made env is reproducible as it comes.
        if seed is None and not self._seeded:
            seed = self._seed
        self._seeded = True
        seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else seed
        seeds = seeds if seeds is not None else [None] * self.num_envs
        obs = self._empty_obs()
        for i, (env, s) in enumerate(zip(self.envs, seeds)):
            obs[i] = env.reset(seed=s, options=options)[0]
        return obs, {}

    def step(self, actions):
        n = self.num_envs
        obs = self._empty_obs()
        reward = np.zeros((n, *self.reward_shape), np.float64)
        terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)
        finals, episodes = {}, []
        for i, env in enumerate(self.envs):
            o, reward[i], terminated[i], truncated[i], info = env.step(actions[i])
            if terminated[i] or truncated[i]:
                finals[i] = o
                if "episode_return" in info:
                    episodes.append(
                        {"env": i, "return": info["episode_return"], "length": int(info["episode_length"])}
                    )
                o = env.reset()[0]
            obs[i] = o
        next_obs = obs
        if finals:
            next_obs = obs.copy()
            for i, o in finals.items():
                next_obs[i] = o
        return obs, reward, terminated, truncated, {"next_obs": next_obs, "episodes": episodes}

    def physics_states(self) -> np.ndarray | None:
        """[E, n] simulator states of the sub-envs' current observations (``physics_state``),
        or None for envs without one."""
        states = [physics_state(env) for env in self.envs]
        return None if states[0] is None else np.stack(states)

    def close_extras(self, **kwargs):
        for env in self.envs:
            env.close()


def physics_state(env: gym.Env) -> np.ndarray | None:
    """The simulator state behind a DMC env's observation (``physics.get_state()``, float32), or
    None for other envs. ``render_physics_state`` turns a stored one back into the frame a
    person sees (the same pixels as rendering the live env)."""
    u = env.unwrapped
    return np.asarray(u._env.physics.get_state(), np.float32) if isinstance(u, DMCEnv) else None


def render_physics_state(env: gym.Env, state) -> np.ndarray:
    """The frame of ``env`` (made with ``render: true``) put in simulator ``state``."""
    u = env.unwrapped
    with u._env.physics.reset_context():
        u._env.physics.set_state(np.asarray(state, np.float64))
    return u.render()


class StateRenderer:
    """Frames [..., H, W, 3] of stored simulator states [..., n], from an env of its own (the
    training envs are never moved)."""

    def __init__(self, env_id: str, options: dict):
        self.env, _ = make(env_id, 1, 0, **{**options, "render": True})
        self.env.reset()
        self.sub = self.env.envs[0]

    def __call__(self, states) -> np.ndarray:
        states = np.asarray(states)
        flat = states.reshape(-1, states.shape[-1])
        frames = np.stack([render_physics_state(self.sub, s) for s in flat])
        return frames.reshape(*states.shape[:-1], *frames.shape[1:])

    def close(self):
        self.env.close()


class EpisodeStats(gym.Wrapper):
    """Raw episode return and length, innermost so reward clipping and life loss do not touch it."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._return, self._length = 0.0, 0

    def reset(self, **kwargs):
        self._return, self._length = 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return = self._return + np.asarray(reward, dtype=np.float64)
        self._length += 1
        if terminated or truncated:
            info = {**info, "episode_return": self._return, "episode_length": self._length}
        return obs, reward, terminated, truncated, info


# ---------------------------------------------------------------------------------------
# Fast offscreen MuJoCo rendering: shadows, reflections and multisampling off. They must be
# set on the model before the rendering context is created (about 30 fps -> 800 fps at 64x64).


def fast_render_settings(model) -> None:
    model.vis.quality.shadowsize = 0
    model.vis.quality.offsamples = 0
    model.mat_reflectance[:] = 0.0


# ---------------------------------------------------------------------------------------
# Namespaces. Each builder takes (name, seed, options) and returns (thunk, reward_shape).


def _check_options(namespace: str, options: dict, allowed: dict[str, Any]) -> dict:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for namespace '{namespace}'; valid options: "
            + ", ".join(f"{k} (default {v!r})" for k, v in allowed.items())
        )
    return {**allowed, **options}


def _float32(env: gym.Env) -> gym.Env:
    """JAX computes in float32: cast float64 observations once, at the source."""
    space = env.observation_space
    if isinstance(space, gym.spaces.Box) and space.dtype == np.float64:
        from gymnasium.wrappers import TransformObservation

        box = gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32)
        env = TransformObservation(env, lambda o: np.asarray(o, np.float32), box)
    return env


def _pixels(env: gym.Env, size: int) -> gym.Env:
    from gymnasium.wrappers import AddRenderObservation, ResizeObservation

    env = AddRenderObservation(env, render_only=True)
    if env.observation_space.shape[:2] != (size, size):
        env = ResizeObservation(env, (size, size))
    return env


def _gym_ids() -> list[str]:
    return sorted(gym.registry)


def _build_gym(name: str, options: dict):
    opts = {"pixels": False, "size": 64, "render": False, "max_episode_steps": None}
    env_kwargs = {k: v for k, v in options.items() if k not in opts}
    o = {**opts, **{k: v for k, v in options.items() if k in opts}}

    def thunk():
        kwargs = dict(env_kwargs)
        if o["pixels"] or o["render"]:
            kwargs["render_mode"] = "rgb_array"
            if o["pixels"] and "mujoco" in str(gym.registry[name].entry_point):
                kwargs.update(width=o["size"], height=o["size"])
        if o["max_episode_steps"] is not None:
            kwargs["max_episode_steps"] = int(o["max_episode_steps"])
        env = gym.make(name, **kwargs)
        model = getattr(env.unwrapped, "model", None)
        if model is not None and hasattr(model, "vis"):
            fast_render_settings(model)
        env = EpisodeStats(env)
        return _pixels(env, o["size"]) if o["pixels"] else env

    return thunk, ()


class DMCEnv(gym.Env):
    """A DeepMind Control suite task as a gymnasium env with flattened float32 observations.

    The suite ends every episode by its time limit (truncated); a zero discount at the last
    step means a true terminal state (terminated).

    ``events`` (levels in (0, 1]) replaces the task's reward by one-step events, Crafter's
    achievement unlocks in a DMC task: reward 1 at the step where the task's per-step reward
    first reaches a level in the episode, 0 otherwise (each level fires at most once per
    episode; ``last_events`` holds the levels' indices fired by the last step). DMC's own
    sparse rewards last while the goal holds; these do not, which is the case DreamSmooth's
    claim is about. The ids ``<domain>-<task>_events`` are these with ``EVENT_LEVELS``.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self, domain, task, action_repeat=1, pixels=False, size=64, camera=0, render=False, events=()
    ):
        self._domain, self._task = domain, task
        self._events, self._reached, self.last_events = tuple(float(x) for x in events), set(), []
        if any(not 0 < x <= 1 for x in self._events):
            raise ValueError(f"dmc events are levels of the per-step reward in (0, 1], got {list(events)}")
        self._repeat, self._pixels, self._size, self._camera = action_repeat, pixels, size, camera
        self.render_mode = "rgb_array" if (render or pixels) else None
        self._renderer = None
        self._env = self._load(seed=None)
        spec = self._env.action_spec()
        self.action_space = gym.spaces.Box(
            spec.minimum.astype(np.float32), spec.maximum.astype(np.float32), dtype=np.float32
        )
        if pixels:
            self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        else:
            dim = sum(int(np.prod(v.shape)) for v in self._env.observation_spec().values())
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.max_episode_steps = int(np.ceil(self._env._step_limit / action_repeat))

    def _load(self, seed):
        from dm_control import suite

        env = suite.load(self._domain, self._task, task_kwargs={"random": seed})
        fast_render_settings(env.physics.model)
        self.close()  # a renderer belongs to one model
        return env

    def _obs(self, time_step):
        if self._pixels:
            return self.render()
        return np.concatenate([np.asarray(v, np.float32).ravel() for v in time_step.observation.values()])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:  # the suite seeds a task when it is loaded
            self._env = self._load(seed)
        self._reached, self.last_events = set(), []
        return self._obs(self._env.reset()), {}

    def _fired(self, reward: float) -> list[int]:
        new = [i for i, level in enumerate(self._events) if i not in self._reached and reward >= level]
        self._reached.update(new)
        return new

    def step(self, action):
        reward, self.last_events = 0.0, []
        for _ in range(self._repeat):
            time_step = self._env.step(action)
            if self._events:
                fired = self._fired(time_step.reward or 0.0)
                self.last_events += fired
                reward += len(fired)
            else:
                reward += time_step.reward or 0.0
            if time_step.last():
                break
        terminated = time_step.last() and time_step.discount == 0.0
        truncated = time_step.last() and not terminated
        return self._obs(time_step), reward, terminated, truncated, {}

    def render(self):
        # mujoco.Renderer keeps its scene and context between frames: about 4x faster than
        # dm_control's physics.render, which rebuilds them on every call (same pixels).
        import mujoco

        physics = self._env.physics
        if self._renderer is None:
            self._renderer = mujoco.Renderer(physics.model.ptr, self._size, self._size)
        self._renderer.update_scene(physics.data.ptr, camera=self._camera)
        return self._renderer.render()

    def close(self):
        if getattr(self, "_renderer", None) is not None:
            self._renderer.close()
            self._renderer = None


EVENT_LEVELS = (0.25, 0.5, 0.75, 0.95)  # the ``_events`` ids' levels of the per-step reward
EVENT_TASKS = ("cartpole-balance", "cartpole-swingup", "reacher-easy", "walker-walk", "cheetah-run")


def _dmc_ids() -> list[str]:
    from dm_control import suite

    return sorted([f"{d}-{t}" for d, t in suite.ALL_TASKS] + [f"{t}_events" for t in EVENT_TASKS])


def _build_dmc(name: str, options: dict):
    o = _check_options(
        "dmc",
        options,
        {"action_repeat": 1, "pixels": False, "size": 64, "camera": 0, "render": False, "events": ()},
    )
    if name.endswith("_events"):
        name, o["events"] = name[: -len("_events")], o["events"] or EVENT_LEVELS
    domain, task = name.split("-", 1)

    def thunk():
        return EpisodeStats(DMCEnv(domain, task, **o))

    return thunk, ()


class EpisodicLife(gym.Wrapper):
    """Atari: a lost life ends the agent's episode; the game resets only when it is over."""

    def __init__(self, env):
        super().__init__(env)
        self._lives, self._game_over = 0, True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self._lives:
            terminated = True
        self._lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self._game_over:
            obs, info = self.env.reset(**kwargs)
        else:  # continue the same game from the state after the lost life
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self._lives = self.env.unwrapped.ale.lives()
        self._game_over = False
        return obs, info


class FireReset(gym.Wrapper):
    """Atari games that wait for FIRE to start (Breakout's ball, a new life): press it after
    every reset, as the DQN-era wrappers do (Mnih et al. 2015; SB3 and CleanRL ``FireResetEnv``).
    Wrapped outside ``EpisodicLife``, so it also fires after a lost life."""

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        for action in (1, 2):  # FIRE, then a move: some games only start on the second press
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


def needs_fire(env: gym.Env) -> bool:
    meanings = env.unwrapped.get_action_meanings()
    return len(meanings) >= 3 and meanings[1] == "FIRE"


class ChannelsLast(gym.ObservationWrapper):
    """(stack, H, W) -> (H, W, stack): the layout flax convolutions expect."""

    def __init__(self, env):
        super().__init__(env)
        space = env.observation_space
        self.observation_space = gym.spaces.Box(0, 255, np.moveaxis(space.low, 0, -1).shape, np.uint8)

    def observation(self, obs):
        return np.moveaxis(np.asarray(obs), 0, -1)


def _atari_games() -> list[str]:
    import ale_py

    gym.register_envs(ale_py)
    return sorted(k[4:-3] for k in gym.registry if k.startswith("ALE/") and k.endswith("-v5"))


def _build_atari(name: str, options: dict):
    o = _check_options(
        "atari",
        options,
        {
            "episodic_life": False,
            "fire_reset": True,  # press FIRE after resets in games that have it (Breakout)
            "clip_rewards": False,
            "sticky_actions": 0.25,
            "noop_max": 30,
            "frame_stack": 4,
            "size": 84,
            "full_action_space": False,
            "max_episode_steps": None,  # agent steps (after frame skip); None: ALE's 108k frames
            "render": False,
        },
    )
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation, TransformReward

    def thunk():
        env = gym.make(
            f"ALE/{name}-v5",
            frameskip=1,  # AtariPreprocessing skips frames and max-pools the last two
            repeat_action_probability=o["sticky_actions"],
            full_action_space=o["full_action_space"],
            render_mode="rgb_array" if o["render"] else None,
        )
        env = AtariPreprocessing(
            env, noop_max=o["noop_max"], frame_skip=4, screen_size=o["size"], grayscale_obs=True
        )
        if o["max_episode_steps"] is not None:
            env = gym.wrappers.TimeLimit(env, int(o["max_episode_steps"]))
        env = EpisodeStats(env)
        if o["episodic_life"]:
            env = EpisodicLife(env)
        if o["fire_reset"] and needs_fire(env):
            env = FireReset(env)
        if o["clip_rewards"]:
            env = TransformReward(env, lambda r: float(np.sign(r)))
        return ChannelsLast(FrameStackObservation(env, o["frame_stack"]))

    return thunk, ()


def _mo_ids() -> list[str]:
    """mo-gymnasium's ids, and any registered env class that declares a ``reward_space`` (its
    convention for vector rewards)."""
    import mo_gymnasium  # noqa: F401  (registers the ids)

    return sorted(
        k
        for k, v in gym.registry.items()
        if "mo_gymnasium" in str(v.entry_point) or hasattr(v.entry_point, "reward_space")
    )


def _build_mo(name: str, options: dict):
    import mo_gymnasium

    o = _check_options("mo", options, {"max_episode_steps": None, "render": False})
    kwargs = {"render_mode": "rgb_array"} if o["render"] else {}
    if o["max_episode_steps"] is not None:
        kwargs["max_episode_steps"] = int(o["max_episode_steps"])

    def thunk():
        env = mo_gymnasium.make(name, **kwargs)
        model = getattr(env.unwrapped, "model", None)
        if model is not None and hasattr(model, "vis"):
            fast_render_settings(model)
        return EpisodeStats(env)

    probe = mo_gymnasium.make(name)
    shape = tuple(probe.unwrapped.reward_space.shape)
    probe.close()
    return thunk, shape


def _minigrid_ids() -> list[str]:
    import minigrid  # noqa: F401  (registers the ids)

    return sorted(k for k in gym.registry if k.startswith(("MiniGrid-", "BabyAI-")))


def _build_minigrid(name: str, options: dict):
    import minigrid  # noqa: F401
    from gymnasium.wrappers import FlattenObservation
    from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper

    o = _check_options("minigrid", options, {"obs": "image", "max_episode_steps": None, "render": False})
    if o["obs"] not in ("image", "flat", "rgb"):
        raise ValueError(f"minigrid option obs={o['obs']!r}; valid: 'image', 'flat', 'rgb'")

    def thunk():
        kwargs = {"render_mode": "rgb_array"} if (o["render"] or o["obs"] == "rgb") else {}
        if o["max_episode_steps"] is not None:
            kwargs["max_steps"] = int(o["max_episode_steps"])
        env = EpisodeStats(gym.make(name, **kwargs))
        if o["obs"] == "rgb":
            env = RGBImgPartialObsWrapper(env)
        env = ImgObsWrapper(env)
        return FlattenObservation(env) if o["obs"] == "flat" else env

    return thunk, ()


def _jax_ids(namespace: str):
    def ids() -> list[str]:
        from rl import jaxenvs

        return jaxenvs.list_ids(namespace)

    return ids


_IDS = {
    "gym": _gym_ids,
    "dmc": _dmc_ids,
    "atari": _atari_games,
    "mo": _mo_ids,
    "minigrid": _minigrid_ids,
    "xminigrid": _jax_ids("xminigrid"),
    "gymnax": _jax_ids("gymnax"),
}
_BUILD = {
    "gym": _build_gym,
    "dmc": _build_dmc,
    "atari": _build_atari,
    "mo": _build_mo,
    "minigrid": _build_minigrid,
}
_EXAMPLES = {
    "gym": "gym:HalfCheetah-v5",
    "dmc": "dmc:cheetah-run",
    "atari": "atari:Pong",
    "mo": "mo:mo-halfcheetah-v5",
    "minigrid": "minigrid:MiniGrid-DoorKey-8x8-v0",
    "xminigrid": "xminigrid:MiniGrid-DoorKey-8x8",
    "gymnax": "gymnax:CartPole-v1",
}


def list_ids(namespace: str) -> list[str]:
    """Every id the namespace supports (without the ``namespace:`` prefix)."""
    if namespace not in _IDS:
        raise ValueError(f"unknown namespace '{namespace}'; namespaces: {', '.join(NAMESPACES)}")
    return _IDS[namespace]()


def parse_id(env_id: str) -> tuple[str, str]:
    """Split and validate ``namespace:name``; raise with the closest valid ids when unknown."""
    if ":" not in env_id:
        raise ValueError(
            f"env id '{env_id}' has no namespace; write namespace:name with namespace one of "
            + ", ".join(NAMESPACES)
            + " (e.g. "
            + ", ".join(_EXAMPLES.values())
            + ")"
        )
    namespace, name = env_id.split(":", 1)
    if namespace not in NAMESPACES:
        close = difflib.get_close_matches(namespace, NAMESPACES, n=3)
        raise ValueError(
            f"unknown env namespace '{namespace}' in '{env_id}'; namespaces: {', '.join(NAMESPACES)}"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
        )
    ids = list_ids(namespace)
    if name not in ids:
        close = difflib.get_close_matches(name, ids, n=5, cutoff=0.5)
        hint = ", ".join(f"{namespace}:{c}" for c in close) or "run `rl envs` for the full list"
        raise ValueError(f"unknown env id '{env_id}'; closest valid ids: {hint}")
    return namespace, name


def make(env_id: str, num_envs: int = 1, seed: int = 0, **options) -> tuple[VecEnv, EnvSpec]:
    """Build ``num_envs`` copies of ``env_id`` as one synchronous vector env, and its spec.

    Options by namespace (unknown ones fail here, before any work):
      gym:      pixels, size (square render size), render, max_episode_steps, plus env kwargs
      dmc:      action_repeat, pixels, size, camera, render, events (levels: one-step event rewards)
      atari:    episodic_life, fire_reset, clip_rewards, sticky_actions, noop_max, frame_stack, size,
                full_action_space, render
      mo:       max_episode_steps, render
      minigrid: obs ('image' | 'flat' | 'rgb'), max_episode_steps, render
      xminigrid: max_episode_steps, view_size, interface ('xland' | 'minigrid');
      gymnax:   max_episode_steps
    Sub-env i is seeded with ``seed + i`` at the first reset (JAX-native envs: the key
    ``PRNGKey(seed)``); action spaces with ``seed``.
    """
    if int(num_envs) < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    namespace, name = parse_id(env_id)
    from rl import jaxenvs

    if namespace in jaxenvs.NAMESPACES:
        jax_env = jaxenvs.make(env_id, num_envs, **options)
        return jaxenvs.HostVecEnv(jax_env, seed), jax_env.spec
    build, reward_shape = _BUILD[namespace](name, options)

    def thunk():
        env = build()
        return _float32(env)

    env = VecEnv([thunk for _ in range(int(num_envs))], seed=int(seed), reward_shape=reward_shape)
    first = env.envs[0]
    limit = first.spec.max_episode_steps if first.spec is not None else None
    limit = limit or getattr(first.unwrapped, "max_episode_steps", None)
    if namespace == "minigrid":
        limit = first.unwrapped.max_steps
    if namespace == "atari":  # ALE v5 truncates at 108,000 frames; 4 frames per agent step
        limit = 108_000 // 4
    space = env.single_observation_space
    spec = EnvSpec(
        env_id=env_id,
        num_envs=int(num_envs),
        obs_shape=tuple(space.shape),
        obs_dtype=str(space.dtype),
        action_space=env.single_action_space,
        reward_shape=tuple(reward_shape),
        max_episode_steps=limit,
    )
    return env, spec


def make_spec(env_id: str, num_envs: int = 1, seed: int = 0, **options) -> EnvSpec:
    """The :class:`EnvSpec` of ``make(...)`` without keeping the envs (to rebuild a state's structure)."""
    env, spec = make(env_id, num_envs, seed, **options)
    env.close()
    return spec
