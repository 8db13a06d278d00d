"""Proximal Policy Optimization (Schulman et al. 2017) with the implementation details of
Huang et al. 2022 ("The 37 Implementation Details of PPO", CleanRL's ppo_continuous_action
and ppo_atari): clipped surrogate (eq. 7), GAE (Schulman et al. 2016, eq. 16), optional value
clipping, per-minibatch advantage normalization, orthogonal init, Adam with linear
learning-rate annealing, global gradient clipping, observation normalization (running
mean/std, clipped) and reward scaling by the running std of the discounted return.

Continuous actions: separate 64x64 tanh actor and critic MLPs, a state-independent log std.
Discrete actions: a shared torso (Nature CNN for Atari frames, a small CNN for MiniGrid's
grid, an MLP for vectors) with policy and value heads.

The rollout lives on the host and only samples actions (``rollout_actor``: the actor MLP in
numpy for vector observations, the jitted network for images); ``update`` computes the batch's
log probs and values in one pass under the same parameters. The training reward is the
Shaper's output on the whole rollout, swapped once to ``Sequences`` [E, T] (``rollout=True``:
row e continues env e's previous rollout) at the env-step clock, then scaled and fed to GAE
(time-major per env, vmapped). A truncated episode bootstraps from the value of its final
observation (``info["next_obs"]``).

Per-stream advantages (``intrinsic_head``, RND's PPO, Burda et al. 2019 section 2.3): a second
value head learns the return of the Shaper's fused intrinsic reward (``Rewards.intrinsic``)
with ``gamma_int`` and without episode ends, the first head the rest of the total (env reward,
potential shaping) with ``gamma`` and episode ends; the advantage is ``adv_coef_ext A_ext +
adv_coef_int A_int``, normalized per minibatch as one. Reward scaling touches the extrinsic
part only (the intrinsic streams carry their own normalization).

Preference rewards (PrefPPO, B-Pref's ``train_PrefPPO.py``; ``--config prefppo``): with a
``preference`` stream, every env step also goes into a replay of ``preference_buffer`` steps
that only the feedback sessions read (``rl.rewards.feedback``: queries drawn from it,
labelled, appended to ``labels.jsonl``, the ensemble fitted); each rollout's reward is then
the learned one, computed by the Shaper when the rollout is used. The replay is checkpointed.

On JAX-native envs (``rl.jaxenvs``) ``train_jitted`` runs rollout, Shaper, GAE and update as
one jitted ``lax.scan`` per log interval, seeds vmapped; ``update`` is the same function.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal, NamedTuple

import flax.linen as nn
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rl import batch as batch_lib
from rl import checkpoint, envs, jaxenvs
from rl import config as config_lib
from rl import demos as demos_lib
from rl.evaluation import run_episodes
from rl.loop import Common, Lifecycle, check_resumed_shaper, replay_transition
from rl.nets import (
    MLP,
    categorical_entropy,
    categorical_logp,
    encoder_for,
    gaussian_entropy,
    gaussian_logp,
    mlp_numpy,
    orthogonal,
)
from rl.replay import Replay
from rl.returns import gae
from rl.rewards import RunningStats, Shaper, from_config, registry
from rl.rewards.annotate import annotate_segments
from rl.rewards.feedback import RECENT, Feedback, physics_field
from rl.runs import Run, print_result


@dataclass
class Config(Common):
    total_steps: int = 1_000_000  # env steps (summed over envs)
    num_steps: int = 2048  # rollout length per env
    gamma: float = 0.99
    gae_lambda: float = 0.95
    lr: float = 3e-4
    anneal_lr: bool = True  # linear decay to 0 over training
    update_epochs: int = 10
    num_minibatches: int = 32  # minibatch = num_envs * num_steps / num_minibatches
    clip_coef: float = 0.2
    clip_vloss: bool = True  # clip the value update like the policy's
    norm_adv: bool = True  # normalize advantages per minibatch
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    norm_obs: bool = True  # running mean/std of vector observations (images are scaled to [0, 1] instead)
    norm_reward: bool = True  # divide rewards by the running std of the discounted return
    clip_obs: float = 10.0
    clip_reward: float = 10.0
    hidden: tuple[int, ...] = (64, 64)  # MLP widths (actor and critic; the head after a CNN torso)
    torso: Literal["default", "rlexplore"] = "default"  # grids: GridCNN, or RLeXplore's MinigridEncoder(512)
    actor_gain: float = 0.01  # orthogonal gain of the policy's output layer (CleanRL; rllte's agent: 1.0)
    adam_eps: float = 1e-5  # CleanRL's; rl-starter-files (MiniGrid) uses 1e-8
    # a second value head for the Shaper's fused intrinsic reward (Burda et al. 2019, section 2.3):
    # its own discount, non-episodic returns (episode ends do not cut it), A = c_ext A_ext + c_int A_int
    intrinsic_head: bool = False
    gamma_int: float = 0.99
    adv_coef_ext: float = 1.0  # RND: 2
    adv_coef_int: float = 1.0
    jit_env: bool = True  # JAX-native envs (xminigrid:, gymnax:): rollout and update in one jitted scan
    preference_buffer: int = 100_000  # env steps kept for the preference streams' queries (PrefPPO)
    # behaviour cloning on a demonstration file (``rl demos``) before the first rollout (Ibarz
    # et al. 2018, Algorithm 1 step 2): maximum likelihood of the demos' actions
    demos: str = ""
    bc_epochs: int = 0
    bc_lr: float = 1e-3
    bc_batch: int = 256

    def validate(self) -> None:
        super().validate()
        err = config_lib.ConfigError
        batch = self.num_envs * self.num_steps
        if self.num_steps < 1 or self.update_epochs < 1 or self.num_minibatches < 1:
            raise err("num_steps, update_epochs and num_minibatches must be >= 1")
        if batch % self.num_minibatches:
            raise err(
                f"num_envs * num_steps ({batch}) must divide into num_minibatches ({self.num_minibatches})"
            )
        if self.total_steps < batch:
            raise err(f"total_steps ({self.total_steps}) is less than one rollout ({batch} steps)")
        if not 0 <= self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise err("gamma and gae_lambda must be in [0, 1]")
        if self.bc_epochs < 0 or self.bc_batch < 1:
            raise err(f"bc_epochs must be >= 0 and bc_batch >= 1, got {self.bc_epochs}, {self.bc_batch}")
        if self.bc_epochs and not self.demos:
            raise err("bc_epochs > 0 needs demos=PATH (a file `rl demos` wrote)")

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return self.total_steps // self.batch_size


# -- networks --------------------------------------------------------------------------------


class ActorCritic(nn.Module):
    """``obs -> (policy params, value)``: (mean, log_std) for Box actions, logits for Discrete."""

    hidden: tuple[int, ...]
    num_actions: int
    discrete: bool
    encoder: nn.Module | None = None
    heads: int = 1  # value heads: 2 gives [..., 2] (extrinsic, intrinsic)
    actor_gain: float = 0.01

    @nn.compact
    def __call__(self, obs):
        if self.encoder is not None:  # shared torso, relu heads (CleanRL ppo_atari)
            x = self.encoder(obs)
            x = MLP(self.hidden, activation=nn.relu, kernel_init=orthogonal())(x) if self.hidden else x
            logits = nn.Dense(self.num_actions, kernel_init=orthogonal(self.actor_gain))(x)
            return logits, self._values(nn.Dense(self.heads, kernel_init=orthogonal(1.0))(x))
        value = self._values(
            MLP(self.hidden, self.heads, nn.tanh, orthogonal(), out_scale=1.0, name="critic")(obs)
        )
        out = MLP(
            self.hidden, self.num_actions, nn.tanh, orthogonal(), out_scale=self.actor_gain, name="actor"
        )(obs)
        if self.discrete:
            return out, value
        log_std = self.param("log_std", nn.initializers.zeros, (self.num_actions,))
        return (out, jnp.broadcast_to(log_std, out.shape)), value

    def _values(self, v):
        return v[..., 0] if self.heads == 1 else v


def network(cfg: Config, spec: envs.EnvSpec) -> ActorCritic:
    if not isinstance(spec.action_space, (gym.spaces.Box, gym.spaces.Discrete)):
        raise ValueError(f"PPO supports Box and Discrete actions; {spec.env_id} has {spec.action_space}")
    encoder = encoder_for(spec.obs_shape, torso=cfg.torso)
    if encoder is not None and not spec.discrete:
        raise ValueError(
            f"PPO's image networks have Discrete heads only; {spec.env_id} has {spec.action_space}"
        )
    return ActorCritic(
        tuple(cfg.hidden),
        spec.num_actions,
        spec.discrete,
        encoder,
        2 if cfg.intrinsic_head else 1,
        cfg.actor_gain,
    )


def log_prob(spec, pi, action):
    if spec.discrete:
        return categorical_logp(pi, action), categorical_entropy(pi)
    mean, log_std = pi
    return gaussian_logp(action, mean, log_std), gaussian_entropy(log_std)


# -- state -----------------------------------------------------------------------------------


class State(NamedTuple):
    params: dict
    opt: optax.OptState
    shaper: object  # the Shaper's state
    return_stats: RunningStats  # running stats of the discounted training return (reward scaling)
    returns: jax.Array  # [E] discounted training return of the current episodes
    key: jax.Array
    step: jax.Array  # env steps taken: the Shaper's clock


def optimizer(cfg: Config):
    per_update = cfg.update_epochs * cfg.num_minibatches

    def annealed(count):  # linear to 0, constant within an update (CleanRL sets it once per rollout)
        return cfg.lr * (1.0 - (count // per_update) / cfg.num_updates)

    lr = annealed if cfg.anneal_lr else cfg.lr
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(lr, eps=cfg.adam_eps))


def normalizes_obs(cfg: Config, spec: envs.EnvSpec) -> bool:
    return cfg.norm_obs and len(spec.obs_shape) == 1


def build_shaper(cfg: Config, shaper: Shaper | None = None) -> Shaper:
    """The Shaper PPO trains on (the config's unless one is given), with PPO's gamma."""
    return (shaper or from_config(cfg.shaper)).bind(cfg.gamma)


def init(cfg: Config, spec: envs.EnvSpec, key, shaper: Shaper | None = None) -> State:
    shaper = build_shaper(cfg, shaper)
    k_net, k_shaper, key = jax.random.split(key, 3)

    def nets(k):  # one program: an eager init compiles op by op
        params = network(cfg, spec).init(k, jnp.zeros((1, *spec.obs_shape), spec.obs_dtype))["params"]
        return params, optimizer(cfg).init(params)

    params, opt = jax.jit(nets)(k_net)
    return State(
        params=params,
        opt=opt,
        shaper=shaper.init(k_shaper, spec),
        return_stats=RunningStats.zeros(),
        returns=jnp.zeros((spec.num_envs,), jnp.float32),
        key=key,
        step=jnp.int32(0),
    )


def warmup_batch(next_obs) -> batch_lib.Transitions:
    """The warm-up steps' observations [n, E, ...] as the Transitions ``prepare`` reads."""
    x = jnp.asarray(next_obs).reshape(-1, *next_obs.shape[2:])
    n = x.shape[0]
    return batch_lib.transitions(x, jnp.zeros(n), jnp.zeros(n), x, jnp.zeros(n, bool), jnp.zeros(n, bool))


def init_loop(cfg: Config, spec: envs.EnvSpec) -> dict:
    """The host-side loop state a checkpoint keeps: the envs' current raw observations and the
    observation normalizer (host arrays, updated every env step)."""
    return {
        "obs": np.zeros((spec.num_envs, *spec.obs_shape), spec.obs_dtype),
        "obs_stats": RunningStats.zeros(spec.obs_shape if normalizes_obs(cfg, spec) else ()).host(),
        "teacher_returns": np.full(RECENT, np.nan),  # the preference teachers' recent true returns
    }


def observe(cfg, spec, stats: RunningStats, obs, update: bool = True):
    """``(stats, x)``: what the network sees for raw ``obs``. Vectors are folded into the running
    statistics first when ``update`` (gymnasium's NormalizeObservation), then normalized and
    clipped; images pass as they are (the encoder scales them). Host numpy in the host loop,
    jax.numpy inside the jitted rollout (the type of ``obs`` decides)."""
    if not normalizes_obs(cfg, spec):
        return stats, obs
    xp = np if isinstance(obs, np.ndarray) else jnp
    obs = xp.asarray(obs, xp.float32)
    if update:
        stats = stats.merge(obs, (0,))
    return stats, xp.clip(stats.normalize(obs), -cfg.clip_obs, cfg.clip_obs).astype(xp.float32)


@partial(jax.jit, static_argnums=0)
def _sample_jit(net, params, x, noise):
    return jnp.argmax(net.apply({"params": params}, x)[0] + noise, axis=-1)


def rollout_actor(cfg, spec):
    """``(host, act)``: the per-step sampler ``act(params, x, noise) -> action`` of the rollout.

    The rollout only needs actions: log probs and values of the whole batch are computed in
    one call at the start of ``update``, under the same parameters. With vector observations
    the actor MLP then runs in numpy on host parameters (``host`` is True: pass
    ``jax.device_get(params)``), which costs about 15 us a step where a jitted call costs
    about 100 us on CPU; images go through the jitted network. ``noise`` comes from the host's
    generator (``draw_noise``): the sample is mean + std * noise for Box actions, Gumbel-max
    for Discrete."""
    net = network(cfg, spec)
    if net.encoder is not None:
        return False, lambda params, x, noise: np.asarray(_sample_jit(net, params, x, noise))

    def act(params, x, noise):
        out = mlp_numpy(params["actor"], x)
        if spec.discrete:
            return np.argmax(out + noise, axis=-1)
        return out + np.exp(params["log_std"]) * noise

    return True, act


def draw_noise(spec, rng: np.random.Generator):
    if spec.discrete:
        return rng.gumbel(size=(spec.num_envs, spec.num_actions)).astype(np.float32)
    return rng.standard_normal((spec.num_envs, *spec.action_shape), np.float32)


def env_action(spec, action):
    """What the env receives: Box actions clipped to the bounds (the rollout keeps the sample)."""
    if spec.discrete:
        return action.astype(spec.action_dtype)
    return np.clip(action, spec.action_space.low, spec.action_space.high)


# -- advantages ------------------------------------------------------------------------------


def scale_rewards(cfg: Config, stats: RunningStats, returns, reward, done):
    """Reward scaling (gymnasium's NormalizeReward, in time order over the rollout): keep the
    discounted return per env, fold it into running stats, divide the reward by their std.
    Rewards [T, E] or [T, E, k]: a vector reward's objectives keep their own statistics."""

    def one(carry, x):
        stats, ret = carry
        r, d = x
        ret = ret * cfg.gamma + r
        stats = stats.merge(ret, (0,))
        scaled = jnp.clip(stats.scale(r), -cfg.clip_reward, cfg.clip_reward)
        return (stats, where_rows(~d, ret)), scaled

    (stats, returns), scaled = jax.lax.scan(one, (stats, returns), (reward, done))
    return stats, returns, scaled


# -- update ----------------------------------------------------------------------------------


def ppo_loss(cfg, spec, params, mb):
    """Clipped surrogate (eq. 7) + vf_coef * value loss - ent_coef * entropy."""
    pi, value = network(cfg, spec).apply({"params": params}, mb["policy_obs"])
    logp, entropy = log_prob(spec, pi, mb["action"])
    log_ratio = logp - mb["logp"]
    ratio = jnp.exp(log_ratio)
    adv = mb["advantage"]
    if cfg.norm_adv:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg_loss = jnp.maximum(-adv * ratio, -adv * jnp.clip(ratio, 1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
    v_loss = (value - mb["return"]) ** 2
    if cfg.clip_vloss:
        v_clipped = mb["value"] + jnp.clip(value - mb["value"], -cfg.clip_coef, cfg.clip_coef)
        v_loss = jnp.maximum(v_loss, (v_clipped - mb["return"]) ** 2)
    v_loss = 0.5 * v_loss.reshape(v_loss.shape[0], -1).mean(0).sum()  # summed over value heads
    loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy.mean()
    info = {
        "loss/policy": pg_loss,
        "loss/value": v_loss,
        "ppo/entropy": entropy.mean(),
        "ppo/approx_kl": ((ratio - 1) - log_ratio).mean(),
        "ppo/clipfrac": (jnp.abs(ratio - 1) > cfg.clip_coef).mean(),
    }
    return loss, info


def where_rows(mask, x):
    """``x`` where ``mask`` (its leading axes), 0 elsewhere: the value heads broadcast."""
    return jnp.where(
        jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x.shape), x, 0.0
    )


def advantages(cfg: Config, rollout: dict, reward, reward_int=None):
    """GAE per env (time-major, vmapped) of the [T, E] training reward. With ``intrinsic_head``:
    the extrinsic part (``reward``) on head 0 with ``gamma`` and episode ends, the intrinsic one
    (``reward_int``) on head 1 with ``gamma_int`` and no episode ends (non-episodic, as RND),
    the advantage ``adv_coef_ext * A_ext + adv_coef_int * A_int``; returns [T, E, 2]."""
    run = jax.vmap(gae, in_axes=(1, 1, 0, 1, 1, 1, None, None), out_axes=1)
    term, trunc = rollout["terminated"], rollout["truncated"]
    value, last, final = rollout["value"], rollout["last_value"], rollout["final_value"]
    if not cfg.intrinsic_head:
        return run(reward, value, last, final, term, trunc, cfg.gamma, cfg.gae_lambda)
    adv_e, ret_e = run(
        reward, value[..., 0], last[..., 0], final[..., 0], term, trunc, cfg.gamma, cfg.gae_lambda
    )
    never = jnp.zeros_like(term)
    adv_i, ret_i = run(
        reward_int, value[..., 1], last[..., 1], final[..., 1], never, never, cfg.gamma_int, cfg.gae_lambda
    )
    return cfg.adv_coef_ext * adv_e + cfg.adv_coef_int * adv_i, jnp.stack([ret_e, ret_i], -1)


def final_values(value_of, rollout: dict, like):
    """[T, E] values of the final observations where an episode was truncated, 0 elsewhere;
    truncations are rare, so the pass is skipped when there are none."""
    truncated = rollout["truncated"]
    return jax.lax.cond(
        truncated.any(),
        lambda: where_rows(truncated, value_of(rollout["final_obs"])),
        lambda: jnp.zeros_like(like),
    )


def rollout_values(cfg: Config, spec: envs.EnvSpec, params, rollout: dict) -> dict:
    """Log probs and values of the rollout under the parameters that collected it, in one pass:
    ``logp`` and ``value`` [T, E] of the taken actions and states, ``final_value`` [T, E] of the
    final observation where an episode was truncated (0 elsewhere), ``last_value`` [E]."""
    net = network(cfg, spec)

    def apply(x):  # [T, E, ...] through the network as one flat batch
        lead = x.shape[:2]
        pi, v = net.apply({"params": params}, x.reshape(-1, *x.shape[2:]))
        return jax.tree.map(lambda a: a.reshape(*lead, *a.shape[1:]), pi), v.reshape(lead)

    pi, value = apply(rollout["policy_obs"])
    return {
        "logp": log_prob(spec, pi, rollout["action"])[0],
        "value": value,
        "final_value": final_values(lambda x: apply(x)[1], rollout, value),
        "last_value": net.apply({"params": params}, rollout["last_obs"])[1],
    }


EXTRAS = ("value", "logp")  # what PPO's Shaper batch adds to the contract's fields


def shaper_batch(rollout: dict, annotations=()) -> batch_lib.Sequences:
    """The rollout [T, E] as the Shaper's ``Sequences`` [E, T] (``rollout=True``)."""
    return batch_lib.time_major_to_sequences(rollout, (*EXTRAS, *annotations))


def update(cfg: Config, spec: envs.EnvSpec, shaper: Shaper, state: State, rollout: dict):
    """Values -> Shaper reward -> reward scaling -> GAE -> ``update_epochs`` x ``num_minibatches`` steps.

    ``rollout`` holds [T, E] arrays: obs, policy_obs (the network's inputs), action, reward (the
    env's), terminated, truncated, next_obs, final_obs (the policy input of the final
    observation where truncated), the annotators' fields; and last_obs [E] (the policy input
    after the rollout). The Shaper sees it as ``Sequences`` [E, T] with ``value`` and ``logp``
    added, at env step ``state.step + batch_size`` (the rollout's steps taken)."""
    key, k_shaper, k_fit, k_perm = jax.random.split(state.key, 4)
    step = state.step + cfg.batch_size
    if "logp" not in rollout:  # the host loop only sampled actions; the jitted rollout has them
        rollout = {**rollout, **rollout_values(cfg, spec, state.params, rollout)}
    seen = {**rollout, "value": rollout["value"][..., 0]} if cfg.intrinsic_head else rollout  # terms: V_ext
    batch = shaper_batch(seen, tuple(shaper.annotations(spec)))
    shaper_state, rewards, shaper_info = shaper.step(state.shaper, batch, k_shaper, step)
    if rewards.total.shape != batch.lead:
        raise ValueError(
            f"PPO trains on a scalar reward but the Shaper returns shape {rewards.total.shape[2:]} per step; "
            "set shaper.scalarize (linear | chebyshev) for vector rewards"
        )
    if shaper.fitted():
        shaper_state = jax.lax.cond(
            shaper.fit_due(state.step, step),
            lambda: shaper.fit(shaper_state, batch, k_fit)[0],
            lambda: shaper_state,
        )
    reward = rewards.total.T  # back to time-major [T, E]
    reward_int = None
    if cfg.intrinsic_head:  # the fused intrinsic reward trains head 1, the rest head 0
        reward_int = jnp.zeros_like(reward) if rewards.intrinsic is None else rewards.intrinsic.T
        reward = reward - reward_int
    done = rollout["terminated"] | rollout["truncated"]
    return_stats, returns = state.return_stats, state.returns
    if cfg.norm_reward:
        return_stats, returns, reward = scale_rewards(cfg, return_stats, returns, reward, done)
    adv, ret = advantages(cfg, rollout, reward, reward_int)
    flat = {k: rollout[k] for k in ("policy_obs", "action", "logp", "value")}
    flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), {**flat, "advantage": adv, "return": ret})
    n, mb_size = cfg.batch_size, cfg.batch_size // cfg.num_minibatches
    grad_fn = jax.grad(partial(ppo_loss, cfg, spec), has_aux=True)
    tx = optimizer(cfg)

    def epoch(carry, k):
        def minibatch(carry, idx):
            params, opt = carry
            mb = jax.tree.map(lambda x: x[idx], flat)
            grads, info = grad_fn(params, mb)
            upd, opt = tx.update(grads, opt, params)
            return (optax.apply_updates(params, upd), opt), info

        perm = jax.random.permutation(k, n).reshape(cfg.num_minibatches, mb_size)
        return jax.lax.scan(minibatch, carry, perm)

    (params, opt), info = jax.lax.scan(
        epoch, (state.params, state.opt), jax.random.split(k_perm, cfg.update_epochs)
    )
    ret0, value0 = (ret[..., 0], rollout["value"][..., 0]) if cfg.intrinsic_head else (ret, rollout["value"])
    var_y = jnp.var(ret0)
    metrics = {
        **jax.tree.map(jnp.mean, info),
        "ppo/explained_variance": jnp.where(var_y > 0, 1 - jnp.var(ret0 - value0) / var_y, jnp.nan),
        "ppo/return": jnp.mean(ret0),
        **({"ppo/intrinsic_return": jnp.mean(ret[..., 1])} if cfg.intrinsic_head else {}),
        **rewards.means(),
        **shaper_info,
    }
    new = state._replace(
        params=params,
        opt=opt,
        shaper=shaper_state,
        return_stats=return_stats,
        returns=returns,
        key=key,
        step=step,
    )
    return new, metrics


