"""C-MORL (Liu et al., ICLR 2025, "Efficient Discovery of Pareto Front for Multi-Objective
Reinforcement Learning"): a Pareto front from a population of PPO policies in two stages.

Reference: ``RuohLiuq/C-MORL`` (``morl/morl.py``, ``morl/mopg.py``, ``morl/ep.py``,
``morl/run.py``' PPO settings, ``externals/pytorch-a2c-ppo-acktr-gail/a2c_ppo_acktr/algo/ppo.py``'s
``update`` and ``ipo_update``; ``scripts/hopper-2d.py``'s budget).

1. **Pareto initialisation** (section 4.1): one policy per preference of an evenly spaced
   simplex grid (``weight_step`` 0.2: six for two objectives), trained with PPO on the
   linearly scalarized advantage. The members are one population whose update is ``vmap``-ed
   over preferences (one program for all of them); each has its own envs, Adam state,
   observation statistics and per-objective return statistics. Every ``init_eval_interval``
   updates each member is evaluated and the point goes into the archive.
2. **Constrained extension** (section 4.2, eq. 4-5, the IPO variant): ``num_select`` policies
   of the archive's Pareto front, chosen by crowding distance (boundary points first, a point
   never chosen twice: ``ep.py``), are each copied once per objective i and trained to raise
   J_i while a log barrier keeps the others above ``beta`` times their current values; every
   update's policy is evaluated and archived; after ``update_iter`` updates the archive is
   filtered and new policies selected.

Per-objective PPO (``a2c_ppo_acktr``): 64x64 tanh actor and critic, the critic with one output
per objective; each objective's reward scaled by the running std of its own discounted return
(``obj_rms``), GAE per objective (bootstrapping at truncations), the advantage the scalarized
difference of the *unscaled* returns and values (``w . (R - V) * std``), normalized over the
rollout; clipped surrogate and clipped value loss (mean over objectives), gradient clip 0.5,
Adam eps 1e-5, the learning rate decayed linearly over the initialisation. The extension
continues with the optimizer as the initialisation left it, learning rate included (the
reference deep-copies the agent; its last decayed rate is lr / n_updates).

Departures, stated: a truncated episode bootstraps from its final observation's value (the
reference's ``use_proper_time_limits`` zeroes the advantage of that step instead), and the
training envs reset to fresh seeds (the reference's ``TimeLimitMask`` resets each env with one
fixed seed, the same start state every episode).

The barrier (``ipo_update``): with R_bar the minibatch mean of the scaled returns per
objective and rho the clipped ratio, ``-mean_{b, j != i} log(max(rho_b R_bar_j - beta R_bar_j,
0.001)) / t`` is added to the surrogate of objective i's advantage. Budget: ``total_steps``
counts env steps over all envs; the reference's ``--num-time-steps`` counts rollout steps per
process (8 processes: its "1.5M" steps are about 12M env steps).

Evaluation (C-MORL's protocol): the deterministic policy, ``eval_episodes`` episodes, returns
discounted with ``eval_gamma`` (1.0: undiscounted), the front's hypervolume at ``ref_point``,
expected utility over a ``eval_weight_step`` simplex grid and sparsity. Checkpoints (the population, the archive with its policies, the RNG key) are written at every
stage-1 evaluation and after every extension round, so ``rl resume`` continues from there
(with fresh episodes; ``checkpoint_every`` is not used). At the end the final
front is also scored by MORL-Baselines' protocol (undiscounted, ``mb_episode_steps``-step
episodes, EUM over ``mb_weights`` equally spaced weights): ``front.json``'s ``protocols``.

``front.json``'s ``weights``: for a stage-1 policy its preference, for an extension policy the
one-hot vector of the objective it raised.

``method=linear`` runs the whole budget as stage 1 (linear-scalarization MO-PPO, the
baseline of the paper's comparisons).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rl import checkpoint, envs
from rl import config as config_lib
from rl.agents import ppo
from rl.evaluation import EVAL_SEED_OFFSET
from rl.loop import Common
from rl.returns import gae
from rl.rewards import RunningStats, Shaper, from_config
from rl.rewards import multiobjective as mo
from rl.runs import Run, print_result


@dataclass
class MOPPOConfig(Common):
    """Per-objective PPO (``a2c_ppo_acktr`` as C-MORL and PGMORL configure it:
    ``morl/arguments.py``) and how a front is evaluated."""

    env: str = "mo:mo-hopper-2obj-v5"
    env_options: dict = field(default_factory=lambda: {"max_episode_steps": 500})  # C-MORL's episodes
    total_steps: int = 1_500_000  # env steps over all envs, members and stages
    num_envs: int = 8  # per policy (--num-processes)
    num_steps: int = 512  # rollout length per env
    update_epochs: int = 10
    num_minibatches: int = 32
    lr: float = 3e-4
    anneal_lr: bool = True  # linear decay (C-MORL: over stage 1)
    gamma: float = 0.995
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    max_grad_norm: float = 0.5
    adam_eps: float = 1e-5
    hidden: tuple[int, ...] = (64, 64)
    clip_obs: float = 10.0
    clip_reward: float = 10.0
    eval_episodes: int = 5
    eval_gamma: float = 0.99
    eval_weight_step: float = 0.01  # the EU grid
    mb_episode_steps: int = 1000  # MORL-Baselines' protocol at the end (0: skip)
    mb_weights: int = 50
    ref_point: list[float] | None = None  # None: the env's known one

    def validate(self) -> None:
        super().validate()
        err = config_lib.ConfigError
        if self.num_steps * self.num_envs % self.num_minibatches:
            raise err("num_minibatches must divide num_steps * num_envs")
        if not 0 < self.eval_weight_step <= 1:
            raise err("eval_weight_step must be in (0, 1]")
        if self.shaper.scalarize != "none":
            raise err("the agent scalarizes per preference itself: shaper.scalarize must be 'none'")

    @property
    def rollout_steps(self) -> int:  # env steps of one policy's rollout
        return self.num_steps * self.num_envs


@dataclass
class PopulationConfig(MOPPOConfig):
    """A population of such policies and its archive."""

    weight_step: float = 0.2  # the first preferences' simplex grid (--delta-weight)
    update_iter: int = 20  # updates between selections
    policy_buffer: int = 200  # archive size (pruned by crowding distance)

    def validate(self) -> None:
        super().validate()
        err = config_lib.ConfigError
        if not 0 < self.weight_step <= 1:
            raise err("weight_step must be in (0, 1]")
        if self.update_iter < 1 or self.policy_buffer < 1:
            raise err("update_iter and policy_buffer must be >= 1")


@dataclass
class Config(PopulationConfig):
    method: Literal["cmorl", "linear"] = "cmorl"  # linear: stage 1 for the whole budget
    init_fraction: float = 2 / 3  # of total_steps for stage 1 (1M of 1.5M in hopper-2d.py)
    num_select: int = 5  # policies extended per extension iteration
    beta: float = 0.9  # constraint relaxation: keep J_j >= beta J_j
    barrier_t: float = 20.0  # log-barrier coefficient t
    init_eval_interval: int = 10  # stage-1 updates between evaluations

    def validate(self) -> None:
        super().validate()
        err = config_lib.ConfigError
        if not 0 < self.init_fraction <= 1:
            raise err(f"init_fraction must be in (0, 1], got {self.init_fraction}")
        if self.num_select < 1 or self.init_eval_interval < 1:
            raise err("num_select and init_eval_interval must be >= 1")
        if not 0 < self.beta < 1 or self.barrier_t <= 0:
            raise err(f"beta must be in (0, 1) and barrier_t > 0, got {self.beta}, {self.barrier_t}")


def network(cfg: MOPPOConfig, spec: envs.EnvSpec) -> ppo.ActorCritic:
    """Separate 64x64 tanh actor and critic; the critic has one output per objective."""
    return ppo.ActorCritic(tuple(cfg.hidden), spec.num_actions, spec.discrete, None, spec.reward_dim)


# -- one policy's state; the population stacks them on a leading axis ------------------------


class Member(NamedTuple):
    params: dict
    opt: optax.OptState
    obs_stats: RunningStats  # observations (VecNormalize's ob_rms)
    ret_stats: RunningStats  # [k]: each objective's discounted return (obj_rms)
    returns: jax.Array  # [E, k] the discounted returns of the current episodes
    lr: jax.Array  # the learning rate of the next update


def optimizer(cfg: MOPPOConfig) -> optax.GradientTransformation:
    """Clip and Adam; the step is scaled by the member's ``lr`` in ``update``."""
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.scale_by_adam(eps=cfg.adam_eps))


