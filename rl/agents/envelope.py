"""Envelope Q-learning (Yang, Sun and Narasimhan 2019, "A Generalized Algorithm for
Multi-Objective Reinforcement Learning and Policy Adaptation"): one Q network conditioned on
a preference w, with vector outputs Q(s, a, w) in R^k, trained for every preference at once.

Reference: MORL-Baselines (``morl_baselines/multi_policy/envelope/envelope.py``). Per update:

1. A replay batch of B transitions, its vector reward [B, k] the Shaper's at the env-step
   clock (``scalarize`` must stay ``none``: the agent needs the objectives apart; a scalar
   term is added to every objective, as the Shaper does for vector rewards).
2. ``num_sample_w`` preferences W from the simplex; every transition is paired with each
   (m * B rows).
3. The envelope target (eq. 6): at s', the action and the preference w' in W maximizing
   w . Q(s', a, w') under the online network, evaluated by the target network:
   y = r + gamma (1 - terminated) Q_target(s', a*, w'*). A truncated episode bootstraps.
   (``envelope=false``: the scalarized double-DQN target at w' = w, the reference's ablation.)
4. The loss (eq. 7-8) ``(1 - lambda) |Q - y|^2 + lambda |w.Q - w.y|^2`` (means), with the
   homotopy weight lambda going linearly from ``homotopy_start`` to ``homotopy_end`` over
   ``homotopy_steps`` env steps after ``learning_starts``; Adam; the target network copied
   every ``target_every`` updates (or Polyak-averaged with ``tau`` < 1).

Acting: each env draws a preference at every episode start and acts epsilon-greedily on
w . Q(s, ., w), epsilon decaying linearly as the reference's ``linearly_decaying_value``.
Preferences (acting and the update's W) are drawn as the reference draws them,
``random_weights(dist="gaussian")``: |x| / ||x||_1, x ~ N(0, I) (``pref_dist=dirichlet``:
uniform on the simplex).

Replay (``per=true``, the reference's default): proportional prioritized replay as
MORL-Baselines' ``PrioritizedReplayBuffer`` (after LAP-PAL) runs it: a new transition gets
the largest priority assigned so far (``per_min_priority`` at first); after each update the
batch's slots get (|w_0 . (Q - y)| + p_max)^alpha, w_0 the update's first sampled preference
(the reference's first B rows), alpha ``per_alpha``, and p_max then grows to the largest of
them; a slot drawn twice keeps its first row's priority. No importance-sampling weights (the
reference has none).

Evaluation is a front: the greedy policy for each of ``eval_weights`` preferences
(MORL-Baselines' ``equally_spaced_weights``), one env per preference, its vector return
undiscounted and discounted with ``gamma``; the points' Pareto front, hypervolume at
``ref_point``, EUM over the same preferences, sparsity and cardinality, and with the env's
known front its IGD. ``front.json`` (and for 2 or 3 objectives ``front.png``) is written into
the run directory at each evaluation, and a copy kept as ``fronts/step_<step>.json``: a
conditioned Q network's front can gain and lose points between evaluations, and the history
shows when.
"""

from __future__ import annotations

import dataclasses
import shutil
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
from rl.evaluation import preference_returns
from rl.loop import Common, Lifecycle, check_cadence, replay_transition, start_replay, update_cadence
from rl.nets import MLP, orthogonal
from rl.replay import Replay
from rl.rewards import Shaper, from_config
from rl.rewards import multiobjective as mo
from rl.rewards.schedules import Linear
from rl.runs import Run, print_result


