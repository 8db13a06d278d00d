"""Aggregate any set of runs: ``rl report RUNS_DIR`` (or ``report(...)`` from an experiment).

Runs are grouped by arm (the part of ``run_name`` before ``__``, else the agent) and task
(the env id). A run's score is its final ``eval/episode_return`` (``summary.json``, else the
last evaluation line); beside it, the training log's score: the mean return of the last 10
episodes finished in training (how RLeXplore scores its table). Per task and arm: the interquartile mean over seeds with a 95%
stratified bootstrap CI (Agarwal et al. 2021, rliable). When reference scores are given
(e.g. a paper's numbers), scores are also divided by them and aggregated across tasks into
one IQM per arm. Multi-objective runs (their evaluation is a front: ``eval/hypervolume``,
``eval/eum``) get a second table: the final front's hypervolume and EUM, IQM over seeds with
CIs. Writes ``report.md``, ``results.json`` and ``curves.png``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from rl import config as config_lib
from rl.runs import read_metrics

CURVE_KEY = "train/episode_return"
FRONT_KEYS = ("eval/hypervolume", "eval/eum")  # a multi-objective run's final front
TRAIN_EPISODES = 10  # the training log's score: the mean return of this many last episodes


def train_score(rows, episodes: int = TRAIN_EPISODES) -> float | None:
    """The mean return of the last ``episodes`` training episodes, from the logged means per
    log window (``train/episode_return`` over ``train/episodes`` episodes), the oldest window
    counted in part; None if no episode finished."""
    total, count = 0.0, 0
    for r in reversed(rows):
        n = int(r.get("train/episodes", 0))
        if n <= 0 or CURVE_KEY not in r:
            continue
        take = min(n, episodes - count)
        total, count = total + take * float(r[CURVE_KEY]), count + take
        if count >= episodes:
            break
    return total / count if count else None


def find_runs(root) -> list[dict]:
    """Every run under ``root``: name, arm, task, seed, score and its learning curve."""
    runs = []
    for cfg_path in sorted(Path(root).rglob("config.yaml")):
        d = cfg_path.parent
        if not (d / "metrics.jsonl").exists():
            continue
        cfg = config_lib.load_yaml(cfg_path)
        rows = read_metrics(d / "metrics.jsonl")
        score, done, summary = None, False, {}
        if (d / "summary.json").exists():
            summary = json.loads((d / "summary.json").read_text())
            score, done = summary.get("eval/episode_return"), True
        if score is None:
            evals = [r["eval/episode_return"] for r in rows if "eval/episode_return" in r]
            score = evals[-1] if evals else None
        front = {}
        for key in FRONT_KEYS:  # the summary's, else the last evaluation's
            values = [summary[key]] if key in summary else [r[key] for r in rows if key in r]
            if values:
                front[key.split("/")[1]] = float(values[-1])
        curve = [(r["step"], r[CURVE_KEY]) for r in rows if CURVE_KEY in r]
        name = cfg.get("run_name", d.name)
        runs.append(
            {
                "dir": str(d),
                "name": name,
                "arm": name.split("__")[0] if "__" in name else cfg.get("agent", "?"),
                "task": cfg.get("env", "?"),
                "seed": cfg.get("seed"),
                "steps": rows[-1]["step"] if rows else 0,
                "finished": done,
                "score": score,
                "train_score": train_score(rows),
                "front": front,
                "curve": curve,
            }
        )
    return runs


def iqm_ci(scores: dict[str, np.ndarray], reps: int = 2000, seed: int = 0) -> dict[str, tuple]:
    """IQM and 95% stratified bootstrap CI per key; ``scores[key]`` is [runs, tasks]."""
    from rliable import library as rly
    from rliable import metrics

    def iqm(x):
        return np.array([metrics.aggregate_iqm(x)])

    ready = {k: v for k, v in scores.items() if v.shape[0] >= 1}
    if not ready:
        return {}
    point, ci = rly.get_interval_estimates(ready, iqm, reps=reps, random_state=np.random.RandomState(seed))
    return {k: (float(point[k][0]), float(ci[k][0, 0]), float(ci[k][1, 0])) for k in ready}


def _score_table(runs, references):
    by, train = defaultdict(list), defaultdict(list)
    for r in runs:
        if r["score"] is not None:
            by[(r["arm"], r["task"])].append(r["score"])
        if r.get("train_score") is not None:
            train[(r["arm"], r["task"])].append(r["train_score"])
    per_task = {}
    for (arm, task), s in sorted(by.items()):
        (point, lo, hi) = iqm_ci({"x": np.asarray(s, np.float64)[:, None]})["x"]
        t = train.get((arm, task), [])
        per_task[(arm, task)] = {
            "iqm": point,
            "ci": [lo, hi],
            "n": len(s),
            "scores": s,
            "train": float(np.mean(t)) if t else None,
        }
    aggregate = {}
    if references:
        for arm in sorted({a for a, _ in by}):
            tasks = [t for (a, t) in by if a == arm and (a, t) in references]
            n = min((len(by[(arm, t)]) for t in tasks), default=0)
            if n == 0:
                continue
            mat = np.array([[by[(arm, t)][i] / references[(arm, t)][0] for t in tasks] for i in range(n)])
            point, lo, hi = iqm_ci({"x": mat})["x"]
            aggregate[arm] = {"iqm": point, "ci": [lo, hi], "tasks": tasks, "runs_per_task": n}
    return per_task, aggregate


def _front_table(runs) -> dict:
    """Per (arm, task) of the runs with a front: n and (IQM, lo, hi) of hypervolume and EUM."""
    by = defaultdict(list)
    for r in runs:
        if all(k in r.get("front", {}) for k in ("hypervolume", "eum")):
            by[(r["arm"], r["task"])].append(r["front"])
    out = {}
    for key, fs in sorted(by.items()):
        stats = {
            m: iqm_ci({"x": np.asarray([f[m] for f in fs], np.float64)[:, None]})["x"]
            for m in ("hypervolume", "eum")
        }
        out[key] = {"n": len(fs), **stats}
    return out


def plot_curves(runs, path, grid_points: int = 100) -> Path | None:
    """Mean +- std over seeds of the training return, one panel per task, arms overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in runs if r["curve"]})
    if not tasks:
        return None
    cols = min(len(tasks), 4)
    rows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for arm in sorted({r["arm"] for r in runs if r["task"] == task}):
            curves = [
                np.array(r["curve"]) for r in runs if r["task"] == task and r["arm"] == arm and r["curve"]
            ]
            if not curves:
                continue
            end = min(c[-1, 0] for c in curves)
            grid = np.linspace(min(c[0, 0] for c in curves), end, grid_points)
            ys = np.array([np.interp(grid, c[:, 0], c[:, 1]) for c in curves])
            mean, std = ys.mean(0), ys.std(0)
            ax.plot(grid, mean, label=f"{arm} (n={len(curves)})")
            ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("env steps")
        ax.set_ylabel("train return")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def score(x: float) -> str:
    """A return for a table: whole numbers for MuJoCo-sized returns, two decimals for the
    [0, 1] returns of MiniGrid-like tasks."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def report(
    root, out=None, references: dict | None = None, title: str = "Report", notes: str = "", arm_order=None
) -> Path:
    """Aggregate the runs under ``root`` into ``out`` (default ``root``). ``references`` maps
    (arm, task) to (score, label), e.g. a paper's number; it adds a column and the
    reference-normalized aggregate. With several arms, a task x arm table of IQMs follows
    (a paper's layout), columns in ``arm_order`` (default: sorted). A ``notes.md`` in ``out``
    (written by hand: how the runs were made, what the numbers say) opens the report, so
    regenerating it keeps the analysis. Returns the path of report.md."""
    root = Path(root)
    out = Path(out or root)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "notes.md").exists():
        notes = (out / "notes.md").read_text().strip() + "\n\n" + notes
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(f"no runs under {root} (a run directory holds config.yaml and metrics.jsonl)")
    references = references or {}
    per_task, aggregate = _score_table(runs, references)
    curve = plot_curves(runs, out / "curves.png")
    lines = [f"# {title}", ""]
    if notes:
        lines += [notes.strip(), ""]
    steps = sorted({r["steps"] for r in runs})
    lines += [
        f"{len(runs)} runs under `{root}`; env steps per run: {', '.join(f'{s:,}' for s in steps)}. "
        "Score: final evaluation return; IQM over seeds with 95% stratified bootstrap CIs (rliable). "
        f"Train: the mean return of the last {TRAIN_EPISODES} training episodes, mean over seeds.",
        "",
        "| arm | task | runs | IQM | 95% CI | per seed | train | reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (arm, task), r in per_task.items():
        ref = references.get((arm, task))
        ref_s = f"{score(ref[0])} ({ref[1]})" if ref else "-"
        seeds = ", ".join(score(s) for s in r["scores"])
        tr = score(r["train"]) if r["train"] is not None else "-"
        lines.append(
            f"| {arm} | {task} | {r['n']} | {score(r['iqm'])} | [{score(r['ci'][0])}, {score(r['ci'][1])}] | {seeds} | {tr} | {ref_s} |"
        )
    arms = [a for a in (arm_order or sorted({a for a, _ in per_task})) if any(a == k[0] for k in per_task)]
    if len(arms) > 1:
        lines += [
            "",
            "IQM by task and arm:",
            "",
            "| task | " + " | ".join(arms) + " |",
            "|---" * (len(arms) + 1) + "|",
        ]
        for task in sorted({t for _, t in per_task}):
            cells = [score(per_task[a, task]["iqm"]) if (a, task) in per_task else "-" for a in arms]
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
    fronts = _front_table(runs)
    if fronts:
        lines += [
            "",
            "Multi-objective runs, the final front (IQM over seeds, 95% stratified bootstrap CIs):",
            "",
        ]
        lines += [
            "| arm | task | runs | hypervolume | 95% CI | EUM | 95% CI |",
            "|---|---|---|---|---|---|---|",
        ]
        for (arm, task), f in fronts.items():
            hv, eum = f["hypervolume"], f["eum"]
            lines.append(
                f"| {arm} | {task} | {f['n']} | {score(hv[0])} | [{score(hv[1])}, {score(hv[2])}] | "
                f"{score(eum[0])} | [{score(eum[1])}, {score(eum[2])}] |"
            )
    unfinished = [r["name"] for r in runs if not r["finished"]]
    if aggregate:
        lines += ["", "Aggregate over tasks with a reference, as a fraction of it:", ""]
        lines += ["| arm | tasks | IQM of score / reference | 95% CI |", "|---|---|---|---|"]
        for arm, a in aggregate.items():
            lines.append(
                f"| {arm} | {len(a['tasks'])} | {a['iqm']:.2f} | [{a['ci'][0]:.2f}, {a['ci'][1]:.2f}] |"
            )
    if unfinished:
        lines += ["", f"Unfinished runs (scored by their last evaluation, if any): {', '.join(unfinished)}"]
    if curve is not None:
        lines += ["", f"![learning curves]({curve.name})"]
    md = out / "report.md"
    md.write_text("\n".join(lines) + "\n")
    results = {
        "per_task": [{"arm": a, "task": t, **v} for (a, t), v in per_task.items()],
        "aggregate": aggregate,
        "fronts": [{"arm": a, "task": t, **v} for (a, t), v in fronts.items()],
        "runs": [{k: v for k, v in r.items() if k != "curve"} for r in runs],
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return md