# -- the loop --------------------------------------------------------------------------------


def behaviour_cloning(cfg: Config, spec: envs.EnvSpec, params, obs_stats: RunningStats, data: dict):
    """``(params, obs_stats, metrics)`` after ``bc_epochs`` passes of Adam (``bc_lr``) on the
    demos' negative log-likelihood, minibatches of ``bc_batch`` (Ibarz et al.'s J_E for a
    policy-gradient agent: the large-margin loss of their DQfD needs Q values). The observation
    statistics first take in the demos' observations, so the cloned policy sees the inputs the
    rollouts will give it."""
    net = network(cfg, spec)
    obs = np.asarray(data["obs"])
    if normalizes_obs(cfg, spec):
        obs_stats = obs_stats.merge(obs.astype(np.float32), (0,))
        obs = np.clip(obs_stats.normalize(obs.astype(np.float32)), -cfg.clip_obs, cfg.clip_obs).astype(
            np.float32
        )
    action = np.asarray(data["action"], np.int32 if spec.discrete else np.float32)
    tx = optax.adam(cfg.bc_lr)

    def loss(p, x, a):
        logp = log_prob(spec, net.apply({"params": p}, x)[0], a)[0]
        return -logp.mean(), logp

    @jax.jit
    def step(p, opt, x, a):
        (value, _), g = jax.value_and_grad(loss, has_aux=True)(p, x, a)
        upd, opt = tx.update(g, opt, p)
        return optax.apply_updates(p, upd), opt, value

    @jax.jit
    def accuracy(p, x, a):  # discrete: the greedy action's agreement; continuous: mean log-likelihood
        pi = net.apply({"params": p}, x)[0]
        return jnp.mean(jnp.argmax(pi, -1) == a) if spec.discrete else log_prob(spec, pi, a)[0].mean()

    rng = np.random.default_rng([cfg.seed, 7])
    opt, n, B = tx.init(params), len(action), min(cfg.bc_batch, len(action))
    first = float(loss(params, obs[:4096], action[:4096])[0])
    for _ in range(cfg.bc_epochs):
        order = rng.permutation(n)
        for i in range(0, n - B + 1, B):
            params, opt, _ = step(params, opt, obs[order[i : i + B]], action[order[i : i + B]])
    metrics = {"bc/loss_before": first, "bc/loss": float(loss(params, obs[:4096], action[:4096])[0]),
               "bc/fit": float(accuracy(params, obs[:4096], action[:4096])), "bc/steps": n}  # fmt: skip
    return params, obs_stats, metrics