@dataclass
class Config(Common):
    env: str = "mo:deep-sea-treasure-v0"
    total_steps: int = 100_000  # env steps
    buffer_size: int = 100_000  # replay capacity in env steps
    batch_size: int = 64  # transitions per update (times num_sample_w rows)
    learning_starts: int = 100  # uniform random actions (and no updates) before this step
    utd: float = 1.0  # updates per env step (the reference's gradient_updates)
    gamma: float = 0.99
    lr: float = 3e-4
    hidden: tuple[int, ...] = (256, 256, 256, 256)  # MORL-Baselines' examples (envelope_minecart.py)
    num_sample_w: int = 4  # preferences per update, paired with every transition
    pref_dist: str = "gaussian"  # the reference's |N(0, I)| / L1; "dirichlet": uniform on the simplex
    per: bool = True  # prioritized replay (the reference's default)
    per_alpha: float = 0.6
    per_min_priority: float = 1e-5  # a new transition's priority before any update
    envelope: bool = True  # False: the scalarized double-DQN target
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_steps: int = 50_000  # env steps of linear decay after learning_starts
    homotopy_start: float = 0.0  # lambda: the weight of the scalarized loss
    homotopy_end: float = 1.0
    homotopy_steps: int = 50_000
    target_every: int = 1000  # updates between target copies (tau = 1)
    tau: float = 1.0  # < 1: Polyak-average the target every update instead
    max_grad_norm: float = 0.1  # global-norm clip (0: none); without it, or with target copies
    # every 100 updates, Deep Sea Treasure's Q values diverge (w.Q in the thousands by 10k steps)
    ref_point: list[float] | None = None  # hypervolume reference (None: the env's known one)
    eval_weights: int = 100  # preferences of the evaluation front
    eval_episodes: int = 1  # episodes per preference

    def validate(self) -> None:
        super().validate()
        err = config_lib.ConfigError
        if self.batch_size < 1 or self.num_sample_w < 1 or self.eval_weights < 1:
            raise err("batch_size, num_sample_w and eval_weights must be >= 1")
        if self.buffer_size < max(2 * self.num_envs, self.batch_size):
            raise err(f"buffer_size must be >= batch_size and >= 2 * num_envs, got {self.buffer_size}")
        check_cadence(self.utd, self.num_envs, "utd")
        if not 0 < self.tau <= 1 or not 0 <= self.gamma <= 1 or self.target_every < 1:
            raise err("tau must be in (0, 1], gamma in [0, 1] and target_every >= 1")
        for key in ("epsilon_start", "epsilon_end", "homotopy_start", "homotopy_end"):
            if not 0 <= getattr(self, key) <= 1:
                raise err(f"{key} must be in [0, 1], got {getattr(self, key)}")
        if self.pref_dist not in mo.PREFERENCE_DISTS:
            raise err(f"pref_dist must be one of {mo.PREFERENCE_DISTS}, got {self.pref_dist!r}")
        if self.per_alpha < 0 or self.per_min_priority <= 0:
            raise err("per_alpha must be >= 0 and per_min_priority > 0")
        if self.shaper.scalarize != "none":
            raise err("Envelope Q-learning learns vector Q values: shaper.scalarize must be 'none'")


# -- network ---------------------------------------------------------------------------------


class QNet(nn.Module):
    """(obs, w) -> Q [..., A, k]: the preference is an input (the reference's ``QNet``), every
    layer initialized as the reference's ``layer_init`` leaves it: orthogonal with gain 1,
    zero biases (flax's lecun normal would start the first layer, fan-in |S| + k, 8x larger
    on Deep Sea Treasure)."""

    hidden: tuple[int, ...]
    num_actions: int
    k: int

    @nn.compact
    def __call__(self, obs, w):
        x = jnp.concatenate([obs.reshape(*w.shape[:-1], -1).astype(jnp.float32), w], -1)
        q = MLP(self.hidden, self.num_actions * self.k, kernel_init=orthogonal(1.0))(x)
        return q.reshape(*w.shape[:-1], self.num_actions, self.k)


def network(cfg: Config, spec: envs.EnvSpec) -> QNet:
    return QNet(tuple(cfg.hidden), spec.num_actions, spec.reward_dim)


# -- state -----------------------------------------------------------------------------------


class State(NamedTuple):
    params: dict
    target: dict
    opt: optax.OptState
    pref: jax.Array  # [E, k]: each env's preference for its current episode
    shaper: object
    key: jax.Array
    step: jax.Array  # env steps taken: the Shaper's clock and the schedules'
    updates: jax.Array
    priority: jax.Array  # [T, E] the replay slots' priorities (per=true; else [0, E])
    max_priority: jax.Array  # [] the largest priority assigned so far (a new slot's)


def optimizer(cfg: Config) -> optax.GradientTransformation:
    adam = optax.adam(cfg.lr)
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), adam) if cfg.max_grad_norm else adam


def build_shaper(cfg: Config, shaper: Shaper | None = None) -> Shaper:
    return (shaper or from_config(cfg.shaper)).bind(cfg.gamma)


