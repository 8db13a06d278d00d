"""JAX-native environments (``xminigrid:``, ``gymnax:``): vector envs as pure functions that
jit, scan and vmap, so a whole PPO iteration (rollout, Shaper, GAE, update) compiles into one
XLA program (``rl.agents.ppo``'s jitted path, PureJaxRL's shape).

    env = make("xminigrid:MiniGrid-DoorKey-8x8", num_envs=16)
    state, obs = env.reset(key)                                        # obs [E, ...]
    state, obs, reward, terminated, truncated, info = env.step(state, action, key)

``step`` keeps ``terminated`` and ``truncated`` apart and autoresets in the same step, as
``rl.envs`` does: ``obs`` is already the next episode's first observation where one ended, and
``info["next_obs"]`` the true next observation (the final one there). ``info`` also has
``done`` and, where ``done``, the finished episode's ``episode_return`` and ``episode_length``.
``rl.envs.make`` serves the same ids as a host-side gymnasium vector env (:class:`HostVecEnv`,
one jitted call per step) for the agents with host loops and for evaluation.

How ``xminigrid:MiniGrid-*`` (XLand-MiniGrid 0.9.3, Nikulin et al. 2024) differs from
``minigrid:MiniGrid-*-v0`` (Farama MiniGrid):

- observation: a [7, 7, 2] uint8 egocentric view of (tile, colour) ids, the door's state in
  its tile id (locked / closed / open); MiniGrid's is [7, 7, 3] (object, colour, state) with
  other ids. The view is transparent (walls do not occlude; MiniGrid's DoorKey occludes) and
  does not show the carried object.
- actions: 6 (forward, right, left, pick up, put down, toggle); MiniGrid has 7 (left, right,
  forward, pick up, drop, toggle, done), in another order.
- reward and episode length: the same, ``1 - 0.9 * steps / max_steps`` on reaching the goal
  and ``max_steps = 10 * width * height`` (640 on DoorKey-8x8, 2560 on 16x16).

``interface="minigrid"`` gives an XLand-MiniGrid task Farama MiniGrid's agent interface: its
[7, 7, 3] image (occluded, (object, colour, state) ids, the carried object on the agent's cell,
indexed [x, y]; tested cell for cell against ``MiniGridEnv.gen_obs``) and its 7 actions in its
order. The ids matter to a network on raw ids: XLand's are larger (a floor cell is (1, 7),
MiniGrid's empty cell (1, 0, 0)), and RLeXplore's orthogonally initialized torso on them
starts from a policy of entropy 1.23 against 1.60 on MiniGrid's ids (ln 6 = 1.79; 10 inits,
random-walk DoorKey-16x16 views), and PPO's entropy falls to 0.96 in 164k steps against 1.64.

``gymnax:`` (gymnax 0.0.9): its own autoreset is replaced by the one above, and its ``done``
split into ``terminated`` (the env's terminal check without the step limit) and ``truncated``
(the step limit alone), so agents bootstrap on truncation.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.struct
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

NAMESPACES = ("xminigrid", "gymnax")


@flax.struct.dataclass
class EnvState:
    inner: Any  # the library's per-env state, [E, ...]
    episode_return: jax.Array  # [E] (or [E, k]) return of the current episodes
    episode_length: jax.Array  # [E]


@dataclass(frozen=True)
class JaxEnv:
    """``num_envs`` copies of one env as pure functions; ``reset_one``/``step_one`` are one env's."""

    spec: Any  # rl.envs.EnvSpec
    reset_one: Callable  # key -> (state, obs)
    step_one: Callable  # (state, action, key) -> (state, next_obs, reward, terminated, truncated)

    def reset(self, key):
        inner, obs = jax.vmap(self.reset_one)(jax.random.split(key, self.spec.num_envs))
        zeros = jnp.zeros((self.spec.num_envs, *self.spec.reward_shape), jnp.float32)
        return EnvState(inner, zeros, jnp.zeros((self.spec.num_envs,), jnp.int32)), obs

    def step(self, state: EnvState, action, key):
        k_step, k_reset = jax.random.split(key)
        E = self.spec.num_envs
        inner, next_obs, reward, terminated, truncated = jax.vmap(self.step_one)(
            state.inner, action, jax.random.split(k_step, E)
        )
        done = terminated | truncated

        def pick(new, old):  # the fresh episode where one ended
            return jnp.where(done.reshape(done.shape + (1,) * (new.ndim - 1)), new, old)

        def reset(inner):  # episodes end in few steps: generate fresh ones only then
            fresh, first_obs = jax.vmap(self.reset_one)(jax.random.split(k_reset, E))
            return jax.tree.map(pick, fresh, inner), pick(first_obs, next_obs)

        inner, obs = jax.lax.cond(done.any(), reset, lambda inner: (inner, next_obs), inner)
        reward = reward.astype(jnp.float32)
        ret, length = state.episode_return + reward, state.episode_length + 1
        info = {
            "next_obs": next_obs,
            "done": done,
            "episode_return": pick(ret, jnp.zeros_like(ret)),
            "episode_length": jnp.where(done, length, 0),
        }
        state = EnvState(inner, pick(jnp.zeros_like(ret), ret), jnp.where(done, 0, length))
        return state, obs, reward, terminated, truncated, info


