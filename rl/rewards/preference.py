"""Rewards learned from preferences over segment pairs: PEBBLE (Lee, Smith & Abbeel 2021) and its
benchmark B-Pref (Lee et al. 2021), after their code (rll-research/BPref ``reward_model.py``).

An ensemble of K reward nets r_k(s, a) (3 layers of 256, LeakyReLU, tanh output) is fitted by
the Bradley-Terry model (Christiano et al. 2017, eq. 1): for a labelled pair of segments the
preference probability is the softmax of the members' summed segment rewards, trained by
cross-entropy against the label (1: the second segment preferred, 0: the first, 0.5: equally
preferred), summed over members, each member on its own shuffle of the labels, minibatches
of 128, Adam 3e-4, up to ``epochs`` passes per fit, stopping once the ensemble's accuracy on
the pass exceeds ``stop_accuracy`` (B-Pref's 97%). The term's reward is the members' mean.

Queries (``select``): ``uniform`` pairs, or from ``large_batch`` x as many uniform candidates
the ones with the largest ``disagreement`` (std over members of the preference probability) or
``entropy`` (members' mean entropy of it). Labels come from a scripted teacher on the true
env reward (``Teacher``: B-Pref's oracle, stoch, mistake, myopic, skip and equal), a labels file
or a person (``rl label``); they live in the term's state (a fixed-capacity buffer, so it is
checkpointed with the run) and in the run's ``labels.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rl.nets import ensemble, torch_uniform
from rl.rewards.learned import LearnedState, action_input, spec_fields

HUMAN = "human"  # labels from a person through ``rl label`` (``rl.rewards.feedback``)
FIRST, SECOND, EQUAL = 0.0, 1.0, 0.5  # labels: B-Pref's 0 / 1, and its -1 (equal) as a 0.5 target
SELECTORS = ("uniform", "disagreement", "entropy")


# -- scripted teachers -----------------------------------------------------------------------


@dataclass(frozen=True)
class Teacher:
    """B-Pref's simulated teacher (sec. 3.2 of the paper; ``get_label`` of the reference) on the
    true rewards of two segments [N, H]:

    - skip (``eps_skip``): drop the pair if neither segment's return exceeds the skip threshold;
    - equal (``eps_equal``): label 0.5 if the returns differ by less than the equal threshold;
    - myopic (``gamma`` < 1): compare returns with step k weighted gamma^(H - 1 - k);
    - stoch (``beta`` > 0): label ~ Bernoulli(softmax(beta * returns)[second]), else the
      rational comparison (the second preferred iff its return is larger);
    - mistake (``eps_mistake``): flip each label with that probability.

    Thresholds are ``eps`` x ``margin``, the margin being the mean of the last 10 true episode
    returns x segment / episode length. (B-Pref's ``train_PEBBLE.py`` multiplies ``eps`` in
    twice from the second query on, ``eps^2 x margin``; this is the definition.)"""

    beta: float = 0.0  # <= 0: perfectly rational
    gamma: float = 1.0
    eps_mistake: float = 0.0
    eps_skip: float = 0.0
    eps_equal: float = 0.0

    def label(self, r1, r2, margin: float, rng: np.random.Generator):
        """(kept [N] bool, labels [N] of the kept pairs in {0, 1, 0.5})."""
        r1, r2 = np.asarray(r1, np.float64), np.asarray(r2, np.float64)
        ret1, ret2 = r1.sum(1), r2.sum(1)
        keep = np.ones(len(ret1), bool)
        if self.eps_skip > 0:
            keep = np.maximum(ret1, ret2) > self.eps_skip * margin
        r1, r2, ret1, ret2 = r1[keep], r2[keep], ret1[keep], ret2[keep]
        equal = np.abs(ret1 - ret2) < self.eps_equal * margin
        weights = self.gamma ** np.arange(r1.shape[1] - 1, -1, -1)  # step k: gamma^(H - 1 - k)
        seen1, seen2 = r1 @ weights, r2 @ weights
        if self.beta > 0:
            logits = self.beta * np.stack([seen1, seen2], -1)
            p_second = np.exp(logits[:, 1] - np.logaddexp(logits[:, 0], logits[:, 1]))
            labels = (rng.random(len(p_second)) < p_second).astype(np.float64)
        else:
            labels = (seen1 < seen2).astype(np.float64)
        flip = rng.random(len(labels)) <= self.eps_mistake
        labels[flip] = 1.0 - labels[flip]
        labels[equal] = EQUAL
        return keep, labels


TEACHERS = {
    "oracle": Teacher(),
    "stoch": Teacher(beta=1.0),
    "mistake": Teacher(eps_mistake=0.1),
    "myopic": Teacher(gamma=0.9),
    "skip": Teacher(eps_skip=0.1),
    "equal": Teacher(eps_equal=0.1),
}


def teacher_margin(episode_returns, segment: int, episode_length: int) -> float:
    """B-Pref's threshold scale: mean of the last 10 true episode returns x segment / length."""
    recent = list(episode_returns)[-10:]
    return float(np.mean(recent)) * segment / episode_length if recent else 0.0