def init_member(cfg: MOPPOConfig, spec: envs.EnvSpec, key) -> Member:
    params = network(cfg, spec).init(key, jnp.zeros((1, *spec.obs_shape)))["params"]
    k = spec.reward_dim
    return Member(
        params=params,
        opt=optimizer(cfg).init(params),
        obs_stats=RunningStats.zeros(spec.obs_shape),
        ret_stats=RunningStats.zeros((k,)),
        returns=jnp.zeros((cfg.num_envs, k)),
        lr=jnp.float32(cfg.lr),
    )


def observe(cfg: MOPPOConfig, stats: RunningStats, obs, update: bool = True):
    """Per-step observation normalization (``update``: the batch folded in first)."""
    if update:
        stats = stats.merge(obs, (0,))
    return stats, jnp.clip(stats.normalize(obs), -cfg.clip_obs, cfg.clip_obs)


def act(
    cfg: MOPPOConfig,
    spec: envs.EnvSpec,
    deterministic: bool,
    members: Member,
    obs,
    key,
    update: bool = True,
):
    """One env step for the whole population: obs [P, E, ...] -> (stats, policy inputs, actions)."""
    net = network(cfg, spec)

    def one(m: Member, o, k):
        stats, x = observe(cfg, m.obs_stats, o.astype(jnp.float32), update)
        pi, _ = net.apply({"params": m.params}, x)
        if spec.discrete:
            a = jnp.argmax(pi if deterministic else pi + jax.random.gumbel(k, pi.shape), -1)
        else:
            mean, log_std = pi
            a = mean if deterministic else mean + jnp.exp(log_std) * jax.random.normal(k, mean.shape)
        return stats, x, a

    return jax.vmap(one)(members, obs, jax.random.split(key, obs.shape[0]))


