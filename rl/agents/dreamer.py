"""A DreamerV3 agent (Hafner et al. 2023, "Mastering Diverse Domains through World Models"):
a world model learned from replayed chunks, and an actor-critic trained in its imagination.

Reference: danijar/dreamerv3 (``dreamerv3/agent.py``, ``configs.yaml``); the world model is
``rl/models/rssm.py``. Per update (one jitted call with the env step, as SAC's):

1. Sample ``batch_size`` chunks of ``batch_length`` consecutive replay steps, across episode
   boundaries (``Replay.sample_chunks``), and compute their rewards with the **Shaper** at the
   env-step clock: the reward head's target is the Shaper's total on real transitions, so
   DreamSmooth (``shaper.smoothing``), an intrinsic term or a learned reward change what the
   world model predicts by config alone. Imagined rewards come from the reward head.
2. World model (eq. 4-5): the posterior runs over the chunk; losses are reconstruction
   (symlog MSE for vectors, MSE for images), reward (two-hot over symexp bins), continue
   (Bernoulli), dynamics (0.5) and representation (0.1) KL with 1 free nat.
3. Imagination from every posterior state (sg), ``imag_length`` steps of the policy in the
   prior; TD(lambda) returns (eq. 7) with the discount 1 - 1/horizon folded into the continue
   target (the reference's ``contdisc``); the actor's REINFORCE loss on advantages divided by
   max(1, EMA of the 5th-95th percentile range of returns) with entropy 3e-4 (eq. 11); the
   critic's two-hot loss on the returns plus the slow critic's predictions (eq. 9-10), and on
   returns of the replayed chunk bootstrapped from imagination (``repval``, weight 0.3).
4. One LaProp step with adaptive gradient clipping (the reference's optimizer) on the sum of
   all losses; the slow critic moves 2% towards the critic.

Time alignment. A replay slot holds obs_t, a_t and the reward r_t of that action; a chunk row
of transitions k -> k + 1 becomes latent steps at the successors: latent k encodes
``next_obs[k]``, its previous action is ``action[k]``, its reward target the Shaper's reward of
transition k, its continue target 1 - terminated[k]. An episode's final slot starts no
transition (``mask`` false), so the latent after it is the next episode's first (``is_first``:
state and action reset, reward 0, continue 1). A truncated episode's last latent continues
(only termination cuts returns). Each chunk starts from a zero state (the reference can
also carry latents stored in the replay: ``replay_context``, not done here).

``train_ratio`` is replayed steps per env step: ``train_ratio / (batch_size * batch_length)``
updates per env step, printed at the start and kept in ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
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
from rl.models.rssm import (
    RSSM,
    Block,
    Decoder,
    Encoder,
    Head,
    features,
    kl_losses,
    lambda_return,
    reconstruction_loss,
    twohot_bins,
    twohot_loss,
    twohot_mean,
    winit,
)
from rl.nets import action_bounds, categorical_entropy, from_env, gaussian_entropy, gaussian_logp, to_env
from rl.replay import Replay
from rl.rewards import Shaper, from_config
from rl.rewards.annotate import EpisodeAnnotator
from rl.rewards.latent import LATENT_FIELDS
from rl.runs import Run, print_result

sg = jax.lax.stop_gradient


@dataclass
class Config(Common):
    total_steps: int = 100_000  # env steps
    buffer_size: int = 1_000_000  # replay capacity in env steps
    batch_size: int = 16  # chunks per update
    batch_length: int = 64  # steps per chunk
    train_ratio: float = 512.0  # replayed steps per env step (updates = it / (batch_size * batch_length))
    learning_starts: int = 1024  # env steps before the first update (the untrained policy acts)
    # world model: the reference's size1m (configs/dreamer-*.yaml hold the presets)
    deter: int = 512  # GRU state size
    hidden: int = 64  # RSSM hidden layers
    stoch: int = 32  # categorical latents
    classes: int = 4  # classes per latent
    blocks: int = 8  # block-GRU groups
    units: int = 64  # MLP width of encoder, decoder and heads
    layers: int = 3  # MLP blocks of encoder, decoder, actor and critic (reward, continue: 1)
    depth: int = 4  # CNN channels x (2, 3, 4, 4)
    strided: bool = (
        False  # CNN stages: stride-2 convs / sub-pixel upsampling (faster) instead of pool / repeat
    )
    unimix: float = 0.01  # uniform mix of the latent categoricals
    free_nats: float = 1.0
    dyn_scale: float = 0.5  # dynamics KL weight (eq. 5; the reference's configs.yaml now uses 1.0)
    rep_scale: float = 0.1  # representation KL weight
    repval_scale: float = 0.3  # critic loss on replayed returns (0: off)
    bins: int = 255  # two-hot bins of reward and value
    # actor-critic
    imag_length: int = 15  # imagination horizon
    horizon: int = 333  # discount 1 - 1/horizon (0.997)
    lam: float = 0.95  # TD(lambda)
    actent: float = 3e-4  # entropy bonus
    slowreg: float = 1.0  # weight of the slow critic regulariser
    slow_rate: float = 0.02  # slow critic EMA rate per update
    retnorm_rate: float = 0.01  # EMA rate of the return percentiles
    minstd: float = 0.1  # continuous policy std range
    maxstd: float = 1.0
    # optimizer: LaProp with adaptive gradient clipping, one for all networks (the reference's)
    lr: float = 4e-5
    agc: float = 0.3  # clip each tensor's update norm to agc * max(1e-3, its parameter norm)
    eps: float = 1e-20
    warmup: int = 1000  # updates of linear lr warm-up

    def validate(self) -> None:
        super().validate()
        err = config_lib.ConfigError
        if self.batch_size < 1 or self.batch_length < 2 or self.imag_length < 1:
            raise err("batch_size must be >= 1, batch_length >= 2 and imag_length >= 1")
        if self.buffer_size // self.num_envs <= self.batch_length + 1:
            raise err(
                f"buffer_size / num_envs ({self.buffer_size // self.num_envs}) must exceed batch_length + 1"
            )
        if self.learning_starts // self.num_envs <= self.batch_length:
            raise err(
                f"learning_starts / num_envs must exceed batch_length ({self.batch_length}): the first "
                f"update needs a chunk; got {self.learning_starts}"
            )
        check_cadence(self.updates_per_step, self.num_envs, "train_ratio / (batch_size * batch_length)")
        if self.deter % self.blocks or self.classes < 2 or self.horizon < 1:
            raise err("deter must be a multiple of blocks, classes >= 2 and horizon >= 1")

    @property
    def updates_per_step(self) -> float:
        return self.train_ratio / (self.batch_size * self.batch_length)


# -- networks --------------------------------------------------------------------------------


class Actor(nn.Module):
    """feature -> categorical logits, or a Gaussian with mean tanh(m) and std in
    [minstd, maxstd] (the reference's ``bounded_normal``); output layers scaled 0.01."""

    layers: int
    units: int
    dim: int
    discrete: bool
    minstd: float
    maxstd: float

    @nn.compact
    def __call__(self, feat):
        x = feat
        for _ in range(self.layers):
            x = Block(self.units)(x)
        if self.discrete:
            return nn.Dense(self.dim, kernel_init=winit(0.01))(x)
        mean = nn.Dense(self.dim, kernel_init=winit(0.01))(x)
        std = nn.Dense(self.dim, kernel_init=winit(0.01))(x)
        return jnp.tanh(mean), (self.maxstd - self.minstd) * jax.nn.sigmoid(std + 2.0) + self.minstd


class Nets(NamedTuple):
    enc: Encoder
    dec: Decoder
    rssm: RSSM
    rew: Head
    con: Head
    actor: Actor
    critic: Head
    image: bool
    discrete: bool
    action_dim: int


def networks(cfg: Config, spec: envs.EnvSpec) -> Nets:
    image = len(spec.obs_shape) == 3
    if not image and len(spec.obs_shape) != 1:
        raise ValueError(
            f"Dreamer takes vector or [H, W, C] image observations; {spec.env_id} has {spec.obs_shape}"
        )
    if image and (spec.obs_shape[0] % 16 or spec.obs_shape[1] % 16):
        raise ValueError(f"Dreamer's CNN needs image sides divisible by 16; got {spec.obs_shape}")
    if not spec.discrete:
        action_bounds(spec, "Dreamer")  # an unbounded Box fails here
    dim = spec.num_actions if spec.discrete else int(np.prod(spec.action_shape))
    sizes = dict(units=cfg.units, layers=cfg.layers, depth=cfg.depth, strided=cfg.strided)
    return Nets(
        enc=Encoder(image, **sizes),
        dec=Decoder(tuple(spec.obs_shape), image, **sizes),
        rssm=RSSM(cfg.deter, cfg.hidden, cfg.stoch, cfg.classes, cfg.blocks, cfg.unimix),
        rew=Head(1, cfg.units, cfg.bins, 0.0),
        con=Head(1, cfg.units, 1),
        actor=Actor(cfg.layers, cfg.units, dim, spec.discrete, cfg.minstd, cfg.maxstd),
        critic=Head(cfg.layers, cfg.units, cfg.bins, 0.0),
        image=image,
        discrete=spec.discrete,
        action_dim=dim,
    )


# -- the policy's distribution (actions in model space: one-hot, or [-1, 1]-ish vectors) -----


def policy_sample(nets: Nets, out, key):
    if nets.discrete:
        return jax.nn.one_hot(jax.random.categorical(key, out, -1), nets.action_dim)
    mean, std = out
    return mean + std * jax.random.normal(key, mean.shape)


def policy_mode(nets: Nets, out):
    return jax.nn.one_hot(jnp.argmax(out, -1), nets.action_dim) if nets.discrete else out[0]


def policy_logp_entropy(nets: Nets, out, action):
    if nets.discrete:
        return (jax.nn.log_softmax(out, -1) * action).sum(-1), categorical_entropy(out)
    mean, std = out
    return gaussian_logp(action, mean, jnp.log(std)), gaussian_entropy(jnp.log(std))


def to_model_action(nets: Nets, spec, action):
    """A replay/env action -> the model's: one-hot, or scaled to [-1, 1]."""
    if nets.discrete:
        return jax.nn.one_hot(action.astype(jnp.int32), nets.action_dim)
    low, high = action_bounds(spec, "Dreamer")
    return from_env(action.astype(jnp.float32), low, high)


def to_env_action(nets: Nets, spec, action):
    if nets.discrete:
        return jnp.argmax(action, -1).astype(jnp.int32)
    low, high = action_bounds(spec, "Dreamer")
    return to_env(jnp.clip(action, -1.0, 1.0), low, high)


# -- state -----------------------------------------------------------------------------------


class State(NamedTuple):
    params: dict  # enc, dec, rssm, rew, con, actor, critic
    slow_critic: dict  # EMA of the critic's params
    opt: optax.OptState
    retnorm: jax.Array  # [2]: EMAs of the 5th and 95th percentiles of imagined returns
    shaper: object  # the ShaperState of the streams on real transitions (the reward head's target)
    explore: object  # the ShaperState of the latent streams (Plan2Explore), or ()
    key: jax.Array
    step: jax.Array  # env steps taken: the Shaper's clock
    updates: jax.Array


def clip_by_agc(clip: float, pmin: float = 1e-3) -> optax.GradientTransformation:
    """Scale each tensor's update to norm <= clip * max(pmin, ||param||) (the reference's
    ``clip_by_agc``: whole-tensor norms, unlike optax's unit-wise one)."""

    def update(updates, state, params):
        def one(u, p):
            upper = clip * jnp.maximum(pmin, jnp.linalg.norm(p.ravel()))
            return u / jnp.maximum(1.0, jnp.linalg.norm(u.ravel()) / upper)

        return jax.tree.map(one, updates, params), state

    return optax.GradientTransformation(lambda p: optax.EmptyState(), update)


def scale_by_laprop(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """LaProp (Ziyin et al. 2020): gradients divided by the debiased RMS of past gradients,
    then debiased momentum over those (the reference's scale_by_rms + scale_by_momentum)."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return (jnp.zeros((), jnp.int32), zeros, jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        count, nu, mu = state
        count = count + 1
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, nu, grads)
        u = jax.tree.map(lambda g, v: g / (jnp.sqrt(v / (1 - b2**count)) + eps), grads, nu)
        mu = jax.tree.map(lambda m, x: b1 * m + (1 - b1) * x, mu, u)
        return jax.tree.map(lambda m: m / (1 - b1**count), mu), (count, nu, mu)

    return optax.GradientTransformation(init, update)


def optimizer(cfg: Config) -> optax.GradientTransformation:
    lr = optax.constant_schedule(cfg.lr)
    if cfg.warmup:
        lr = optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, cfg.warmup), lr], [cfg.warmup])
    return optax.chain(
        clip_by_agc(cfg.agc), scale_by_laprop(0.9, 0.999, cfg.eps), optax.scale_by_learning_rate(lr)
    )


def build_shaper(cfg: Config, shaper: Shaper | None = None) -> Shaper:
    """The run's Shaper, with Dreamer's discount."""
    shaper = (shaper or from_config(cfg.shaper)).bind(1.0 - 1.0 / cfg.horizon)
    split_shaper(shaper)  # a Shaper that does not split fails here, before the run
    return shaper


def split_shaper(shaper: Shaper) -> tuple[Shaper, Shaper | None]:
    """(the streams of real transitions, whose total is the reward head's target; the latent
    streams, which read the world model's states and are computed on imagined trajectories
    for the actor: Plan2Explore, ``rl.rewards.latent``). Imagined rewards are the reward
    head's prediction plus the second's total."""
    latent = [s.name for s in shaper.streams if set(getattr(s.term, "reads", ())) & set(LATENT_FIELDS)]
    real, explore = shaper.split(latent)
    if real is None:
        raise ValueError("Dreamer's reward head needs a stream of real transitions (the env reward)")
    return real, explore


def latent_spec(cfg: Config, nets: Nets, spec: envs.EnvSpec) -> envs.EnvSpec:
    """``spec`` with the shapes of the latent fields Dreamer gives the latent streams."""
    stoch = cfg.stoch * cfg.classes
    fields = {"latent": (cfg.deter + stoch,), "latent_action": (nets.action_dim,), "next_stoch": (stoch,)}
    return dataclasses.replace(spec, fields=fields)


def init_params(cfg: Config, spec: envs.EnvSpec, key) -> dict:
    nets = networks(cfg, spec)
    ks = jax.random.split(key, 7)
    obs = jnp.zeros((1, *spec.obs_shape), spec.obs_dtype)
    enc = nets.enc.init(ks[0], obs)["params"]
    embed = nets.enc.apply({"params": enc}, obs)
    deter, stoch = jnp.zeros((1, cfg.deter)), jnp.zeros((1, cfg.stoch, cfg.classes))
    feat = features(deter, stoch)
    return {
        "enc": enc,
        "rssm": nets.rssm.init(ks[1], deter, stoch, jnp.zeros((1, nets.action_dim)), embed)["params"],
        "dec": nets.dec.init(ks[2], feat)["params"],
        "rew": nets.rew.init(ks[3], feat)["params"],
        "con": nets.con.init(ks[4], feat)["params"],
        "actor": nets.actor.init(ks[5], feat)["params"],
        "critic": nets.critic.init(ks[6], feat)["params"],
    }


def init(cfg: Config, spec: envs.EnvSpec, key, shaper: Shaper | None = None) -> State:
    real, explore = split_shaper(build_shaper(cfg, shaper))
    k_nets, k_shaper, k_explore, key = jax.random.split(key, 4)
    params = jax.jit(partial(init_params, cfg, spec))(k_nets)  # one program: eager init takes seconds
    return State(
        params=params,
        slow_critic=jax.tree.map(jnp.copy, params["critic"]),
        opt=jax.jit(optimizer(cfg).init)(params),
        retnorm=jnp.zeros(2),
        shaper=real.init(k_shaper, spec),
        explore=explore.init(k_explore, latent_spec(cfg, networks(cfg, spec), spec)) if explore else (),
        key=key,
        step=jnp.int32(0),
        updates=jnp.int32(0),
    )


def initial_carry(cfg: Config, nets: Nets, n: int) -> dict:
    """The policy's recurrent state for ``n`` envs: latent, previous action, and whether the
    next observation starts an episode."""
    return {
        "deter": jnp.zeros((n, cfg.deter)),
        "stoch": jnp.zeros((n, cfg.stoch, cfg.classes)),
        "action": jnp.zeros((n, nets.action_dim)),
        "first": jnp.ones((n,), bool),
    }


def init_loop(cfg: Config, spec: envs.EnvSpec) -> dict:
    """The host-side loop state a checkpoint keeps: the envs' current observations (a resumed
    run ends their open episodes with them; the policy's latent starts afresh with the new ones)."""
    return {"obs": np.zeros((spec.num_envs, *spec.obs_shape), spec.obs_dtype)}


# -- acting ----------------------------------------------------------------------------------


def policy_step(cfg, spec, nets: Nets, params, carry: dict, obs, key, deterministic: bool = False):
    """Observe ``obs`` [E, ...] (resetting where ``carry['first']``), act: (carry, env actions)."""
    k_z, k_a = jax.random.split(key)
    embed = nets.enc.apply({"params": params["enc"]}, obs)
    (deter, stoch), _ = nets.rssm.apply(
        {"params": params["rssm"]},
        (carry["deter"], carry["stoch"]),
        embed,
        carry["action"],
        carry["first"],
        k_z,
        method=RSSM.obs_step,
    )
    out = nets.actor.apply({"params": params["actor"]}, features(deter, stoch))
    action = policy_mode(nets, out) if deterministic else policy_sample(nets, out, k_a)
    new = {"deter": deter, "stoch": stoch, "action": action, "first": jnp.zeros_like(carry["first"])}
    return new, to_env_action(nets, spec, action)


# -- losses (pure, tested against numpy) -----------------------------------------------------


class Inputs(NamedTuple):
    """A chunk as latent steps [B, T]: what each latent encodes and predicts."""

    obs: jax.Array  # the observation the latent encodes
    prev_action: jax.Array  # model-space action into it (zeros at an episode's first)
    first: jax.Array  # it starts an episode
    reward: jax.Array  # the Shaper's reward of the transition into it (0 at a first)
    term: jax.Array  # the transition into it terminated the episode
    last: jax.Array  # it is its episode's last observation (terminated or truncated)


def model_inputs(nets: Nets, spec, batch: batch_lib.Sequences, reward) -> Inputs:
    """Latent steps at the successors of a chunk's transitions (see the module docstring)."""
    valid = batch.mask
    return Inputs(
        obs=batch.next_obs,
        prev_action=to_model_action(nets, spec, batch.action) * valid[..., None],
        first=~valid,
        reward=jnp.where(valid, reward, 0.0),
        term=batch.terminated & valid,
        last=(batch.terminated | batch.truncated) & valid,
    )


def swap(x):
    return jnp.swapaxes(x, 0, 1)


def observe(cfg, nets: Nets, params, embed, prev_action, first, key):
    """The posterior over a chunk [B, T] from a zero state: (deter, stoch, logits), [B, T, ...]."""
    B, T = first.shape
    carry = (jnp.zeros((B, cfg.deter)), jnp.zeros((B, cfg.stoch, cfg.classes)))

    def step(carry, x):
        e, a, f, k = x
        carry, logits = nets.rssm.apply({"params": params}, carry, e, a, f, k, method=RSSM.obs_step)
        return carry, (*carry, logits)

    xs = (swap(embed), swap(prev_action), swap(first), jax.random.split(key, T))
    _, out = jax.lax.scan(step, carry, xs)
    return jax.tree.map(swap, out)


def imagine(cfg, nets: Nets, params, deter, stoch, key):
    """``imag_length`` steps of the policy in the prior from starts [N, ...]: features and
    actions [N, H + 1, ...] (index 0 is the start; the last action is the policy's there)."""

    def step(carry, k):
        k_a, k_z = jax.random.split(k)
        feat = features(*carry)
        action = policy_sample(nets, nets.actor.apply({"params": params["actor"]}, feat), k_a)
        carry, _ = nets.rssm.apply({"params": params["rssm"]}, carry, action, k_z, method=RSSM.img_step)
        return carry, (feat, action)

    keys = jax.random.split(key, cfg.imag_length + 1)
    carry, (feats, actions) = jax.lax.scan(step, (deter, stoch), keys[:-1])
    last = features(*carry)
    last_action = policy_sample(nets, nets.actor.apply({"params": params["actor"]}, last), keys[-1])
    feats = jnp.concatenate([feats, last[None]], 0)
    actions = jnp.concatenate([actions, last_action[None]], 0)
    return swap(feats), swap(actions)


def percentile_scale(retnorm, ret, rate: float):
    """EMA of the 5th and 95th percentiles of ``ret`` (updated first, as the reference's
    ``Normalize(perc)``) and the return scale max(1, hi - lo) (eq. 11)."""
    now = jnp.stack([jnp.percentile(ret, 5.0), jnp.percentile(ret, 95.0)])
    retnorm = (1 - rate) * retnorm + rate * sg(now)
    return retnorm, jnp.maximum(1.0, retnorm[1] - retnorm[0])


def latent_sequences(latent, latent_action, mask, terminated, **extras) -> batch_lib.Sequences:
    """Transitions between latent states [B, T] as the latent streams read them
    (``rl.rewards.latent``): no observations, only the world model's states."""
    zeros = jnp.zeros(mask.shape, jnp.float32)
    return batch_lib.Sequences(
        obs=None,
        action=None,
        reward=zeros,
        next_obs=None,
        terminated=terminated,
        truncated=jnp.zeros(mask.shape, bool),
        discount=1.0 - terminated.astype(jnp.float32),
        mask=mask,
        extras={"latent": latent, "latent_action": latent_action, **extras},
    )


def replayed_latents(data: Inputs, deter, stoch) -> batch_lib.Sequences:
    """A chunk's transitions between consecutive posterior latents [B, T - 1]: latent k - 1
    encodes the observation transition k starts from (the module docstring's alignment), so
    the transition into latent k reads feature k - 1, its action and z_k; masked where latent
    k starts an episode. What the latent streams train on."""
    B, T = data.first.shape
    return latent_sequences(
        features(deter, stoch)[:, :-1],
        data.prev_action[:, 1:],
        ~data.first[:, 1:],
        data.term[:, 1:],
        next_stoch=stoch[:, 1:].reshape(B, T - 1, -1),
    )


def imagined_bonus(explore: Shaper, explore_state, feats, actions, t):
    """The latent streams' total on imagined trajectories, [N, H + 1]: the bonus of the step
    from feature i with action i sits at index i + 1, where the reward head's prediction of
    that step's reward sits (``lambda_return`` reads rewards from index 1)."""
    N, H1 = feats.shape[:2]
    steps = latent_sequences(
        feats[:, :-1], actions[:, :-1], jnp.ones((N, H1 - 1), bool), jnp.zeros((N, H1 - 1), bool)
    )
    return jnp.concatenate([jnp.zeros((N, 1)), explore(explore_state, steps, t).total], 1)


def actor_critic_losses(cfg, nets: Nets, params, slow, retnorm, feats, actions, bins, bonus=None):
    """Policy and value losses [N] on imagined features [N, H + 1, F] (eq. 7-11, the
    reference's ``imag_loss`` with ``contdisc``: the discount is in the continue prediction).
    ``bonus`` [N, H + 1] is added to the reward head's predictions (latent streams)."""
    rew = twohot_mean(nets.rew.apply({"params": params["rew"]}, feats), bins)
    if bonus is not None:
        rew = rew + bonus
    con = jax.nn.sigmoid(nets.con.apply({"params": params["con"]}, feats)[..., 0])
    v_logits = nets.critic.apply({"params": params["critic"]}, feats)
    val = twohot_mean(v_logits, bins)
    slowval = twohot_mean(nets.critic.apply({"params": slow}, feats), bins)
    weight = sg(jnp.cumprod(con, 1))
    ret = sg(lambda_return(jnp.zeros_like(con), 1.0 - con, rew, val, 1.0, cfg.lam))  # [N, H]
    retnorm, scale = percentile_scale(retnorm, ret, cfg.retnorm_rate)
    adv = sg((ret - val[:, :-1]) / scale)
    logp, ent = policy_logp_entropy(nets, nets.actor.apply({"params": params["actor"]}, feats), actions)
    policy = weight[:, :-1] * -(logp[:, :-1] * adv + cfg.actent * ent[:, :-1])
    value = weight[:, :-1] * (
        twohot_loss(v_logits[:, :-1], ret, bins)
        + cfg.slowreg * twohot_loss(v_logits[:, :-1], sg(slowval[:, :-1]), bins)
    )
    metrics = {
        "dreamer/imag_return": ret.mean(),
        "dreamer/return_scale": scale,
        "dreamer/imag_reward": rew.mean(),
        "dreamer/imag_continue": con.mean(),
        "dreamer/adv_std": adv.std(),
        "dreamer/policy_entropy": ent.mean(),
    }
    return policy.mean(1), value.mean(1), ret, retnorm, metrics


def replay_value_loss(cfg, nets: Nets, params, slow, feat, data: Inputs, boot, bins):
    """The critic on the chunk's own returns [B, T - 1], bootstrapped from the imagined
    returns at each state (the reference's ``repl_loss``)."""
    v_logits = nets.critic.apply({"params": params["critic"]}, feat)
    slowval = twohot_mean(nets.critic.apply({"params": slow}, feat), bins)
    last, term = data.last.astype(jnp.float32), data.term.astype(jnp.float32)
    ret = sg(lambda_return(last, term, data.reward, boot, 1.0 - 1.0 / cfg.horizon, cfg.lam))
    loss = twohot_loss(v_logits[:, :-1], ret, bins) + cfg.slowreg * twohot_loss(
        v_logits[:, :-1], sg(slowval[:, :-1]), bins
    )
    return (1.0 - last[:, :-1]) * loss


def loss_fn(params, cfg, nets: Nets, slow, retnorm, data: Inputs, key, explore=None, explore_state=(), t=0):
    """The sum of every loss of one update, and (new retnorm, metrics, the chunk's posterior
    latents as ``replayed_latents``). ``explore``: the latent streams' Shaper, whose total on
    imagined trajectories the actor and critic add to the reward head's."""
    bins = twohot_bins(cfg.bins)
    k_obs, k_img = jax.random.split(key)
    B, T = data.first.shape
    embed = nets.enc.apply({"params": params["enc"]}, data.obs)
    deter, stoch, post = observe(cfg, nets, params["rssm"], embed, data.prev_action, data.first, k_obs)
    prior = nets.rssm.apply({"params": params["rssm"]}, deter, method=RSSM.prior)
    dyn, rep = kl_losses(post, prior, cfg.free_nats)
    feat = features(deter, stoch)
    rec = reconstruction_loss(nets.image, nets.dec.apply({"params": params["dec"]}, feat), data.obs)
    rew = twohot_loss(nets.rew.apply({"params": params["rew"]}, feat), data.reward, bins)
    cont = (1.0 - data.term.astype(jnp.float32)) * (1.0 - 1.0 / cfg.horizon)
    con = optax.sigmoid_binary_cross_entropy(nets.con.apply({"params": params["con"]}, feat)[..., 0], cont)

    starts = jax.tree.map(lambda x: sg(x).reshape(B * T, *x.shape[2:]), (deter, stoch))
    feats, actions = sg(imagine(cfg, nets, sg(params), *starts, k_img))
    bonus = None if explore is None else imagined_bonus(explore, explore_state, feats, actions, t)
    policy, value, ret, retnorm, metrics = actor_critic_losses(
        cfg, nets, params, slow, retnorm, feats, actions, bins, bonus
    )
    if bonus is not None:
        metrics["dreamer/imag_bonus"] = bonus[:, 1:].mean()
    losses = {
        "rec": rec.mean(),
        "rew": rew.mean(),
        "con": con.mean(),
        "dyn": dyn.mean(),
        "rep": rep.mean(),
        "policy": policy.mean(),
        "value": value.mean(),
    }
    total = (
        losses["rec"]
        + losses["rew"]
        + losses["con"]
        + cfg.dyn_scale * losses["dyn"]
        + cfg.rep_scale * losses["rep"]
    )
    total += losses["policy"] + losses["value"]
    if cfg.repval_scale:
        losses["repval"] = replay_value_loss(
            cfg, nets, params, slow, sg(feat), data, ret[:, 0].reshape(B, T), bins
        ).mean()
        total += cfg.repval_scale * losses["repval"]
    metrics.update({f"loss/{k}": v for k, v in losses.items()})
    metrics["dreamer/reward_pred"] = twohot_mean(nets.rew.apply({"params": params["rew"]}, feat), bins).mean()
    return total, (retnorm, metrics, sg(replayed_latents(data, deter, stoch)))


def reward_predictions(cfg, nets: Nets, params, data: Inputs, key):
    """The reward head's predictions [B, T] on a chunk's posterior: what the world model
    expects at each latent (DreamSmooth's diagnostic compares them with the true rewards)."""
    embed = nets.enc.apply({"params": params["enc"]}, data.obs)
    deter, stoch, _ = observe(cfg, nets, params["rssm"], embed, data.prev_action, data.first, key)
    return twohot_mean(
        nets.rew.apply({"params": params["rew"]}, features(deter, stoch)), twohot_bins(cfg.bins)
    )


def update(cfg: Config, spec, nets: Nets, shaper: Shaper, state: State, batch: batch_lib.Sequences):
    """One gradient step of world model, actor and critic on a replay chunk batch, its reward
    the Shaper's at env step ``state.step``."""
    real, explore = split_shaper(shaper)
    key, k_shaper, k_loss, k_explore = jax.random.split(state.key, 4)
    shaper_state, rewards, shaper_info = real.step(state.shaper, batch, k_shaper, state.step)
    if rewards.total.shape != batch.lead:
        raise ValueError(
            f"Dreamer's reward head predicts a scalar but the Shaper returns shape "
            f"{rewards.total.shape[len(batch.lead) :]} per step; set shaper.scalarize for vector rewards"
        )
    data = model_inputs(nets, spec, batch, rewards.total)
    grads, (retnorm, metrics, latents) = jax.grad(loss_fn, has_aux=True)(
        state.params,
        cfg,
        nets,
        state.slow_critic,
        state.retnorm,
        data,
        k_loss,
        explore,
        state.explore,
        state.step,
    )
    explore_state = state.explore
    if explore is not None:  # the latent streams learn from the real chunk's posterior latents
        explore_state, bonus, explore_info = explore.step(explore_state, latents, k_explore, state.step)
        metrics.update({**bonus.means(latents.mask), **explore_info})
    tx = optimizer(cfg)
    updates, opt = tx.update(grads, state.opt, state.params)
    params = optax.apply_updates(state.params, updates)
    slow = optax.incremental_update(params["critic"], state.slow_critic, cfg.slow_rate)
    metrics.update(
        {"dreamer/grad_norm": optax.global_norm(grads), **rewards.means(batch.mask), **shaper_info}
    )
    new = state._replace(
        params=params,
        slow_critic=slow,
        opt=opt,
        retnorm=retnorm,
        shaper=shaper_state,
        explore=explore_state,
        key=key,
        updates=state.updates + 1,
    )
    return new, metrics


# -- the loop --------------------------------------------------------------------------------


def train_step(
    cfg, spec, nets, shaper, replay: Replay, learn: bool, state: State, rstate, carry, transition, next_obs
):
    """Everything between two env steps, in one jitted call: add ``transition``, run the due
    updates (a ``lax.scan``) and the Shaper's fits, and act on ``next_obs``."""
    rstate = replay.add(rstate, **transition)
    before, step = state.step, state.step + cfg.num_envs
    state = state._replace(step=step)
    metrics = {}
    if learn:

        def one(state, _):
            key, k = jax.random.split(state.key)
            batch = replay.sample_chunks(rstate, k, cfg.batch_size, cfg.batch_length)
            return update(cfg, spec, nets, shaper, state._replace(key=key), batch)

        state, metrics = jax.lax.scan(
            one, state, None, length=update_cadence(cfg.updates_per_step, cfg.num_envs)[0]
        )
        metrics = jax.tree.map(jnp.mean, metrics)
        real = split_shaper(shaper)[0]
        if real.fitted():
            key, k_data, k_fit = jax.random.split(state.key, 3)
            data = replay.sample_chunks(rstate, k_data, cfg.batch_size, cfg.batch_length)
            shaper_state = jax.lax.cond(
                real.fit_due(before, step),
                lambda: real.fit(state.shaper, data, k_fit)[0],
                lambda: state.shaper,
            )
            state = state._replace(shaper=shaper_state, key=key)
    key, k_act = jax.random.split(state.key)
    carry = {**carry, "first": transition["terminated"] | transition["truncated"]}
    carry, action = policy_step(cfg, spec, nets, state.params, carry, next_obs, k_act)
    return state._replace(key=key), rstate, carry, action, metrics


def provided(replay: Replay) -> set[str]:
    """The batch fields Dreamer's Shaper can read: the contract's and the replay's extras."""
    extras = [k for k, _, _ in replay.extras]
    core = set(batch_lib.FIELDS) | {"episode", "step", *extras, *(f"next_{k}" for k in extras)}
    return core | set(LATENT_FIELDS)  # the world model's latents (``replayed_latents``)


def train(cfg: Config, run: Run | None = None, resume=None, shaper: Shaper | None = None) -> dict:
    """Train for ``cfg.total_steps`` env steps; ``resume`` is a checkpoint directory."""
    shaper = build_shaper(cfg, shaper)
    env, spec = envs.make(cfg.env, cfg.num_envs, cfg.seed, **cfg.env_options)
    nets = networks(cfg, spec)  # unsupported observations or actions fail here
    annotator = EpisodeAnnotator(shaper.annotators(), cfg.num_envs) if shaper.annotators() else None
    replay = Replay.from_spec(spec, cfg.buffer_size, shaper.annotations(spec) or None)
    shaper.check(provided(replay), "Dreamer")
    shaper.check_scalar(spec.reward_shape, "Dreamer")
    run = run or Run.create(cfg, "dreamer")
    print(config_lib.to_yaml(run.cfg), flush=True)
    per_call, every = update_cadence(cfg.updates_per_step, cfg.num_envs)
    print(
        f"train_ratio {cfg.train_ratio:g}: {per_call} update(s) of {cfg.batch_size} x {cfg.batch_length} "
        f"replayed steps every {every * cfg.num_envs} env step(s)",
        flush=True,
    )
    state, loop = init(cfg, spec, jax.random.PRNGKey(cfg.seed), shaper), init_loop(cfg, spec)
    state, loop, replay, rstate, obs = start_replay(cfg, env, shaper, replay, state, loop, resume)
    collect_fn, learn_fn = (
        jax.jit(partial(train_step, cfg, spec, nets, shaper, replay, learn), donate_argnums=(0, 1))
        for learn in (False, True)
    )
    act_fn = jax.jit(partial(policy_step, cfg, spec, nets))
    key, k0 = jax.random.split(jnp.asarray(state.key))
    state = state._replace(key=key)
    carry, action = act_fn(state.params, initial_carry(cfg, nets, cfg.num_envs), jnp.asarray(obs), k0)
    action = np.asarray(action)
    step = int(state.step)
    described = {"shaper": shaper.describe()}

    def save():
        return run.save_checkpoint(step, state, replay, rstate, loop={"obs": obs}, **described)

    def save_failed():
        return run.save_failed(step, state, loop={"obs": obs})

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
            learn = step + cfg.num_envs >= cfg.learning_starts and (step // cfg.num_envs + 1) % every == 0
            state, rstate, carry, action, out = (learn_fn if learn else collect_fn)(
                state, rstate, carry, transition, next_obs
            )
            action = np.asarray(action)
            rstate = write_annotations(replay, rstate, annotator, obs, reward, terminated | truncated)
            life.add(out)
            obs = next_obs
            step += cfg.num_envs
            life.after(step, info["episodes"])
        summary = life.finish(step)
    finally:
        run.close()
        env.close()
    print_result(summary, cfg.eval_episodes)
    return summary


def evaluate(cfg: Config, state: State, episodes: int, video_path=None, loop=None) -> dict:
    """The policy's mode (argmax, or the Gaussian's mean) on a separately seeded env, its
    latent state reset at each episode's start."""
    spec = envs.make_spec(cfg.env, 1, cfg.seed, **cfg.env_options)
    nets = networks(cfg, spec)
    step_fn = jax.jit(partial(policy_step, cfg, spec, nets, deterministic=True))
    box = {"carry": initial_carry(cfg, nets, 1), "key": jax.random.PRNGKey(cfg.seed + 1)}

    def policy(obs):
        box["key"], k = jax.random.split(box["key"])
        box["carry"], action = step_fn(state.params, box["carry"], jnp.asarray(obs), k)
        return action

    def reset():
        box["carry"] = {**box["carry"], "first": jnp.ones((1,), bool)}

    return run_episodes(cfg, policy, episodes, video_path, on_episode_end=reset)