# -- the reward model ------------------------------------------------------------------------


class ClipCNN(nn.Module):
    """Ibarz et al.'s reward-model torso for stacked 84x84 frames (appendix A.2: convolutions of
    7x7, 5x5, 3x3, 3x3 with strides 3, 2, 1, 1 and 16 filters each, leaky ReLU; its batch norm,
    dropout and L2 penalty are left out). uint8 in, scaled to [0, 1]. Each convolution is its
    patches times a dense kernel: the ensemble's vmap turns ``nn.Conv`` into a grouped
    convolution, whose gradient XLA's CPU backend computes about 10x slower."""

    @nn.compact
    def __call__(self, x):
        lead = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:]).astype(jnp.float32) / 255.0
        for k, stride in ((7, 3), (5, 2), (3, 1), (3, 1)):
            H, W = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
            patches = [x[:, i : i + stride * (H - 1) + 1 : stride, j : j + stride * (W - 1) + 1 : stride]
                       for i in range(k) for j in range(k)]  # fmt: skip
            x = nn.leaky_relu(nn.Dense(16)(jnp.concatenate(patches, -1)))
        return x.reshape(*lead, -1)


class RewardNet(nn.Module):
    hidden: tuple[int, ...]
    image: bool = False  # frames [..., H, W, C] through ClipCNN first

    @nn.compact
    def __call__(self, x):
        if self.image:
            x = ClipCNN()(x)

        def dense(n, x):
            if self.image:
                return nn.Dense(n)(x)
            # B-Pref's gen_net keeps torch's nn.Linear init: a third of lecun normal's variance a
            # layer. With lecun normal, walker-walk's raw observations drove 2 of 3 members'
            # tanh to -1 on 95% of inputs, where no gradient reaches them (the fit then stalled
            # at 33% accuracy for those members)
            return nn.Dense(n, kernel_init=torch_uniform(), bias_init=torch_uniform(x.shape[-1]))(x)

        for h in self.hidden:
            x = nn.leaky_relu(dense(h, x))
        return jnp.tanh(dense(1, x))[..., 0]


def bradley_terry_loss(ret1, ret2, label):
    """Cross-entropy of softmax([ret1, ret2]) against [1 - label, label], per pair."""
    logp = jax.nn.log_softmax(jnp.stack([ret1, ret2], -1), -1)
    return -((1.0 - label) * logp[..., 0] + label * logp[..., 1])