# -- the update: PPO on a scalarized advantage, or IPO for one objective -------------------------


def barrier(cfg: Config, ratio, returns, obj):
    """IPO's log barrier for objective ``obj`` (``ipo_update``): the other objectives' clipped-ratio
    weighted minibatch mean returns kept above ``beta`` times that mean."""
    mean = returns.mean(0)  # [k]
    cost = jnp.clip(ratio, 1 - cfg.clip_coef, 1 + cfg.clip_coef)[:, None] * mean[None, :]
    hat = jnp.minimum(cfg.beta * mean[None, :] - cost, -0.001)
    others = jnp.arange(mean.shape[0]) != obj
    return -jnp.sum(jnp.log(-hat) * others[None, :]) / (hat.shape[0] * others.sum()) / cfg.barrier_t


def loss_fn(cfg: MOPPOConfig, spec: envs.EnvSpec, ipo: bool, params, mb, obj):
    pi, value = network(cfg, spec).apply({"params": params}, mb["x"])
    logp, entropy = ppo.log_prob(spec, pi, mb["action"])
    ratio = jnp.exp(logp - mb["logp"])
    adv = mb["advantage"]
    pg = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - cfg.clip_coef, 1 + cfg.clip_coef) * adv).mean()
    if ipo:
        pg = pg + barrier(cfg, ratio, mb["return"], obj)
    clipped = mb["value"] + jnp.clip(value - mb["value"], -cfg.clip_coef, cfg.clip_coef)
    v_loss = 0.5 * jnp.maximum((value - mb["return"]) ** 2, (clipped - mb["return"]) ** 2).mean()
    loss = pg + cfg.vf_coef * v_loss - cfg.ent_coef * entropy.mean()
    return loss, {"loss/policy": pg, "loss/value": v_loss, "ppo/entropy": entropy.mean()}


def advantage(ret, value, ret_var, weight, obj, ipo: bool):
    """The scalar advantage ([T, E]) from per-objective returns and values in scaled units
    ([T, E, k]): their difference unscaled by each objective's return std, then ``weight .``
    (stage 1; ``weight`` [k], or [T, E, k] per sample for a preference-conditioned policy) or
    objective ``obj`` alone (``ipo``), normalized over the rollout."""
    raw = (ret - value) * jnp.sqrt(jnp.broadcast_to(ret_var, ret.shape) + 1e-8)
    adv = raw[..., obj] if ipo else jnp.sum(raw * jnp.broadcast_to(weight, raw.shape), -1)
    return (adv - adv.mean()) / (adv.std() + 1e-5)


