"""PGMORL (Xu et al., ICML 2020, "Prediction-Guided Multi-Objective Reinforcement Learning for
Continuous Robot Control"): an evolving population of PPO policies, each generation's
(policy, preference) tasks chosen by predicting where each would move the Pareto front.

Reference: ``mit-gfx/PGMORL`` (``morl/morl.py``, ``morl/mopg.py``, ``morl/population_2d.py``,
``morl/opt_graph.py``, ``morl/ep.py``, ``morl/arguments.py``; ``scripts/halfcheetah-v2.py``'s
settings). C-MORL's code (``rl.agents.cmorl``) descends from it: the members here are C-MORL's
per-objective PPO population (the same ``a2c_ppo_acktr`` update on the linearly scalarized
advantage, one ``vmap``-ed program for all tasks, one jitted act per env step).

1. **Warm-up** (section 4.2): one random policy per preference of an evenly spaced simplex grid
   (``weight_step`` 0.2: six for two objectives), trained ``warmup_iter`` updates.
2. **Evolution**: every ``update_iter`` updates, the new policies join a *population* kept by
   performance buffers (``pbuffer_num`` angular sectors around the reference point, the
   ``pbuffer_size`` points farthest from it in each). For every population member,
   ``num_weight_candidates`` preferences within 45 degrees of its last one are scored by a
   *prediction model*: per objective, a hyperbolic tangent ``A (e^{a(w - b)} - 1) / (e^{a(w - b)}
   + 1) + c`` of the preference, fitted to the improvements its neighbours made under past
   preferences (eq. 5-6, ``predict_hyperbolic``: robust least squares, Gaussian weights on the
   neighbours' distance). ``num_tasks`` tasks are then picked greedily, each maximizing the
   hypervolume minus ``sparsity`` times the sparsity of the front it is predicted to give
   (eq. 7, a knapsack solved greedily), and trained ``update_iter`` updates from the chosen
   policy's state (its optimizer and statistics included).

Every policy after every update is evaluated (``eval_episodes`` episodes, returns discounted with
``eval_gamma``; the reference's ``--raw`` is 1.0) and goes into the external Pareto archive
(``EP``: all non-dominated points at or above the reference point; ``policy_buffer`` only bounds
it, by crowding distance). The reference point also serves as the origin of the performance
buffers and of the selection's hypervolume (the reference uses 0 for both, its MO-MuJoCo
objectives being positive). Two objectives only, like ``population_2d.py`` (the 3-objective
variant samples candidates differently: not built).

Budget: ``total_steps`` counts env steps over all envs and tasks (the reference's
``--num-env-steps`` 5M is per task: 6 tasks make 30M). Checkpoints at every generation
(archive, population, optimization history, the next tasks, RNG key): ``rl resume``
continues from the last one. The final front goes through C-MORL's ``finish``: ``front.json``
with the run's own protocol and MORL-Baselines', and ``front.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import least_squares

from rl import checkpoint
from rl import config as config_lib
from rl.agents import cmorl
from rl.rewards import Shaper
from rl.rewards import multiobjective as mo
from rl.runs import Run, print_result


@dataclass
class Config(cmorl.PopulationConfig):
    env: str = "mo:mo-halfcheetah-v5"
    env_options: dict = field(default_factory=dict)  # the env's 1000-step episodes
    total_steps: int = 30_000_000  # 5M env steps x 6 tasks (halfcheetah-v2.py)
    num_envs: int = 4  # per task (--num-processes)
    num_steps: int = 2048
    anneal_lr: bool = False  # the scripts do not pass --use-linear-lr-decay
    warmup_iter: int = 80
    update_iter: int = 20
    num_tasks: int = 6
    num_weight_candidates: int = 7
    pbuffer_num: int = 100
    pbuffer_size: int = 2
    sparsity: float = 1.0  # alpha: the selection's weight on sparsity
    policy_buffer: int = 1000  # the reference's EP is unbounded
    eval_episodes: int = 1  # --eval-num
    eval_gamma: float = 1.0  # --raw

    def validate(self) -> None:
        super().validate()
        err = config_lib.ConfigError
        for name in ("warmup_iter", "num_tasks", "pbuffer_num", "pbuffer_size"):
            if getattr(self, name) < 1:
                raise err(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_weight_candidates < 2:
            raise err(f"num_weight_candidates must be >= 2, got {self.num_weight_candidates}")
        if self.warmup_iter < self.update_iter:
            raise err(
                f"warmup_iter ({self.warmup_iter}) must be >= update_iter ({self.update_iter}): the "
                "prediction model learns from the warm-up's policies every update_iter updates"
            )
        if self.sparsity < 0:
            raise err(f"sparsity must be >= 0, got {self.sparsity}")


# -- the optimization history and the prediction model (``opt_graph.py``, ``population_2d.py``) --


class OptGraph:
    """The optimization history, a forest: node i holds the L2-normalized preference a policy was
    trained with, its evaluated point, the change from its parent's point, and its parent."""

    def __init__(self):
        self.weights, self.objs, self.delta, self.prev, self.succ = [], [], [], [], []

    def insert(self, weight, objs, prev: int) -> int:
        weight, objs = np.asarray(weight, np.float64), np.asarray(objs, np.float64)
        self.weights.append(weight / np.linalg.norm(weight))
        self.objs.append(objs)
        self.delta.append(np.zeros_like(objs) if prev < 0 else objs - self.objs[prev])
        self.prev.append(int(prev))
        self.succ.append([])
        if prev >= 0:
            self.succ[prev].append(len(self.objs) - 1)
        return len(self.objs) - 1

    def state(self) -> dict:
        return {"weights": np.asarray(self.weights).tolist(), "objs": np.asarray(self.objs).tolist(),
                "prev": self.prev}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict) -> OptGraph:
        g = cls()
        for w, o, p in zip(state["weights"], state["objs"], state["prev"], strict=True):
            g.insert(w, o, p)
        return g