@dataclass(frozen=True)
class PreferenceReward:
    """The learned reward as a Shaper term (an extrinsic-kind stream: summed, never fused).
    ``inputs``: ``obs_action`` (B-Pref's r(s, a)) or ``obs``. Labels: ``capacity`` pairs of
    ``segment`` steps, added with :meth:`add_labels`, fitted by :meth:`fit`."""

    fit_in_sessions = True  # fitted by the feedback sessions only (B-Pref), not every update
    members: int = 3
    hidden: tuple[int, ...] = (256, 256, 256)
    lr: float = 3e-4
    inputs: str = "obs_action"
    segment: int = 50
    capacity: int = 1000  # labelled pairs kept (the feedback budget)
    batch_size: int = 128
    epochs: int = 50  # most passes over the labels per fit (B-Pref's reward_update for DMC)
    stop_accuracy: float = 0.97
    # feedback sessions (host side, ``rl.rewards.feedback``), in env steps
    teacher: str = "oracle"  # a name of TEACHERS (scripted, on the true env reward), or "human" (`rl label`)
    query: str = "disagreement"  # uniform | disagreement | entropy (the first session: uniform)
    feedback_start: int = 0  # env step of the first session (PEBBLE: after its unsupervised phase)
    feedback_every: int = 20_000  # env steps between sessions
    per_session: int = 100  # queries per session (B-Pref's reward_batch)
    large_batch: int = 10  # candidates per query for disagreement / entropy selection
    # demonstrations (``rl demos`` file): each session also adds up to ``demo_pairs`` pairs of a
    # demo segment and an agent segment labelled demo-preferred (Ibarz et al., Algorithm 1 step 6)
    demos: str = ""
    demo_pairs: int = 0

    intrinsic = False
    stream_defaults = {"weight": 1.0, "normalize": "none"}

    def __post_init__(self):
        if self.inputs not in ("obs_action", "obs"):
            raise ValueError(f"preference inputs={self.inputs!r}; choices: obs_action, obs")
        if self.teacher not in TEACHERS and self.teacher != HUMAN:
            raise ValueError(f"preference teacher={self.teacher!r}; choices: {', '.join(TEACHERS)}, {HUMAN}")
        if self.query not in SELECTORS:
            raise ValueError(f"preference query={self.query!r}; choices: {', '.join(SELECTORS)}")
        if self.feedback_every < 1 or self.per_session < 1 or self.large_batch < 1:
            raise ValueError("preference feedback_every, per_session and large_batch must be >= 1")
        if self.demo_pairs < 0 or (self.demo_pairs and not self.demos):
            raise ValueError("preference demo_pairs must be >= 0, and > 0 needs demos=PATH (`rl demos`)")

    @property
    def reads(self) -> frozenset[str]:
        return frozenset({"obs", "action"} if self.inputs == "obs_action" else {"obs"})

    def _net(self, image: bool):
        return ensemble(RewardNet, self.members)(tuple(self.hidden), image)

    def _tx(self):
        return optax.adam(self.lr)

    def init(self, key, spec):
        fields = spec_fields(spec)
        image = len(spec.obs_shape) == 3
        if image and self.inputs != "obs":
            raise ValueError(
                f"preference rewards on frames ({spec.env_id}: {spec.obs_shape}) read the observation only "
                "(Ibarz et al.): set inputs=obs"
            )
        x = jnp.zeros((1, *spec.obs_shape), jnp.uint8) if image else jnp.zeros((1, self._dim(spec, fields)))
        params = self._net(image).init(key, x)["params"]
        C, L = self.capacity, self.segment
        act = (C, 2, L, *((fields["action_dim"],) if not fields["discrete"] else ()))
        labels = {  # frames stay uint8: a 25-step pair of 84x84x4 frames is 1.4 MB
            "obs": jnp.zeros((C, 2, L, *spec.obs_shape), jnp.uint8 if image else jnp.float32),
            "action": jnp.zeros(act, jnp.float32 if not fields["discrete"] else jnp.int32),
            "label": jnp.zeros((C,), jnp.float32),
            "count": jnp.int32(0),  # pairs labelled so far (the buffer keeps the first ``capacity``)
        }
        return LearnedState(params, self._tx().init(params), labels, **fields)

    def _dim(self, spec, fields) -> int:
        return math.prod(spec.obs_shape) + (fields["action_dim"] if self.inputs == "obs_action" else 0)

    # rewards

    def _x(self, state, obs, action):
        """The network's inputs of flat samples: [N, dim] vectors, or the frames [N, H, W, C]."""
        if obs.ndim == 4:
            return obs
        x = obs.reshape(obs.shape[0], -1).astype(jnp.float32)
        if self.inputs == "obs_action":
            x = jnp.concatenate([x, action_input(state, action)], -1)
        return x

    def member_rewards(self, state, params, obs, action):
        """[K, N] each member's reward of flat samples."""
        return self._net(obs.ndim == 4).apply({"params": params}, self._x(state, obs, action))

    def reward(self, state, batch):
        r = self.member_rewards(state, state.params, batch.flat(batch.obs), batch.flat(batch.action))
        return batch.unflat(r.mean(0))

    def update(self, state, batch, key):  # trains only in ``fit``, on its labels
        return state, {}

    def segment_returns(self, state, params, obs, action):
        """[K, N, 2] each member's summed rewards of N segment pairs (obs [N, 2, L, ...])."""
        N, _, L = obs.shape[:3]
        flat_obs = obs.reshape(N * 2 * L, *obs.shape[3:])
        flat_act = action.reshape(N * 2 * L, *action.shape[3:])
        return self.member_rewards(state, params, flat_obs, flat_act).reshape(-1, N, 2, L).sum(-1)

    def preference_probs(self, state, obs, action):
        """[K, N] each member's probability that the first segment of a pair is preferred."""
        return jax.nn.softmax(self.segment_returns(state, state.params, obs, action), -1)[..., 0]

    # queries

    def select(self, state, obs, action, n: int, how: str):
        """Indices of the ``n`` candidate pairs to query: the first ``n`` (``uniform``: the
        candidates are uniform already) or the ``n`` with the largest disagreement (std over
        members of the preference probability) or entropy (members' mean)."""
        if how not in SELECTORS:
            raise ValueError(f"unknown query selection '{how}'; choices: {', '.join(SELECTORS)}")
        if how == "uniform":
            return jnp.arange(n)
        p = self.preference_probs(state, obs, action)
        if how == "disagreement":
            score = p.std(0)
        else:
            q = jnp.clip(jnp.stack([p, 1 - p], -1), 1e-12, 1.0)
            score = -(q * jnp.log(q)).sum(-1).mean(0)
        return jnp.argsort(-score)[:n]

    def add_labels(self, state, obs, action, label):
        """``state`` with pairs (obs [n, 2, L, ...], action, label [n]) appended to its buffer
        (those beyond ``capacity`` are dropped: the budget is spent)."""
        labels = state.fixed
        n = label.shape[0]
        slots = labels["count"] + jnp.arange(n)
        ok = slots < self.capacity
        slots = jnp.where(ok, slots, self.capacity)  # out of range: dropped by the scatter

        def put(buf, x):
            return buf.at[slots].set(x.astype(buf.dtype), mode="drop")

        new = {
            "obs": put(labels["obs"], obs),
            "action": put(labels["action"], action),
            "label": put(labels["label"], label),
            "count": jnp.minimum(labels["count"] + n, self.capacity),
        }
        return state.replace(fixed=new)

    def loss(self, state, params, idx, valid):
        """Summed over members, each member's mean Bradley-Terry loss on its minibatch of label
        indices ``idx`` [K, B] (``valid`` [K, B]); and the members' accuracy counts [K]."""
        labels = state.fixed

        def member(p, i, v):  # one member's parameters on its own minibatch
            obs, action = labels["obs"][i], labels["action"][i]
            N, _, L = obs.shape[:3]
            x = self._x(
                state, obs.reshape(N * 2 * L, *obs.shape[3:]), action.reshape(N * 2 * L, *action.shape[3:])
            )
            rets = RewardNet(tuple(self.hidden), x.ndim == 4).apply({"params": p}, x).reshape(N, 2, L).sum(-1)
            y = labels["label"][i]
            per = bradley_terry_loss(rets[:, 0], rets[:, 1], y)
            hit = (rets[:, 1] > rets[:, 0]) == (y > 0.5)  # B-Pref's argmax accuracy (equal: as 0)
            n = jnp.maximum(v.sum(), 1)
            return jnp.sum(jnp.where(v, per, 0.0)) / n, jnp.sum(v & hit)

        losses, hits = jax.vmap(member)(params, idx, valid)
        return losses.sum(), hits

    def fit(self, state, data, key):
        """Train on the labels in ``state`` (``data`` is unused: the labels are the term's own):
        passes of shuffled minibatches, until ``epochs`` or the accuracy of a pass exceeds
        ``stop_accuracy``."""
        count = state.fixed["count"]
        C, B = self.capacity, min(self.batch_size, self.capacity)
        steps = -(-C // B)
        tx = self._tx()

        def one_pass(carry):
            state, key, epoch, _ = carry
            key, k = jax.random.split(key)
            noise = jax.random.uniform(k, (self.members, C))
            order = jnp.argsort(jnp.where(jnp.arange(C) < count, noise, 2.0), axis=1)  # valid first
            pad = steps * B - C
            order = jnp.concatenate([order, order[:, :pad]], 1).reshape(self.members, steps, B)
            pos = jnp.arange(steps * B).reshape(steps, B)

            def step(carry, j):
                state, hits = carry
                valid = jnp.broadcast_to(pos[j] < count, (self.members, B))
                (value, h), grads = jax.value_and_grad(self.loss, argnums=1, has_aux=True)(
                    state, state.params, order[:, j], valid
                )

                def apply(s):
                    updates, opt = tx.update(grads, s.opt, s.params)
                    return s.replace(params=optax.apply_updates(s.params, updates), opt=opt)

                state = jax.lax.cond(valid.any(), apply, lambda s: s, state)  # empty: no Adam step
                return (state, hits + h), value

            (state, hits), values = jax.lax.scan(
                step, (state, jnp.zeros(self.members, jnp.int32)), jnp.arange(steps)
            )
            accuracy = jnp.mean(hits / jnp.maximum(count, 1))
            return state, key, epoch + 1, accuracy

        def go_on(carry):
            return (carry[2] < self.epochs) & (carry[3] <= self.stop_accuracy) & (count > 0)

        state, _, epochs, accuracy = jax.lax.while_loop(go_on, one_pass, (state, key, 0, jnp.float32(0.0)))
        return state, {"accuracy": accuracy, "epochs": epochs, "labels": count}

    def accuracy(self, state, obs, action, label):
        """The ensemble-mean reward's accuracy on labelled pairs (equal pairs left out)."""
        rets = self.segment_returns(state, state.params, obs, action).mean(0)
        decided = label != EQUAL
        hit = (rets[:, 1] > rets[:, 0]) == (label > 0.5)
        return jnp.sum(hit & decided) / jnp.maximum(jnp.sum(decided), 1)


# -- the labels file -------------------------------------------------------------------------


def append_labels(path, rows: list[dict]) -> None:
    """Append label records to ``labels.jsonl`` (flushed and synced: a crash loses none written).
    A record: ``{"step": env step of the session, "episodes": [id, id] and "starts": [step, step]
    (the two segments: replay episode ids and their first steps in the episode), "label": 0 (the
    first preferred) | 1 (the second) | 0.5 (equal), "by": the teacher's name}``."""
    path = Path(path)
    with open(path, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_labels(path) -> list[dict]:
    """The records of a ``labels.jsonl`` (none if it does not exist); a torn last line is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a write cut by a crash: what follows was never complete
    return rows
