"""Soft Actor-Critic (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications").

The v2 algorithm: twin soft Q networks with Polyak-averaged targets (eq. 5-7, clipped double
Q from Fujimoto et al. 2018), a tanh-squashed Gaussian policy trained by the
reparameterization trick (eq. 10-11, appendix C), and a temperature alpha tuned to a target
entropy of -dim(A) (eq. 18). Continuous (bounded Box) actions.

Everything between two env steps is one jitted call (``train_step``): add the transition to
the on-device replay, run ``utd`` updates in a ``lax.scan`` (each samples its own batch and
computes its reward with the Shaper at the env-step clock, so shaping terms plug in with no
change here), and draw the next action from the updated policy. The replay is donated, so
nothing is copied.

Rewards are computed per step at sample time: ``n_step=1`` samples ``Transitions``;
``n_step > 1`` samples ``Sequences`` [B, n] and sums the Shaper's per-step rewards into the
n-step return (``rl.returns.n_step_return``), cut at the episode's end. Bootstrapping:
gamma^m (1 - terminated); a truncated episode (time limit) still bootstraps from its final
observation, which the replay keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rl import batch as batch_lib
from rl import config as config_lib
from rl import envs
from rl.batch import Sequences
from rl.evaluation import run_episodes
from rl.loop import (
    Common,
    Lifecycle,
    check_cadence,
    replay_transition,
    start_replay,
    update_cadence,
    write_annotations,
)
from rl.nets import MLP, action_bounds, ensemble, from_env, tanh_gaussian_sample, to_env
from rl.replay import Replay
from rl.returns import n_step_return
from rl.rewards import Shaper, from_config
from rl.rewards.annotate import EpisodeAnnotator
from rl.rewards.feedback import RECENT, Feedback, physics_field
from rl.runs import Run, print_result


@dataclass
class Config(Common):
    total_steps: int = 1_000_000  # env steps
    buffer_size: int = 1_000_000  # replay capacity in env steps
    batch_size: int = 256  # transitions per gradient update
    learning_starts: int = 5_000  # uniform random actions (and no updates) before this step
    utd: float = 1.0  # gradient updates per env step (update-to-data ratio); < 1 updates every 1/utd steps
    gamma: float = 0.99  # discount
    tau: float = 0.005  # Polyak rate of the target Q networks
    n_step: int = 1  # n-step returns of shaped per-step rewards for the Q target (1 = the paper)
    hidden: tuple[int, ...] = (256, 256)  # actor and critic MLP widths
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    init_alpha: float = 1.0  # initial temperature
    autotune: bool = True  # tune alpha to target_entropy (eq. 18); False keeps init_alpha
    target_entropy: float | None = None  # None: -dim(A), the paper's heuristic
    log_std_min: float = -20.0  # policy log std clip, as in the reference implementation
    log_std_max: float = 2.0
    reset_critic_at: int = 0  # env step at which the critic restarts (PEBBLE; 0: never)

    def validate(self) -> None:
        super().validate()
        err = config_lib.ConfigError
        if self.buffer_size < max(2 * self.num_envs, self.batch_size):
            raise err(f"buffer_size must be >= batch_size and >= 2 * num_envs, got {self.buffer_size}")
        if self.batch_size < 1 or self.n_step < 1 or self.learning_starts < 0:
            raise err("batch_size and n_step must be >= 1 and learning_starts >= 0")
        check_cadence(self.utd, self.num_envs, "utd")
        if not 0 < self.tau <= 1 or not 0 <= self.gamma <= 1:
            raise err("tau must be in (0, 1] and gamma in [0, 1]")
        if self.n_step >= self.buffer_size // self.num_envs:
            raise err(
                f"n_step ({self.n_step}) must be shorter than the replay's column ({self.buffer_size // self.num_envs})"
            )


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
    step: jax.Array  # env steps taken: the Shaper's clock
    updates: jax.Array  # gradient updates done


def optimizers(cfg: Config):
    return optax.adam(cfg.actor_lr), optax.adam(cfg.critic_lr), optax.adam(cfg.alpha_lr)


def target_entropy(cfg: Config, spec: envs.EnvSpec) -> float:
    return -float(np.prod(spec.action_shape)) if cfg.target_entropy is None else cfg.target_entropy


def build_shaper(cfg: Config, shaper: Shaper | None = None) -> Shaper:
    """The Shaper SAC trains on (the config's unless one is given), with SAC's gamma."""
    return (shaper or from_config(cfg.shaper)).bind(cfg.gamma)


def init(cfg: Config, spec: envs.EnvSpec, key, shaper: Shaper | None = None) -> State:
    shaper = build_shaper(cfg, shaper)
    k_actor, k_critic, k_shaper, key = jax.random.split(key, 4)
    # one program: an eager init compiles op by op
    nets = jax.jit(partial(init_networks, cfg, spec))(k_actor, k_critic)
    return State(**nets, shaper=shaper.init(k_shaper, spec), key=key, step=jnp.int32(0), updates=jnp.int32(0))


def init_networks(cfg: Config, spec: envs.EnvSpec, k_actor, k_critic) -> dict:
    """Actor, twin critic, target, temperature and their optimizer states."""
    actor = networks(cfg, spec)[0]
    actor_params = actor.init(k_actor, jnp.zeros((1, *spec.obs_shape), jnp.float32))["params"]
    log_alpha = jnp.log(jnp.float32(cfg.init_alpha))
    a_opt, _, t_opt = optimizers(cfg)
    return {
        "actor": actor_params,
        **init_critic(cfg, spec, k_critic),
        "log_alpha": log_alpha,
        "actor_opt": a_opt.init(actor_params),
        "alpha_opt": t_opt.init(log_alpha),
    }


def init_critic(cfg: Config, spec: envs.EnvSpec, key) -> dict:
    """Twin critic, its target (a copy) and its optimizer state."""
    obs = jnp.zeros((1, *spec.obs_shape), jnp.float32)
    act = jnp.zeros((1, *spec.action_shape), jnp.float32)
    critic = networks(cfg, spec)[1].init(key, obs, act)["params"]
    return {
        "critic": critic,
        "target": jax.tree.map(jnp.copy, critic),
        "critic_opt": optimizers(cfg)[1].init(critic),
    }


def reset_critic(cfg: Config, spec: envs.EnvSpec, state: State) -> State:
    """Fresh critic, target and critic optimizer (PEBBLE, Lee et al. 2021, sec. 4: after the
    unsupervised pre-training, whose Q values estimate a reward no longer trained on)."""
    key, k = jax.random.split(state.key)
    return state._replace(**jax.jit(partial(init_critic, cfg, spec))(k), key=key)


def init_loop(cfg: Config, spec: envs.EnvSpec) -> dict:
    """The host-side loop state a checkpoint keeps: the envs' current observations (a resumed
    run ends their open episodes with them)."""
    return {
        "obs": np.zeros((spec.num_envs, *spec.obs_shape), spec.obs_dtype),
        "teacher_returns": np.full(RECENT, np.nan),  # the preference teachers' recent true returns
    }


def act(cfg: Config, spec: envs.EnvSpec, state: State, obs, key, deterministic: bool = False):
    """Env-scaled actions for ``obs`` [E, ...]: a policy sample, or tanh(mean) when deterministic."""
    actor, _ = networks(cfg, spec)
    low, high = action_bounds(spec, "SAC")
    mean, log_std = actor.apply({"params": state.actor}, obs.astype(jnp.float32))
    a = jnp.tanh(mean) if deterministic else tanh_gaussian_sample(key, mean, log_std)[0]
    return to_env(a, low, high)


# -- losses (pure, tested against hand-computed values) --------------------------------------


def soft_q_target(reward, bootstrap, next_q, next_logp, alpha):
    """Eq. 3 with clipped double Q: G + bootstrap (min_i Q'_i(s', a') - alpha log pi(a'|s')).

    ``next_q`` is [2, B]; ``bootstrap`` is gamma^m (1 - terminated) after m accumulated steps
    (truncation bootstraps)."""
    soft_v = jnp.min(next_q, axis=0) - alpha * next_logp
    return reward + bootstrap * soft_v


def returns_and_successors(cfg: Config, batch, reward):
    """(obs, action, G, bootstrap, next_obs) of the Q target from the Shaper's per-step
    ``reward``: the batch itself for ``Transitions``; for ``Sequences`` [B, n] the n-step
    return over each row's episode prefix and the observation after its last step."""
    if not isinstance(batch, Sequences):
        return batch.obs, batch.action, reward, cfg.gamma * batch.discount, batch.next_obs
    g, bootstrap, last = jax.vmap(n_step_return, in_axes=(0, 0, 0, None))(
        reward, batch.discount, batch.mask, cfg.gamma
    )
    rows = jnp.arange(batch.lead[0])
    return batch.obs[:, 0], batch.action[:, 0], g, bootstrap, batch.next_obs[rows, last]


def temperature_loss(log_alpha, logp, target_entropy):
    """Eq. 18: J(alpha) = E[-alpha log pi(a|s) - alpha H_target], with alpha = exp(log_alpha)."""
    return jnp.mean(-jnp.exp(log_alpha) * (jax.lax.stop_gradient(logp) + target_entropy))


def update(cfg: Config, spec: envs.EnvSpec, shaper: Shaper, state: State, batch):
    """One gradient step on critic, actor and temperature from a replay ``batch``
    (``Transitions``, or ``Sequences`` [B, n_step]); the reward is the Shaper's at env step
    ``state.step``."""
    actor, critic = networks(cfg, spec)
    a_opt, c_opt, t_opt = optimizers(cfg)
    low, high = action_bounds(spec, "SAC")
    key, k_next, k_pi, k_shaper = jax.random.split(state.key, 4)
    shaper_state, rewards, shaper_info = shaper.step(state.shaper, batch, k_shaper, state.step)
    if rewards.total.shape != batch.lead:
        raise ValueError(
            f"SAC trains on a scalar reward but the Shaper returns shape {rewards.total.shape[len(batch.lead) :]} "
            "per step; set shaper.scalarize (linear | chebyshev) for vector rewards"
        )
    obs, action, reward, bootstrap, next_obs = returns_and_successors(cfg, batch, rewards.total)
    obs, next_obs = obs.astype(jnp.float32), next_obs.astype(jnp.float32)
    action = from_env(action.astype(jnp.float32), low, high)
    alpha = jnp.exp(state.log_alpha)

    # critic (eq. 5-7)
    mean, log_std = actor.apply({"params": state.actor}, next_obs)
    next_action, next_logp = tanh_gaussian_sample(k_next, mean, log_std)
    next_q = critic.apply({"params": state.target}, next_obs, next_action)
    target = jax.lax.stop_gradient(soft_q_target(reward, bootstrap, next_q, next_logp, alpha))

    def critic_loss(params):
        q = critic.apply({"params": params}, obs, action)
        return 0.5 * jnp.mean(jnp.sum((q - target[None]) ** 2, axis=0)), q

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

    target_params = optax.incremental_update(critic_params, state.target, cfg.tau)
    metrics = {
        "loss/critic": q_loss,
        "loss/actor": pi_loss,
        "loss/alpha": t_loss,
        "sac/alpha": alpha,
        "sac/entropy": -jnp.mean(logp),
        "sac/q": jnp.mean(q),
        "sac/target": jnp.mean(target),
        **rewards.means(batch.mask),
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
    return update_cadence(cfg.utd, cfg.num_envs)


def sample(cfg: Config, replay: Replay, rstate, key):
    """A training batch: ``Transitions``, or ``Sequences`` [B, n_step] for n-step returns."""
    if cfg.n_step == 1:
        return replay.sample(rstate, key, cfg.batch_size)
    return replay.sample_sequences(rstate, key, cfg.batch_size, cfg.n_step)


def train_step(
    cfg, spec, shaper, replay: Replay, learn: bool, state: State, rstate, transition: dict, next_obs
):
    """Everything between two env steps, in one jitted call: add ``transition`` to the replay,
    run the updates (a ``lax.scan``) if ``learn``, fit the Shaper's fitted terms when due, and
    return the action for ``next_obs`` (uniform random before ``learning_starts``, a policy
    sample after)."""
    rstate = replay.add(rstate, **transition)
    before, step = state.step, state.step + cfg.num_envs
    state = state._replace(step=step)  # the Shaper's clock: env steps taken
    metrics = {}
    if learn:

        def one(state, _):
            key, k_sample = jax.random.split(state.key)
            return update(cfg, spec, shaper, state._replace(key=key), sample(cfg, replay, rstate, k_sample))

        state, metrics = jax.lax.scan(one, state, None, length=updates_per_call(cfg)[0])
        metrics = jax.tree.map(jnp.mean, metrics)
        if shaper.fitted():
            key, k_data, k_fit = jax.random.split(state.key, 3)
            data = sample(cfg, replay, rstate, k_data)
            shaper_state = jax.lax.cond(
                shaper.fit_due(before, step),
                lambda: shaper.fit(state.shaper, data, k_fit)[0],
                lambda: state.shaper,
            )
            state = state._replace(shaper=shaper_state, key=key)
    key, k_act, k_rand = jax.random.split(state.key, 3)
    low, high = action_bounds(spec, "SAC")
    random = jax.random.uniform(k_rand, (cfg.num_envs, *spec.action_shape), minval=low, maxval=high)
    action = jnp.where(step < cfg.learning_starts, random, act(cfg, spec, state, next_obs, k_act))
    return state._replace(key=key), rstate, action, metrics


# -- the loop --------------------------------------------------------------------------------


def provided(replay: Replay) -> set[str]:
    """The batch fields SAC's Shaper can read: the contract's and the replay's extras."""
    names = {
        "episode",
        "step",
        *(k for k, _, _ in replay.extras),
        *(f"next_{k}" for k, _, _ in replay.extras),
    }
    return set(batch_lib.FIELDS) | names


def train(cfg: Config, run: Run | None = None, resume=None, shaper: Shaper | None = None) -> dict:
    """Train for ``cfg.total_steps`` env steps; ``resume`` is a checkpoint directory."""
    shaper = build_shaper(cfg, shaper)
    env, spec = envs.make(cfg.env, cfg.num_envs, cfg.seed, **cfg.env_options)  # bad options fail here
    low, high = action_bounds(spec, "SAC")  # a discrete env fails here, before a run directory exists
    # annotators (DreamSmooth) write their fields into the replay when each episode ends
    annotator = EpisodeAnnotator(shaper.annotators(), cfg.num_envs) if shaper.annotators() else None
    phys = physics_field(shaper, env)  # a person labels vector observations from rendered states
    replay = Replay.from_spec(spec, cfg.buffer_size, {**shaper.annotations(spec), **phys} or None)
    shaper.check(provided(replay), "SAC")  # a term reading a missing field fails here
    shaper.check_scalar(spec.reward_shape, "SAC")
    if Feedback.wanted(shaper):  # a preference stream that cannot run fails before the run exists
        Feedback.check(shaper, spec.obs_shape, spec.action_shape, frames=bool(phys))
    run = run or Run.create(cfg, "sac")
    print(config_lib.to_yaml(run.cfg), flush=True)
    state, loop = init(cfg, spec, jax.random.PRNGKey(cfg.seed), shaper), init_loop(cfg, spec)
    state, loop, replay, rstate, obs = start_replay(cfg, env, shaper, replay, state, loop, resume)
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
    every = updates_per_call(cfg)[1]
    described = {"shaper": shaper.describe()}
    # preference streams' feedback sessions (PEBBLE): labels into the run's labels.jsonl
    renderer = envs.StateRenderer(cfg.env, cfg.env_options) if phys else None
    feedback = Feedback(shaper, replay, run.dir / "labels.jsonl", spec.max_episode_steps, cfg.seed, renderer)
    states = env.physics_states() if phys else None  # of ``obs``
    feedback.restore(loop["teacher_returns"])

    def save():
        loop = {"obs": obs, "teacher_returns": feedback.recent()}
        return run.save_checkpoint(step, state, replay, rstate, loop=loop, **described)

    def save_failed():
        return run.save_failed(step, state, loop={"obs": obs, "teacher_returns": feedback.recent()})

    life = Lifecycle(
        cfg,
        run,
        step,
        save=save,
        save_failed=save_failed,
        evaluate=lambda: evaluate(cfg, state, cfg.eval_episodes),
        extra=lambda: {"perf/updates": int(state.updates)},
    )
    try:
        while step < cfg.total_steps:
            next_obs, reward, terminated, truncated, info = env.step(action)
            transition = replay_transition(obs, action, reward, terminated, truncated, info, annotator)
            if phys:
                transition["extras"] = {**(transition["extras"] or {}), "physics": states}
                states = env.physics_states()
            learn = step + cfg.num_envs >= cfg.learning_starts and (step // cfg.num_envs + 1) % every == 0
            state, rstate, action, out = (learn_fn if learn else collect_fn)(
                state, rstate, transition, next_obs
            )
            action = np.asarray(action)
            rstate = write_annotations(replay, rstate, annotator, obs, reward, terminated | truncated)
            life.add(out)
            obs = next_obs
            before, step = step, step + cfg.num_envs
            if before < cfg.reset_critic_at <= step:
                state = reset_critic(cfg, spec, state)
            if feedback:
                shaper_state, m = feedback.after(state.shaper, rstate, before, step, info["episodes"])
                state = state._replace(shaper=shaper_state)
                life.add(m)
            life.after(step, info["episodes"])
        summary = life.finish(step)
    finally:
        run.close()
        env.close()
        if renderer is not None:
            renderer.close()
    print_result(summary, cfg.eval_episodes)
    return summary


@partial(jax.jit, static_argnums=0)
def _deterministic(actor: Actor, params, obs, low, high):
    return to_env(jnp.tanh(actor.apply({"params": params}, obs.astype(jnp.float32))[0]), low, high)


def evaluate(cfg: Config, state: State, episodes: int, video_path=None, loop=None) -> dict:
    """Deterministic policy (tanh of the mean) on a separately seeded env."""
    spec = envs.make_spec(cfg.env, 1, cfg.seed, **cfg.env_options)
    actor, low, high = networks(cfg, spec)[0], *action_bounds(spec, "SAC")  # compiled once per actor shape
    return run_episodes(
        cfg, lambda obs: _deterministic(actor, state.actor, obs, low, high), episodes, video_path
    )