def provided(shaper: Shaper, spec: envs.EnvSpec) -> set[str]:
    """The batch fields PPO's Shaper can read: the contract's, values, log probs, annotations."""
    return {*batch_lib.FIELDS, *EXTRAS, *shaper.annotations(spec)}


def train(cfg: Config, run: Run | None = None, resume=None, shaper: Shaper | None = None) -> dict:
    """Train for ``cfg.total_steps`` env steps; ``resume`` is a checkpoint directory. JAX-native
    envs run the jitted path (``train_jitted``) unless ``jit_env`` is off."""
    if jaxenvs.is_jax(cfg.env) and cfg.jit_env:
        if cfg.bc_epochs:
            raise ValueError("behaviour cloning runs on the host loop: set jit_env=false")
        return train_jitted(cfg, [run] if run is not None else None, resume, shaper)[0]
    shaper = build_shaper(cfg, shaper)
    env, spec = envs.make(cfg.env, cfg.num_envs, cfg.seed, **cfg.env_options)  # bad options fail here
    network(cfg, spec)  # unsupported spaces fail here, before a run directory exists
    shaper.check(provided(shaper, spec), "PPO")  # a term reading a missing field fails here
    shaper.check_scalar(spec.reward_shape, "PPO")
    phys = physics_field(shaper, env)  # a person labels vector observations from rendered states
    if Feedback.wanted(shaper):  # a preference stream that cannot run fails before the run exists
        Feedback.check(shaper, spec.obs_shape, spec.action_shape, frames=bool(phys))
    run = run or Run.create(cfg, "ppo")
    print(config_lib.to_yaml(run.cfg), flush=True)
    state, loop = init(cfg, spec, jax.random.PRNGKey(cfg.seed), shaper), init_loop(cfg, spec)
    obs, _ = env.reset()
    if resume is None and shaper.warmup_steps():  # random steps initialize the terms' statistics
        seen = [env.step(env.action_space.sample())[4]["next_obs"] for _ in range(shaper.warmup_steps())]
        state = state._replace(shaper=shaper.warm_up(state.shaper, warmup_batch(np.stack(seen))))
        obs, _ = env.reset()
    # preference streams (PrefPPO): a replay their feedback sessions draw queries from
    replay = Replay.from_spec(spec, cfg.preference_buffer, phys or None) if Feedback.wanted(shaper) else None
    rstate = replay.init() if replay is not None else None
    if resume is not None:
        check_resumed_shaper(resume, shaper)
        state, loop, saved, saved_rstate, _ = checkpoint.load(resume, state, loop)
        if replay is not None:
            replay, rstate = saved, replay.close_episodes(saved_rstate, loop["obs"])
        obs, _ = env.reset(seed=cfg.seed + int(state.step))  # fresh episodes, reproducible from here
    if resume is None and cfg.bc_epochs:  # pre-training on demonstrations
        params, obs_stats_bc, bc = behaviour_cloning(cfg, spec, state.params, loop["obs_stats"],
                                                     demos_lib.load(cfg.demos, spec))  # fmt: skip
        state, loop = state._replace(params=params), {**loop, "obs_stats": obs_stats_bc.host()}
        run.log(0, bc)
        print("[ppo] behaviour cloning: " + ", ".join(f"{k} {v:.4g}" for k, v in bc.items()), flush=True)
    feedback, renderer = None, None
    states = env.physics_states() if phys else None  # of ``obs``
    if replay is not None:
        renderer = envs.StateRenderer(cfg.env, cfg.env_options) if phys else None
        feedback = Feedback(
            shaper, replay, run.dir / "labels.jsonl", spec.max_episode_steps, cfg.seed, renderer
        )
        feedback.restore(loop["teacher_returns"])
    add = jax.jit(replay.add, donate_argnums=0) if replay is not None else None
    norm = normalizes_obs(cfg, spec)
    host, act = rollout_actor(cfg, spec)
    learn = jax.jit(partial(update, cfg, spec, shaper), donate_argnums=(0,))
    T, E = cfg.num_steps, cfg.num_envs
    buf = {
        "obs": np.zeros((T, E, *spec.obs_shape), spec.obs_dtype),
        "next_obs": np.zeros((T, E, *spec.obs_shape), spec.obs_dtype),
        "action": np.zeros((T, E, *spec.action_shape), np.int32 if spec.discrete else np.float32),
        "reward": np.zeros((T, E, *spec.reward_shape), np.float32),
        "terminated": np.zeros((T, E), bool),
        "truncated": np.zeros((T, E), bool),
    }
    # the network's inputs: normalized copies for vectors, the observations themselves otherwise
    buf["policy_obs"] = np.zeros((T, E, *spec.obs_shape), np.float32) if norm else buf["obs"]
    buf["final_obs"] = np.zeros((T, E, *spec.obs_shape), np.float32) if norm else buf["next_obs"]
    step = int(state.step)
    rng = np.random.default_rng([cfg.seed, step])  # action noise; reseeded by step on resume
    obs_stats = loop["obs_stats"]
    described = {"shaper": shaper.describe()}

    def loop_now():
        recent = feedback.recent() if feedback else np.full(RECENT, np.nan)
        return {"obs": obs, "obs_stats": obs_stats, "teacher_returns": recent}

    def save():
        if replay is not None:
            return run.save_checkpoint(step, state, replay, rstate, loop=loop_now(), **described)
        return run.save_checkpoint(step, state, loop=loop_now(), **described)

    def save_failed():
        return run.save_failed(step, state, loop=loop_now())

    life = Lifecycle(
        cfg,
        run,
        step,
        save=save,
        save_failed=save_failed,
        evaluate=lambda: evaluate(cfg, state, cfg.eval_episodes, loop={"obs_stats": obs_stats}),
    )
    try:
        while step + cfg.batch_size <= cfg.total_steps:
            params = jax.device_get(state.params) if host else state.params
            for t in range(T):
                obs_stats, x = observe(cfg, spec, obs_stats, obs)
                action = act(params, x, draw_noise(spec, rng))
                next_obs, reward, terminated, truncated, info = env.step(env_action(spec, action))
                buf["obs"][t], buf["action"][t], buf["reward"][t] = obs, action, reward
                buf["terminated"][t], buf["truncated"][t] = terminated, truncated
                buf["next_obs"][t] = info["next_obs"]
                if norm:
                    buf["policy_obs"][t] = x
                    if truncated.any():  # bootstrapped from in update, under these statistics
                        buf["final_obs"][t] = observe(cfg, spec, obs_stats, info["next_obs"], False)[1]
                if feedback:
                    transition = replay_transition(obs, action, reward, terminated, truncated, info)
                    if phys:
                        transition["extras"] = {"physics": states}
                        states = env.physics_states()
                    rstate = add(rstate, **transition)
                    shaper_state, m = feedback.after(state.shaper, rstate, step, step + E, info["episodes"])
                    state = state._replace(shaper=shaper_state)
                    life.add(m)
                obs = next_obs
                step += E
                run.record_episodes(info["episodes"])
                run.progress(step, cfg.total_steps)
            last_obs = observe(cfg, spec, obs_stats, obs, update=False)[1]
            # annotators (DreamSmooth) write their fields per episode segment of the rollout
            fields = annotate_segments(shaper.annotators(), buf, buf["terminated"] | buf["truncated"])
            state, metrics = learn(state, {**buf, **fields, "last_obs": last_obs})
            life.add(metrics)
            life.after(step, last=step + cfg.batch_size > cfg.total_steps)
        summary = life.finish(step)
    finally:
        run.close()
        env.close()
        if renderer is not None:
            renderer.close()
    print_result(summary, cfg.eval_episodes)
    return summary