# -- the libraries ---------------------------------------------------------------------------


def list_ids(namespace: str) -> list[str]:
    if namespace == "xminigrid":
        import xminigrid

        return sorted(xminigrid.registered_environments())
    if namespace == "gymnax":
        import gymnax

        return sorted(gymnax.registered_envs)
    raise ValueError(f"unknown JAX env namespace '{namespace}'; namespaces: {', '.join(NAMESPACES)}")


def _xminigrid(name: str, options: dict):
    import xminigrid

    params_kw = {}
    if options.get("max_episode_steps") is not None:
        params_kw["max_steps"] = int(options["max_episode_steps"])
    if options.get("view_size") is not None:
        params_kw["view_size"] = int(options["view_size"])
    interface = options.get("interface") or "xland"
    if interface not in INTERFACES:
        raise ValueError(f"unknown xminigrid interface '{interface}'; interfaces: {', '.join(INTERFACES)}")
    env, params = xminigrid.make(name, **params_kw)
    if interface == "xland":
        view, num_actions = (lambda ts: ts.observation), env.num_actions(params)
        xland_step = functools.partial(env.step, params)
    else:
        view, num_actions = (
            (lambda ts: minigrid_view(ts.state.grid, ts.state.agent, params.view_size)),
            len(MINIGRID_TO_XLAND),
        )

        def xland_step(ts, action):
            stepped = env.step(params, ts, jnp.asarray(MINIGRID_TO_XLAND)[action])
            # MiniGrid's "done" changes nothing but the step count: turn, then undo the turn
            noop = stepped.replace(state=stepped.state.replace(agent=ts.state.agent))
            return jax.tree.map(lambda a, b: jnp.where(action == MINIGRID_DONE, a, b), noop, stepped)

    def reset_one(key):
        ts = env.reset(params, key)
        return ts, view(ts)

    def step_one(ts, action, key):  # xminigrid's step draws no randomness of its own
        ts = xland_step(ts, action)
        terminated = ts.last() & (ts.discount == 0)  # the goal reached
        return ts, view(ts), ts.reward, terminated, ts.last() & ~terminated

    obs = jax.eval_shape(lambda: reset_one(jax.random.PRNGKey(0))[1])
    space = gym.spaces.Box(0, 255, tuple(obs.shape), np.uint8)
    return reset_one, step_one, space, gym.spaces.Discrete(num_actions), int(params.max_steps)


INTERFACES = ("xland", "minigrid")

# Farama MiniGrid's actions (left, right, forward, pick up, drop, toggle, done) as XLand-MiniGrid's
# (0 forward, 1 right, 2 left, 3 pick up, 4 put down, 5 toggle); "done" is stepped as a turn
# right and undone.
MINIGRID_TO_XLAND = np.array([2, 1, 0, 3, 4, 5, 1], np.int32)
MINIGRID_DONE = 6


