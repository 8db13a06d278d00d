"""A run's directory and everything written to it.

``runs/<experiment>/<run_name>/`` holds ``config.yaml`` (the effective config), ``meta.json``
(library versions, git commit, host), ``metrics.jsonl`` (the source of truth: one JSON object
per line with ``step``, appended and flushed as it is written), TensorBoard events in
``tb/``, ``checkpoints/``, ``videos/``, and at the end ``summary.json`` and ``curve.png``.
wandb mirrors the run only when asked; failing to reach it never stops a run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import secrets
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from rl import checkpoint
from rl import config as config_lib
from rl.files import atomic_write

LIBRARIES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "numpy",
    "gymnasium",
    "mujoco",
    "dm-control",
    "ale-py",
    "mo-gymnasium",
    "minigrid",
    "wandb",
    "rewardlab",
)


class NonFiniteError(FloatingPointError):
    """A loss or metric became NaN or infinite; the failing state was saved apart first."""


class RunFinished(Exception):
    """``rl resume`` of a run that has reached its ``total_steps``: nothing to do."""


def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def environment_info() -> dict:
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            versions[lib] = None
    import jax

    return {
        "python": platform.python_version(),
        "libraries": versions,
        "git_commit": _git_commit(),
        "host": platform.node(),
        "platform": platform.platform(),
        "devices": [str(d) for d in jax.devices()],
        "command": " ".join(sys.argv),
    }


def _jsonable(v):
    if isinstance(v, (np.ndarray, np.generic)) or hasattr(v, "__array__"):
        a = np.asarray(v)
        return a.item() if a.ndim == 0 else a.tolist()
    return v


class Run:
    """Create with :meth:`create` (a new run) or :meth:`resume` (continue after a crash)."""

    def __init__(self, path: Path, cfg, agent: str, start_step: int = 0, wandb_id: str | None = None):
        self.dir = Path(path)
        self.cfg, self.agent = cfg, agent
        self.checkpoints = self.dir / "checkpoints"
        self.videos = self.dir / "videos"
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.videos.mkdir(exist_ok=True)
        self._metrics = open(self.dir / "metrics.jsonl", "a", buffering=1)
        self.lines = len(read_metrics(self.dir / "metrics.jsonl"))  # lines a checkpoint has seen
        self._last: dict = {}
        self._episodes: list[dict] = []
        self.wandb_id = wandb_id
        self._wandb = None
        self._tb = None
        try:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tb"), purge_step=start_step or None, flush_secs=10)
        except Exception as e:  # TensorBoard is a mirror: never fatal
            warnings.warn(f"TensorBoard writer unavailable: {e}", stacklevel=2)
        self._start_wandb()
        self._progress = None
        self._last_draw = 0.0
        self._t0, self._s0 = time.perf_counter(), start_step
        self.start_step = start_step

    # -- creation --------------------------------------------------------------------------

    @classmethod
    def create(cls, cfg, agent: str) -> Run:
        name = cfg.run_name or "{}-{}-s{}-{}".format(
            agent,
            cfg.env.replace(":", "-").replace("/", "-"),
            cfg.seed,
            dt.datetime.now().strftime("%Y%m%d-%H%M%S"),
        )
        path = Path(cfg.runs_dir) / cfg.experiment / name
        if (path / "config.yaml").exists():
            raise FileExistsError(
                f"run directory {path} exists; continue it with `rl resume {path}` or pick another run_name"
            )
        path.mkdir(parents=True, exist_ok=True)
        cfg = dataclasses.replace(cfg, run_name=name)
        atomic_write(path / "config.yaml", yaml_dump({"agent": agent, **config_lib.to_dict(cfg)}))
        meta = {
            **environment_info(),
            "agent": agent,
            "started": dt.datetime.now().isoformat(timespec="seconds"),
        }
        atomic_write(path / "meta.json", json.dumps(meta, indent=2))
        return cls(path, cfg, agent)

    @classmethod
    def resume(cls, path, config_cls, overrides: dict | None = None) -> tuple[Run, Path]:
        """Reopen a run at its latest checkpoint. ``metrics.jsonl`` is cut to exactly the lines
        written when that checkpoint was saved (the resumed run writes the rest again, so no
        line is lost or duplicated). ``overrides`` change the saved config (e.g. a longer
        ``total_steps``). A finished run raises :class:`RunFinished` and nothing is written."""
        path = Path(path)
        if not (path / "config.yaml").exists():
            raise FileNotFoundError(f"{path} is not a run directory (no config.yaml)")
        data = config_lib.load_yaml(path / "config.yaml")
        agent = data.pop("agent")
        cfg = config_lib.build(config_cls, overrides=data)
        if overrides:
            cfg = config_lib.apply(cfg, overrides)
            config_lib.validate(cfg)
        ckpt = checkpoint.latest(path / "checkpoints")
        if ckpt is None:
            raise FileNotFoundError(
                f"no checkpoint in {path / 'checkpoints'}: nothing to resume; start the run again with `rl train`"
            )
        meta = json.loads((ckpt / "meta.json").read_text())
        step = int(meta["step"])
        if (path / "summary.json").exists() and step >= cfg.total_steps:
            raise RunFinished(
                f"{path} is finished ({step} of total_steps={cfg.total_steps} env steps); "
                f"nothing to resume. Extend it with `rl resume {path} total_steps=N`"
            )
        if overrides:
            atomic_write(path / "config.yaml", yaml_dump({"agent": agent, **config_lib.to_dict(cfg)}))
        if "metrics_lines" in meta:
            truncate_lines(path / "metrics.jsonl", int(meta["metrics_lines"]))
        else:
            truncate_metrics(path / "metrics.jsonl", step)
        if (path / "labels.jsonl").exists():  # labels after the checkpoint are asked again
            truncate_lines(path / "labels.jsonl", int(meta.get("labels_lines", 0)))
        return cls(path, cfg, agent, start_step=step, wandb_id=meta.get("wandb_id")), ckpt

    # -- wandb -----------------------------------------------------------------------------

    def _start_wandb(self) -> None:
        mode = getattr(self.cfg, "wandb", "disabled")
        if mode == "disabled":
            return
        if mode == "online" and not (os.environ.get("WANDB_API_KEY") or _netrc_has_wandb()):
            warnings.warn(
                "wandb=online but no wandb API key is set; mirroring offline instead "
                f"(sync later with `wandb sync {self.dir / 'wandb'}`)",
                stacklevel=2,
            )
            mode = "offline"
        try:
            import wandb

            self.wandb_id = self.wandb_id or secrets.token_hex(4)
            self._wandb = wandb.init(
                project="rewardlab",
                group=self.cfg.experiment,
                name=self.cfg.run_name,
                id=self.wandb_id,
                resume="allow",
                dir=str(self.dir),
                mode=mode,
                config=config_lib.to_dict(self.cfg),
                settings=wandb.Settings(init_timeout=60, silent=True, console="off"),
            )
        except Exception as e:
            warnings.warn(f"wandb could not start ({e}); the run goes on without it", stacklevel=2)
            self._wandb = None

    # -- metrics ---------------------------------------------------------------------------

    def log(self, step: int, metrics: dict) -> None:
        """Append one metrics line (flushed), and mirror it to TensorBoard and wandb."""
        row = {"step": int(step), **{k: _jsonable(v) for k, v in metrics.items()}}
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        self.lines += 1
        self._last.update(row)
        scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, int(step))
        if self._wandb is not None:
            try:
                self._wandb.log(scalars, step=int(step))
            except Exception as e:
                warnings.warn(f"wandb.log failed ({e}); stopping the mirror", stacklevel=2)
                self._wandb = None

    def record_episodes(self, episodes: list[dict]) -> None:
        """Keep finished episodes (``info["episodes"]`` from rl.envs) for the next metrics line."""
        self._episodes.extend(episodes)

    def episode_metrics(self) -> dict:
        """Mean return and length of the episodes finished since the last call (and how many).
        Vector (multi-objective) returns give ``train/episode_return/<i>`` per objective."""
        eps, self._episodes = self._episodes, []
        if not eps:
            return {}
        ret = np.mean([np.asarray(e["return"], np.float64) for e in eps], axis=0)
        out = {"train/episode_length": float(np.mean([e["length"] for e in eps])), "train/episodes": len(eps)}
        if np.ndim(ret) == 0:
            out["train/episode_return"] = float(ret)
        else:
            out.update({f"train/episode_return/{i}": float(r) for i, r in enumerate(ret)})
        return out

    def check_finite(self, step: int, metrics: dict, save_fn=None) -> None:
        """Stop on NaN/inf, saying which entries (``reward/<term>...`` names the term). The
        failing state is saved apart by ``save_fn`` (:meth:`save_failed`), so the latest
        checkpoint, the one ``rl resume`` picks, stays the last good one."""
        bad = [k for k, v in metrics.items() if not np.all(np.isfinite(np.asarray(v, dtype=np.float64)))]
        if bad:
            where = ""
            if save_fn is not None:
                where = f"; the failing state is in {save_fn()}"
            raise NonFiniteError(
                f"non-finite value at step {step} in: {', '.join(bad)}{where}; `rl resume {self.dir}` "
                "restarts from the last good checkpoint"
            )

    # -- progress --------------------------------------------------------------------------

    def progress(self, step: int, total: int) -> None:
        """A rich progress bar on a terminal (step, SPS, ETA, last return); plain lines otherwise."""
        sps = self.sps(step)
        ret = self._last.get("train/episode_return")
        ret_s = "-" if ret is None else (f"{ret:.1f}" if isinstance(ret, (int, float)) else str(ret))
        if self._progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            console = Console(stderr=True)
            self._plain = not console.is_terminal
            self._next_plain = self._s0
            if not self._plain:
                self._progress = Progress(
                    TextColumn("[bold]{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[sps]:>7.0f} sps"),
                    TimeRemainingColumn(),
                    TextColumn("return {task.fields[ret]}"),
                    console=console,
                    transient=False,
                )
                self._task = self._progress.add_task(
                    self.agent, total=total, completed=step, sps=0.0, ret="-"
                )
                self._progress.start()
            else:
                self._progress = False
        if self._progress:
            now = time.perf_counter()
            if now - self._last_draw > 0.1 or step >= total:  # redraw at most 10 times a second
                self._progress.update(self._task, completed=step, sps=sps, ret=ret_s)
                self._last_draw = now
        elif step >= self._next_plain or step >= total:
            print(
                f"[{self.agent}] step {step}/{total}  {sps:.0f} sps  return {ret_s}",
                file=sys.stderr,
                flush=True,
            )
            self._next_plain = step + max(total // 10, 1)

    def sps(self, step: int) -> float:
        return (step - self._s0) / max(time.perf_counter() - self._t0, 1e-9)

    # -- checkpoints -----------------------------------------------------------------------

    def save_checkpoint(self, step, state, replay=None, replay_state=None, loop=None, **meta) -> Path:
        """A checkpoint that records how many metrics lines exist, and labels lines (the
        preference terms' ``labels.jsonl``): a resume cuts both back to them, and the sessions
        after the checkpoint, whose labels the checkpointed state does not hold, run again."""
        meta = {"wandb_id": self.wandb_id, "metrics_lines": self.lines, **meta}
        if (self.dir / "labels.jsonl").exists():
            meta["labels_lines"] = len(read_metrics(self.dir / "labels.jsonl"))
        return checkpoint.save(self.checkpoints, step, state, replay, replay_state, meta=meta, loop=loop)

    def save_failed(self, step, state, replay=None, replay_state=None, loop=None, **meta) -> Path:
        """The state of a failing step, for inspection, under ``failed/`` (never resumed from)."""
        return checkpoint.save(self.dir / "failed", step, state, replay, replay_state, meta=meta, loop=loop)

    # -- end -------------------------------------------------------------------------------

    def finish(self, summary: dict) -> dict:
        """Write summary.json and curve.png; close the mirrors. Returns the summary."""
        if self._progress:
            self._progress.stop()
        summary = {
            "agent": self.agent,
            "run_dir": str(self.dir),
            "metrics": str(self.dir / "metrics.jsonl"),
            **{k: _jsonable(v) for k, v in summary.items()},
        }
        curve = plot_curve(self.dir)
        if curve is not None:
            summary["curve"] = str(curve)
        atomic_write(self.dir / "summary.json", json.dumps(summary, indent=2))
        self.close()
        return summary

    def close(self) -> None:
        if self._progress:
            self._progress.stop()
            self._progress = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            try:
                self._wandb.finish()
            except Exception:
                pass
            self._wandb = None
        if not self._metrics.closed:
            self._metrics.close()


def yaml_dump(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def _netrc_has_wandb() -> bool:
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def read_metrics(path) -> list[dict]:
    """Every complete line of a metrics.jsonl (a line cut by a crash is skipped)."""
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def truncate_lines(path, lines: int) -> None:
    """Keep the first ``lines`` complete lines of a metrics file."""
    rows = read_metrics(path)[:lines]
    atomic_write(Path(path), "".join(json.dumps(r) + "\n" for r in rows))


def truncate_metrics(path, step: int) -> None:
    """Keep the complete lines with ``step <= step``: what a resumed run does not write again."""
    rows = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    atomic_write(Path(path), "".join(json.dumps(r) + "\n" for r in rows))


def plot_curve(run_dir, keys=("train/episode_return", "eval/episode_return")) -> Path | None:
    """Learning curve PNG of the run's episode returns against env steps."""
    rows = read_metrics(Path(run_dir) / "metrics.jsonl")
    series = {
        k: [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
        for k in keys
    }
    if not any(series.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for k, pts in series.items():
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, label=k, marker="." if len(pts) < 30 else None)
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title(Path(run_dir).name, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(run_dir) / "curve.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_video(frames, path, fps: int = 30) -> Path:
    """Frames (H, W, 3 uint8) to an mp4 with OpenCV (no extra dependency)."""
    import cv2

    frames = [np.asarray(f, np.uint8) for f in frames]
    if not frames:
        raise ValueError("no frames to write")
    h, w = frames[0].shape[:2]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        writer.write(
            cv2.cvtColor(f, cv2.COLOR_RGB2BGR) if f.ndim == 3 else cv2.cvtColor(f, cv2.COLOR_GRAY2BGR)
        )
    writer.release()
    return path


def print_result(summary: dict, episodes: int) -> None:
    """The lines a finished ``train`` ends with: the result, where the metrics and curve are."""
    print(f"done: eval/episode_return {summary['eval/episode_return']:.2f} over {episodes} episodes")
    print(f"metrics: {summary['metrics']}")
    if "curve" in summary:
        print(f"learning curve: {summary['curve']}")


class Every:
    """A cadence in env steps: ``due(step)`` is true once each time ``step`` passes a multiple of
    ``every`` (never when ``every`` is 0). Starting at ``step`` (a resumed run) skips the past."""

    def __init__(self, every: int, step: int = 0):
        self.every = int(every)
        self.next = (step // self.every + 1) * self.every if self.every > 0 else None

    def due(self, step: int) -> bool:
        if self.next is None or step < self.next:
            return False
        self.next = (step // self.every + 1) * self.every
        return True
