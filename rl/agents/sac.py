"""Soft Actor-Critic (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications").

The v2 algorithm: twin soft Q networks with Polyak-averaged targets (eq. 5-7, clipped double
Q from Fujimoto et al. 2018), a tanh-squashed Gaussian policy trained by the
reparameterization trick (eq. 10-11, appendix C), and a temperature alpha tuned to a target
entropy of -dim(A) (eq. 18). Continuous (bounded Box) actions.

Everything between two env steps is one jitted call (``train_step``): add the transition to
the on-device replay, run ``utd`` updates in a ``lax.scan`` (each samples its own batch and
computes its reward with the Shaper, so shaping terms plug in with no change here), and
draw the next action from the updated policy. The replay is donated, so nothing is copied.

Bootstrapping: targets use ``discount * (1 - terminated)``; a truncated episode (time limit)
still bootstraps from its final observation, which the replay keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import flax.linen as nn
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rl import checkpoint, envs
from rl import config as config_lib
from rl.config import Common
from rl.evaluation import run_episodes
from rl.nets import MLP, ensemble, tanh_gaussian_sample
from rl.replay import Replay
from rl.rewards import Shaper, from_config
from rl.rewards.smoothing import EpisodeSmoother
from rl.runs import Every, Run, print_result


@dataclass
class Config(Common):
    total_steps: int = 1_000_000  # env steps
    buffer_size: int = 1_000_000  # replay capacity in env steps
    batch_size: int = 256  # transitions per gradient update
    learning_starts: int = 5_000  # uniform random actions (and no updates) before this step
    utd: float = 1.0  # gradient updates per env step (update-to-data ratio); < 1 updates every 1/utd steps
    gamma: float = 0.99  # discount
    tau: float = 0.005  # Polyak rate of the target Q networks
    n_step: int = 1  # n-step returns for the Q target (1 = the paper)
    hidden: tuple[int, ...] = (256, 256)  # actor and critic MLP widths
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    init_alpha: float = 1.0  # initial temperature
    autotune: bool = True  # tune alpha to target_entropy (eq. 18); False keeps init_alpha
    target_entropy: float | None = None  # None: -dim(A), the paper's heuristic
    log_std_min: float = -20.0  # policy log std clip, as in the reference implementation
    log_std_max: float = 2.0

    def validate(self) -> None:
        super().validate()
        err = config_lib.ConfigError
        if self.buffer_size < max(2 * self.num_envs, self.batch_size):
            raise err(f"buffer_size must be >= batch_size and >= 2 * num_envs, got {self.buffer_size}")
        if self.batch_size < 1 or self.n_step < 1 or self.learning_starts < 0:
            raise err("batch_size and n_step must be >= 1 and learning_starts >= 0")
        if self.utd <= 0:
            raise err(f"utd must be > 0, got {self.utd}")
        per_call = self.utd * self.num_envs
        if per_call >= 1 and not float(per_call).is_integer():
            raise err(f"utd * num_envs must be a whole number of updates per env step, got {per_call}")
        if per_call < 1 and not float(1 / per_call).is_integer():
            raise err(f"1 / (utd * num_envs) must be a whole number of env steps, got {1 / per_call}")
        if not 0 < self.tau <= 1 or not 0 <= self.gamma <= 1:
            raise err("tau must be in (0, 1] and gamma in [0, 1]")
        if self.shaper.smoothing != "none" and self.n_step > 1:
            raise err("shaper.smoothing (DreamSmooth) smooths one-step rewards: use n_step=1")


# -- networks --------------------------------------------------------------------------------


class Actor(nn.Module):
    """obs -> (mean, log_std) of the pre-tanh Gaussian."""

    hidden: tuple[int, ...]
    action_dim: int
    log_std_min: float
    log_std_max: float

    @nn.compact
    def __call__(self, obs):
        x = MLP(self.hidden, 2 * self.action_dim)(obs)
        mean, log_std = jnp.split(x, 2, axis=-1)
        return mean, jnp.clip(log_std, self.log_std_min, self.log_std_max)


class QNet(nn.Module):
    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, obs, action):
        return MLP(self.hidden, 1)(jnp.concatenate([obs, action], -1))[..., 0]


class TwinQ(nn.Module):
    """Two independent Q networks evaluated as one batched network: output [2, ...]."""

    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, obs, action):
        return ensemble(QNet, 2)(self.hidden)(obs, action)


def networks(cfg: Config, spec: envs.EnvSpec) -> tuple[Actor, TwinQ]:
    dim = int(np.prod(spec.action_shape))
    return Actor(tuple(cfg.hidden), dim, cfg.log_std_min, cfg.log_std_max), TwinQ(tuple(cfg.hidden))


# -- state -----------------------------------------------------------------------------------


class State(NamedTuple):
    actor: dict  # actor params
    critic: dict  # twin Q params
    target: dict  # Polyak-averaged twin Q params
    log_alpha: jax.Array
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    alpha_opt: optax.OptState
    shaper: object  # the Shaper's state (learned reward terms, running stats)
    key: jax.Array
    step: jax.Array  # env steps taken
    updates: jax.Array  # gradient updates done
    obs: jax.Array  # the envs' current observations (a resumed run ends their episodes with them)


def optimizers(cfg: Config):
    return optax.adam(cfg.actor_lr), optax.adam(cfg.critic_lr), optax.adam(cfg.alpha_lr)


def target_entropy(cfg: Config, spec: envs.EnvSpec) -> float:
    return -float(np.prod(spec.action_shape)) if cfg.target_entropy is None else cfg.target_entropy


def init(cfg: Config, spec: envs.EnvSpec, key, shaper: Shaper | None = None) -> State:
    shaper = shaper or from_config(cfg.shaper)
    actor, critic = networks(cfg, spec)
    k_actor, k_critic, k_shaper, key = jax.random.split(key, 4)
    obs = jnp.zeros((1, *spec.obs_shape), jnp.float32)
    act = jnp.zeros((1, *spec.action_shape), jnp.float32)
    actor_params = actor.init(k_actor, obs)["params"]
    critic_params = critic.init(k_critic, obs, act)["params"]
    log_alpha = jnp.log(jnp.float32(cfg.init_alpha))
    a_opt, c_opt, t_opt = optimizers(cfg)
    return State(
        actor=actor_params,
        critic=critic_params,
        target=jax.tree.map(jnp.copy, critic_params),
        log_alpha=log_alpha,
        actor_opt=a_opt.init(actor_params),
        critic_opt=c_opt.init(critic_params),
        alpha_opt=t_opt.init(log_alpha),
        shaper=shaper.init(k_shaper, spec),
        key=key,
        step=jnp.int32(0),
        updates=jnp.int32(0),
        obs=np.zeros((spec.num_envs, *spec.obs_shape), spec.obs_dtype),
    )


# -- action scaling: the policy acts in [-1, 1]; the env and the replay see its bounds ------


def action_bounds(spec: envs.EnvSpec):
    space = spec.action_space
    if not isinstance(space, gym.spaces.Box) or not (
        np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))
    ):
        raise ValueError(f"SAC needs a bounded continuous (Box) action space; {spec.env_id} has {space}")
    return np.asarray(space.low, np.float32), np.asarray(space.high, np.float32)


def to_env(action, low, high):
    return low + (action + 1.0) * 0.5 * (high - low)


def from_env(action, low, high):
    return 2.0 * (action - low) / (high - low) - 1.0


def act(cfg: Config, spec: envs.EnvSpec, state: State, obs, key, deterministic: bool = False):
    """Env-scaled actions for ``obs`` [E, ...]: a policy sample, or tanh(mean) when deterministic."""
    actor, _ = networks(cfg, spec)
    low, high = action_bounds(spec)
    mean, log_std = actor.apply({"params": state.actor}, obs.astype(jnp.float32))
    a = jnp.tanh(mean) if deterministic else tanh_gaussian_sample(key, mean, log_std)[0]
    return to_env(a, low, high)


# -- losses (pure, tested against hand-computed values) --------------------------------------


def soft_q_target(reward, discount, terminated, next_q, next_logp, alpha):
    """Eq. 3 with clipped double Q: r + gamma^n (1 - terminated) (min_i Q'_i(s', a') - alpha log pi(a'|s')).

    ``next_q`` is [2, B]; ``discount`` is gamma ** (steps accumulated). Truncation bootstraps."""
    soft_v = jnp.min(next_q, axis=0) - alpha * next_logp
    return reward + discount * (1.0 - terminated.astype(jnp.float32)) * soft_v


def temperature_loss(log_alpha, logp, target_entropy):
    """Eq. 18: J(alpha) = E[-alpha log pi(a|s) - alpha H_target], with alpha = exp(log_alpha)."""
    return jnp.mean(-jnp.exp(log_alpha) * (jax.lax.stop_gradient(logp) + target_entropy))


def update(cfg: Config, spec: envs.EnvSpec, shaper: Shaper, state: State, batch: dict):
    """One gradient step on critic, actor and temperature from a replay ``batch``."""
    actor, critic = networks(cfg, spec)
    a_opt, c_opt, t_opt = optimizers(cfg)
    low, high = action_bounds(spec)
    key, k_next, k_pi, k_shaper = jax.random.split(state.key, 4)
    obs, next_obs = batch["obs"].astype(jnp.float32), batch["next_obs"].astype(jnp.float32)
    action = from_env(batch["action"].astype(jnp.float32), low, high)
    reward, reward_info = shaper.reward(state.shaper, batch)
    if reward.ndim != 1:
        raise ValueError(
            f"SAC trains on a scalar reward but the Shaper returns shape {reward.shape[1:]} per "
            "transition; add a scalarization term for vector rewards"
        )
    alpha = jnp.exp(state.log_alpha)

    # critic (eq. 5-7)
    mean, log_std = actor.apply({"params": state.actor}, next_obs)
    next_action, next_logp = tanh_gaussian_sample(k_next, mean, log_std)
    next_q = critic.apply({"params": state.target}, next_obs, next_action)
    target = soft_q_target(reward, batch["discount"], batch["terminated"], next_q, next_logp, alpha)
    target = jax.lax.stop_gradient(target)

    def critic_loss(params):
        q = critic.apply({"params": params}, obs, action)
        return 0.5 * jnp.mean(jnp.sum((q - target) ** 2, axis=0)), q

    (q_loss, q), grads = jax.value_and_grad(critic_loss, has_aux=True)(state.critic)
    c_updates, critic_opt = c_opt.update(grads, state.critic_opt, state.critic)
    critic_params = optax.apply_updates(state.critic, c_updates)

    # actor (eq. 7 with the reparameterized sample of eq. 11), on the updated critic
    def actor_loss(params):
        mean, log_std = actor.apply({"params": params}, obs)
        a, logp = tanh_gaussian_sample(k_pi, mean, log_std)
        q_pi = jnp.min(critic.apply({"params": critic_params}, obs, a), axis=0)
        return jnp.mean(alpha * logp - q_pi), logp

    (pi_loss, logp), grads = jax.value_and_grad(actor_loss, has_aux=True)(state.actor)
    a_updates, actor_opt = a_opt.update(grads, state.actor_opt, state.actor)
    actor_params = optax.apply_updates(state.actor, a_updates)

    # temperature (eq. 18)
    log_alpha, alpha_opt = state.log_alpha, state.alpha_opt
    ent_target = target_entropy(cfg, spec)
    t_loss, grad = jax.value_and_grad(temperature_loss)(log_alpha, logp, ent_target)
    if cfg.autotune:
        t_updates, alpha_opt = t_opt.update(grad, alpha_opt, log_alpha)
        log_alpha = optax.apply_updates(log_alpha, t_updates)

    shaper_state, shaper_info = shaper.update(state.shaper, batch, k_shaper)
    target_params = optax.incremental_update(critic_params, state.target, cfg.tau)
    metrics = {
        "loss/critic": q_loss,
        "loss/actor": pi_loss,
        "loss/alpha": t_loss,
        "sac/alpha": alpha,
        "sac/entropy": -jnp.mean(logp),
        "sac/q": jnp.mean(q),
        **reward_info,
        **shaper_info,
    }
    new = state._replace(
        actor=actor_params,
        critic=critic_params,
        target=target_params,
        log_alpha=log_alpha,
        actor_opt=actor_opt,
        critic_opt=critic_opt,
        alpha_opt=alpha_opt,
        shaper=shaper_state,
        key=key,
        updates=state.updates + 1,
    )
    return new, metrics


def updates_per_call(cfg: Config) -> tuple[int, int]:
    """(updates per vector-env step, vector-env steps between updates)."""
    per_call = cfg.utd * cfg.num_envs
    return (int(per_call), 1) if per_call >= 1 else (1, int(round(1 / per_call)))


def train_step(
    cfg, spec, shaper, replay: Replay, learn: bool, state: State, rstate, transition: dict, next_obs
):
    """Everything between two env steps, in one jitted call: add ``transition`` to the replay,
    run the updates (a ``lax.scan``) if ``learn``, and return the action for ``next_obs``
    (uniform random before ``learning_starts``, a policy sample after)."""
    rstate = replay.add(rstate, **transition)
    step = state.step + cfg.num_envs
    metrics = {}
    if learn:

        def one(state, _):
            key, k_sample = jax.random.split(state.key)
            batch = replay.sample(rstate, k_sample, cfg.batch_size, cfg.n_step, cfg.gamma)
            return update(cfg, spec, shaper, state._replace(key=key), batch)

        state, metrics = jax.lax.scan(one, state, None, length=updates_per_call(cfg)[0])
        metrics = jax.tree.map(jnp.mean, metrics)
    key, k_act, k_rand = jax.random.split(state.key, 3)
    low, high = action_bounds(spec)
    random = jax.random.uniform(k_rand, (cfg.num_envs, *spec.action_shape), minval=low, maxval=high)
    action = jnp.where(step < cfg.learning_starts, random, act(cfg, spec, state, next_obs, k_act))
    return state._replace(key=key, step=step), rstate, action, metrics


# -- the loop --------------------------------------------------------------------------------


def train(cfg: Config, run: Run | None = None, resume=None, shaper: Shaper | None = None) -> dict:
    """Train for ``cfg.total_steps`` env steps; ``resume`` is a checkpoint directory."""
    shaper = shaper or from_config(cfg.shaper)
    env, spec = envs.make(cfg.env, cfg.num_envs, cfg.seed, **cfg.env_options)  # bad options fail here
    low, high = action_bounds(spec)  # a discrete env fails here, before a run directory exists
    run = run or Run.create(cfg, "sac")
    print(config_lib.to_yaml(run.cfg), flush=True)
    # DreamSmooth: a smoothed copy of the env reward, written when each episode ends
    smoother = None
    if cfg.shaper.smoothing != "none":
        smoother = EpisodeSmoother(cfg.num_envs, cfg.shaper.smoothing, **cfg.shaper.smoothing_options())
    extras = {"smoothed_reward": (spec.reward_shape, "float32")} if smoother else None
    replay = Replay.from_spec(spec, cfg.buffer_size, extras)
    state = init(cfg, spec, jax.random.PRNGKey(cfg.seed), shaper)
    obs, _ = env.reset()
    if resume is not None:
        state, replay, rstate, _ = checkpoint.load(resume, state)
        rstate = replay.close_episodes(rstate, state.obs)
        obs, _ = env.reset(seed=cfg.seed + int(state.step))  # fresh episodes, reproducible from here
    else:
        rstate = replay.init()
    # two programs, with and without updates (a lax.cond around the updates measured slower)
    collect_fn, learn_fn = (
        jax.jit(partial(train_step, cfg, spec, shaper, replay, learn), donate_argnums=(0, 1))
        for learn in (False, True)
    )
    step = int(state.step)
    key, k0 = jax.random.split(jnp.asarray(state.key))
    state = state._replace(key=key)
    if step < cfg.learning_starts:
        action = np.asarray(
            jax.random.uniform(k0, (cfg.num_envs, *spec.action_shape), minval=low, maxval=high)
        )
    else:
        action = np.asarray(act(cfg, spec, state, jnp.asarray(obs), k0))
    log, evals, ckpts = (
        Every(cfg.log_every, step),
        Every(cfg.eval_every, step),
        Every(cfg.checkpoint_every, step),
    )
    metrics, every = {}, updates_per_call(cfg)[1]

    def save():
        run.save_checkpoint(step, state._replace(obs=obs), replay, rstate)

    try:
        while step < cfg.total_steps:
            next_obs, reward, terminated, truncated, info = env.step(action)
            transition = dict(
                obs=obs,
                action=action,
                reward=reward,
                terminated=terminated,
                truncated=truncated,
                next_obs=info["next_obs"],
                extras={"smoothed_reward": reward} if smoother else None,  # raw until the episode ends
            )
            learn = step + cfg.num_envs >= cfg.learning_starts and (step // cfg.num_envs + 1) % every == 0
            state, rstate, action, out = (learn_fn if learn else collect_fn)(
                state, rstate, transition, next_obs
            )
            action = np.asarray(action)
            for e, smoothed in smoother.step(reward, terminated | truncated) if smoother else ():
                rstate = replay.write_episode(rstate, "smoothed_reward", e, smoothed)
            metrics = out or metrics  # the losses of the latest update
            obs = next_obs
            step += cfg.num_envs
            run.record_episodes(info["episodes"])
            if log.due(step) or step >= cfg.total_steps:
                m = {k: float(v) for k, v in jax.device_get(metrics).items()}
                m.update(
                    run.episode_metrics(), **{"perf/sps": run.sps(step), "perf/updates": int(state.updates)}
                )
                run.check_finite(step, m, save_fn=save)
                run.log(step, m)
            if evals.due(step):
                run.log(step, evaluate(cfg, state, cfg.eval_episodes))
            if ckpts.due(step):
                save()
            run.progress(step, cfg.total_steps)
        save()
        final = evaluate(cfg, state, cfg.eval_episodes)
        run.log(step, final)
        summary = run.finish({"steps": step, **final})
    finally:
        run.close()
        env.close()
    print_result(summary, cfg.eval_episodes)
    return summary


@partial(jax.jit, static_argnums=0)
def _deterministic(actor: Actor, params, obs, low, high):
    return to_env(jnp.tanh(actor.apply({"params": params}, obs.astype(jnp.float32))[0]), low, high)


def evaluate(cfg: Config, state: State, episodes: int, video_path=None) -> dict:
    """Deterministic policy (tanh of the mean) on a separately seeded env."""
    spec = envs.make_spec(cfg.env, 1, cfg.seed, **cfg.env_options)
    actor, low, high = networks(cfg, spec)[0], *action_bounds(spec)  # compiled once per actor shape
    return run_episodes(
        cfg, lambda obs: _deterministic(actor, state.actor, obs, low, high), episodes, video_path
    )
