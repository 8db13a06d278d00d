"""Atomic checkpoints of a whole training state: ``checkpoints/step_<N>/``.

A checkpoint directory holds ``state.msgpack`` (the agent's pytree: params, optimizer
states, normalizer statistics, RNG keys, counters; flax msgpack, no pickle), ``replay/``
(the buffer, :meth:`rl.replay.Replay.save`) and ``meta.json`` (step, wandb run id, ...).
It is written under a temporary name and renamed into place, so a crash mid-write leaves
the previous checkpoint as the latest one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from rl.replay import Replay, ReplayState, _fsync_dir

PREFIX = "step_"


def save(
    root,
    step: int,
    state,
    replay: Replay | None = None,
    replay_state: ReplayState | None = None,
    meta: dict | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``root/step_<step>`` atomically and keep the newest ``keep``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:012d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        host = jax.device_get(serialization.to_state_dict(state))
        (tmp / "state.msgpack").write_bytes(serialization.msgpack_serialize(host))
        (tmp / "meta.json").write_text(json.dumps({"step": int(step), **(meta or {})}))
        if replay is not None:
            replay.save(replay_state, tmp / "replay")
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in all_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def all_checkpoints(root) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    done = [p for p in root.glob(f"{PREFIX}*") if (p / "meta.json").exists()]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX) :]))


def latest(root) -> Path | None:
    found = all_checkpoints(root)
    return found[-1] if found else None


def load(path, template):
    """Restore ``(state, replay, replay_state, meta)``; ``template`` gives the state's structure
    (build it with the agent's ``init``). ``replay`` is None when none was saved."""
    path = Path(path)
    if not (path / "meta.json").exists():
        raise FileNotFoundError(
            f"no checkpoint at {path} (expected {path / 'meta.json'}); "
            "checkpoints are written every `checkpoint_every` steps and at the end of a run"
        )
    meta = json.loads((path / "meta.json").read_text())
    raw = serialization.msgpack_restore((path / "state.msgpack").read_bytes())
    state = serialization.from_state_dict(template, raw)
    state = jax.tree.map(lambda t, v: np.asarray(v, dtype=np.asarray(t).dtype), template, state)
    replay = replay_state = None
    if (path / "replay").exists():
        replay, replay_state = Replay.load(path / "replay")
    return state, replay, replay_state, meta
