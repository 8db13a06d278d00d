"""Atomic checkpoints of a whole training state: ``checkpoints/step_<N>/``.

A checkpoint directory holds ``state.msgpack`` (the agent's jitted pytree: params, optimizer
states, RNG keys, counters; flax msgpack, no pickle), ``loop.msgpack`` (the host-side loop
state: the envs' current observations, the observation normalizer), ``replay/`` (the
buffer, :meth:`rl.replay.Replay.save`) and ``meta.json`` (step, metrics lines written, the
Shaper's description, wandb run id, ...).
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

from rl.files import fsync_dir
from rl.replay import Replay, ReplayState

PREFIX = "step_"


def save(
    root,
    step: int,
    state,
    replay: Replay | None = None,
    replay_state: ReplayState | None = None,
    meta: dict | None = None,
    keep: int = 2,
    loop=None,
) -> Path:
    """Write checkpoint ``root/step_<step>`` atomically and keep the newest ``keep``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:012d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        host = jax.device_get(serialization.to_state_dict(state))
        (tmp / "state.msgpack").write_bytes(serialization.msgpack_serialize(host))
        if loop is not None:
            loop_host = jax.device_get(serialization.to_state_dict(loop))
            (tmp / "loop.msgpack").write_bytes(serialization.msgpack_serialize(loop_host))
        (tmp / "meta.json").write_text(json.dumps({"step": int(step), **(meta or {})}))
        if replay is not None:
            replay.save(replay_state, tmp / "replay")
        fsync_dir(tmp)
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


def _restore(template, raw):
    state = serialization.from_state_dict(template, raw)
    return jax.tree.map(lambda t, v: np.asarray(v, dtype=np.asarray(t).dtype), template, state)


def load(path, template, loop_template=None):
    """Restore ``(state, replay, replay_state, meta)``, or with ``loop_template`` ``(state,
    loop, replay, replay_state, meta)``; the templates give the structures (the agent's
    ``init``). ``replay`` is None when none was saved."""
    path = Path(path)
    if not (path / "meta.json").exists():
        raise FileNotFoundError(
            f"no checkpoint at {path} (expected {path / 'meta.json'}); "
            "checkpoints are written every `checkpoint_every` steps and at the end of a run"
        )
    meta = json.loads((path / "meta.json").read_text())
    raw = serialization.msgpack_restore((path / "state.msgpack").read_bytes())
    # on the device, committed like the replay: a jitted step then sees the same argument
    # placement on its first call as on every later one (host arrays there compile it twice)
    state = jax.device_put(_restore(template, raw), jax.devices()[0])
    replay = replay_state = None
    if (path / "replay").exists():
        replay, replay_state = Replay.load(path / "replay")
    if loop_template is None:
        return state, replay, replay_state, meta
    if not (path / "loop.msgpack").exists():
        raise FileNotFoundError(f"checkpoint {path} has no loop.msgpack (written by an older version)")
    loop = _restore(loop_template, serialization.msgpack_restore((path / "loop.msgpack").read_bytes()))
    return state, loop, replay, replay_state, meta