def update(cfg: MOPPOConfig, spec: envs.EnvSpec, ipo: bool, m: Member, rollout: dict, weight, obj, key):
    """One policy's update from its rollout ([T, E, ...]: x, action, reward [k], terminated,
    truncated, final_x, last_x). ``ipo``: objective ``obj``'s advantage with the barrier;
    else ``weight . A``."""
    net = network(cfg, spec)
    T, E = rollout["action"].shape[:2]
    pi, value = net.apply({"params": m.params}, rollout["x"])
    logp = ppo.log_prob(spec, pi, rollout["action"])[0]
    last = net.apply({"params": m.params}, rollout["last_x"])[1]
    trunc = rollout["truncated"]
    final = ppo.where_rows(trunc, net.apply({"params": m.params}, rollout["final_x"])[1])
    done = rollout["terminated"] | trunc
    ret_stats, returns, reward = ppo.scale_rewards(cfg, m.ret_stats, m.returns, rollout["reward"], done)
    k = reward.shape[-1]

    def flat(x):  # [T, E, k] -> [T, E * k]: GAE per env and objective
        return x.reshape(T, E * k)

    def per(x):
        return jnp.repeat(x, k, axis=1)

    run = jax.vmap(gae, in_axes=(1, 1, 0, 1, 1, 1, None, None), out_axes=1)
    _, ret = run(
        flat(reward),
        flat(value),
        last.reshape(-1),
        flat(final),
        per(rollout["terminated"]),
        per(trunc),
        cfg.gamma,
        cfg.gae_lambda,
    )
    ret = ret.reshape(T, E, k)
    adv = advantage(ret, value, ret_stats.var, weight, obj, ipo)
    data = {"x": rollout["x"], "action": rollout["action"], "logp": logp, "value": value, "return": ret}
    data = jax.tree.map(lambda a: a.reshape(T * E, *a.shape[2:]), {**data, "advantage": adv})
    n, size = T * E, T * E // cfg.num_minibatches
    grad = jax.grad(partial(loss_fn, cfg, spec, ipo), has_aux=True)
    tx = optimizer(cfg)

    def epoch(carry, k_):
        def minibatch(carry, idx):
            params, opt = carry
            g, info = grad(params, jax.tree.map(lambda a: a[idx], data), obj)
            step, opt = tx.update(g, opt, params)
            return (optax.apply_updates(params, jax.tree.map(lambda s: -m.lr * s, step)), opt), info

        return jax.lax.scan(
            minibatch, carry, jax.random.permutation(k_, n).reshape(cfg.num_minibatches, size)
        )

    (params, opt), info = jax.lax.scan(epoch, (m.params, m.opt), jax.random.split(key, cfg.update_epochs))
    new = m._replace(params=params, opt=opt, ret_stats=ret_stats, returns=returns)
    return new, jax.tree.map(jnp.mean, info)


def update_population(cfg: MOPPOConfig, spec: envs.EnvSpec, ipo: bool):
    """``update`` vmapped over the population's members (leading axis P), jitted:
    ``(members, rollout, weights [P, k], objs [P], key) -> (members, metrics)``."""

    def run(members, rollout, weights, objs, key):
        keys = jax.random.split(key, weights.shape[0])
        return jax.vmap(partial(update, cfg, spec, ipo))(members, rollout, weights, objs, keys)

    return jax.jit(run)


# -- the archive (``ep.py``) ---------------------------------------------------------------------


def crowding_distance(points) -> np.ndarray:
    """NSGA-II's crowding distance as ``EP.calculate_crowding_distance``: per objective, the gap
    between a point's sorted neighbours over the objective's range, boundary points infinite
    (a flat objective adds nothing, where the reference divides by zero)."""
    p = np.asarray(points, np.float64)
    n, k = p.shape
    out = np.zeros(n)
    for j in range(k):
        order = np.argsort(p[:, j], kind="stable")
        span = p[order[-1], j] - p[order[0], j]
        d = np.zeros(n)
        if n > 2 and span > 0:
            d[1:-1] = (p[order[2:], j] - p[order[:-2], j]) / span
        d[0] = d[-1] = np.inf
        out[order] += d
    return out