def policy(cfg: Config, state: State, loop=None, seed: int = 1):
    """The stochastic policy of one env (host obs [1, ...] -> env actions [1, ...]; as CleanRL
    evaluates PPO), observation statistics (``loop``'s, from the checkpoint) frozen."""
    spec = envs.make_spec(cfg.env, 1, cfg.seed, **cfg.env_options)
    host, act = rollout_actor(cfg, spec)
    params = jax.device_get(state.params) if host else state.params
    stats = (loop or init_loop(cfg, spec))["obs_stats"].host()
    rng = np.random.default_rng([cfg.seed, seed, int(state.step)])

    def run(obs):
        x = observe(cfg, spec, stats, obs, update=False)[1]
        return env_action(spec, act(params, x, draw_noise(spec, rng)))

    return run


def evaluate(cfg: Config, state: State, episodes: int, video_path=None, loop=None) -> dict:
    """``policy``'s returns over ``episodes`` episodes."""
    return run_episodes(cfg, policy(cfg, state, loop), episodes, video_path)


# -- the jitted path: JAX-native envs --------------------------------------------------------


class Carry(NamedTuple):
    """What one jitted iteration carries: the learner's state, the envs' state and current
    raw observations, the observation normalizer and the rollout's key."""

    state: State
    env_state: jaxenvs.EnvState
    obs: jax.Array
    obs_stats: RunningStats
    key: jax.Array


