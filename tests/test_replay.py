"""The replay against a plain-Python reference: per-env lists of slots, cut to capacity."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rl import batch as batch_lib
from rl.replay import Replay
from rl.returns import n_step_return


def make_replay(T=8, E=2, reward_shape=(), extras=()):
    return Replay(
        capacity=T * E,
        num_envs=E,
        obs_shape=(2,),
        obs_dtype="float32",
        action_shape=(),
        action_dtype="int32",
        reward_shape=reward_shape,
        extras=extras,
    )


class Reference:
    """Same semantics as Replay, written the obvious way: a list of slots per env column."""

    def __init__(self, T, E):
        self.T, self.cols = T, [[] for _ in range(E)]

    def add(self, obs, action, reward, term, trunc, next_obs):
        for j, col in enumerate(self.cols):
            col.append(
                dict(
                    obs=obs[j], action=action[j], reward=reward[j], term=term[j], trunc=trunc[j], final=False
                )
            )
            if term[j] or trunc[j]:
                col.append(dict(obs=next_obs[j], action=0, reward=0.0, term=False, trunc=False, final=True))
            del col[: max(0, len(col) - self.T)]

    def transitions(self, n=1, gamma=0.9):
        """Every (obs, action, n-step return, next obs, terminated, truncated) that is stored."""
        out = set()
        for col in self.cols:
            for i, s in enumerate(col):
                if s["final"]:
                    continue
                ret, k, complete = 0.0, 0, True
                while True:
                    if i + k + 1 >= len(col):  # the successor slot is not written yet
                        complete = False
                        break
                    cur = col[i + k]
                    ret += gamma**k * cur["reward"]
                    k += 1
                    if cur["term"] or cur["trunc"] or k == n:
                        break
                if complete:
                    key = (tuple(s["obs"]), int(s["action"]), round(float(ret), 4), tuple(col[i + k]["obs"]))
                    out.add(key + (bool(cur["term"]), bool(cur["trunc"])))
        return out


def n_step_sample(replay, state, key, batch_size, n, gamma):
    """n-step transitions as an agent builds them: windows from the replay, returns from
    ``rl.returns`` (the replay does no reward arithmetic)."""
    seq = replay.sample_sequences(state, key, batch_size, n)
    g, boot, last = jax.vmap(n_step_return, in_axes=(0, 0, 0, None))(
        seq.reward, seq.discount, seq.mask, gamma
    )
    rows = jnp.arange(batch_size)
    return {
        "obs": seq.obs[:, 0], "action": seq.action[:, 0], "reward": g, "next_obs": seq.next_obs[rows, last],
        "terminated": seq.terminated[rows, last], "truncated": seq.truncated[rows, last],
        "valid": seq.mask[:, 0], "bootstrap": boot,
    }  # fmt: skip


@functools.cache
def jitted(replay):
    """Compiled add and n-step sample per buffer shape, so property tests do not recompile."""
    sample = jax.jit(partial_sample(replay), static_argnames=("batch_size", "n", "gamma"))
    return jax.jit(replay.add), sample


def partial_sample(replay):
    def sample(state, key, batch_size, n, gamma):
        return n_step_sample(replay, state, key, batch_size, n, gamma)

    return sample


def drive(replay, ref, steps, rng, end_prob=0.2):
    state = replay.init()
    add = jitted(replay)[0]
    E = replay.num_envs
    counter = 0
    for _ in range(steps):
        obs = np.stack([[counter + j, 0.0] for j in range(E)]).astype(np.float32)
        counter += 1000
        action = rng.integers(0, 5, E).astype(np.int32)
        reward = rng.integers(0, 10, E).astype(np.float32)
        term = rng.random(E) < end_prob / 2
        trunc = ~term & (rng.random(E) < end_prob / 2)
        next_obs = obs.copy()
        next_obs[:, 1] = -1.0  # final observations are distinguishable
        state = add(state, obs, action, reward, term, trunc, next_obs)
        ref.add(obs, action, reward, term, trunc, next_obs)
    return state


def sampled_set(batch):
    b = jax.device_get(batch)
    return {
        (tuple(o), int(a), round(float(r), 4), tuple(no), bool(te), bool(tr))
        for o, a, r, no, te, tr in zip(
            b["obs"], b["action"], b["reward"], b["next_obs"], b["terminated"], b["truncated"]
        )
    }


@settings(max_examples=25, deadline=None)
@given(
    T=st.sampled_from([3, 8]),  # few shapes: each (T, E, n) compiles its own sample
    E=st.sampled_from([1, 3]),
    steps=st.integers(1, 40),
    n=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**16),
)
def test_sampled_transitions_are_exactly_the_valid_ones(T, E, steps, n, seed):
    rng = np.random.default_rng(seed)
    replay, ref = make_replay(T, E), Reference(T, E)
    state = drive(replay, ref, steps, rng)
    valid = ref.transitions(n=n, gamma=0.9)
    batch = jitted(replay)[1](state, jax.random.PRNGKey(seed), batch_size=512, n=n, gamma=0.9)
    if not valid:
        assert not np.asarray(batch["valid"]).any()
        return
    assert np.asarray(batch["valid"]).all()
    got = sampled_set(batch)
    assert got <= valid  # nothing invalid, stale or crossing an episode is ever sampled
    if len(valid) <= 20:
        assert got == valid  # and every valid transition is reachable
    if n == 1:
        assert replay.num_valid(state) == len(valid)


def test_uniform_over_valid_transitions():
    rng = np.random.default_rng(0)
    replay, ref = make_replay(8, 2), Reference(8, 2)
    state = drive(replay, ref, 30, rng, end_prob=0.3)
    valid = ref.transitions()
    batch = jax.device_get(replay.sample(state, jax.random.PRNGKey(1), 40_000))
    assert isinstance(batch, batch_lib.Transitions) and batch.mask.all()
    keys = [tuple(o) for o in batch.obs]
    _, counts = np.unique(np.array(keys), axis=0, return_counts=True)
    assert len(counts) == len(valid)
    expected = 40_000 / len(valid)
    # chi-square style bound: every frequency within 5 sigma of uniform
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))


def test_prioritized_draws_follow_the_priorities_over_valid_transitions_only():
    """Frequencies proportional to the priorities of the valid slots; final observations, the
    newest slot (no successor yet) and zero priorities never drawn; the returned slots are the
    drawn rows. Fails if the sampler ignores the priorities (uniform: the 8x ratio below) or
    draws a slot :meth:`transition_slots` excludes."""
    rng = np.random.default_rng(0)
    replay, ref = make_replay(8, 2), Reference(8, 2)
    state = drive(replay, ref, 30, rng, end_prob=0.3)
    slots = np.asarray(replay.transition_slots(state))
    assert slots.sum() == len(ref.transitions())
    priority = np.where(rng.random(slots.shape) < 0.3, 8.0, 1.0).astype(np.float32)
    priority[np.argwhere(slots)[0][0], np.argwhere(slots)[0][1]] = 0.0  # one valid slot never drawn
    priority[~slots] = 100.0  # invalid slots stay out whatever their priority
    batch, (t, j) = jax.device_get(replay.sample_prioritized(state, jax.random.PRNGKey(1), 60_000, priority))
    assert batch.mask.all()
    np.testing.assert_array_equal(batch.obs, np.asarray(state.data["obs"])[t, j])
    counts = np.zeros(slots.shape)
    np.add.at(counts, (t, j), 1)
    p = np.where(slots, priority, 0.0)
    expected = 60_000 * p / p.sum()
    assert counts[p == 0].sum() == 0
    assert np.all(np.abs(counts - expected)[p > 0] < 5 * np.sqrt(expected[p > 0]))
    empty = replay.sample_prioritized(replay.init(), jax.random.PRNGKey(2), 4, priority)[0]
    assert not np.asarray(empty.mask).any()  # nothing stored: every draw masked


def test_wraparound_keeps_newest_and_final_obs():
    replay = make_replay(T=4, E=1)
    state = replay.init()
    for i in range(10):
        done = i == 8
        state = replay.add(
            state,
            np.array([[i, 0]], np.float32),
            np.array([i]),
            np.array([1.0]),
            np.array([done]),
            np.array([False]),
            np.array([[i, -1]], np.float32),
        )
    obs = np.asarray(state.data["obs"][:, 0, 0])
    final = np.asarray(state.data["final"][:, 0])
    # 10 steps + 1 final slot = 11 slots; the ring of 4 holds slots 7..10: obs 6,7,8,(8 final),9
    # 10 steps + 1 final slot = 11 slots; the ring of 4 keeps the newest: 7, 8, final of 8, 9
    assert sorted(obs[~final].tolist()) == [7.0, 8.0, 9.0] and obs[final].tolist() == [8.0]
    assert float(state.data["obs"][final.argmax(), 0, 1]) == -1.0 and int(state.count[0]) == 4


def test_vector_rewards_and_n_step():
    replay = make_replay(16, 1, reward_shape=(2,))
    state = replay.init()
    for i in range(5):
        state = replay.add(
            state,
            np.array([[i, 0]], np.float32),
            np.array([0]),
            np.array([[1.0, 2.0]]),
            np.array([i == 3]),
            np.array([False]),
            np.array([[i, -1]], np.float32),
        )
    b = jax.device_get(n_step_sample(replay, state, jax.random.PRNGKey(0), 256, 3, 0.5))
    assert b["reward"].shape == (256, 2)
    for o, r, te, d in zip(b["obs"][:, 0], b["reward"], b["terminated"], b["bootstrap"]):
        steps = {0: 3, 1: 3, 2: 2, 3: 1}[int(o)]  # the episode terminates after obs 3
        geo = sum(0.5**k for k in range(steps))
        np.testing.assert_allclose(r, [geo, 2 * geo], rtol=1e-6)
        assert te == (int(o) >= 1) and d == pytest.approx(0.0 if te else 0.5**steps)
    assert set(b["obs"][:, 0].astype(int)) == {0, 1, 2, 3}  # obs 4 has no successor yet


def _episodes(replay, lengths_per_env, extras_fn=None):
    state = replay.init()
    E = replay.num_envs
    remaining = [list(ls) for ls in lengths_per_env]
    t_in = [0] * E
    for step in range(max(sum(ls) for ls in lengths_per_env)):
        done = np.zeros(E, bool)
        for j in range(E):
            if remaining[j]:
                t_in[j] += 1
                if t_in[j] == remaining[j][0]:
                    done[j] = True
                    remaining[j].pop(0)
                    t_in[j] = 0
        obs = np.array([[step, j] for j in range(E)], np.float32)
        state = replay.add(
            state,
            obs,
            np.zeros(E, np.int32),
            np.ones(E),
            done,
            np.zeros(E, bool),
            obs,
            **({"extras": extras_fn(obs)} if extras_fn else {}),
        )
    return state


def test_sequences_never_cross_episode_starts_unless_asked():
    replay = make_replay(T=64, E=2)
    state = _episodes(replay, [[3, 9, 5, 12], [7, 7, 7]])
    seq = jax.device_get(replay.sample_windows(state, jax.random.PRNGKey(0), 500, 6))
    assert seq["obs"].shape == (500, 6, 2) and seq["valid"].all()
    assert (seq["episode"] == seq["episode"][:, :1]).all()
    # contiguous in time: steps within an episode go 0,1,2,...
    assert (np.diff(seq["step"], axis=1) == 1).all()
    # finals only at the end of a window
    assert not seq["final"][:, :-1].any() and seq["final"][:, -1].any()
    assert replay.num_valid(state, 6) > 0
    cross = jax.device_get(replay.sample_windows(state, jax.random.PRNGKey(0), 500, 6, cross_episodes=True))
    assert (cross["episode"] != cross["episode"][:, :1]).any()


def test_segments_stay_inside_one_episode_with_ids():
    replay = make_replay(T=64, E=1)
    state = _episodes(replay, [[10, 4, 12]])
    seg = jax.device_get(replay.sample_segments(state, jax.random.PRNGKey(3), 300, 4))
    assert seg["valid"].all() and not seg["final"].any()
    assert (seg["episode"] == seg["segment_episode"][:, None]).all()
    assert (seg["step"][:, 0] == seg["start"]).all()
    # the 4-step episode has exactly one 4-step segment (steps 0..3)
    short = seg["segment_episode"] == 1
    assert short.any() and (seg["start"][short] == 0).all()
    assert replay.num_valid(state, 4, no_final_last=True) == (10 - 3) + (4 - 3) + (12 - 3)


def test_impossible_windows_are_marked_invalid():
    replay = make_replay(T=32, E=1)
    state = _episodes(replay, [[2, 2, 2, 2]])
    seq = replay.sample_windows(state, jax.random.PRNGKey(0), 8, 5)
    assert not np.asarray(seq["valid"]).any() and replay.num_valid(state, 5) == 0
    full = replay.sample_sequences(state, jax.random.PRNGKey(0), 8, 5, partial=False)
    assert not np.asarray(full.mask).any()  # no 5-step window fits inside a 2-step episode


def test_sequences_are_transitions_in_a_row_masked_past_the_episode_end():
    replay = make_replay(T=64, E=2)
    state = _episodes(replay, [[3, 9, 5, 12], [7, 7, 7]])
    seq = jax.device_get(replay.sample_sequences(state, jax.random.PRNGKey(0), 400, 4))
    assert isinstance(seq, batch_lib.Sequences) and seq.obs.shape == (400, 4, 2)
    # next_obs of step k is obs of step k + 1 inside the episode; the first step is always valid
    inside = seq.mask[:, 1:]
    np.testing.assert_array_equal(seq.next_obs[:, :-1][inside], seq.obs[:, 1:][inside])
    assert seq.mask[:, 0].all() and (np.diff(seq.mask.astype(int), axis=1) <= 0).all()  # a prefix
    done = seq.terminated | seq.truncated
    after_end = np.cumsum(done, axis=1)[:, :-1] > 0
    np.testing.assert_array_equal(seq.mask[:, 1:], ~after_end)
    assert (~seq.mask).any()  # windows near an episode's end are cut
    full = jax.device_get(replay.sample_sequences(state, jax.random.PRNGKey(1), 200, 4, partial=False))
    assert full.mask.all() and (full.extras["episode"] == full.extras["episode"][:, :1]).all()


def test_extras_are_stored_and_returned():
    replay = make_replay(T=16, E=1, extras=(("frame", (3,), "uint8"),))
    state = _episodes(
        replay, [[5]], extras_fn=lambda o: {"frame": np.repeat(o[:, :1], 3, 1).astype(np.uint8)}
    )
    b = jax.device_get(replay.sample(state, jax.random.PRNGKey(0), 64))
    np.testing.assert_array_equal(b.extras["frame"][:, 0], b.obs[:, 0])
    inside = ~b.terminated  # a final slot's extras are those given with it (zeros here)
    np.testing.assert_array_equal(b.extras["next_frame"][inside, 0], b.next_obs[inside, 0])
    with pytest.raises(KeyError, match="frame"):
        replay.add(
            state,
            np.zeros((1, 2)),
            np.zeros(1),
            np.zeros(1),
            np.zeros(1, bool),
            np.zeros(1, bool),
            np.zeros((1, 2)),
        )


def test_save_load_round_trip(tmp_path):
    replay = make_replay(T=16, E=2, reward_shape=(3,))
    state = replay.init()
    for i in range(20):
        state = replay.add(
            state,
            np.full((2, 2), i, np.float32),
            np.array([i, -i]),
            np.full((2, 3), 0.5 * i),
            np.array([i % 7 == 0, False]),
            np.array([False, i % 5 == 0]),
            np.zeros((2, 2)),
        )
    replay.save(state, tmp_path / "buf")
    replay.save(state, tmp_path / "buf")  # overwriting is atomic too
    loaded_replay, loaded = Replay.load(tmp_path / "buf")
    assert loaded_replay == replay
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    k = jax.random.PRNGKey(5)
    for a, b in zip(
        jax.tree.leaves(replay.sample(state, k, 32)), jax.tree.leaves(replay.sample(loaded, k, 32))
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(FileNotFoundError, match="no saved replay"):
        Replay.load(tmp_path / "missing")


def test_too_large_fails_at_creation_with_size():
    replay = Replay(
        capacity=10**9,
        num_envs=1,
        obs_shape=(84, 84, 3),
        obs_dtype="uint8",
        action_shape=(),
        action_dtype="int32",
    )
    with pytest.raises(MemoryError, match=r"needs \d+\.\d+ GiB"):
        replay.init()


def test_add_and_sample_run_inside_jit_and_scan():
    replay = make_replay(T=32, E=2)
    state = _episodes(replay, [[6, 6, 6], [9, 9]])

    @jax.jit
    def many(state, key):
        def body(c, k):
            b = replay.sample(state, k, 16)
            return c + b.reward.sum(), None

        return jax.lax.scan(body, 0.0, jax.random.split(key, 4))[0]

    assert float(many(state, jax.random.PRNGKey(0))) == 4 * 16.0
    assert jnp.issubdtype(state.ptr.dtype, jnp.integer)


def test_close_episodes_truncates_open_ones_with_their_next_obs():
    replay = make_replay(T=16, E=2)
    state = replay.init()
    for i in range(3):
        state = replay.add(
            state,
            np.full((2, 2), i, np.float32),
            np.zeros(2, np.int32),
            np.ones(2),
            np.array([False, i == 2]),
            np.zeros(2, bool),
            np.full((2, 2), 10 + i, np.float32),
        )
    closed = replay.close_episodes(state, np.full((2, 2), 99, np.float32))
    # env 0 was mid-episode: its last transition becomes truncated and bootstraps from obs 99
    b = jax.device_get(replay.sample(closed, jax.random.PRNGKey(0), 256))
    last0 = (b.obs[:, 0] == 2) & (b.next_obs[:, 0] == 99)
    assert last0.any() and b.truncated[last0].all()
    # env 1 had just ended: nothing changes there
    assert int(closed.ptr[1]) == int(state.ptr[1]) and int(closed.ptr[0]) == int(state.ptr[0]) + 1
    assert int(closed.step[0]) == 0 and int(closed.episode[0]) != int(state.episode[0])
