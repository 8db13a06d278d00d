"""The one replay buffer: a fixed-capacity ring of JAX arrays that lives on the device.

Layout. Storage is ``[T, E, ...]``: one ring column per vector env (``T = capacity // E``), so
an env's steps are contiguous in time. A slot holds what the env gave at one step:
``obs``, ``action``, ``reward`` (scalar or vector), ``terminated``, ``truncated`` (of the
transition that starts at this slot), its ``episode`` id and ``step`` within the episode,
and any declared extra fields. The next observation of slot ``t`` is slot ``t + 1``. When an
episode ends, its final observation gets a slot of its own marked ``final`` (no action, no
reward), so every observation is stored once and the final one is never lost. The cost is
one slot per episode.

The buffer is functional: :class:`Replay` is a static, hashable description (shapes,
capacity) whose methods are pure functions of a :class:`ReplayState` pytree, so ``add`` and
the samplers jit, scan and run inside an agent's update. Samplers draw uniformly over the
*valid* starts (rejection sampling in a ``while_loop``), so the result is exact, not
approximately uniform. Every sample has a ``valid`` mask that is all true whenever the
buffer holds at least one valid start; see :meth:`Replay.num_valid`. Transition samplers
return the batch contract of :mod:`rl.batch` (``Transitions``, ``Sequences``); the replay
does no reward arithmetic.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rl import batch as batch_lib
from rl.batch import Sequences, Transitions
from rl.files import fsync_dir

# Redraw rounds before giving up on a sample (and leaving `valid` false). A round redraws only
# the invalid draws, so this is only reached when (almost) nothing valid is stored.
MAX_DRAW_ROUNDS = 64


class ReplayState(NamedTuple):
    data: dict  # name -> [T, E, ...]
    ptr: jax.Array  # [E] next slot each column writes
    count: jax.Array  # [E] slots of each column that hold data (<= T)
    episode: jax.Array  # [E] id of each env's current episode
    step: jax.Array  # [E] step of each env within its current episode
    next_episode: jax.Array  # [] next unused episode id


def _dt(dtype) -> str:
    """Storage dtype: JAX runs without 64-bit types by default."""
    d = np.dtype(dtype)
    return {"float64": "float32", "int64": "int32", "uint64": "uint32"}.get(d.name, d.name)


@dataclass(frozen=True)
class Replay:
    """Static description of a buffer. Build with :meth:`from_spec`."""

    capacity: int
    num_envs: int
    obs_shape: tuple
    obs_dtype: str
    action_shape: tuple
    action_dtype: str
    reward_shape: tuple = ()
    extras: tuple = field(default=())  # ((name, shape, dtype), ...)

    def __post_init__(self):
        if self.num_envs < 1 or self.capacity < 2 * self.num_envs:
            raise ValueError(
                f"replay capacity must be at least 2 slots per env; got capacity={self.capacity} "
                f"for num_envs={self.num_envs}"
            )
        reserved = set(self._step_fields()) | {
            "next_obs",
            "valid",
            "discount",
            "mask",
            "start",
            "segment_episode",
        }
        for name, _, _ in self.extras:
            if name in reserved or name.startswith("next_"):
                raise ValueError(f"extra field name '{name}' is reserved; pick another name")

    @classmethod
    def from_spec(cls, spec, capacity: int, extras: dict | None = None) -> Replay:
        """A buffer for ``spec`` (an :class:`rl.envs.EnvSpec`) holding ``capacity`` steps.

        ``extras`` declares additional per-step fields: ``{"frame": ((64, 64, 3), "uint8")}``.
        """
        ex = tuple((k, tuple(s), _dt(d)) for k, (s, d) in (extras or {}).items())
        return cls(
            capacity=int(capacity),
            num_envs=spec.num_envs,
            obs_shape=tuple(spec.obs_shape),
            obs_dtype=_dt(spec.obs_dtype),
            action_shape=tuple(spec.action_shape),
            action_dtype=_dt(spec.action_dtype),
            reward_shape=tuple(spec.reward_shape),
            extras=ex,
        )

    # -- sizes -----------------------------------------------------------------------------

    @property
    def length(self) -> int:
        """Slots per env column."""
        return self.capacity // self.num_envs

    def _step_fields(self) -> dict:
        return {
            "obs": (self.obs_shape, self.obs_dtype),
            "action": (self.action_shape, self.action_dtype),
            "reward": (self.reward_shape, "float32"),
            "terminated": ((), "bool"),
            "truncated": ((), "bool"),
            "final": ((), "bool"),
            "episode": ((), "int32"),
            "step": ((), "int32"),
        }

    def fields(self) -> dict:
        return {**self._step_fields(), **{k: (s, d) for k, s, d in self.extras}}

    @property
    def bytes_per_step(self) -> int:
        return sum(int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize for s, d in self.fields().values())

    @property
    def nbytes(self) -> int:
        return self.bytes_per_step * self.length * self.num_envs

    # -- create / add ----------------------------------------------------------------------

    def init(self, device=None) -> ReplayState:
        """Allocate the buffer, failing first if it cannot fit in the device's free memory."""
        device = device or jax.devices()[0]
        free = _free_bytes(device)
        if free is not None and self.nbytes > free:
            raise MemoryError(
                f"replay needs {self.nbytes / 2**30:.2f} GiB ({self.capacity} steps x "
                f"{self.bytes_per_step} bytes) but {device.platform} has {free / 2**30:.2f} GiB free; "
                "lower the capacity"
            )
        T, E = self.length, self.num_envs
        with jax.default_device(device):
            data = {k: jnp.zeros((T, E, *s), d) for k, (s, d) in self.fields().items()}

            def zeros():  # distinct buffers, so the state can be donated
                return jnp.zeros((E,), jnp.int32)

            return ReplayState(
                data, zeros(), zeros(), jnp.arange(E, dtype=jnp.int32), zeros(), jnp.array(E, jnp.int32)
            )

    def add(self, state, obs, action, reward, terminated, truncated, next_obs, extras=None, next_extras=None):
        """Append one vector-env step (every array has a leading ``num_envs`` axis).

        ``next_obs`` is the true next observation (``info["next_obs"]`` from :mod:`rl.envs`);
        it is written only where the episode ended, as that episode's ``final`` slot. Where it
        did not end, the next call's ``obs`` is the next slot. ``next_extras`` are the extras
        of that final observation (zeros when omitted).
        """
        T, E = self.length, self.num_envs
        t = state.ptr
        terminated = jnp.asarray(terminated, bool)
        truncated = jnp.asarray(truncated, bool)
        done = terminated | truncated
        row = {
            "obs": obs,
            "action": action,
            "reward": reward,
            "terminated": terminated,
            "truncated": truncated,
            "final": jnp.zeros(E, bool),
            "episode": state.episode,
            "step": state.step,
            **(extras or {}),
        }
        missing = set(self.fields()) - set(row)
        if missing:
            raise KeyError(f"add() is missing the declared extra field(s) {sorted(missing)}")
        data = self._put(state.data, t, row)
        # Final slots only for finished episodes: other columns get index T, which is dropped.
        last = {
            "obs": next_obs,
            "final": jnp.ones(E, bool),
            "episode": state.episode,
            "step": state.step + 1,
            **(next_extras or {}),
        }
        data = self._put(data, jnp.where(done, (t + 1) % T, T), last)
        return self._advance(
            state, data, 1 + done.astype(jnp.int32), done, jnp.where(done, 0, state.step + 1)
        )

    def close_episodes(self, state, next_obs):
        """End every open episode as truncated, with ``next_obs`` as its final observation.

        A resumed run cannot continue the envs' episodes (their simulator state is not in a
        checkpoint), so the episodes open at the checkpoint end there, truncated: their last
        transition still bootstraps from the observation the env had given.
        """
        T, E = self.length, self.num_envs
        cols = jnp.arange(E)
        last = (state.ptr - 1) % T
        is_open = (state.count > 0) & ~state.data["final"][last, cols]
        data = dict(state.data)
        data["truncated"] = data["truncated"].at[last, cols].set(data["truncated"][last, cols] | is_open)
        final = {"obs": next_obs, "final": jnp.ones(E, bool), "episode": state.episode, "step": state.step}
        data = self._put(data, jnp.where(is_open, state.ptr, T), final)
        return self._advance(
            state, data, is_open.astype(jnp.int32), is_open, jnp.where(is_open, 0, state.step)
        )

    def write_episode(self, state, name: str, env: int, values) -> ReplayState:
        """Overwrite field ``name`` on the transitions of env ``env``'s episode that the last
        ``add`` ended, with ``values`` [L, ...] (one per transition, in order): for transforms
        that need the whole episode, such as DreamSmooth's. Steps the ring has already
        overwritten are skipped. Runs on the host between jitted calls (once per episode)."""
        T, L = self.length, len(values)
        ptr = int(state.ptr[env])  # the final slot is ptr - 1; transitions before it
        bucket = 1 << max(L - 1, 0).bit_length()  # padded length: few distinct shapes to compile
        i = np.arange(bucket)
        keep = (i < L) & (i >= L - (T - 1))
        idx = np.where(keep, (ptr - 1 - L + i) % T, T)  # index T is dropped
        shape, dtype = self.fields()[name]
        padded = np.zeros((bucket, *shape), dtype)
        padded[:L] = np.asarray(values, dtype).reshape(L, *shape)
        data = dict(state.data)
        data[name] = _write_column(data[name], jnp.asarray(idx), env, jnp.asarray(padded))
        return state._replace(data=data)

    def _put(self, data, index, row):
        """Write one slot per column at ``index`` ([E]); fields absent from ``row`` get zeros;
        out-of-range indices are dropped."""
        E, cols = self.num_envs, jnp.arange(self.num_envs)
        out = {}
        for k, (shape, dtype) in self.fields().items():
            v = row.get(k)
            v = jnp.zeros((E, *shape), dtype) if v is None else jnp.asarray(v, dtype).reshape(E, *shape)
            out[k] = data[k].at[index, cols].set(v, mode="drop")
        return out

    def _advance(self, state, data, written, ended, step):
        """Move each column's pointer by ``written`` slots; ended episodes get fresh ids."""
        T = self.length
        new_ids = state.next_episode + jnp.cumsum(ended) - 1
        return ReplayState(
            data=data,
            ptr=(state.ptr + written) % T,
            count=jnp.minimum(state.count + written, T),
            episode=jnp.where(ended, new_ids, state.episode).astype(jnp.int32),
            step=step.astype(jnp.int32),
            next_episode=(state.next_episode + ended.sum()).astype(jnp.int32),
        )

    def size(self, state) -> jax.Array:
        """Slots holding data (transitions plus final observations)."""
        return state.count.sum()

    # -- sampling --------------------------------------------------------------------------

    def _draw(self, state, key, batch_size: int, min_age: int, is_valid):
        """Uniform (slot, column) pairs over the starts that ``is_valid`` accepts.

        A slot's age is how many steps ago its column wrote it (0 = newest). Ages are drawn
        in [min_age, max count) and rejected when the column holds fewer slots or
        ``is_valid(t, j, age)`` is false, so accepted draws are uniform over valid starts.
        """
        T, E = self.length, self.num_envs
        hi = jnp.maximum(state.count.max(), min_age + 1)

        def draw(k):
            kj, ka = jax.random.split(k)
            j = jax.random.randint(kj, (batch_size,), 0, E)
            age = jax.random.randint(ka, (batch_size,), min_age, hi)
            t = (state.ptr[j] - 1 - age) % T
            ok = (age < state.count[j]) & is_valid(t, j, age)
            return t, j, ok

        def cond(c):
            return (~c[3].all()) & (c[4] < MAX_DRAW_ROUNDS)

        def body(c):
            k, t, j, ok, i = c
            k, sub = jax.random.split(k)
            t2, j2, ok2 = draw(sub)
            return k, jnp.where(ok, t, t2), jnp.where(ok, j, j2), ok | ok2, i + 1

        key, sub = jax.random.split(key)
        t, j, ok = draw(sub)
        _, t, j, ok, _ = jax.lax.while_loop(cond, body, (key, t, j, ok, 0))
        return t, j, ok

    def _extras(self):
        return [k for k, _, _ in self.extras]

    def _window_mask(self, state, t, j, age, length: int):
        """For windows of ``length`` transitions from slot t: (mask [B, length], ok [B]).
        ``mask`` marks the steps inside the start's episode (up to and including its last
        transition); ``ok`` says the start is a transition and every masked step's successor
        slot has been written (age - k >= 1)."""
        # vectorized over the window (a Python loop of gathers compiles in O(length) XLA ops:
        # 30 s at length 64 on CPU, inside the draw's while loop and again outside it)
        offs = jnp.arange(length)
        s = (t[:, None] + offs[None, :]) % self.length
        ended = state.data["terminated"][s, j[:, None]] | state.data["truncated"][s, j[:, None]]
        # step k is inside the episode when none of steps 0..k-1 ended it
        first = jnp.ones((t.shape[0], 1), bool)
        alive = jnp.concatenate([first, jnp.cumsum(ended[:, :-1], axis=1) == 0], axis=1)
        written = age[:, None] - offs[None, :] >= 1  # step k's successor slot exists
        ok = ~state.data["final"][t, j] & jnp.all(~alive | written, axis=-1)
        return alive, ok

    def _batch_fields(self, state, idx, j, nxt):
        """The contract's fields at slots ``idx`` of columns ``j`` (same shapes), successors at ``nxt``."""
        data = state.data
        extras = {k: data[k][idx, j] for k in ("episode", "step", *self._extras())}
        extras.update({f"next_{k}": data[k][nxt, j] for k in self._extras()})
        fields = {k: data[k][idx, j] for k in ("obs", "action", "reward", "terminated", "truncated")}
        return {**fields, "next_obs": data["obs"][nxt, j]}, extras

    def sample(self, state, key, batch_size: int) -> Transitions:
        """Uniform transitions over the valid starts, as ``Transitions`` [B]: obs, action, the
        env reward, next_obs (the final observation where the episode ended), terminated,
        truncated, discount (1 - terminated), mask (false only when nothing valid is stored),
        and extras: episode, step, each declared extra and ``next_<extra>``. No reward
        arithmetic: n-step returns come from :meth:`sample_sequences` (``rl.returns``)."""
        T = self.length

        def valid(t, j, age):
            return self._window_mask(state, t, j, age, 1)[1]

        t, j, ok = self._draw(state, key, batch_size, 1, valid)
        fields, extras = self._batch_fields(state, t, j, (t + 1) % T)
        return batch_lib.transitions(**fields, mask=ok, **extras)

    def transition_slots(self, state) -> jax.Array:
        """[T, E]: which slots start a transition :meth:`sample` may draw (written, not a final
        observation, their successor written)."""
        T = self.length
        age = (state.ptr[None, :] - 1 - jnp.arange(T)[:, None]) % T
        return (age >= 1) & (age < state.count[None, :]) & ~state.data["final"]

    def sample_prioritized(self, state, key, batch_size: int, priority) -> tuple[Transitions, tuple]:
        """Transitions drawn with replacement, slot (t, j) with probability proportional to
        ``priority`` [T, E] among :meth:`transition_slots` (prioritized replay, Schaul et al.
        2016, the proportional variant: the agent keeps and updates the priorities). Returns the
        batch, as :meth:`sample`, and the slots (t [B], j [B]) for the priority update; ``mask``
        is false when no valid slot has a positive priority."""
        T, E = self.length, self.num_envs
        p = jnp.where(self.transition_slots(state), priority, 0.0).reshape(-1)
        cdf = jnp.cumsum(p)
        u = jax.random.uniform(key, (batch_size,)) * cdf[-1]
        flat = jnp.minimum(jnp.searchsorted(cdf, u, side="right"), T * E - 1)
        t, j = flat // E, flat % E
        ok = jnp.broadcast_to(cdf[-1] > 0, (batch_size,)) & (p[flat] > 0)
        fields, extras = self._batch_fields(state, t, j, (t + 1) % T)
        return batch_lib.transitions(**fields, mask=ok, **extras), (t, j)

    def sample_sequences(self, state, key, batch_size: int, length: int, partial: bool = True) -> Sequences:
        """``Sequences`` [B, length] of consecutive transitions.

        ``partial=True`` (n-step returns): starts are uniform over the valid transitions, as
        :meth:`sample`, and a window runs on past its episode's end with ``mask`` false there
        (the steps inside the episode are a prefix). ``partial=False``: only windows of
        ``length`` transitions inside one episode (``mask`` all true when found)."""
        T = self.length
        if length < 1 or (not partial and length >= T):
            raise ValueError(f"sequence length must be in [1, {T - 1}] (partial: >= 1), got {length}")

        def valid(t, j, age):
            mask, ok = self._window_mask(state, t, j, age, length)
            return ok if partial else ok & mask.all(-1)

        t, j, ok = self._draw(state, key, batch_size, 1, valid)
        age = (state.ptr[j] - 1 - t) % T
        mask = self._window_mask(state, t, j, age, length)[0] & ok[:, None]
        idx = (t[:, None] + jnp.arange(length)[None, :]) % T
        fields, extras = self._batch_fields(state, idx, j[:, None], (idx + 1) % T)
        return batch_lib.sequences(**fields, mask=mask, **extras)

    def sample_chunks(self, state, key, batch_size: int, length: int) -> Sequences:
        """``Sequences`` [B, length] of consecutive slots that run across episode boundaries
        (a world model's training chunks, as DreamerV3's replay): step k is slot t + k with
        its successor slot t + k + 1. An episode's ``final`` slot starts no transition, so
        ``mask`` is false there (and its successor is the next episode's first observation);
        a row with no valid start is all false. Starts are uniform over the slots whose
        window and successor have been written."""
        T = self.length
        if length < 1 or length >= T:
            raise ValueError(f"chunk length must be in [1, {T - 1}], got {length}")
        t, j, ok = self._draw(state, key, batch_size, length, lambda t, j, age: jnp.ones(t.shape, bool))
        idx = (t[:, None] + jnp.arange(length)[None, :]) % T
        fields, extras = self._batch_fields(state, idx, j[:, None], (idx + 1) % T)
        mask = ~state.data["final"][idx, j[:, None]] & ok[:, None]
        return batch_lib.sequences(**fields, mask=mask, **extras)

    def _windows(self, state, key, batch_size, length, same_episode, no_final_last):
        T = self.length
        if length < 1 or length > T:
            raise ValueError(f"window length must be in [1, {T}], got {length}")
        offs = jnp.arange(length)

        def valid(t, j, age):
            end = (t + length - 1) % T
            ok = jnp.ones(t.shape, bool)
            if same_episode:
                ok &= state.data["episode"][t, j] == state.data["episode"][end, j]
            if no_final_last:
                ok &= ~state.data["final"][end, j]
            return ok

        t, j, ok = self._draw(state, key, batch_size, length - 1, valid)
        idx = (t[:, None] + offs[None, :]) % T
        out = {k: v[idx, j[:, None]] for k, v in state.data.items()}
        out["valid"] = ok
        return out

    def sample_windows(self, state, key, batch_size: int, length: int, cross_episodes: bool = False) -> dict:
        """Contiguous ``[B, length]`` windows of raw slots (Dreamer-style), uniform over starts.

        A window never crosses an episode start unless ``cross_episodes``; it may end on the
        episode's ``final`` slot (its observation is the last one; action and reward are
        zeros there). ``step == 0`` marks an episode's first slot.
        """
        return self._windows(state, key, batch_size, length, not cross_episodes, False)

    def sample_segments(self, state, key, batch_size: int, length: int) -> dict:
        """Fixed-length ``[B, length]`` segments of (obs, action, reward) inside one episode, for
        preference queries; adds per-segment ``episode`` id and ``start`` step, ``[B]``."""
        out = self._windows(state, key, batch_size, length, True, True)
        out["start"] = out["step"][:, 0]
        out["segment_episode"] = out["episode"][:, 0]
        return out

    def num_valid(
        self, state, length: int | None = None, same_episode: bool = True, no_final_last: bool = False
    ) -> int:
        """Host-side count of valid starts: transitions (``length=None``) or windows of
        ``length`` (as :meth:`sample_sequences`, or :meth:`sample_segments` with
        ``no_final_last``; :meth:`sample_windows` windows). O(capacity): for checks outside
        the training loop."""
        final, episode = np.asarray(state.data["final"]), np.asarray(state.data["episode"])
        ptr, count = np.asarray(state.ptr), np.asarray(state.count)
        T, n = self.length, 0
        for j in range(self.num_envs):
            if length is None:
                t = (ptr[j] - 1 - np.arange(1, count[j])) % T
                n += int((~final[t, j]).sum())
                continue
            t = (ptr[j] - 1 - np.arange(length - 1, count[j])) % T
            end = (t + length - 1) % T
            ok = np.ones(len(t), bool)
            if same_episode:
                ok &= episode[t, j] == episode[end, j]
            if no_final_last:
                ok &= ~final[end, j]
            n += int(ok.sum())
        return n

    # -- save / load -----------------------------------------------------------------------

    def describe(self) -> dict:
        return {
            "capacity": self.capacity,
            "num_envs": self.num_envs,
            "obs_shape": list(self.obs_shape),
            "obs_dtype": self.obs_dtype,
            "action_shape": list(self.action_shape),
            "action_dtype": self.action_dtype,
            "reward_shape": list(self.reward_shape),
            "extras": [[k, list(s), d] for k, s, d in self.extras],
        }

    def save(self, state: ReplayState, path) -> None:
        """Write to directory ``path`` atomically: a new directory is renamed into place."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            host = jax.device_get(state._asdict())
            for k, v in host.pop("data").items():
                np.save(tmp / f"data.{k}.npy", np.asarray(v), allow_pickle=False)
            for k, v in host.items():
                np.save(tmp / f"{k}.npy", np.asarray(v), allow_pickle=False)
            (tmp / "replay.json").write_text(json.dumps(self.describe()))
            fsync_dir(tmp)
            old = path.with_name(f".{path.name}.old")
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, path, device=None) -> tuple[Replay, ReplayState]:
        """Read a buffer written by :meth:`save` (no pickle)."""
        path = Path(path)
        if not (path / "replay.json").exists():
            old = path.with_name(f".{path.name}.old")
            if (old / "replay.json").exists():  # a save was interrupted between its renames
                path = old
            else:
                raise FileNotFoundError(f"no saved replay at {path} (expected {path / 'replay.json'})")
        d = json.loads((path / "replay.json").read_text())
        replay = cls(
            capacity=d["capacity"],
            num_envs=d["num_envs"],
            obs_shape=tuple(d["obs_shape"]),
            obs_dtype=d["obs_dtype"],
            action_shape=tuple(d["action_shape"]),
            action_dtype=d["action_dtype"],
            reward_shape=tuple(d["reward_shape"]),
            extras=tuple((k, tuple(s), dt) for k, s, dt in d["extras"]),
        )
        device = device or jax.devices()[0]

        def read(name):
            return jax.device_put(np.load(path / f"{name}.npy", allow_pickle=False), device)

        state = ReplayState(
            data={k: read(f"data.{k}") for k in replay.fields()},
            ptr=read("ptr"),
            count=read("count"),
            episode=read("episode"),
            step=read("step"),
            next_episode=read("next_episode"),
        )
        return replay, state


@partial(jax.jit, static_argnums=2, donate_argnums=0)
def _write_column(field, idx, env: int, values):
    return field.at[idx, env].set(values, mode="drop")


def _free_bytes(device) -> int | None:
    """Free memory where the buffer will live: host RAM for CPU, device memory otherwise."""
    if device.platform == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    stats = device.memory_stats() or {}
    if "bytes_limit" in stats:
        return stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    return None
