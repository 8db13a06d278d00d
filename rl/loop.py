"""What every agent's train loop shares: the common config keys and the lifecycle around the
loop body (cadences, metrics averaged over the log window, NaN check, evaluation,
checkpoints, progress, the end of the run). Each agent keeps its own readable loop body:

    life = Lifecycle(cfg, run, step, save=save, evaluate=lambda: evaluate(...))
    while step < cfg.total_steps:
        ...                                  # act, env.step, store, update
        life.add(metrics)                    # an update's metrics (device arrays: no sync)
        life.after(step, info["episodes"])   # log / eval / checkpoint when due
    summary = life.finish(step)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import jax
import numpy as np

from rl import config as config_lib
from rl.rewards.config import ShaperConfig
from rl.runs import Every, Run


@dataclass
class Common:
    """Keys every agent shares (DESIGN.md "Runs"). Agents subclass it with their own."""

    env: str = "gym:Pendulum-v1"  # namespace:id; `rl envs` lists them
    env_options: dict = field(default_factory=dict)  # passed to rl.envs.make (e.g. pixels: true)
    seed: int = 0  # seeds envs, networks and sampling
    total_steps: int = 100_000  # env steps (summed over vector envs)
    num_envs: int = 1  # synchronous vector envs
    eval_every: int = 0  # env steps between evaluations (0: off)
    eval_episodes: int = 10  # episodes per evaluation
    checkpoint_every: int = 0  # env steps between checkpoints (0: only at the end)
    log_every: int = 1000  # env steps between metrics lines (update metrics averaged over them)
    experiment: str = "default"  # runs/<experiment>/<run_name>/
    run_name: str = ""  # empty: <agent>-<env>-s<seed>-<date>
    runs_dir: str = "runs"  # root of all runs, relative to the working directory
    wandb: Literal["disabled", "offline", "online"] = "disabled"  # mirror the run to wandb
    shaper: ShaperConfig = field(default_factory=ShaperConfig)  # the reward the agent trains on

    def validate(self) -> None:
        from rl import envs

        try:
            envs.parse_id(self.env)
        except ValueError as e:
            raise config_lib.ConfigError(f"env: {e}") from None
        for key in ("total_steps", "num_envs", "eval_episodes", "log_every"):
            if getattr(self, key) < 1:
                raise config_lib.ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("eval_every", "checkpoint_every"):
            if getattr(self, key) < 0:
                raise config_lib.ConfigError(f"{key} must be >= 0 (0 turns it off), got {getattr(self, key)}")


def update_cadence(updates_per_step: float, num_envs: int) -> tuple[int, int]:
    """(updates per vector-env step, vector-env steps between updates) that give
    ``updates_per_step`` gradient updates per env step (SAC's ``utd``; Dreamer's
    ``train_ratio / (batch_size * batch_length)``)."""
    per_call = updates_per_step * num_envs
    return (int(round(per_call)), 1) if per_call >= 1 else (1, int(round(1 / per_call)))


def check_cadence(updates_per_step: float, num_envs: int, what: str) -> None:
    """Fail unless ``updates_per_step`` makes whole updates per vector-env step or whole
    vector-env steps between updates; ``what`` names the key(s) that set it."""
    per_call = updates_per_step * num_envs
    if per_call <= 0:
        raise config_lib.ConfigError(f"{what} must be > 0, got {updates_per_step}")
    if per_call >= 1 and not float(per_call).is_integer():
        raise config_lib.ConfigError(
            f"{what} * num_envs must be a whole number of updates per env step, got {per_call}"
        )
    if per_call < 1 and not float(1 / per_call).is_integer():
        raise config_lib.ConfigError(
            f"1 / ({what} * num_envs) must be a whole number of env steps, got {1 / per_call}"
        )


def window_means(window: list[dict]) -> dict:
    """Per-key means of the metrics dicts of a log window (one host transfer for all)."""
    if not window:
        return {}
    host = jax.device_get(window)
    keys = dict.fromkeys(k for m in host for k in m)
    return {k: float(np.mean([np.asarray(m[k], np.float64) for m in host if k in m])) for k in keys}


class Lifecycle:
    """The cadences of a train loop, in env steps, written once for every agent.

    ``save()`` writes a checkpoint of the current state (the agent's closure);
    ``save_failed()`` writes the failing state apart (``<run>/failed/``) when a metric is not
    finite, so ``rl resume`` still picks the last good checkpoint; ``evaluate()`` returns the
    evaluation metrics; ``extra()`` adds host-side metrics to each line."""

    def __init__(self, cfg, run: Run, step: int, save, evaluate, save_failed=None, extra=None):
        self.cfg, self.run = cfg, run
        self.save, self.evaluate, self.save_failed, self.extra = save, evaluate, save_failed, extra
        self.logs, self.evals, self.ckpts = (
            Every(cfg.log_every, step),
            Every(cfg.eval_every, step),
            Every(cfg.checkpoint_every, step),
        )
        self.window: list[dict] = []

    def add(self, metrics: dict) -> None:
        """One update's metrics, averaged into the next line (device arrays are not synced)."""
        if metrics:
            self.window.append(metrics)

    def line(self, step: int) -> dict:
        m = window_means(self.window)
        self.window = []
        m.update(self.run.episode_metrics(), **{"perf/sps": self.run.sps(step)})
        if self.extra is not None:
            m.update(self.extra())
        return m

    def after(self, step: int, episodes=(), last: bool = False) -> None:
        """After the loop body took env steps up to ``step``: episodes, progress, then the
        metrics line (always on the ``last`` pass), evaluation and checkpoint that are due."""
        self.run.record_episodes(episodes)
        if self.logs.due(step) or last or step >= self.cfg.total_steps:
            m = self.line(step)
            self.run.check_finite(step, m, save_fn=self.save_failed)
            self.run.log(step, m)
        if self.evals.due(step):
            self.run.log(step, self.evaluate())
        if self.ckpts.due(step):
            self.save()
        self.run.progress(step, self.cfg.total_steps)

    def finish(self, step: int) -> dict:
        """The last checkpoint, the final evaluation and the summary."""
        self.save()
        final = self.evaluate()
        self.run.log(step, final)
        return self.run.finish({"steps": step, **final})


def replay_transition(obs, action, reward, terminated, truncated, info, annotator=None) -> dict:
    """One vector-env step as ``Replay.add``'s arguments (the off-policy agents' loop body):
    the final observation of an ended episode is ``info["next_obs"]``; annotated fields hold
    their pending values until the episode ends."""
    return dict(
        obs=obs,
        action=action,
        reward=reward,
        terminated=terminated,
        truncated=truncated,
        next_obs=info["next_obs"],
        extras=annotator.pending({"reward": reward, "obs": obs}) if annotator else None,
    )


def write_annotations(replay, rstate, annotator, obs, reward, done):
    """Record a step with the episode annotator and write the fields of the episodes it ended
    (DreamSmooth's smoothed rewards) into the replay; the replay state unchanged without one."""
    for e, fields in annotator.step(obs, reward, done) if annotator else ():
        for name, values in fields.items():
            rstate = replay.write_episode(rstate, name, e, values)
    return rstate


def start_replay(cfg, env, shaper, replay, state, loop, resume=None):
    """The off-policy agents' start: ``(state, loop, replay, replay state, first obs)``. Fresh
    envs and an empty replay; or, resuming from checkpoint ``resume``, its state, loop state
    and replay, the episodes it left open closed with the saved observations, and the envs
    reset with a seed from the step (fresh episodes, reproducible from here)."""
    obs, _ = env.reset()
    if resume is None:
        return state, loop, replay, replay.init(), obs
    from rl import checkpoint

    check_resumed_shaper(resume, shaper)
    state, loop, replay, rstate, _ = checkpoint.load(resume, state, loop)
    rstate = replay.close_episodes(rstate, loop["obs"])
    obs, _ = env.reset(seed=cfg.seed + int(state.step))
    return state, loop, replay, rstate, obs


def check_resumed_shaper(ckpt, shaper) -> None:
    """Refuse to resume from checkpoint ``ckpt`` with a Shaper other than the one it trained
    with (a Shaper built in code is not in config.yaml, so ``rl resume`` would rebuild another
    one). Runs before the state is read, so the message names the streams."""
    import json
    from pathlib import Path

    meta_file = Path(ckpt) / "meta.json"
    saved = json.loads(meta_file.read_text()).get("shaper") if meta_file.exists() else None
    now = json.loads(json.dumps(shaper.describe()))
    if saved is not None and saved != now:
        diff = [f"  saved: {a}\n  now:   {b}" for a, b in zip(saved, now) if a != b]
        if len(saved) != len(now):
            diff.append(
                f"  streams saved: {[d.get('name') for d in saved[1:]]}, now: {[d.get('name') for d in now[1:]]}"
            )
        raise ValueError(
            "this checkpoint trained with another Shaper than the one built now, so a resume would "
            "train on a different reward:\n" + "\n".join(diff) + "\nA Shaper built in code is not in "
            "config.yaml: resume such a run in code, passing the same Shaper to the agent's train(..., "
            "resume=checkpoint, shaper=...), or name its terms in the config (shaper.terms, "
            "shaper.streams.<name>.kind = a registered name or module:Class)"
        )