def nearest_data(graph: OptGraph, node: int, threshold: float):
    """``collect_nearest_data``: for every node within ``threshold`` (relative, per objective) of
    ``node``'s point, each of its children's (parent point, sum-normalized preference, change)."""
    center = graph.objs[node]
    objs, weights, delta = [], [], []
    for i, o in enumerate(graph.objs):
        if np.all(np.abs(center - o) < np.abs(center) * threshold):
            for j in graph.succ[i]:
                objs.append(o)
                weights.append(graph.weights[j] / graph.weights[j].sum())
                delta.append(graph.delta[j])
    return np.asarray(objs), np.asarray(weights), np.asarray(delta)


def _distinct(weights, tol: float = 1e-5) -> int:
    kept: list = []
    for w in weights:
        if all(np.linalg.norm(w - v) >= tol for v in kept):
            kept.append(w)
    return len(kept)


def hyperbolic(w, A, a, b, c):
    """The prediction model's per-objective improvement as a function of the preference (eq. 6)."""
    e = np.exp(a * (w - b))
    return A * (e - 1) / (e + 1) + c


def predict(graph: OptGraph, node: int, test_weights, max_doublings: int = 30) -> np.ndarray:
    """``predict_hyperbolic``: the points [n, k] that training ``node``'s policy under each of
    ``test_weights`` is predicted to reach. The neighbourhood (threshold 0.1, Gaussian width 0.03)
    doubles until it holds more than 3 distinct preferences (``max_doublings`` bounds it where the
    history has fewer; the reference loops forever)."""
    test = np.asarray(test_weights, np.float64)
    test = test / test.sum(1, keepdims=True)
    threshold, sigma = 0.1, 0.03
    for _ in range(max_doublings):
        objs, weights, delta = nearest_data(graph, node, threshold)
        if _distinct(weights) > 3:
            break
        threshold, sigma = threshold * 2, sigma * 2
    center = graph.objs[node]
    if not len(objs):  # no history near enough: no change predicted
        return np.repeat(center[None], len(test), 0)
    dist = np.linalg.norm((objs - center) / np.maximum(np.abs(center), 1e-12), axis=1)
    coef = np.exp(-((dist / sigma) ** 2) / 2)
    out = []
    for d in range(len(center)):
        x, y = weights[:, d], delta[:, d]

        def residual(p, x=x, y=y):
            return (hyperbolic(x, *p) - y) * coef

        def jac(p, x=x):
            A, a, b, _ = p
            e = np.exp(a * (x - b))
            de = 2 * e / (e + 1) ** 2
            return (
                np.stack([(e - 1) / (e + 1), A * (x - b) * de, -A * a * de, np.ones_like(x)], 1)
                * coef[:, None]
            )

        upper = np.clip(y.max() - y.min(), 1.0, 500.0)
        fit = least_squares(residual, np.ones(4), jac=jac, loss="soft_l1", f_scale=20.0,
                            bounds=([0, 0.1, -5.0, -500.0], [upper, 20.0, 5.0, 500.0]))  # fmt: skip
        out.append(hyperbolic(test[:, d], *fit.x))
    return center[None] + np.stack(out, 1)