class Archive:
    """The external Pareto archive: points, their policies (host snapshots of ``Member``), and
    the points already selected for extension."""

    def __init__(self, ref, size: int):
        self.ref, self.size = np.asarray(ref, np.float64), size
        self.points = np.zeros((0, len(self.ref)))
        self.policies: list = []
        self.weights: list = []
        self.chosen: set = set()

    def add(self, points, policies, weights) -> None:
        """Insert, keep the Pareto front of the points at or above the reference point, and prune
        to ``size`` by crowding distance."""
        points = np.concatenate([self.points, np.asarray(points, np.float64).reshape(-1, len(self.ref))])
        policies, weights = self.policies + list(policies), self.weights + list(weights)
        keep = np.flatnonzero(mo.front_mask(points, self.ref))
        if len(keep) > self.size:
            keep = keep[np.argsort(-crowding_distance(points[keep]), kind="stable")[: self.size]]
        self.points = points[keep]
        self.policies = [policies[i] for i in keep]
        self.weights = [weights[i] for i in keep]

    def select(self, n: int) -> list[int]:
        """Up to ``n`` indices by descending crowding distance, skipping points chosen before."""
        out = []
        for i in np.argsort(-crowding_distance(self.points), kind="stable") if len(self.points) else []:
            key = tuple(self.points[i])
            if key not in self.chosen and len(out) < n:
                out.append(int(i))
                self.chosen.add(key)
        return out


# -- evaluation ----------------------------------------------------------------------------------


class Programs(NamedTuple):
    """The jitted per-step programs, compiled once per run (and per population size)."""

    act: object  # sampling, statistics updated
    greedy: object  # the deterministic policy, statistics frozen
    observe: object  # normalization only


def programs(cfg: MOPPOConfig, spec: envs.EnvSpec) -> Programs:
    return Programs(
        act=jax.jit(partial(act, cfg, spec, False)),
        greedy=jax.jit(partial(act, cfg, spec, True, update=False)),
        observe=jax.jit(jax.vmap(lambda s, o: observe(cfg, s, o, False)[1])),
    )


def evaluate_population(
    cfg: MOPPOConfig, spec, members: Member, episodes: int, gamma: float, env_options=None, progs=None
):
    """[P, k] mean vector returns of each member's deterministic policy (frozen statistics),
    discounted with ``gamma``; episode e of every member starts from the same seed."""
    P = jax.tree.leaves(members)[0].shape[0]
    options = cfg.env_options if env_options is None else env_options
    env, _ = envs.make(cfg.env, P * episodes, cfg.seed + EVAL_SEED_OFFSET, **options)
    greedy = (progs or programs(cfg, spec)).greedy
    k = spec.reward_dim
    total, scale = np.zeros((P * episodes, k)), np.ones(P * episodes)
    live = np.ones(P * episodes, bool)
    try:
        obs, _ = env.reset(seed=[cfg.seed + EVAL_SEED_OFFSET + e for _ in range(P) for e in range(episodes)])
        key = jax.random.PRNGKey(0)
        while live.any():
            _, _, a = greedy(members, obs.reshape(P, episodes, *obs.shape[1:]), key)
            a = np.asarray(a).reshape(P * episodes, *spec.action_shape)
            obs, reward, terminated, truncated, _ = env.step(ppo.env_action(spec, a))
            total += live[:, None] * scale[:, None] * np.asarray(reward).reshape(-1, k)
            scale *= gamma
            live &= ~(terminated | truncated)
    finally:
        env.close()
    return total.reshape(P, episodes, k).mean(1)


# -- the loop --------------------------------------------------------------------------------


def stack(items):
    return jax.tree.map(lambda *a: jnp.stack([jnp.asarray(x) for x in a]), *items)


def unstack(members: Member) -> list:
    host = jax.device_get(members)
    P = jax.tree.leaves(host)[0].shape[0]
    return [jax.tree.map(lambda a, i=i: a[i], host) for i in range(P)]


def setup(cfg: MOPPOConfig, shaper: Shaper | None, agent: str, objectives: int | None = None):
    """``(spec, reference point)`` of the env, after the checks every MO-PPO agent makes: the
    Shaper holds the env reward alone, observations and rewards are vectors (of ``objectives``
    objectives, when the agent needs a number)."""
    shaper = (shaper or from_config(cfg.shaper)).bind(cfg.gamma)
    if any(type(s.term).__name__ != "Extrinsic" for s in shaper.streams):
        raise ValueError(
            f"{agent} trains on the env's vector reward; other shaper terms are not supported yet"
        )
    spec = envs.make_spec(cfg.env, cfg.num_envs, cfg.seed, **cfg.env_options)
    check_env(spec)
    if objectives is not None and spec.reward_dim != objectives:
        raise ValueError(f"{agent} is built for {objectives} objectives; {cfg.env} has {spec.reward_dim}")
    return spec, mo.reference_point(cfg.env, spec.reward_dim, cfg.ref_point)