def init_params(cfg: Config, spec: envs.EnvSpec, key) -> dict:
    k = spec.reward_dim
    params = network(cfg, spec).init(key, jnp.zeros((1, *spec.obs_shape)), jnp.full((1, k), 1.0 / k))[
        "params"
    ]
    return {"params": params, "target": jax.tree.map(jnp.copy, params), "opt": optimizer(cfg).init(params)}


def init(cfg: Config, spec: envs.EnvSpec, key, shaper: Shaper | None = None) -> State:
    shaper = build_shaper(cfg, shaper)
    k_net, k_shaper, k_pref, key = jax.random.split(key, 4)
    nets = jax.jit(partial(init_params, cfg, spec))(k_net)  # one program: an eager init compiles op by op
    slots = cfg.buffer_size // cfg.num_envs if cfg.per else 0  # the replay's slots per env column
    return State(
        **nets,
        pref=mo.sample_preferences(k_pref, cfg.num_envs, spec.reward_dim, cfg.pref_dist),
        shaper=shaper.init(k_shaper, spec),
        key=key,
        step=jnp.int32(0),
        updates=jnp.int32(0),
        priority=jnp.zeros((slots, cfg.num_envs), jnp.float32),
        max_priority=jnp.float32(cfg.per_min_priority),
    )


def init_loop(cfg: Config, spec: envs.EnvSpec) -> dict:
    return {"obs": np.zeros((spec.num_envs, *spec.obs_shape), spec.obs_dtype)}


def epsilon(cfg: Config, step):
    """Exploration: 1 before ``learning_starts``, then ``epsilon_start`` linearly to
    ``epsilon_end`` over ``epsilon_steps`` (the reference's ``linearly_decaying_value``)."""
    eps = Linear(cfg.epsilon_start, cfg.epsilon_end, cfg.epsilon_steps)(step - cfg.learning_starts)
    return jnp.where(step < cfg.learning_starts, 1.0, eps)


def homotopy(cfg: Config, step):
    """The loss's lambda, linear from ``homotopy_start`` after ``learning_starts``."""
    return Linear(cfg.homotopy_start, cfg.homotopy_end, cfg.homotopy_steps)(step - cfg.learning_starts)


def greedy(net: QNet, params, obs, w):
    """argmax_a w . Q(s, a, w) for obs [N, ...] and preferences [N, k]."""
    q = net.apply({"params": params}, obs, w)
    return jnp.argmax(jnp.einsum("nk,nak->na", w, q), -1)


_greedy = jax.jit(greedy, static_argnums=0)


# -- the targets and the loss (pure, tested against numpy) -----------------------------------


def envelope_target(w, q_next, q_next_target):
    """Eq. 6's max: per row, the (w', a) of ``q_next`` [N, m, A, k] (the online network at s'
    for each sampled w') that maximizes w . Q (w [N, k]); that entry of ``q_next_target``."""
    n, m, a, k = q_next.shape
    best = jnp.argmax(jnp.einsum("nk,nmak->nma", w, q_next).reshape(n, m * a), -1)
    return q_next_target.reshape(n, m * a, k)[jnp.arange(n), best]


def ddqn_target(w, q_next, q_next_target):
    """The scalarized double-DQN target at w' = w: ``q_next`` [N, A, k], online and target."""
    best = jnp.argmax(jnp.einsum("nk,nak->na", w, q_next), -1)
    return q_next_target[jnp.arange(len(best)), best]


def envelope_loss(q, y, w, lam):
    """Eq. 7-8: (1 - lambda) mean |Q - y|^2 + lambda mean (w.Q - w.y)^2; q, y, w [N, k]."""
    vector = jnp.mean((q - y) ** 2)
    scalar = jnp.mean((jnp.sum(w * q, -1) - jnp.sum(w * y, -1)) ** 2)
    return (1.0 - lam) * vector + lam * scalar