def candidate_weights(graph: OptGraph, node: int, n: int) -> np.ndarray:
    """``n`` preferences evenly spread over 45 degrees either side of the node's last one, inside
    the first quadrant, without those its children were already trained with (L2-normalized)."""
    center = graph.weights[node]
    angle = np.arctan2(center[1], center[0])
    taken = [graph.weights[j] for j in graph.succ[node]]
    out = []
    for t in np.linspace(angle - np.pi / 4, angle + np.pi / 4, n):
        w = np.array([np.cos(t), np.sin(t)])
        if np.all(w >= -1e-7) and all(np.linalg.norm(v - w) >= 1e-3 for v in taken):
            out.append(w)
    return np.asarray(out).reshape(-1, 2)


def performance_buffers(points, origin, num: int, size: int) -> list[int]:
    """``Population.update``: the indices kept, buffer by buffer (farthest first). A point goes to
    sector floor(theta / (pi / 2 / num)) by its angle from objective 2 around ``origin``; points
    not strictly above the origin are dropped."""
    dtheta = np.pi / 2 / num
    buffers: list[list[tuple[float, int]]] = [[] for _ in range(num)]
    for i, p in enumerate(np.asarray(points, np.float64)):
        f = p - origin
        if f.min() < 1e-7:
            continue
        dist = float(np.linalg.norm(f))
        b = int(np.arccos(np.clip(f[1] / dist, -1, 1)) // dtheta)
        if not 0 <= b < num:
            continue
        at = next((j for j, (d, _) in enumerate(buffers[b]) if d < dist), len(buffers[b]))
        if at < size:  # farther than one kept (then trimmed), or room left
            buffers[b].insert(at, (dist, i))
            del buffers[b][size:]
    return [i for buf in buffers for _, i in buf]


def _front(points, ref) -> np.ndarray:
    p = np.asarray(points, np.float64).reshape(-1, len(ref))
    return p[mo.front_mask(p, ref)]


def select_tasks(candidates, ep_points, ref, n: int, alpha: float) -> list[int]:
    """The greedy knapsack of ``prediction_guided_selection``: ``candidates`` are predicted points
    [m, k]; ``n`` times, the one whose addition to the (virtual) front gives the largest
    hypervolume - ``alpha`` x sparsity, each taken once; the virtual front then includes it."""
    virtual = _front(ep_points, ref)
    chosen: list[int] = []
    for _ in range(min(n, len(candidates))):
        best, best_i = -np.inf, -1
        for i, c in enumerate(candidates):
            if i in chosen:
                continue
            f = _front(np.vstack([virtual, c[None]]), ref)
            score = (mo.hypervolume(f, ref) if len(f) else 0.0) - alpha * mo.sparsity(f)
            if score > best:
                best, best_i = score, i
        chosen.append(best_i)
        virtual = _front(np.vstack([virtual, candidates[best_i][None]]), ref)
    return chosen


# -- the loop --------------------------------------------------------------------------------


class Sample:
    """A policy of the population: its point, host snapshot (``cmorl.Member``) and graph node."""

    def __init__(self, point, policy, node: int):
        self.point, self.policy, self.node = np.asarray(point, np.float64), policy, node


def train(cfg: Config, run: Run | None = None, resume=None, shaper: Shaper | None = None) -> dict:
    """Warm-up and generations within ``cfg.total_steps`` env steps; writes ``front.json`` and
    ``front.png``."""
    spec, ref = cmorl.setup(cfg, shaper, "PGMORL (population_2d.py)", objectives=2)
    k = spec.reward_dim
    grid = mo.simplex_grid(k, cfg.eval_weight_step)
    warm = mo.simplex_grid(k, cfg.weight_step).astype(np.float32)
    if cfg.total_steps < len(warm) * cfg.rollout_steps:
        raise ValueError(
            f"total_steps={cfg.total_steps} is fewer than one update of the {len(warm)} warm-up policies "
            f"({len(warm) * cfg.rollout_steps} env steps)"
        )
    total_updates = max(1, cfg.total_steps // (cfg.num_tasks * cfg.rollout_steps))  # lr schedule's length
    run = run or Run.create(cfg, "pgmorl")
    print(config_lib.to_yaml(run.cfg), flush=True)
    key = jax.random.PRNGKey(cfg.seed)
    key, k_init = jax.random.split(key)
    init_one = jax.jit(partial(cmorl.init_member, cfg, spec))  # one by one: see cmorl.train
    progs = cmorl.programs(cfg, spec)
    learn = cmorl.update_population(cfg, spec, False)
    archive = cmorl.Archive(ref, cfg.policy_buffer)
    graph, population = OptGraph(), []
    step, updates, generation = 0, 0, 0
    if resume is None:  # the warm-up's tasks: random policies, evaluated, as the graph's roots
        policies = [init_one(k_) for k_ in jax.random.split(k_init, len(warm))]
        points = cmorl.evaluate_population(cfg, spec, cmorl.stack(policies), cfg.eval_episodes, cfg.eval_gamma,
                                           progs=progs)  # fmt: skip
        tasks = [
            Sample(p, jax.device_get(m), graph.insert(w, p, -1)) for p, m, w in zip(points, policies, warm)
        ]
        task_w = warm
    else:
        key, tasks, task_w, meta = restore(resume, init_one, archive, population, k)
        graph = OptGraph.from_state(meta["graph"])
        step, updates, generation = meta["step"], meta["updates"], meta["generation"]

    blank = jax.device_get(init_one(jax.random.PRNGKey(0)))  # stands in for an empty list

    def save():
        state = {
            "key": key,
            "archive": cmorl.stack(archive.policies or [blank]),
            "population": cmorl.stack([s.policy for s in population] or [blank]),
            "tasks": cmorl.stack([s.policy for s in tasks] or [blank]),
        }
        run.save_checkpoint(
            step, state, updates=updates, generation=generation, graph=graph.state(),
            archive=len(archive.points), archive_points=archive.points.tolist(),
            archive_weights=np.asarray(archive.weights).tolist(),
            population=[[s.point.tolist(), s.node] for s in population],
            tasks=[[s.point.tolist(), s.node] for s in tasks], task_weights=np.asarray(task_w).tolist(),
        )  # fmt: skip

    def log_front(stage: str):
        m = mo.front_metrics(archive.points, ref, grid) if len(archive.points) else {}
        out = {f"eval/{name}": float(v) for name, v in m.items()}
        out["eval/episode_return"] = out.get("eval/eum", float("nan"))
        run.log(step, {**out, "pgmorl/ep": len(archive.points), "pgmorl/population": len(population),
                       "pgmorl/updates": updates, "pgmorl/generation": generation})  # fmt: skip
        if len(archive.points):
            mo.write_front(run.dir / "front.json", archive.points, np.asarray(archive.weights), out,
                           step=step, env=cfg.env, ref_point=list(ref), stage=stage)  # fmt: skip
        print(
            f"[pgmorl] {stage} step {step}: " + ", ".join(f"{n} {v:.4g}" for n, v in out.items()), flush=True
        )

    while True:
        n_iter = cfg.warmup_iter if generation == 0 else cfg.update_iter
        n_iter = min(n_iter, (cfg.total_steps - step) // (len(tasks) * cfg.rollout_steps))
        if n_iter < 1 or not tasks:
            break
        pop = cmorl.Population(cfg, spec, cmorl.stack([s.policy for s in tasks]), cfg.seed + updates, progs)
        weights = jnp.asarray(task_w, jnp.float32)
        objs = jnp.zeros(len(tasks), jnp.int32)
        nodes = [s.node for s in tasks]
        offspring = []
        try:
            for i in range(n_iter):
                if cfg.anneal_lr:  # update_linear_schedule over the run's updates
                    lr = cfg.lr * max(0.0, 1 - updates / total_updates)
                    pop.members = pop.members._replace(lr=jnp.full(len(tasks), lr, jnp.float32))
                key, k_roll, k_upd = jax.random.split(key, 3)
                rollout, step = pop.rollout(k_roll, run, step, cfg.total_steps)
                pop.members, info = learn(pop.members, rollout, weights, objs, k_upd)
                updates += 1
                points = cmorl.evaluate_population(
                    cfg, spec, pop.members, cfg.eval_episodes, cfg.eval_gamma, progs=progs
                )
                snapshots = cmorl.unstack(pop.members)
                archive.add(points, snapshots, list(np.asarray(task_w)))
                if (i + 1) % cfg.update_iter == 0 or i == n_iter - 1:  # into the graph and population
                    for t in range(len(tasks)):
                        nodes[t] = graph.insert(task_w[t], points[t], nodes[t])
                        offspring.append(Sample(points[t], snapshots[t], nodes[t]))
            run.log(step, {name: float(v.mean()) for name, v in info.items()})
        finally:
            pop.close()
        merged = population + offspring
        population = [merged[i] for i in performance_buffers([s.point for s in merged], ref, cfg.pbuffer_num,
                                                             cfg.pbuffer_size)]  # fmt: skip
        generation += 1
        log_front("warm-up" if generation == 1 else f"generation {generation - 1}")
        tasks, task_w = select(cfg, graph, population, archive, ref)
        save()
    summary = cmorl.finish(cfg, spec, run, archive, ref, grid, step, progs, label="pgmorl")
    print_result(summary, cfg.eval_episodes)
    return summary


def select(cfg: Config, graph: OptGraph, population: list, archive, ref):
    """The next generation's tasks: (the chosen population samples, their new preferences
    normalized to sum 1 [n, 2])."""
    owners, weights, predicted = [], [], []
    for s in population:
        cand = candidate_weights(graph, s.node, cfg.num_weight_candidates)
        if len(cand):
            owners += [s] * len(cand)
            weights.append(cand)
            predicted.append(predict(graph, s.node, cand))
    if not owners:
        return [], np.zeros((0, 2), np.float32)
    weights, predicted = np.concatenate(weights), np.concatenate(predicted)
    chosen = select_tasks(predicted, archive.points, ref, cfg.num_tasks, cfg.sparsity)
    w = weights[chosen] / weights[chosen].sum(1, keepdims=True)
    return [owners[i] for i in chosen], w.astype(np.float32)


def restore(path, init_one, archive, population: list, k: int):
    """``(key, tasks, task weights, meta)`` from a generation's checkpoint; the archive and the
    population refilled in place."""
    meta = json.loads((Path(path) / "meta.json").read_text())
    blank = init_one(jax.random.PRNGKey(0))

    def many(n):
        return cmorl.stack([blank] * max(n, 1))

    template = {"key": jax.random.PRNGKey(0), "archive": many(meta["archive"]),
                "population": many(len(meta["population"])), "tasks": many(len(meta["tasks"]))}  # fmt: skip
    state = checkpoint.load(path, template)[0]
    archive.points = np.asarray(meta["archive_points"], np.float64).reshape(-1, k)
    archive.weights = list(np.asarray(meta["archive_weights"], np.float32).reshape(-1, k))
    archive.policies = cmorl.unstack(state["archive"])[: meta["archive"]]
    pol = cmorl.unstack(state["population"])
    population[:] = [Sample(p, pol[i], n) for i, (p, n) in enumerate(meta["population"])]
    pol = cmorl.unstack(state["tasks"])
    tasks = [Sample(p, pol[i], n) for i, (p, n) in enumerate(meta["tasks"])]
    weights = np.asarray(meta["task_weights"], np.float32).reshape(-1, k)
    return jnp.asarray(state["key"]), tasks, weights, meta


evaluate = cmorl.evaluate