def check_env(spec: envs.EnvSpec) -> None:
    if len(spec.reward_shape) != 1 or spec.reward_dim < 2 or len(spec.obs_shape) != 1:
        raise ValueError(
            f"C-MORL needs vector observations and a vector reward of >= 2 objectives; {spec.env_id} has "
            f"observations {spec.obs_shape} and reward shape {spec.reward_shape} (mo:mo-halfcheetah-v5, "
            "mo:mo-hopper-2obj-v5, ...)"
        )


class Population:
    """A stacked population, its envs and rollout buffer: ``rollout`` collects one rollout for
    every member at once (one jitted call per env step for all of them)."""

    def __init__(self, cfg: MOPPOConfig, spec, members: Member, seed: int, progs: Programs | None = None):
        self.cfg, self.spec, self.members = cfg, spec, members
        self.P = jax.tree.leaves(members)[0].shape[0]
        self.env, _ = envs.make(cfg.env, self.P * cfg.num_envs, seed, **cfg.env_options)
        self.obs, _ = self.env.reset()
        progs = progs or programs(cfg, spec)
        self.act, self.observe = progs.act, progs.observe

    def rollout(self, key, run: Run, step: int, total: int) -> tuple[dict, int]:
        spec, P, E, T = self.spec, self.P, self.cfg.num_envs, self.cfg.num_steps
        k = spec.reward_dim
        buf = {
            "x": np.zeros((T, P, E, *spec.obs_shape), np.float32),
            "action": np.zeros((T, P, E, *spec.action_shape), np.int32 if spec.discrete else np.float32),
            "reward": np.zeros((T, P, E, k), np.float32),
            "terminated": np.zeros((T, P, E), bool),
            "truncated": np.zeros((T, P, E), bool),
            "final_x": np.zeros((T, P, E, *spec.obs_shape), np.float32),
        }
        members = self.members
        for t, k_t in enumerate(jax.random.split(key, T)):
            stats, x, a = self.act(members, self.obs.reshape(P, E, -1), k_t)
            members = members._replace(obs_stats=stats)
            a = np.asarray(a)
            obs, reward, terminated, truncated, info = self.env.step(
                ppo.env_action(spec, a.reshape(P * E, -1))
            )
            buf["x"][t], buf["action"][t] = np.asarray(x), a
            buf["reward"][t] = np.asarray(reward).reshape(P, E, k)
            buf["terminated"][t], buf["truncated"][t] = terminated.reshape(P, E), truncated.reshape(P, E)
            if truncated.any():  # bootstrapped from in update, under these statistics
                final = np.asarray(info["next_obs"], np.float32).reshape(P, E, -1)
                buf["final_x"][t] = np.asarray(self.observe(stats, final))
            self.obs = obs
            step += P * E
            run.record_episodes(info["episodes"])
            run.progress(step, total)
        self.members = members
        last = np.asarray(self.observe(members.obs_stats, self.obs.reshape(P, E, -1).astype(np.float32)))
        swap = {name: np.swapaxes(v, 0, 1) for name, v in buf.items()}  # [P, T, E, ...]
        return {**swap, "last_x": last}, step

    def close(self):
        self.env.close()