def new_priorities(priority, max_priority, slots, q, y, w, alpha: float):
    """The reference's priority update (MORL-Baselines ``Envelope.update`` and
    ``PrioritizedReplayBuffer.update_priorities``): the B drawn slots (t [B], j [B]) get
    (|w . (q - y)| + p_max)^alpha from the rows of the first sampled preference (q, y, w [B,
    k]); where a slot was drawn twice its first row's value stands (``np.unique``'s first
    index); p_max becomes the largest of p_max and the new values."""
    t, j = slots
    p = (jnp.abs(jnp.sum((q - y) * w, -1)) + max_priority) ** alpha
    same = (t[:, None] == t[None, :]) & (j[:, None] == j[None, :])
    first = ~jnp.any(jnp.tril(same, -1), -1)  # no earlier row drew this slot
    rows = jnp.where(first, t, priority.shape[0])  # later duplicates write out of range: dropped
    return priority.at[rows, j].set(p, mode="drop"), jnp.maximum(max_priority, p.max())


def bootstrap(cfg: Config, net: QNet, params, target, next_obs, sampled):
    """The bootstrap vectors [m * B, k] of the rows (w_i, transition j) in the update's order
    (row i * B + j). Envelope: Q(s'_j, a, w') for every sampled w' depends on the transition
    only, not on the row's own w, so the networks run on the B x m distinct (s', w') pairs and
    the result is shared by the m rows of each transition; the reference evaluates all
    m * B x m (``envelope_target``'s repeat), the same numbers for m times the compute."""
    m, b, k = sampled.shape[0], next_obs.shape[0], sampled.shape[1]
    w = jnp.repeat(sampled, b, 0)
    if not cfg.envelope:
        wide_obs = jnp.tile(next_obs, (m,) + (1,) * (next_obs.ndim - 1))
        return ddqn_target(
            w, net.apply({"params": params}, wide_obs, w), net.apply({"params": target}, wide_obs, w)
        )
    pairs = jnp.broadcast_to(sampled, (b, m, k))  # every transition, every w'
    wide = jnp.broadcast_to(next_obs[:, None], (b, m, *next_obs.shape[1:]))

    def per_row(p):  # [B, m, A, k] -> [m * B, m, A, k]: row i * B + j reads transition j
        return jnp.tile(net.apply({"params": p}, wide, pairs), (m, 1, 1, 1))

    return envelope_target(w, per_row(params), per_row(target))


def update(
    cfg: Config, spec: envs.EnvSpec, shaper: Shaper, state: State, batch: batch_lib.Transitions, slots=None
):
    """One gradient step on a replay batch; its vector reward the Shaper's at ``state.step``.
    ``slots`` (t [B], j [B]): where the batch came from, whose priorities it updates (per=true)."""
    net, tx = network(cfg, spec), optimizer(cfg)
    key, k_shaper, k_w = jax.random.split(state.key, 3)
    shaper_state, rewards, shaper_info = shaper.step(state.shaper, batch, k_shaper, state.step)
    if rewards.total.shape != (*batch.lead, spec.reward_dim):
        raise ValueError(
            f"Envelope Q-learning needs the vector reward [..., {spec.reward_dim}]; the Shaper returns "
            f"{rewards.total.shape[len(batch.lead) :]} per step"
        )
    m, b = cfg.num_sample_w, batch.lead[0]
    sampled = mo.sample_preferences(k_w, m, spec.reward_dim, cfg.pref_dist)  # [m, k]
    w = jnp.repeat(sampled, b, 0)  # [m * B, k]: each preference with every transition

    def tile(x):
        return jnp.tile(x, (m,) + (1,) * (x.ndim - 1))

    obs, action = tile(batch.obs), tile(batch.action).astype(jnp.int32)
    reward, discount = tile(rewards.total), tile(batch.discount)
    boot = bootstrap(cfg, net, state.params, state.target, batch.next_obs, sampled)
    y = jax.lax.stop_gradient(reward + cfg.gamma * discount[:, None] * boot)
    lam = homotopy(cfg, state.step)

    def loss_fn(params):
        q = net.apply({"params": params}, obs, w)[jnp.arange(m * b), action]
        return envelope_loss(q, y, w, lam), q

    (loss, q), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt = tx.update(grads, state.opt, state.params)
    params = optax.apply_updates(state.params, updates)
    n = state.updates + 1
    if cfg.tau < 1:
        target = optax.incremental_update(params, state.target, cfg.tau)
    else:
        target = jax.tree.map(lambda p, t: jnp.where(n % cfg.target_every == 0, p, t), params, state.target)
    metrics = {
        "loss/q": loss,
        "envelope/q": jnp.mean(jnp.sum(w * q, -1)),
        "envelope/target": jnp.mean(jnp.sum(w * y, -1)),
        "envelope/homotopy": lam,
        **rewards.means(batch.mask),
        **shaper_info,
    }
    new = state._replace(params=params, target=target, opt=opt, shaper=shaper_state, key=key, updates=n)
    if slots is not None:
        priority, top = new_priorities(
            state.priority, state.max_priority, slots, q[:b], y[:b], w[:b], cfg.per_alpha
        )
        new = new._replace(priority=priority, max_priority=top)
        metrics["envelope/max_priority"] = top
    return new, metrics


