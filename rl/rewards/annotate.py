"""Host-side annotation: terms that write extra replay fields once, for every agent.

An annotator term has ``annotations(spec) -> {field: (shape, dtype)}``, ``pending(step)``
(the fields' values while the episode is open) and ``annotate(episode) -> {field: [L, ...]}``
(called when an episode ends, on its ``reward`` and ``obs`` [L, ...]). Off-policy agents
keep the open episodes with :class:`EpisodeAnnotator` and write what it hands back with
``Replay.write_episode``; PPO annotates its rollout's episode segments with
:func:`annotate_segments` (an episode cut by the rollout's ends over the part inside it).
"""

from __future__ import annotations

import numpy as np


class EpisodeAnnotator:
    """The open episodes of a vector env; ``step`` returns the annotations of those that end."""

    def __init__(self, terms, num_envs: int):
        self.terms = list(terms)
        self.open: list[dict] = [{"reward": [], "obs": []} for _ in range(num_envs)]

    def pending(self, step: dict) -> dict:
        out = {}
        for t in self.terms:
            out.update(t.pending(step))
        return out

    def step(self, obs, reward, done) -> list[tuple[int, dict]]:
        """Record one vector step; [(env, {field: values [L, ...]})] for the episodes it ended."""
        finished = []
        for e in range(len(self.open)):
            self.open[e]["reward"].append(np.asarray(reward[e]))
            self.open[e]["obs"].append(np.asarray(obs[e]))
            if done[e]:
                episode = {k: np.stack(v) for k, v in self.open[e].items()}
                fields = {}
                for t in self.terms:
                    fields.update(t.annotate(episode))
                finished.append((e, fields))
                self.open[e] = {"reward": [], "obs": []}
        return finished


def annotate_segments(terms, rollout: dict, done) -> dict:
    """{field: [T, E, ...]} for a [T, E] rollout: each annotator on every episode segment
    (split after ``done``) of each env."""
    reward, done = np.asarray(rollout["reward"]), np.asarray(done)
    T, E = done.shape
    out: dict = {}
    for e in range(E):
        start = 0
        for t in [*np.flatnonzero(done[:, e]), T - 1]:
            if t < start:
                continue
            episode = {"reward": reward[start : t + 1, e], "obs": rollout["obs"][start : t + 1, e]}
            for term in terms:
                for k, v in term.annotate(episode).items():
                    if k not in out:
                        out[k] = np.zeros((T, E, *np.shape(v)[1:]), np.float32)
                    out[k][start : t + 1, e] = v
            start = t + 1
    return out
