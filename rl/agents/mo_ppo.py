"""Preference-conditioned MO-PPO: one policy pi(a | s, w) and one vector critic V(s, w) in R^k
for every preference w on the simplex, so a single network represents a whole front.

The conditioning follows the "conditioned network" of Abels et al. (ICML 2019, "Dynamic
Weights in Multi-Objective Deep Reinforcement Learning", section 4: the preference is an input
of the network, and training samples preferences) carried over to PPO; the PPO itself is the
per-objective one of C-MORL's and PGMORL's populations (``rl.agents.cmorl``: each objective's
reward scaled by the running std of its own discounted return, GAE per objective, clipped
surrogate on the advantage ``w . (R - V) * std`` normalized over the rollout, clipped value
loss over the k heads).

Each env draws its preference from the flat Dirichlet (uniform on the simplex) at every episode
start and keeps it to the episode's end; the policy and critic read the observation with the
preference appended (normalized together: for the preference part the running statistics
settle to the Dirichlet's, a fixed affine map), and each sample's advantage is scalarized by its
own episode's preference. A truncated episode bootstraps from its final observation under that
episode's preference.

Evaluation: every ``eval_interval`` updates and at the end, the deterministic policy is run
for each preference of the ``weight_step`` simplex grid (``eval_episodes`` episodes each,
returns discounted with ``eval_gamma``); the front is the Pareto set of those points (HV at
``ref_point``, EU over the ``eval_weight_step`` grid, sparsity). At the end the policy is also
scored by MORL-Baselines' protocol (undiscounted ``mb_episode_steps``-step episodes at
``mb_weights`` equally spaced preferences). ``front.json`` holds the final front, the
preferences that gave its points, every evaluated point (``evaluated``) and both protocols.
Checkpoints at every evaluation (``rl resume`` continues with fresh episodes).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rl import checkpoint, envs
from rl import config as config_lib
from rl.agents import cmorl, ppo
from rl.evaluation import EVAL_SEED_OFFSET
from rl.rewards import Shaper
from rl.rewards import multiobjective as mo
from rl.runs import Run, print_result


@dataclass
class Config(cmorl.MOPPOConfig):
    weight_step: float = 0.1  # the preferences the front is evaluated at
    eval_interval: int = 50  # updates between front evaluations (the last one always)

    def validate(self) -> None:
        super().validate()
        if not 0 < self.weight_step <= 1:
            raise config_lib.ConfigError(f"weight_step must be in (0, 1], got {self.weight_step}")
        if self.eval_interval < 1:
            raise config_lib.ConfigError(f"eval_interval must be >= 1, got {self.eval_interval}")


def conditioned(spec: envs.EnvSpec) -> envs.EnvSpec:
    """The spec the networks see: the observation with the k preference weights appended."""
    return dataclasses.replace(spec, obs_shape=(spec.obs_shape[0] + spec.reward_dim,))


def with_weights(obs, w) -> np.ndarray:
    return np.concatenate([np.asarray(obs, np.float32), np.asarray(w, np.float32)], -1)


class Sampler:
    """The training envs, each with the preference of its current episode (flat Dirichlet, a new
    one at every episode start)."""

    def __init__(self, cfg: Config, spec: envs.EnvSpec, seed: int, progs: cmorl.Programs):
        self.cfg, self.spec, self.progs = cfg, spec, progs
        self.env, _ = envs.make(cfg.env, cfg.num_envs, seed, **cfg.env_options)
        self.obs, _ = self.env.reset()
        self.rng = np.random.default_rng(seed)
        self.w = self.rng.dirichlet(np.ones(spec.reward_dim), cfg.num_envs).astype(np.float32)

    def rollout(self, member: cmorl.Member, key, run: Run, step: int, total: int):
        """``(member with updated obs statistics, rollout [1, T, E, ...] with "weight", step)``."""
        spec, E, T, k = self.spec, self.cfg.num_envs, self.cfg.num_steps, self.spec.reward_dim
        d = spec.obs_shape[0] + k
        buf = {
            "x": np.zeros((T, E, d), np.float32),
            "action": np.zeros((T, E, *spec.action_shape), np.int32 if spec.discrete else np.float32),
            "reward": np.zeros((T, E, k), np.float32),
            "weight": np.zeros((T, E, k), np.float32),
            "terminated": np.zeros((T, E), bool),
            "truncated": np.zeros((T, E), bool),
            "final_x": np.zeros((T, E, d), np.float32),
        }
        members = jax.tree.map(lambda a: a[None], member)
        for t, k_t in enumerate(jax.random.split(key, T)):
            stats, x, a = self.progs.act(members, with_weights(self.obs, self.w)[None], k_t)
            members = members._replace(obs_stats=stats)
            a = np.asarray(a)[0]
            obs, reward, terminated, truncated, info = self.env.step(ppo.env_action(spec, a))
            buf["x"][t], buf["action"][t], buf["weight"][t] = np.asarray(x)[0], a, self.w
            buf["reward"][t] = np.asarray(reward).reshape(E, k)
            buf["terminated"][t], buf["truncated"][t] = terminated, truncated
            if truncated.any():  # under the finished episode's preference
                final = with_weights(np.asarray(info["next_obs"]).reshape(E, -1), self.w)
                buf["final_x"][t] = np.asarray(self.progs.observe(stats, final[None]))[0]
            done = terminated | truncated
            if done.any():
                self.w[done] = self.rng.dirichlet(np.ones(k), int(done.sum()))
            self.obs = obs
            step += E
            run.record_episodes(info["episodes"])
            run.progress(step, total)
        last = np.asarray(self.progs.observe(members.obs_stats, with_weights(self.obs, self.w)[None]))
        rollout = {name: v[None] for name, v in buf.items()}
        return jax.tree.map(lambda a: a[0], members), {**rollout, "last_x": last}, step

    def close(self):
        self.env.close()


def evaluate_weights(cfg: Config, spec, member: cmorl.Member, weights, episodes: int, gamma: float,
                     env_options=None, progs=None) -> np.ndarray:  # fmt: skip
    """[W, k] mean vector returns of the deterministic policy under each preference (frozen
    statistics), discounted with ``gamma``; episode e of every preference starts from one seed."""
    weights = np.asarray(weights, np.float32)
    W, k = len(weights), spec.reward_dim
    n = W * episodes
    options = cfg.env_options if env_options is None else env_options
    env, _ = envs.make(cfg.env, n, cfg.seed + EVAL_SEED_OFFSET, **options)
    greedy = (progs or cmorl.programs(cfg, conditioned(spec))).greedy
    members = jax.tree.map(lambda a: jnp.asarray(a)[None], member)
    w = np.repeat(weights, episodes, 0)
    total, scale, live = np.zeros((n, k)), np.ones(n), np.ones(n, bool)
    try:
        obs, _ = env.reset(seed=[cfg.seed + EVAL_SEED_OFFSET + e for _ in range(W) for e in range(episodes)])
        key = jax.random.PRNGKey(0)
        while live.any():
            _, _, a = greedy(members, with_weights(obs, w)[None], key)
            obs, reward, terminated, truncated, _ = env.step(ppo.env_action(spec, np.asarray(a)[0]))
            total += live[:, None] * scale[:, None] * np.asarray(reward).reshape(n, k)
            scale *= gamma
            live &= ~(terminated | truncated)
    finally:
        env.close()
    return total.reshape(W, episodes, k).mean(1)


def train(cfg: Config, run: Run | None = None, resume=None, shaper: Shaper | None = None) -> dict:
    """PPO over sampled preferences for ``cfg.total_steps`` env steps; writes ``front.json`` and
    ``front.png``."""
    spec, ref = cmorl.setup(cfg, shaper, "MO-PPO")
    k = spec.reward_dim
    grid, front_w = mo.simplex_grid(k, cfg.eval_weight_step), mo.simplex_grid(k, cfg.weight_step)
    n_updates = cfg.total_steps // cfg.rollout_steps
    if n_updates < 1:
        raise ValueError(
            f"total_steps={cfg.total_steps} is fewer than one rollout ({cfg.rollout_steps} env steps)"
        )
    cspec = conditioned(spec)
    run = run or Run.create(cfg, "mo_ppo")
    print(config_lib.to_yaml(run.cfg), flush=True)
    key, k_init = jax.random.split(jax.random.PRNGKey(cfg.seed))
    member = jax.jit(partial(cmorl.init_member, cfg, cspec))(k_init)
    step, j0 = 0, 0
    if resume is not None:
        meta = json.loads((Path(resume) / "meta.json").read_text())
        state = checkpoint.load(resume, {"key": key, "member": member})[0]
        key, member = jnp.asarray(state["key"]), jax.tree.map(jnp.asarray, state["member"])
        step, j0 = meta["step"], meta["next_update"]
    progs = cmorl.programs(cfg, cspec)
    learn = cmorl.update_population(cfg, cspec, False)
    sampler = Sampler(cfg, spec, cfg.seed + j0, progs)
    points = None
    try:
        for j in range(j0, n_updates):
            if cfg.anneal_lr:
                member = member._replace(lr=jnp.float32(cfg.lr * (1 - j / n_updates)))
            key, k_roll, k_upd = jax.random.split(key, 3)
            member, rollout, step = sampler.rollout(member, k_roll, run, step, cfg.total_steps)
            members, info = learn(jax.tree.map(lambda a: a[None], member), rollout,
                                  rollout["weight"], jnp.zeros(1, jnp.int32), k_upd)  # fmt: skip
            member = jax.tree.map(lambda a: a[0], members)
            if (j + 1) % cfg.eval_interval == 0 or j == n_updates - 1:
                points = evaluate_weights(
                    cfg, spec, member, front_w, cfg.eval_episodes, cfg.eval_gamma, progs=progs
                )
                front = _front(points, ref)
                m = mo.front_metrics(front, ref, grid) if len(front) else {}
                out = {f"eval/{n}": float(v) for n, v in m.items()}
                out["eval/episode_return"] = out.get("eval/eum", float("nan"))
                run.log(
                    step, {**out, **{n: float(v.mean()) for n, v in info.items()}, "mo_ppo/updates": j + 1}
                )
                print(
                    f"[mo_ppo] step {step}: " + ", ".join(f"{n} {v:.4g}" for n, v in out.items()), flush=True
                )
                run.save_checkpoint(step, {"key": key, "member": member}, next_update=j + 1)
    finally:
        sampler.close()
    if points is None:  # resumed after the last update
        points = evaluate_weights(cfg, spec, member, front_w, cfg.eval_episodes, cfg.eval_gamma, progs=progs)
    summary = finish(cfg, spec, run, member, points, front_w, ref, grid, step, progs)
    print_result(summary, cfg.eval_episodes)
    return summary


def _front(points, ref) -> np.ndarray:
    p = np.asarray(points, np.float64)
    return p[mo.front_mask(p, ref)]


def finish(cfg: Config, spec, run: Run, member, points, weights, ref, grid, step: int, progs) -> dict:
    """The final front under both protocols into ``front.json`` (and ``front.png``), the summary."""
    points = np.asarray(points, np.float64)
    keep = mo.front_mask(points, ref)
    if not keep.any():
        raise RuntimeError(
            f"no evaluated point is at or above the reference point {ref.tolist()}: {points.tolist()}"
        )
    m = mo.front_metrics(points[keep], ref, grid)
    metrics = {f"eval/{n}": float(v) for n, v in m.items()}
    protocols = {"cmorl": {"gamma": cfg.eval_gamma, "episode_steps": cfg.env_options.get("max_episode_steps"),
                           "eu_grid_step": cfg.eval_weight_step, **{n: float(v) for n, v in m.items()}}}  # fmt: skip
    if cfg.mb_episode_steps:
        mb_w = mo.equally_spaced_weights(spec.reward_dim, cfg.mb_weights)
        options = {**cfg.env_options, "max_episode_steps": cfg.mb_episode_steps}
        mb_points = evaluate_weights(cfg, spec, member, mb_w, cfg.eval_episodes, 1.0, options, progs)
        mb = mo.front_metrics(mo.pareto_front(mb_points), ref, mb_w)
        protocols["morl_baselines"] = {"gamma": 1.0, "episode_steps": cfg.mb_episode_steps,
                                       "eum_weights": cfg.mb_weights, **{n: float(v) for n, v in mb.items()},
                                       "points": mb_points.tolist()}  # fmt: skip
        metrics.update({f"eval/mb_{n}": float(v) for n, v in mb.items()})
    metrics["eval/episode_return"] = metrics["eval/eum"]
    mo.write_front(run.dir / "front.json", points[keep], np.asarray(weights)[keep], metrics, step=step, env=cfg.env,
                   ref_point=list(ref), protocols=protocols, evaluated=np.asarray(points).tolist())  # fmt: skip
    if spec.reward_dim in (2, 3):
        mo.plot_front(run.dir / "front.png", points[keep], title=f"{cfg.env} (mo_ppo) at {step}")
    run.log(step, metrics)
    try:
        return run.finish(metrics)
    finally:
        run.close()


def evaluate(cfg: Config, state, episodes: int, video_path=None, loop=None) -> dict:
    """The front of a checkpointed policy (``state``: a ``cmorl.Member``) at the ``weight_step`` grid."""
    spec = envs.make_spec(cfg.env, cfg.num_envs, cfg.seed, **cfg.env_options)
    ref = mo.reference_point(cfg.env, spec.reward_dim, cfg.ref_point)
    points = evaluate_weights(cfg, spec, state, mo.simplex_grid(spec.reward_dim, cfg.weight_step), episodes,
                              cfg.eval_gamma)  # fmt: skip
    m = mo.front_metrics(_front(points, ref), ref, mo.simplex_grid(spec.reward_dim, cfg.eval_weight_step))
    return {f"eval/{n}": float(v) for n, v in m.items()}