def train_step(cfg, spec, shaper, replay: Replay, learn: bool, state: State, rstate, transition, next_obs):
    """Between two env steps, one jitted call: store the transition, run the due updates,
    draw new preferences for envs whose episode ended, act epsilon-greedily on ``next_obs``."""
    if cfg.per:  # the slots this step writes start at the largest priority so far
        written = state.priority.at[rstate.ptr, jnp.arange(cfg.num_envs)].set(state.max_priority)
        state = state._replace(priority=written)
    rstate = replay.add(rstate, **transition)
    step = state.step + cfg.num_envs
    state = state._replace(step=step)
    metrics = {}
    if learn:

        def one(state, _):
            key, k = jax.random.split(state.key)
            state = state._replace(key=key)
            if cfg.per:
                batch, slots = replay.sample_prioritized(rstate, k, cfg.batch_size, state.priority)
                return update(cfg, spec, shaper, state, batch, slots)
            return update(cfg, spec, shaper, state, replay.sample(rstate, k, cfg.batch_size))

        state, metrics = jax.lax.scan(one, state, None, length=update_cadence(cfg.utd, cfg.num_envs)[0])
        metrics = jax.tree.map(jnp.mean, metrics)
    key, k_pref, k_eps, k_rand = jax.random.split(state.key, 4)
    done = transition["terminated"] | transition["truncated"]
    fresh = mo.sample_preferences(k_pref, cfg.num_envs, spec.reward_dim, cfg.pref_dist)
    pref = jnp.where(jnp.asarray(done)[:, None], fresh, state.pref)
    eps = epsilon(cfg, step)
    random = jax.random.randint(k_rand, (cfg.num_envs,), 0, spec.num_actions)
    explore = jax.random.uniform(k_eps, (cfg.num_envs,)) < eps
    action = jnp.where(explore, random, greedy(network(cfg, spec), state.params, next_obs, pref))
    if metrics:
        metrics["envelope/epsilon"] = eps
    return state._replace(key=key, pref=pref), rstate, action.astype(jnp.int32), metrics


# -- the loop --------------------------------------------------------------------------------


def check_env(spec: envs.EnvSpec) -> None:
    if not spec.discrete or len(spec.reward_shape) != 1 or spec.reward_dim < 2:
        raise ValueError(
            f"Envelope Q-learning needs discrete actions and a vector reward of >= 2 objectives; "
            f"{spec.env_id} has {'discrete' if spec.discrete else 'continuous'} actions and reward shape "
            f"{spec.reward_shape} (the mo: namespace's discrete envs: deep-sea-treasure-v0, fruit-tree-v0, minecart-v0)"
        )


