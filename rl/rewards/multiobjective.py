"""Multi-objective tools: scalarizations, preferences on the simplex, Pareto fronts and their
metrics, and the front files and plots the multi-objective agents write.

Conventions: every objective is maximized; a front is an array [n, k] of vector returns;
a preference (weight) vector lies on the simplex (non-negative, sums to 1).

Scalarizations (the Shaper's ``scalarize`` stage calls :func:`scalarize`; evaluation and the
agents' utilities call the same function on returns):

- ``linear``: w . r.
- ``chebyshev`` (Tchebycheff): -max_i w_i |z_i - r_i| about a reference (utopia) point z.
- ``augmented_chebyshev``: the Chebyshev term minus rho * sum_i w_i |z_i - r_i| (Steuer and
  Choo 1983), which breaks the Chebyshev term's ties in favour of points that are better in
  every objective (weakly dominated points score lower).

Metrics follow MORL-Baselines (``morl_baselines/common/performance_indicators.py``):
hypervolume (exact here for 2 and 3 objectives, pymoo's ``HV`` beyond), expected utility
(EUM: the mean over a weight set of the front's best linear utility; Zintgraf et al. 2015),
sparsity (PGMORL's: squared gaps between neighbours along each objective, over n - 1), IGD
(the mean distance from each point of a known front to the nearest found point) and
cardinality (the number of non-dominated points).
"""

from __future__ import annotations

import functools
import json
from itertools import combinations
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

SCALARIZATIONS = ("linear", "chebyshev", "augmented_chebyshev")


# -- scalarizations -------------------------------------------------------------------------


def scalarize(kind: str, values, weights, utopia=None, augment: float = 0.01):
    """``values`` [..., k] under ``weights`` (broadcast to them) -> [...]. Works on jax and
    numpy arrays alike (jax in, jax out); ``utopia`` (the Chebyshev reference point z, [k])
    defaults to zeros."""
    xp = jnp if isinstance(values, jax.Array) or isinstance(weights, jax.Array) else np
    values = xp.asarray(values, xp.float32 if xp is jnp else np.float64)
    weights = xp.broadcast_to(xp.asarray(weights, values.dtype), values.shape)
    if kind == "linear":
        return xp.sum(weights * values, -1)
    if kind not in SCALARIZATIONS:
        raise ValueError(f"unknown scalarization '{kind}'; available: {', '.join(SCALARIZATIONS)}")
    z = xp.zeros(values.shape[-1], values.dtype) if utopia is None else xp.asarray(utopia, values.dtype)
    gap = weights * xp.abs(xp.broadcast_to(z, values.shape) - values)
    out = -xp.max(gap, -1)
    if kind == "augmented_chebyshev":
        out = out - augment * xp.sum(gap, -1)
    return out


# -- preferences on the simplex -------------------------------------------------------------


def sample_simplex(key, n: int, k: int) -> jax.Array:
    """``n`` preferences [n, k] uniform on the simplex (Dirichlet(1, ..., 1))."""
    return jax.random.dirichlet(key, jnp.ones(k), (n,))


PREFERENCE_DISTS = ("dirichlet", "gaussian")


def sample_preferences(key, n: int, k: int, dist: str = "dirichlet") -> jax.Array:
    """``n`` preferences [n, k]: ``dirichlet`` uniform on the simplex; ``gaussian`` |x| / ||x||_1
    with x ~ N(0, I), MORL-Baselines' ``random_weights(dist="gaussian")``, which its Envelope
    Q-learning draws (more weight near the simplex's centre than uniform)."""
    if dist == "dirichlet":
        return sample_simplex(key, n, k)
    if dist == "gaussian":
        x = jnp.abs(jax.random.normal(key, (n, k)))
        return x / jnp.sum(x, -1, keepdims=True)
    raise ValueError(f"unknown preference distribution {dist!r}; known: {', '.join(PREFERENCE_DISTS)}")


def simplex_grid(k: int, step: float) -> np.ndarray:
    """Every preference whose components are multiples of ``step`` (C-MORL's evaluation grid:
    step 0.01 gives 101 weights for 2 objectives, 5,151 for 3), lexicographic order."""
    m = round(1.0 / step)
    if k < 1 or m < 1 or abs(m * step - 1.0) > 1e-9:
        raise ValueError(f"simplex_grid needs k >= 1 and a step dividing 1; got k={k}, step={step}")
    rows = []
    for cuts in combinations(range(m + k - 1), k - 1):  # stars and bars
        edges = (-1, *cuts, m + k - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(k)])
    return np.asarray(rows, np.float64) / m


def equally_spaced_weights(k: int, n: int, seed: int = 42) -> np.ndarray:
    """``n`` preferences spread over the simplex by pymoo's Riesz s-energy method: the weight
    set MORL-Baselines evaluates EUM on (``morl_baselines/common/weights.py``). Computed once
    per (k, n, seed) and process (1,000 six-objective weights take minutes)."""
    return _equally_spaced_weights(int(k), int(n), int(seed)).copy()