def train(cfg: Config, run: Run | None = None, resume=None, shaper: Shaper | None = None) -> dict:
    """Both stages within ``cfg.total_steps`` env steps; writes ``front.json`` and ``front.png``."""
    spec, ref = setup(cfg, shaper, "C-MORL")
    k = spec.reward_dim
    weights = mo.simplex_grid(k, cfg.weight_step).astype(np.float32)
    grid = mo.simplex_grid(k, cfg.eval_weight_step)
    P = len(weights)
    init_steps = cfg.total_steps if cfg.method == "linear" else int(cfg.total_steps * cfg.init_fraction)
    n_init = init_steps // (P * cfg.rollout_steps)
    if n_init < 1:
        raise ValueError(
            f"total_steps={cfg.total_steps} leaves stage 1 {init_steps} env steps, fewer than one rollout "
            f"of its {P} policies ({P * cfg.rollout_steps} steps)"
        )
    run = run or Run.create(cfg, "cmorl")
    print(config_lib.to_yaml(run.cfg), flush=True)
    key = jax.random.PRNGKey(cfg.seed)
    key, k_init = jax.random.split(key)
    # one compiled init per member, stacked: jit(vmap(init)) of the orthogonal initializers hangs
    # on XLA's CPU backend (jax 0.10.2)
    init_one = jax.jit(partial(init_member, cfg, spec))
    members = stack([init_one(k_) for k_ in jax.random.split(k_init, P)])
    archive = Archive(ref, cfg.policy_buffer)
    step, updates, j0, done_ext = 0, 0, 0, 0
    if resume is not None:  # the last stage-1 evaluation or extension round
        members, key, meta = restore(resume, members, archive, init_one, k)
        step, updates, j0, done_ext = meta["step"], meta["updates"], meta["next_update"], meta["done_ext"]

    def save(next_update: int):
        if not archive.policies:  # nothing above the reference point yet
            return
        state = {
            "key": key,
            "members": members,
            "archive": stack(archive.policies),
            "points": archive.points,
            "weights": np.asarray(archive.weights, np.float32),
            "chosen": np.asarray(sorted(archive.chosen), np.float64).reshape(-1, k),
        }
        run.save_checkpoint(step, state, updates=updates, next_update=next_update, done_ext=done_ext,
                            archive=len(archive.points), chosen=len(archive.chosen))  # fmt: skip

    def log_front(stage: str):
        m = mo.front_metrics(archive.points, ref, grid) if len(archive.points) else {}
        out = {f"eval/{name}": float(v) for name, v in m.items()}
        out["eval/episode_return"] = out.get("eval/eum", float("nan"))
        run.log(step, {**out, "cmorl/archive": len(archive.points), "cmorl/updates": updates})
        if len(archive.points):  # the front so far, so that a crash loses no evaluated point
            mo.write_front(run.dir / "front.json", archive.points, np.asarray(archive.weights), out,
                           step=step, env=cfg.env, ref_point=list(ref), stage=stage)  # fmt: skip
        print(
            f"[cmorl] {stage} step {step}: " + ", ".join(f"{n} {v:.4g}" for n, v in out.items()), flush=True
        )
        return out

    # stage 1: Pareto initialisation, the members vmapped over preferences
    learn_init, learn_ipo = update_population(cfg, spec, False), update_population(cfg, spec, True)
    progs = programs(cfg, spec)
    pop = Population(cfg, spec, members, cfg.seed, progs)
    objs = jnp.zeros(P, jnp.int32)
    try:
        for j in range(j0, n_init):
            if cfg.anneal_lr:  # a2c_ppo_acktr's update_linear_schedule, once per update
                pop.members = pop.members._replace(lr=jnp.full(P, cfg.lr * (1 - j / n_init), jnp.float32))
            key, k_roll, k_upd = jax.random.split(key, 3)
            rollout, step = pop.rollout(k_roll, run, step, cfg.total_steps)
            pop.members, info = learn_init(pop.members, rollout, weights, objs, k_upd)
            updates += 1
            if (j + 1) % cfg.init_eval_interval == 0 or j == n_init - 1:
                points = evaluate_population(
                    cfg, spec, pop.members, cfg.eval_episodes, cfg.eval_gamma, progs=progs
                )
                archive.add(points, unstack(pop.members), list(weights))
                run.log(step, {name: float(v.mean()) for name, v in info.items()})
                log_front("init")
                members = pop.members
                save(j + 1)
    finally:
        pop.close()
    # stage 2: constrained extension of crowding-distance-selected policies, one per objective
    per_task = cfg.num_select * k * cfg.rollout_steps
    n_ext = (cfg.total_steps - n_init * P * cfg.rollout_steps) // per_task if cfg.method == "cmorl" else 0
    while done_ext < n_ext:
        chosen = archive.select(cfg.num_select)
        if not chosen:
            break
        tasks = [(i, obj) for i in chosen for obj in range(k)]
        pop = Population(cfg, spec, stack([archive.policies[i] for i, _ in tasks]), cfg.seed + updates, progs)
        objs = jnp.asarray([obj for _, obj in tasks], jnp.int32)
        task_w = np.stack([np.eye(k, dtype=np.float32)[obj] for _, obj in tasks])
        try:
            for _ in range(min(cfg.update_iter, n_ext - done_ext)):
                key, k_roll, k_upd = jax.random.split(key, 3)
                rollout, step = pop.rollout(k_roll, run, step, cfg.total_steps)
                pop.members, info = learn_ipo(pop.members, rollout, task_w, objs, k_upd)
                updates, done_ext = updates + 1, done_ext + 1
                points = evaluate_population(
                    cfg, spec, pop.members, cfg.eval_episodes, cfg.eval_gamma, progs=progs
                )
                archive.add(points, unstack(pop.members), list(task_w))
        finally:
            pop.close()
        log_front("extension")
        save(n_init)
    summary = finish(cfg, spec, run, archive, ref, grid, step, progs)
    print_result(summary, cfg.eval_episodes)
    return summary