@functools.cache
def _minigrid_codes() -> np.ndarray:
    """[tile, colour] -> MiniGrid's (object, colour, state) ids (``minigrid/core/constants.py``).
    Tiles MiniGrid lacks (pyramid, hex, star) and colours it lacks get ids past its own."""
    from xminigrid.core.constants import NUM_COLORS, NUM_TILES, Colors, Tiles

    obj = {
        Tiles.EMPTY: 0,
        Tiles.FLOOR: 1,
        Tiles.WALL: 2,
        Tiles.BALL: 6,
        Tiles.SQUARE: 7,
        Tiles.PYRAMID: 11,
        Tiles.GOAL: 8,
        Tiles.KEY: 5,
        Tiles.DOOR_LOCKED: 4,
        Tiles.DOOR_CLOSED: 4,
        Tiles.DOOR_OPEN: 4,
        Tiles.HEX: 12,
        Tiles.STAR: 13,
    }
    state = {Tiles.DOOR_LOCKED: 2, Tiles.DOOR_CLOSED: 1}  # open doors and all else: 0
    colour = {
        Colors.RED: 0,
        Colors.GREEN: 1,
        Colors.BLUE: 2,
        Colors.PURPLE: 3,
        Colors.YELLOW: 4,
        Colors.GREY: 5,
        Colors.ORANGE: 6,
        Colors.WHITE: 7,
        Colors.BROWN: 8,
        Colors.PINK: 9,
    }
    table = np.zeros((NUM_TILES, NUM_COLORS, 3), np.uint8)
    for t in range(NUM_TILES):
        for c in range(NUM_COLORS):
            # MiniGrid encodes an empty cell as (empty, 0, 0) and an unseen one as (0, 0, 0)
            bare = t in (Tiles.EMPTY, Tiles.FLOOR)
            table[t, c] = (obj[t], 0 if bare else colour.get(c, 0), state.get(t, 0))
    return table