@functools.lru_cache(maxsize=16)
def _equally_spaced_weights(k: int, n: int, seed: int) -> np.ndarray:
    from pymoo.util.ref_dirs import get_reference_directions

    return np.asarray(get_reference_directions("energy", k, n, seed=seed), np.float64)


def linear_optimal_front(front, weights, utility_front=None) -> np.ndarray:
    """The points a policy that is exactly linear-optimal for each preference reaches: for
    each weight the front point maximizing ``w . utility_front`` (the same points in the
    objective the agent maximizes, e.g. discounted; default ``front`` itself), returned from
    ``front``, deduplicated. With fewer weights than the front's supported points it misses
    some: a perfect linear-utility agent evaluated on these weights scores this front's
    hypervolume, not the true one's (an imperfect agent can score more, by choosing
    different points)."""
    front = _points(front)
    u = front if utility_front is None else _points(utility_front)
    if u.shape != front.shape:
        raise ValueError(f"utility_front {u.shape} must match front {front.shape}")
    w = np.asarray(weights, np.float64)
    return front[np.unique((w @ u.T).argmax(1))]


def extrema_weights(k: int) -> np.ndarray:
    return np.eye(k)


# -- Pareto fronts --------------------------------------------------------------------------


def _points(points) -> np.ndarray:
    p = np.asarray(points, np.float64)
    if p.size == 0:
        return p.reshape(0, p.shape[-1] if p.ndim == 2 else 0)
    if p.ndim != 2:
        raise ValueError(f"a front is an array [n, k] of vector returns; got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("a front's points must be finite")
    return p


def pareto_mask(points) -> np.ndarray:
    """[n] bools: the points no other point dominates (>= everywhere, > somewhere); of exact
    duplicates only the first is kept."""
    p = _points(points)
    keep = np.zeros(len(p), bool)
    if not len(p):
        return keep
    _, first = np.unique(p, axis=0, return_index=True)
    keep[first] = True
    for i in np.flatnonzero(keep):
        dominated = np.all(p >= p[i], 1) & np.any(p > p[i], 1)
        if dominated.any():
            keep[i] = False
    return keep


def front_mask(points, ref) -> np.ndarray:
    """[n] bools: the Pareto-optimal points at or above ``ref`` (those a hypervolume counts; a
    point dominating one above ``ref`` is above it too, so the order of the two filters is moot)."""
    p = _points(points)
    return pareto_mask(p) & np.all(p >= np.asarray(ref, np.float64), 1)


def pareto_front(points) -> np.ndarray:
    """The non-dominated points of ``points`` (duplicates once), in their given order."""
    p = _points(points)
    return p[pareto_mask(p)]


def _hv2(p: np.ndarray, ref: np.ndarray) -> float:
    """Exact 2-D hypervolume of points strictly above ``ref``: a staircase sweep."""
    p = p[np.all(p > ref, 1)]
    if not len(p):
        return 0.0
    p = p[np.lexsort((-p[:, 1], -p[:, 0]))]  # x descending, then y descending
    area, top = 0.0, ref[1]
    for x, y in p:
        if y > top:
            area += (x - ref[0]) * (y - top)
            top = y
    return float(area)


def _hv3(p: np.ndarray, ref: np.ndarray) -> float:
    """Exact 3-D hypervolume: slices between consecutive third-objective levels, each the 2-D
    hypervolume of the points at or above it."""
    p = p[np.all(p > ref, 1)]
    if not len(p):
        return 0.0
    levels = np.unique(p[:, 2])[::-1]  # descending
    total = 0.0
    for i, z in enumerate(levels):
        below = levels[i + 1] if i + 1 < len(levels) else ref[2]
        total += _hv2(p[p[:, 2] >= z, :2], ref[:2]) * (z - below)
    return float(total)


def hypervolume(points, ref) -> float:
    """The volume dominated by ``points`` and dominating ``ref`` (maximization). Exact for 2
    and 3 objectives; pymoo's ``HV`` (on negated points, as MORL-Baselines) beyond."""
    p, ref = _points(points), np.asarray(ref, np.float64)
    if not len(p):
        return 0.0
    if ref.shape != (p.shape[1],):
        raise ValueError(f"reference point {ref.tolist()} does not match {p.shape[1]} objectives")
    if p.shape[1] == 1:
        return float(max(0.0, p[:, 0].max() - ref[0]))
    if p.shape[1] == 2:
        return _hv2(p, ref)
    if p.shape[1] == 3:
        return _hv3(p, ref)
    from pymoo.indicators.hv import HV

    return float(HV(ref_point=-ref)(-p))


def expected_utility(points, weights) -> float:
    """EUM: the mean over ``weights`` [m, k] of the best linear utility on the front."""
    p, w = _points(points), np.asarray(weights, np.float64)
    if not len(p):
        raise ValueError("expected utility of an empty front")
    return float(np.mean(np.max(w @ p.T, 1)))


def sparsity(front) -> float:
    """PGMORL's sparsity: over each objective, the squared gaps between sorted neighbours,
    summed and divided by n - 1 (0 for fewer than 2 points). Lower is denser."""
    p = _points(front)
    if len(p) < 2:
        return 0.0
    gaps = np.diff(np.sort(p, 0), axis=0)
    return float(np.sum(gaps**2) / (len(p) - 1))


def igd(points, known_front) -> float:
    """Inverted generational distance: the mean over ``known_front`` of the Euclidean distance
    to the nearest of ``points``."""
    p, known = _points(points), _points(known_front)
    if not len(p) or not len(known):
        raise ValueError("IGD needs points and a known front")
    return float(np.mean(np.min(np.linalg.norm(known[:, None] - p[None], axis=-1), 1)))


def cardinality(points) -> int:
    return int(pareto_mask(points).sum())


def front_metrics(points, ref, weights, known_front=None) -> dict:
    """The metrics of ``points``' Pareto front: hypervolume at ``ref``, EUM over ``weights``,
    sparsity, cardinality, and with a ``known_front`` its hypervolume and the IGD."""
    front = pareto_front(points)
    out = {
        "hypervolume": hypervolume(front, ref),
        "eum": expected_utility(front, weights) if len(front) else float("nan"),
        "sparsity": sparsity(front),
        "cardinality": len(front),
    }
    if known_front is not None:
        out["known_hypervolume"] = hypervolume(known_front, ref)
        out["igd"] = igd(front, known_front) if len(front) else float("nan")
    return out


# -- the environments' reference points and known fronts ------------------------------------

REFERENCE_POINTS = {  # the protocols' hypervolume reference points, by mo-gymnasium id
    "deep-sea-treasure-v0": (0.0, -25.0),  # MORL-Baselines' DST runs
    "fruit-tree-v0": (0.0,) * 6,  # depth 6: six nutrients
    "minecart-v0": (0.0, 0.0, -200.0),
    "mo-halfcheetah-v5": (-100.0, -100.0),  # C-MORL's MO-MuJoCo setting
    "mo-hopper-2obj-v5": (-100.0, -100.0),
}


def reference_point(env_id: str, k: int, given=None) -> np.ndarray:
    """``given`` (checked against ``k`` objectives), else the env's protocol reference point."""
    name = env_id.split(":", 1)[-1]
    if given is None and name not in REFERENCE_POINTS:
        raise ValueError(
            f"no known hypervolume reference point for {env_id}; set ref_point=[...] ({k} values, "
            f"below every return the policies can reach). Known: {', '.join(REFERENCE_POINTS)}"
        )
    ref = np.asarray(REFERENCE_POINTS[name] if given is None else given, np.float64)
    if ref.shape != (k,):
        raise ValueError(f"ref_point {ref.tolist()} has {ref.size} values; {env_id} has {k} objectives")
    return ref


@functools.lru_cache(maxsize=16)
def _known_front(name: str, gamma: float):
    import warnings

    import mo_gymnasium

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = mo_gymnasium.make(name).unwrapped
    if not hasattr(env, "pareto_front"):
        return None
    return np.asarray(env.pareto_front(gamma=gamma), np.float64)


def known_front(env_id: str, gamma: float = 1.0) -> np.ndarray | None:
    """The true Pareto front an ``mo:`` env publishes (``pareto_front(gamma)``: Deep Sea
    Treasure, Fruit Tree, Minecart's convex coverage set), or None."""
    namespace, name = env_id.split(":", 1) if ":" in env_id else ("", env_id)
    if namespace != "mo":
        return None
    return _known_front(name, float(gamma))


# -- files and plots ------------------------------------------------------------------------


def write_front(path, points, weights, metrics: dict, **extra) -> Path:
    """``front.json``: every evaluated point with the preference it was trained or evaluated
    for, which of them are non-dominated, and the metrics. Written to a temporary name and
    renamed, so a crash leaves the previous file whole."""
    p = _points(points)
    path = Path(path)
    doc = {
        "points": p.tolist(),
        "weights": np.asarray(weights, np.float64).tolist(),
        "pareto": pareto_mask(p).tolist(),
        "metrics": metrics,
        **extra,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
    return path


def read_front(path) -> dict:
    doc = json.loads(Path(path).read_text())
    doc["points"] = np.asarray(doc["points"], np.float64)
    return doc


def plot_front(path, points, known_front=None, labels=None, title: str = "") -> Path:
    """A PNG of the points (non-dominated ones filled) for 2 or 3 objectives, with a known
    front if given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = _points(points)
    k = p.shape[1]
    if k not in (2, 3):
        raise ValueError(f"plot_front draws 2 or 3 objectives; got {k}")
    labels = labels or [f"objective {i}" for i in range(k)]
    mask = pareto_mask(p)
    fig = plt.figure(figsize=(5, 4.5))
    ax = fig.add_subplot(projection="3d" if k == 3 else None)
    if known_front is not None:
        kf = _points(known_front)
        ax.scatter(*kf.T, marker="x", c="k", label="known front")
    ax.scatter(*p[~mask].T, facecolors="none", edgecolors="tab:blue", alpha=0.5, label="dominated")
    ax.scatter(*p[mask].T, c="tab:red", label="Pareto front")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    if k == 3:
        ax.set_zlabel(labels[2])
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