def rollout_jax(cfg: Config, spec: envs.EnvSpec, env: jaxenvs.JaxEnv, carry: Carry):
    """``num_steps`` env steps of every env as one ``lax.scan``: the same [T, E] rollout dict
    the host loop fills, and the finished episodes ([T, E] done, return, length)."""
    net = network(cfg, spec)
    params = carry.state.params

    def one(c: Carry, _):
        stats, x = observe(cfg, spec, c.obs_stats, c.obs)
        key, k_act, k_env = jax.random.split(c.key, 3)
        pi, value = net.apply({"params": params}, x)
        if spec.discrete:
            action = jax.random.categorical(k_act, pi)
            to_env = action
        else:
            mean, log_std = pi
            action = mean + jnp.exp(log_std) * jax.random.normal(k_act, mean.shape)
            to_env = jnp.clip(action, spec.action_space.low, spec.action_space.high)
        env_state, next_obs, reward, terminated, truncated, info = env.step(c.env_state, to_env, k_env)
        final = observe(cfg, spec, stats, info["next_obs"], update=False)[1]
        out = {
            "obs": c.obs,
            "policy_obs": x,
            "action": action,
            "reward": reward,
            "terminated": terminated,
            "truncated": truncated,
            "next_obs": info["next_obs"],
            "final_obs": final,
            "logp": log_prob(spec, pi, action)[0],
            "value": value,
        }
        episodes = (info["done"], info["episode_return"], info["episode_length"])
        return Carry(c.state, env_state, next_obs, stats, key), (out, episodes)

    carry, (rollout, episodes) = jax.lax.scan(one, carry, None, cfg.num_steps)
    rollout["last_obs"] = observe(cfg, spec, carry.obs_stats, carry.obs, update=False)[1]
    rollout["last_value"] = net.apply({"params": params}, rollout["last_obs"])[1]
    rollout["final_value"] = final_values(
        lambda x: net.apply({"params": params}, x)[1], rollout, rollout["value"]
    )
    return carry, rollout, episodes


