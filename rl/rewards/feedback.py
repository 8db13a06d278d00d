"""Feedback sessions of the preference terms (``rl.rewards.preference``), on the host between
env steps: B-Pref's ``learn_reward`` (rll-research/BPref ``train_PEBBLE.py``).

Every ``feedback_every`` env steps from ``feedback_start`` on, until the term's label budget
(``capacity``) is spent: draw ``per_session`` x ``large_batch`` candidate pairs of segments
from the replay (``Replay.sample_segments``; the first session: ``per_session`` uniform
pairs), keep the ``per_session`` its ``query`` rule selects, label them with the teacher on
the true env rewards the replay stored, append the labels to the run's ``labels.jsonl``, add
them to the term's buffer and fit it. The agent's next samples are relabeled by the Shaper:
rewards are computed at sample time, so nothing stored changes.

A term with ``demos`` also gets, each session while its buffer has room, ``demo_pairs`` pairs of a
random demonstration segment and a uniform agent segment, the demonstration preferred, on a
random side (Ibarz et al. 2018, Algorithm 1 step 6: such labels cost no annotator time; they
share the buffer, so ``capacity`` bounds both). Their ``labels.jsonl`` records carry
``"by": "demo"`` and ``"demo_side"`` (0 or 1: which of ``episodes`` / ``starts`` index the
demonstration file, the other the replay).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from rl import demos as demos_lib
from rl.rewards.preference import (
    HUMAN,
    TEACHERS,
    PreferenceReward,
    append_labels,
    read_labels,
    teacher_margin,
)

RECENT = 10  # episodes in B-Pref's teacher margin (``teacher_margin``)


def physics_field(shaper, env) -> dict:
    """The replay's extra field a ``teacher=human`` stream needs on vector observations: each
    step's simulator state, ``{"physics": ((n,), "float32")}``, rendered into the clips a person
    sees (DMC tasks); ``{}`` when no such stream exists or the observations are frames."""
    human = any(isinstance(s.term, PreferenceReward) and s.term.teacher == HUMAN for s in shaper.streams)
    if not human or len(env.single_observation_space.shape) == 3 or not hasattr(env, "physics_states"):
        return {}
    states = env.physics_states()
    return {} if states is None else {"physics": ((states.shape[1],), "float32")}


class Feedback:
    """The sessions of every preference stream of ``shaper`` for one agent's replay."""

    def __init__(self, shaper, replay, labels_path, episode_length: int | None, seed: int = 0, renderer=None):
        """``renderer``: frames of the replay's stored simulator states (``rl.envs.StateRenderer``),
        for ``teacher=human`` streams on vector observations (the replay's ``physics`` field)."""
        self.streams = [s for s in shaper.streams if isinstance(s.term, PreferenceReward)]
        self.renderer = renderer
        self.replay, self.labels_path = replay, labels_path
        self.episode_length = episode_length or 1000
        self.seed = seed
        # true episode returns seen: the teachers' margin reads the last RECENT (checkpointed)
        self.returns: list[float] = []
        self._sample = jax.jit(replay.sample_segments, static_argnums=(2, 3))
        self._select = {s.name: jax.jit(s.term.select, static_argnums=(3, 4)) for s in self.streams}
        self._add = {s.name: jax.jit(s.term.add_labels) for s in self.streams}
        self._fit = {s.name: jax.jit(partial(s.term.fit, data=None)) for s in self.streams}
        self.demos = {s.name: demos_lib.load(s.term.demos) for s in self.streams if s.term.demo_pairs}
        if self.streams:
            Feedback.check(shaper, replay.obs_shape, replay.action_shape, self.demos, renderer is not None)

    def __bool__(self):
        return bool(self.streams)

    def recent(self) -> np.ndarray:
        """The last ``RECENT`` true episode returns, NaN-padded in front: what a checkpoint keeps
        so a resumed run's teachers use the margin the first run would have."""
        out = np.full(RECENT, np.nan)
        last = self.returns[-RECENT:]
        if last:
            out[RECENT - len(last) :] = last
        return out

    def restore(self, recent) -> None:
        self.returns = [float(x) for x in np.asarray(recent) if np.isfinite(x)]

    @staticmethod
    def check(shaper, obs_shape, action_shape, demos=None, frames: bool = False) -> None:
        """Fail before any work where a stream cannot run: a person (``teacher=human``) needs frames
        to look at (image observations, or ``frames``: stored simulator states to render);
        demonstrations must match the env's observations and actions."""
        streams = [s for s in shaper.streams if isinstance(s.term, PreferenceReward)]
        human = [s.name for s in streams if s.term.teacher == HUMAN]
        if human and len(obs_shape) != 3 and not frames:
            raise ValueError(
                f"preference streams {human} ask a person (teacher=human), who is shown frames; the env's "
                f"observations {tuple(obs_shape)} are vectors and it has no simulator state to render "
                "from: use a dmc: task, or image observations (Atari, env_options.pixels=true)"
            )
        if demos is None:
            demos = {s.name: demos_lib.load(s.term.demos) for s in streams if s.term.demo_pairs}
        for name, d in demos.items():
            if d["obs"].shape[1:] != tuple(obs_shape) or d["action"].shape[1:] != tuple(action_shape):
                raise ValueError(
                    f"preference stream {name}'s demonstrations ({d['meta']['env']}) have observations "
                    f"{d['obs'].shape[1:]} and actions {d['action'].shape[1:]}; the env has {tuple(obs_shape)} "
                    f"and {tuple(action_shape)}"
                )

    @staticmethod
    def wanted(shaper) -> bool:
        """Whether ``shaper`` has a preference stream, whose sessions need a replay."""
        return any(isinstance(s.term, PreferenceReward) for s in shaper.streams)

    def due(self, term: PreferenceReward, before: int, after: int) -> bool:
        """Whether a session of ``term`` falls in (before, after]."""
        if after < term.feedback_start:
            return False
        k = lambda t: (t - term.feedback_start) // term.feedback_every  # noqa: E731
        return before < term.feedback_start <= after or k(after) > k(before)

    def after(self, shaper_state, rstate, before: int, after: int, episodes) -> tuple[object, dict]:
        """Run the sessions due between env steps ``before`` and ``after``; ``episodes``: the
        episodes that just ended (their true returns set the teachers' thresholds). Randomness
        comes from (seed, step, stream), so a resumed run draws what the first run would have."""
        self.returns += [float(np.sum(e["return"])) for e in episodes]
        metrics = {}
        for i, s in enumerate(self.streams):
            if self.due(s.term, before, after):
                key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(self.seed), after), i)
                rng = np.random.default_rng([self.seed, after, i])
                shaper_state, m = self.session(s, shaper_state, rstate, key, after, rng)
                metrics.update(m)
        return shaper_state, metrics

    def session(self, stream, shaper_state, rstate, key, step: int, rng) -> tuple[object, dict]:
        if stream.term.teacher == HUMAN:
            return self.human_session(stream, shaper_state, rstate, key, step)
        term, name = stream.term, stream.name
        state = shaper_state.terms[name]
        room = term.capacity - int(state.fixed["count"])
        n = min(term.per_session, room)
        if n <= 0:
            return shaper_state, {}
        first = int(state.fixed["count"]) == 0
        how = "uniform" if first else term.query
        m = n if how == "uniform" else n * term.large_batch
        k_seg, k_fit = jax.random.split(key)
        seg = self._sample(rstate, k_seg, 2 * m, term.segment)
        if not bool(np.asarray(seg["valid"]).all()):
            return shaper_state, {f"reward/{name}/queries": 0}  # no two full segments stored yet
        pair = lambda x: x.reshape(m, 2, *x.shape[1:])  # noqa: E731
        obs, action = pair(seg["obs"]), pair(seg["action"])
        pick = np.asarray(self._select[name](state, obs, action, n, how))
        reward = np.asarray(pair(seg["reward"]))[pick]
        margin = teacher_margin(self.returns, term.segment, self.episode_length)
        keep, labels = TEACHERS[term.teacher].label(reward[:, 0], reward[:, 1], margin, rng)
        chosen = pick[keep]
        episodes, starts = (np.asarray(pair(seg[k]))[chosen] for k in ("segment_episode", "start"))
        append_labels(
            self.labels_path,
            [
                {
                    "step": step,
                    "episodes": e.tolist(),
                    "starts": st.tolist(),
                    "label": float(y),
                    "by": term.teacher,
                }
                for e, st, y in zip(episodes, starts, labels)
            ],
        )
        obs, action, labels = [obs[chosen]], [action[chosen]], [np.asarray(labels, np.float32)]
        if name in self.demos and room - len(chosen) > 0:
            d_obs, d_act, d_lab = self.demo_pairs(term, name, rstate, key, step, rng, room - len(chosen))
            obs, action, labels = obs + d_obs, action + d_act, labels + d_lab
        labels = np.concatenate(labels)
        if len(labels):
            obs, action = (
                np.concatenate([np.asarray(o) for o in obs]),
                np.concatenate([np.asarray(a) for a in action]),
            )
            state = self._add[name](state, obs, action, jnp.asarray(labels))
            state, fit = self._fit[name](state, key=k_fit)
        else:
            fit = {}
        out = {
            f"reward/{name}/queries": len(chosen),
            f"reward/{name}/demo_pairs": int(len(labels) - len(chosen)),
            **{f"reward/{name}/{k}": float(v) for k, v in fit.items()},
        }
        return shaper_state.replace(terms={**shaper_state.terms, name: state}), out

    def demo_pairs(self, term, name: str, rstate, key, step: int, rng, room: int):
        """``([obs], [action], [labels])`` of up to ``demo_pairs`` demo-preferred pairs (appended
        to ``labels.jsonl``); empty lists while the replay has no full segment."""
        n = min(term.demo_pairs, room)
        agent = self._sample(rstate, jax.random.fold_in(key, 1), n, term.segment)
        if not bool(np.asarray(agent["valid"]).all()):
            return [], [], []
        demo = demos_lib.segments(self.demos[name], n, term.segment, rng)
        side = rng.integers(0, 2, n)  # where the demonstration goes; label 1: the second preferred
        second = side[:, None, None].astype(bool)

        def pair(d, a):
            d, a = np.asarray(d), np.asarray(a).astype(np.asarray(d).dtype)
            s2 = second.reshape(n, *([1] * (d.ndim - 1)))
            return np.stack([np.where(s2, a, d), np.where(s2, d, a)], 1)

        obs, action = pair(demo["obs"], agent["obs"]), pair(demo["action"], agent["action"])
        ep, st = np.asarray(agent["segment_episode"]), np.asarray(agent["start"])
        rows = []
        for i in range(n):
            eps, starts = [int(demo["episode"][i]), int(ep[i])], [int(demo["start"][i]), int(st[i])]
            if side[i]:
                eps, starts = eps[::-1], starts[::-1]
            rows.append({"step": step, "episodes": eps, "starts": starts, "label": float(side[i]), "by": "demo",
                         "demo_side": int(side[i])})  # fmt: skip
        append_labels(self.labels_path, rows)
        return [obs], [action], [side.astype(np.float32)]

    def human_session(self, stream, shaper_state, rstate, key, step: int) -> tuple[object, dict]:
        """``teacher=human`` (``rl label``): take in the answers given since, fit, then write new
        queries for the room left (the budget minus the labels held and the queries waiting)."""
        from rl.label import QueryStore

        term, name = stream.term, stream.name
        state, store = shaper_state.terms[name], QueryStore(self.labels_path.parent)
        taken = {r["query"] for r in read_labels(self.labels_path) if r.get("by") == HUMAN}
        answers = store.answers()
        new = [q for q in store.queries() if q["stream"] == name and q["id"] not in taken
               and answers.get(q["id"], "skip") != "skip"]  # fmt: skip
        new = new[: term.capacity - int(state.fixed["count"])]
        k_seg, k_fit = jax.random.split(key)
        fit = {}
        if new:
            pairs = [store.load(q["id"]) for q in new]
            labels = np.asarray([answers[q["id"]] for q in new], np.float32)
            obs = np.stack([p["obs"] for p in pairs])
            action = np.stack([p["action"] for p in pairs])
            state = self._add[name](state, obs, action, jnp.asarray(labels))
            state, fit = self._fit[name](state, key=k_fit)
            append_labels(self.labels_path, [{"step": step, "query": q["id"], "episodes": q["episodes"],
                                              "starts": q["starts"], "label": float(y), "by": HUMAN}
                                             for q, y in zip(new, labels)])  # fmt: skip
        waiting = store.pending(name)
        n = min(term.per_session, term.capacity - int(state.fixed["count"]) - len(waiting))
        written = 0
        if n > 0:
            first = int(state.fixed["count"]) == 0 and not store.queries()
            how = "uniform" if first else term.query
            m = n if how == "uniform" else n * term.large_batch
            seg = self._sample(rstate, k_seg, 2 * m, term.segment)
            if bool(np.asarray(seg["valid"]).all()):
                pair = lambda x: np.asarray(x).reshape(m, 2, *x.shape[1:])  # noqa: E731
                obs, action = pair(seg["obs"]), pair(seg["action"])
                pick = np.asarray(self._select[name](state, jnp.asarray(obs), jnp.asarray(action), n, how))
                episodes, starts = pair(seg["segment_episode"]), pair(seg["start"])
                frames = None
                if self.renderer is not None and "physics" in seg:  # vector observations: render them
                    frames = self.renderer(pair(seg["physics"])[pick])
                for j, i in enumerate(pick):
                    store.add(name, step, obs[i], action[i], episodes[i], starts[i],
                              None if frames is None else frames[j])  # fmt: skip
                written = len(pick)
        out = {f"reward/{name}/human_labels": len(new), f"reward/{name}/queries_waiting": len(waiting) + written,
               **{f"reward/{name}/{k}": float(v) for k, v in fit.items()}}  # fmt: skip
        return shaper_state.replace(terms={**shaper_state.terms, name: state}), out