def minigrid_view(grid, agent, size: int):
    """Farama MiniGrid's image observation (``MiniGridEnv.gen_obs``) of an XLand-MiniGrid state:
    the egocentric view occluded by walls and closed doors (xminigrid's port of MiniGrid's
    ``process_vis``), the carried object drawn on the agent's cell, (object, colour, state)
    ids, indexed [x, y] as MiniGrid's ``Grid.encode`` is (the agent at [size // 2, size - 1])."""
    from xminigrid.core.observation import minigrid_field_of_view

    fov = minigrid_field_of_view(grid, agent, size, size)  # [y, x, (tile, colour)], agent at the bottom
    fov = fov.at[size - 1, size // 2].set(agent.pocket)  # an empty pocket is (EMPTY, EMPTY) ...
    ids = jnp.asarray(_minigrid_codes())[fov[..., 0], fov[..., 1]]
    # ... which MiniGrid shows as an empty cell, not an unseen one
    ids = ids.at[size - 1, size // 2, 0].max(1)
    return jnp.swapaxes(ids, 0, 1)


def _gymnax(name: str, options: dict):
    import gymnax
    from gymnax.environments import spaces

    env, params = gymnax.make(name)
    if options.get("max_episode_steps") is not None:
        if not hasattr(params, "max_steps_in_episode"):
            raise ValueError(f"gymnax:{name} has no step limit to set (max_episode_steps)")
        params = params.replace(max_steps_in_episode=int(options["max_episode_steps"]))
    limit = getattr(params, "max_steps_in_episode", None)
    unlimited = params.replace(max_steps_in_episode=2**30) if limit is not None else params

    def reset_one(key):
        obs, state = env.reset_env(key, params)
        return state, obs

    def step_one(state, action, key):
        obs, state, reward, done, _ = env.step_env(key, state, action, params)
        terminated = done & env.is_terminal(state, unlimited) if limit is not None else done
        return state, obs, reward, terminated, done & ~terminated

    obs = jax.eval_shape(lambda: reset_one(jax.random.PRNGKey(0))[1])
    space = gym.spaces.Box(-np.inf, np.inf, tuple(obs.shape), np.float32)
    a = env.action_space(params)
    if isinstance(a, spaces.Discrete):
        action_space = gym.spaces.Discrete(int(a.n))
    elif isinstance(a, spaces.Box):
        shape = tuple(a.shape)
        low, high = (np.broadcast_to(np.asarray(v, np.float32), shape) for v in (a.low, a.high))
        action_space = gym.spaces.Box(low, high, shape, np.float32)
    else:
        raise ValueError(
            f"gymnax:{name} has a {type(a).__name__} action space; Discrete and Box are supported"
        )
    return reset_one, step_one, space, action_space, limit


_BUILD = {"xminigrid": _xminigrid, "gymnax": _gymnax}
_OPTIONS = {
    "xminigrid": ("max_episode_steps", "view_size", "interface", "render"),
    "gymnax": ("max_episode_steps", "render"),
}


def make(env_id: str, num_envs: int = 1, **options) -> JaxEnv:
    """The functional vector env of a ``xminigrid:`` or ``gymnax:`` id (options:
    ``max_episode_steps``; xminigrid also ``view_size`` and ``interface``). Seeded by the key given to ``reset``."""
    from rl.envs import EnvSpec, parse_id

    namespace, name = parse_id(env_id)
    if namespace not in NAMESPACES:
        raise ValueError(f"'{env_id}' is not a JAX-native env; JAX namespaces: {', '.join(NAMESPACES)}")
    unknown = sorted(set(options) - set(_OPTIONS[namespace]))
    if unknown:
        close = {k: difflib.get_close_matches(k, _OPTIONS[namespace], n=1) for k in unknown}
        raise ValueError(
            f"unknown {namespace} option(s) {unknown}; valid: {', '.join(_OPTIONS[namespace])}"
            + "".join(f" (did you mean {c[0]} for {k}?)" for k, c in close.items() if c)
        )
    if options.get("render"):
        raise ValueError(f"{namespace} envs do not render frames here; evaluate without a video")
    if int(num_envs) < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    reset_one, step_one, obs_space, action_space, limit = _BUILD[namespace](name, options)
    spec = EnvSpec(
        env_id=env_id,
        num_envs=int(num_envs),
        obs_shape=tuple(obs_space.shape),
        obs_dtype=str(obs_space.dtype),
        action_space=action_space,
        reward_shape=(),
        max_episode_steps=limit,
    )
    return JaxEnv(spec, reset_one, step_one)


def is_jax(env_id: str) -> bool:
    return env_id.split(":", 1)[0] in NAMESPACES


class HostVecEnv(VectorEnv):
    """A :class:`JaxEnv` behind ``rl.envs``' gymnasium vector-env interface (numpy in and out,
    ``info["next_obs"]`` and ``info["episodes"]``), one jitted call a step: for the host-loop
    agents and evaluation. Seeded from ``seed`` at the first reset (or the ``seed`` given)."""

    def __init__(self, env: JaxEnv, seed: int):
        self.jax_env, spec = env, env.spec
        self.num_envs = spec.num_envs
        self.single_observation_space = gym.spaces.Box(
            0 if spec.obs_dtype == "uint8" else -np.inf,
            255 if spec.obs_dtype == "uint8" else np.inf,
            spec.obs_shape,
            np.dtype(spec.obs_dtype),
        )
        self.single_action_space = spec.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(spec.action_space, self.num_envs)
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}
        self.render_mode, self.spec, self.reward_shape = None, None, ()
        self._seed, self._key, self._state = int(seed), None, None
        self.action_space.seed(int(seed))
        self.single_action_space.seed(int(seed))
        self._reset, self._step = jax.jit(env.reset), jax.jit(env.step)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and self._key is None:
            seed = self._seed
        if seed is not None:
            self._key = jax.random.PRNGKey(int(seed))
        self._key, k = jax.random.split(self._key)
        self._state, obs = self._reset(k)
        return np.asarray(obs), {}

    def step(self, actions):
        self._key, k = jax.random.split(self._key)
        dtype = np.int32 if self.jax_env.spec.discrete else np.float32
        self._state, obs, reward, terminated, truncated, info = self._step(
            self._state, jnp.asarray(np.asarray(actions, dtype)), k
        )
        obs, reward, terminated, truncated, info = jax.device_get((obs, reward, terminated, truncated, info))
        episodes = [
            {
                "env": int(i),
                "return": float(info["episode_return"][i]),
                "length": int(info["episode_length"][i]),
            }
            for i in np.flatnonzero(info["done"])
        ]
        return (
            obs,
            reward.astype(np.float64),
            terminated,
            truncated,
            {"next_obs": info["next_obs"], "episodes": episodes},
        )

    def close(self, **kwargs):
        pass