def iterations(cfg: Config, spec, env, shaper: Shaper, carry: Carry, length: int, n):
    """The first ``n`` (traced) of ``length`` PPO iterations (rollout -> Shaper -> GAE ->
    update) as one ``lax.scan``: one compiled program serves a shorter last call too. Skipped
    iterations leave the carry alone and report zeros."""

    def one(c: Carry):
        c, rollout, episodes = rollout_jax(cfg, spec, env, c)
        state, metrics = update(cfg, spec, shaper, c.state, rollout)
        return c._replace(state=state), (metrics, episodes)

    out = jax.eval_shape(one, carry)[1]

    def gated(c: Carry, j):
        skip = lambda c: (c, jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), out))  # noqa: E731
        return jax.lax.cond(j < n, one, skip, c)

    return jax.lax.scan(gated, carry, jnp.arange(length))


def init_carry(cfg: Config, spec, env: jaxenvs.JaxEnv, shaper: Shaper, seed: int, state=None, loop=None):
    """The carry of one seed: a fresh learner (or ``state`` from a checkpoint) and fresh
    episodes, the env keyed by (seed, env steps taken) so a resume is reproducible."""
    fresh = state is None
    state = state if state is not None else init(cfg, spec, jax.random.PRNGKey(seed), shaper)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), int(state.step))
    k_env, k_warm, key = jax.random.split(key, 3)
    if fresh and shaper.warmup_steps():  # random steps initialize the terms' statistics
        seen = jax.jit(partial(random_steps, spec, env, shaper.warmup_steps()))(k_warm)
        state = state._replace(shaper=shaper.warm_up(state.shaper, warmup_batch(seen)))
    env_state, obs = env.reset(k_env)
    loop = loop if loop is not None else init_loop(cfg, spec)
    stats = RunningStats(*(jnp.asarray(a, jnp.float32) for a in loop["obs_stats"]))
    return Carry(state, env_state, obs, stats, key)