def train(cfg: Config, run: Run | None = None, resume=None, shaper: Shaper | None = None) -> dict:
    """Train for ``cfg.total_steps`` env steps; ``resume`` is a checkpoint directory."""
    shaper = build_shaper(cfg, shaper)
    env, spec = envs.make(cfg.env, cfg.num_envs, cfg.seed, **cfg.env_options)
    check_env(spec)
    ref = mo.reference_point(cfg.env, spec.reward_dim, cfg.ref_point)  # an unknown env without one fails here
    replay = Replay.from_spec(spec, cfg.buffer_size)
    shaper.check(set(batch_lib.FIELDS) | {"episode", "step"}, "Envelope Q-learning")
    run = run or Run.create(cfg, "envelope")
    print(config_lib.to_yaml(run.cfg), flush=True)
    state, loop = init(cfg, spec, jax.random.PRNGKey(cfg.seed), shaper), init_loop(cfg, spec)
    state, loop, replay, rstate, obs = start_replay(cfg, env, shaper, replay, state, loop, resume)
    collect_fn, learn_fn = (
        jax.jit(partial(train_step, cfg, spec, shaper, replay, learn), donate_argnums=(0, 1))
        for learn in (False, True)
    )
    step = int(state.step)
    key, k0 = jax.random.split(jnp.asarray(state.key))
    state = state._replace(key=key)
    action = np.asarray(jax.random.randint(k0, (cfg.num_envs,), 0, spec.num_actions))
    every = update_cadence(cfg.utd, cfg.num_envs)[1]
    described = {"shaper": shaper.describe()}

    def save():
        return run.save_checkpoint(step, state, replay, rstate, loop={"obs": obs}, **described)

    def evaluate_and_write():
        out, front = evaluate_front(cfg, state, ref)
        path = mo.write_front(run.dir / "front.json", **front, step=step, env=cfg.env, ref_point=list(ref))
        (run.dir / "fronts").mkdir(exist_ok=True)
        shutil.copyfile(path, run.dir / "fronts" / f"step_{step:012d}.json")
        if spec.reward_dim in (2, 3):  # a plot for 2 or 3 objectives; the file holds any number
            title = f"{cfg.env} at {step}"
            mo.plot_front(run.dir / "front.png", front["points"], front["known_front"], title=title)
        return out

    life = Lifecycle(
        cfg,
        run,
        step,
        save=save,
        save_failed=lambda: run.save_failed(step, state, loop={"obs": obs}),
        evaluate=evaluate_and_write,
        extra=lambda: {"perf/updates": int(state.updates)},
    )
    try:
        while step < cfg.total_steps:
            next_obs, reward, terminated, truncated, info = env.step(action)
            transition = replay_transition(obs, action, reward, terminated, truncated, info)
            learn = step + cfg.num_envs >= cfg.learning_starts and (step // cfg.num_envs + 1) % every == 0
            state, rstate, action, out = (learn_fn if learn else collect_fn)(
                state, rstate, transition, next_obs
            )
            action = np.asarray(action)
            life.add(out)
            obs, step = next_obs, step + cfg.num_envs
            life.after(step, info["episodes"])
        summary = life.finish(step)
    finally:
        run.close()
        env.close()
    print_result(summary, cfg.eval_weights)
    return summary


def evaluate_front(cfg: Config, state: State, ref) -> tuple[dict, dict]:
    """(metrics, the front file's fields): the greedy policy for each evaluation preference,
    its vector return undiscounted (the points, MORL-Baselines' protocol) and discounted."""
    spec = envs.make_spec(cfg.env, 1, cfg.seed, **cfg.env_options)
    weights = mo.equally_spaced_weights(spec.reward_dim, cfg.eval_weights)
    net = network(cfg, spec)
    undisc, disc = preference_returns(
        cfg,
        lambda obs, w: _greedy(net, state.params, jnp.asarray(obs), jnp.asarray(w, jnp.float32)),
        weights,
        cfg.eval_episodes,
        cfg.gamma,
    )
    known = {g: mo.known_front(cfg.env, g) for g in (1.0, cfg.gamma)}
    out = {}
    for name, points, g in (("", undisc, 1.0), ("_discounted", disc, cfg.gamma)):
        m = mo.front_metrics(points, ref, weights, known_front=known[g])
        out.update({f"eval/{key}{name}": float(v) for key, v in m.items()})
    # the score a report ranks by: each preference's own utility, averaged
    out["eval/episode_return"] = float(np.mean(np.sum(weights * undisc, -1)))
    front = {"points": undisc, "weights": weights, "metrics": out, "discounted": disc.tolist()}
    front["known_front"] = None if known[1.0] is None else known[1.0].tolist()
    return out, front


def evaluate(cfg: Config, state: State, episodes: int, video_path=None, loop=None) -> dict:
    """The evaluation front's metrics (``rl eval``); ``episodes`` per preference."""
    spec = envs.make_spec(cfg.env, 1, cfg.seed, **cfg.env_options)
    cfg = dataclasses.replace(cfg, eval_episodes=episodes)
    return evaluate_front(cfg, state, mo.reference_point(cfg.env, spec.reward_dim, cfg.ref_point))[0]