def restore(path, members: Member, archive: Archive, init_one, k: int):
    """``(members, key, meta)`` from a checkpoint ``save`` wrote; the archive refilled."""
    meta = json.loads((Path(path) / "meta.json").read_text())
    template = {
        "key": jax.random.PRNGKey(0),
        "members": members,
        "archive": stack([init_one(jax.random.PRNGKey(0))] * meta["archive"]),
        "points": np.zeros((meta["archive"], k)),
        "weights": np.zeros((meta["archive"], k), np.float32),
        "chosen": np.zeros((meta["chosen"], k)),
    }
    state = checkpoint.load(path, template)[0]
    archive.points, archive.weights = (
        np.asarray(state["points"], np.float64),
        list(np.asarray(state["weights"])),
    )
    archive.policies = unstack(state["archive"])
    archive.chosen = {tuple(float(x) for x in c) for c in np.asarray(state["chosen"])}
    return jax.tree.map(jnp.asarray, state["members"]), jnp.asarray(state["key"]), meta


def finish(
    cfg: MOPPOConfig, spec, run: Run, archive: Archive, ref, grid, step: int, progs=None, label=None
) -> dict:
    """The final front under both protocols into ``front.json`` (and ``front.png``), the summary."""
    m = mo.front_metrics(archive.points, ref, grid)
    metrics = {f"eval/{name}": float(v) for name, v in m.items()}
    protocols = {
        "cmorl": {
            "gamma": cfg.eval_gamma,
            "episode_steps": cfg.env_options.get("max_episode_steps"),
            "eu_grid_step": cfg.eval_weight_step,
            **{n: float(v) for n, v in m.items()},
        }
    }
    if cfg.mb_episode_steps and len(archive.policies):
        options = {**cfg.env_options, "max_episode_steps": cfg.mb_episode_steps}
        mb_points = evaluate_population(
            cfg, spec, stack(archive.policies), cfg.eval_episodes, 1.0, options, progs
        )
        mb = mo.front_metrics(
            mo.pareto_front(mb_points), ref, mo.equally_spaced_weights(spec.reward_dim, cfg.mb_weights)
        )
        protocols["morl_baselines"] = {
            "gamma": 1.0,
            "episode_steps": cfg.mb_episode_steps,
            "eum_weights": cfg.mb_weights,
            **{n: float(v) for n, v in mb.items()},
            "points": mb_points.tolist(),
        }
        metrics.update({f"eval/mb_{name}": float(v) for name, v in mb.items()})
    metrics["eval/episode_return"] = metrics["eval/eum"]
    mo.write_front(
        run.dir / "front.json",
        archive.points,
        np.asarray(archive.weights),
        metrics,
        step=step,
        env=cfg.env,
        ref_point=list(ref),
        protocols=protocols,
    )
    if spec.reward_dim in (2, 3):
        mo.plot_front(
            run.dir / "front.png", archive.points, title=f"{cfg.env} ({label or cfg.method}) at {step}"
        )
    run.log(step, metrics)
    try:
        return run.finish(metrics)
    finally:
        run.close()


def evaluate(cfg: MOPPOConfig, state, episodes: int, video_path=None, loop=None) -> dict:
    """C-MORL's front lives in the run's ``front.json``; this scores a stacked population."""
    spec = envs.make_spec(cfg.env, cfg.num_envs, cfg.seed, **cfg.env_options)
    ref = mo.reference_point(cfg.env, spec.reward_dim, cfg.ref_point)
    points = evaluate_population(cfg, spec, state, episodes, cfg.eval_gamma)
    m = mo.front_metrics(points, ref, mo.simplex_grid(spec.reward_dim, cfg.eval_weight_step))
    return {f"eval/{n}": float(v) for n, v in m.items()}