def random_steps(spec, env: jaxenvs.JaxEnv, n: int, key):
    """The next observations [n, E, ...] of ``n`` uniformly random actions in every env."""
    k_reset, k_run = jax.random.split(key)
    env_state, _ = env.reset(k_reset)
    space = spec.action_space

    def one(env_state, k):
        k_act, k_env = jax.random.split(k)
        if spec.discrete:
            action = jax.random.randint(k_act, (spec.num_envs,), 0, space.n)
        else:
            action = jax.random.uniform(
                k_act, (spec.num_envs, *spec.action_shape), minval=space.low, maxval=space.high
            )
        env_state, _, _, _, _, info = env.step(env_state, action, k_env)
        return env_state, info["next_obs"]

    return jax.lax.scan(one, env_state, jax.random.split(k_run, n))[1]


def chunk_size(cfg: Config) -> int:
    """Iterations per jitted call: the finest of the log, eval and checkpoint cadences, so each
    falls on a call boundary (an iteration is ``batch_size`` env steps)."""
    every = [e for e in (cfg.log_every, cfg.eval_every, cfg.checkpoint_every) if e > 0]
    return max(1, min(every) // cfg.batch_size) if every else cfg.num_updates


def episodes_of(done, ret, length) -> list[dict]:
    """The finished episodes of a call's [n, T, E] flags, in env-step order."""
    n, T, E = done.shape
    idx = np.flatnonzero(done.reshape(-1))
    return [
        {"env": int(i % E), "return": float(ret.reshape(-1)[i]), "length": int(length.reshape(-1)[i])}
        for i in idx
    ]


def train_seeds(cfg: Config, seeds: list[int]) -> list[dict]:
    """``rl train ppo --seeds 0,1,2``: the seeds side by side in one vmapped program (the
    jitted path only); a ``{seed}`` in ``run_name`` names each seed's run directory."""
    if not (jaxenvs.is_jax(cfg.env) and cfg.jit_env):
        raise ValueError(
            f"several seeds in one program need PPO's jitted path (a JAX-native env and jit_env=true); "
            f"{cfg.env} runs on the host loop: launch one process per seed"
        )
    return train_jitted(cfg, seeds=seeds)


def train_jitted(
    cfg: Config, runs: list[Run] | None = None, resume=None, shaper: Shaper | None = None, seeds=None
) -> list[dict]:
    """Train on a JAX-native env with the whole iteration jitted; ``seeds`` (default
    ``[cfg.seed]``) train side by side in one vmapped program, one run directory each.
    ``resume``: a checkpoint directory (one seed). Returns each seed's summary."""
    seeds = [int(s) for s in (seeds if seeds is not None else [cfg.seed])]
    if resume is not None and len(seeds) != 1:
        raise ValueError("resume one seed at a time (a checkpoint holds one seed's state)")
    shaper = build_shaper(cfg, shaper)
    env = jaxenvs.make(cfg.env, cfg.num_envs, **cfg.env_options)
    spec = env.spec
    network(cfg, spec)
    if shaper.annotators():
        names = [registry.kind_of(t) for t in shaper.annotators()]
        raise ValueError(
            f"the terms {names} annotate on the host, which PPO's jitted path has no loop for; "
            "train with jit_env=false"
        )
    if Feedback.wanted(shaper):
        raise ValueError(
            "preference streams query and label on the host, which PPO's jitted path has no loop "
            "for; train with jit_env=false"
        )
    shaper.check(provided(shaper, spec), "PPO's jitted path")
    shaper.check_scalar(spec.reward_shape, "PPO")
    cfgs = [dataclasses.replace(cfg, seed=s, run_name=cfg.run_name.replace("{seed}", str(s))) for s in seeds]
    if runs is None:
        taken = [
            d
            for c in cfgs
            if c.run_name and ((d := Path(c.runs_dir) / c.experiment / c.run_name) / "config.yaml").exists()
        ]
        if taken:  # before any seed's directory is made
            raise FileExistsError(
                f"run directories exist: {', '.join(map(str, taken))}; resume them one by one"
            )
        runs = [Run.create(c, "ppo") for c in cfgs]
    print(config_lib.to_yaml(runs[0].cfg), flush=True)
    if resume is not None:
        check_resumed_shaper(resume, shaper)
        template = init(cfg, spec, jax.random.PRNGKey(seeds[0]), shaper)
        state, loop = checkpoint.load(resume, template, init_loop(cfg, spec))[:2]
        carries = [init_carry(cfg, spec, env, shaper, seeds[0], state, loop)]
    else:
        carries = [init_carry(cfg, spec, env, shaper, s) for s in seeds]
    carry = jax.tree.map(lambda *x: jnp.stack(x), *carries)  # [S, ...]
    step = int(carries[0].state.step)
    del carries

    per_call = chunk_size(cfg)

    def run_one(c, n):
        return iterations(cfg, spec, env, shaper, c, per_call, n)

    @partial(jax.jit, donate_argnums=0)
    def call(carry, n):
        if len(seeds) > 1:
            return jax.vmap(run_one, in_axes=(0, None))(carry, n)
        # one seed: no vmap, so the rare-event conds (truncations, resets) stay conds, not selects
        out = run_one(jax.tree.map(lambda x: x[0], carry), n)
        return jax.tree.map(lambda x: x[None], out)

    def seed(i, c):
        return jax.tree.map(lambda x: x[i], c)

    def loop_of(c):
        stats = RunningStats(*jax.device_get(c.obs_stats)).host()
        return {"obs": np.asarray(c.obs), "obs_stats": stats, "teacher_returns": np.full(RECENT, np.nan)}

    lives = []
    for i, run in enumerate(runs):

        def save(i=i, run=run):
            c = seed(i, carry)
            return run.save_checkpoint(step, c.state, loop=loop_of(c), shaper=shaper.describe())

        def save_failed(i=i, run=run):
            c = seed(i, carry)
            return run.save_failed(step, c.state, loop=loop_of(c))

        def evaluate_seed(i=i, c=cfgs[i]):
            s = seed(i, carry)
            return evaluate(c, s.state, c.eval_episodes, loop={"obs_stats": loop_of(s)["obs_stats"]})

        lives.append(
            Lifecycle(cfgs[i], run, step, save=save, save_failed=save_failed, evaluate=evaluate_seed)
        )
    try:
        while step + cfg.batch_size <= cfg.total_steps:
            n = min(per_call, (cfg.total_steps - step) // cfg.batch_size)
            carry, (metrics, episodes) = call(carry, jnp.int32(n))
            metrics, episodes = jax.device_get((metrics, episodes))
            episodes = tuple(x[:, :n] for x in episodes)
            step += n * cfg.batch_size
            for i, life in enumerate(lives):
                for j in range(n):
                    life.add({k: v[i, j] for k, v in metrics.items()})
                life.after(
                    step,
                    episodes_of(*(x[i] for x in episodes)),
                    last=step + cfg.batch_size > cfg.total_steps,
                )
        summaries = [life.finish(step) for life in lives]
    finally:
        for run in runs:
            run.close()
    for summary in summaries:
        print_result(summary, cfg.eval_episodes)
    return summaries
