"""``rl label``: the feedback sessions of a ``teacher=human`` stream write their queries, the local
page shows them and stores answers, and the next session takes them in. The page is driven
through HTTP, and in a headless Chromium (selenium) where one is installed. (PPO and SAC reach
these sessions as with a scripted teacher: ``test_preference``.)"""

import json
import shutil
import urllib.error
import urllib.request

import jax
import numpy as np
import pytest

from rl import config as config_lib
from rl import envs, label
from rl.agents import ppo
from rl.rewards.preference import read_labels

STREAMS = {"preference": {"feedback_start": 64, "feedback_every": 64, "per_session": 2, "capacity": 6, "segment": 4,
                          "hidden": [16], "inputs": "obs", "teacher": "human", "query": "uniform"}}  # fmt: skip
OVER = {"env": "gym:CartPole-v1", "env_options": {"pixels": True, "size": 48}, "num_envs": 2, "num_steps": 32,
        "num_minibatches": 2, "update_epochs": 1, "total_steps": 128, "eval_episodes": 1, "log_every": 64,
        "hidden": [16], "experiment": "h", "run_name": "r", "preference_buffer": 256,
        "shaper": {"terms": ["preference"], "extrinsic": {"weight": 0.0}, "streams": STREAMS}}  # fmt: skip


def _post(url, body):
    req = urllib.request.Request(
        url + "/label", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        return urllib.request.urlopen(req).status
    except urllib.error.HTTPError as e:
        return e.code


def _session_run(run_dir):
    """A run directory whose preference stream's sessions at 64 and 128 env steps wrote two queries
    each (the Feedback sessions on a replay of random 48x48 frames), and the Feedback."""
    import gymnasium as gym

    from rl.replay import Replay
    from rl.rewards.feedback import Feedback

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text("agent: ppo\n")
    shaper = ppo.build_shaper(config_lib.build(ppo.Config, overrides=OVER))
    spec = envs.EnvSpec("frames", 2, (48, 48, 3), "uint8", gym.spaces.Discrete(2), (), None)
    state = shaper.init(jax.random.PRNGKey(0), spec)
    replay = Replay.from_spec(spec, 256)
    rstate, add = replay.init(), jax.jit(replay.add)
    rng = np.random.default_rng(0)
    for _ in range(40):
        obs = rng.integers(0, 255, (2, 48, 48, 3), dtype=np.uint8)
        rstate = add(
            rstate, obs, np.zeros(2, np.int32), np.zeros(2), np.zeros(2, bool), np.zeros(2, bool), obs
        )
    fb = Feedback(shaper, replay, run_dir / "labels.jsonl", None, 0)
    return fb, state, rstate


def test_the_sessions_write_queries_and_the_page_stores_answers(tmp_path):
    fb, state, rstate = _session_run(tmp_path)
    state = fb.after(state, rstate, 0, 64, [])[0]
    fb.after(state, rstate, 64, 128, [])
    store = label.QueryStore(tmp_path)
    queries = store.queries()
    assert [q["step"] for q in queries] == [64, 64, 128, 128]  # two a session, while the budget has room
    first = store.load(queries[0]["id"])
    assert first["obs"].shape == (2, 4, 48, 48, 3) and first["frames"].dtype == np.uint8
    httpd, url = label.serve_in_thread(tmp_path)
    try:
        html = urllib.request.urlopen(url + "/").read().decode()
        assert queries[0]["id"] in html and "/clip/" in html and "4 queries wait" in html
        gif = urllib.request.urlopen(f"{url}/clip/{queries[0]['id']}/1.gif").read()
        assert gif[:4] == b"GIF8"
        assert _post(url, {"query": queries[0]["id"], "label": 0}) == 200
        assert _post(url, {"query": queries[1]["id"], "label": 0.5}) == 200
        assert _post(url, {"query": queries[2]["id"], "label": "skip"}) == 200
        assert _post(url, {"query": queries[3]["id"], "label": 7}) == 400  # not a label
        assert _post(url, {"query": "nope", "label": 1}) == 400
        pending = json.loads(urllib.request.urlopen(url + "/queries").read())
        assert [q["id"] for q in pending] == [queries[3]["id"]]
    finally:
        httpd.shutdown()
    assert store.answers() == {queries[0]["id"]: 0, queries[1]["id"]: 0.5, queries[2]["id"]: "skip"}


def test_a_session_takes_the_answers_in_and_a_resume_reads_them_again(tmp_path):
    """The sessions alone, on a replay of random frames: the first writes two queries; one is
    answered, one skipped; the next session adds the answer to the buffer and labels.jsonl and
    writes queries for the room left. A resume to before that session (labels.jsonl cut back,
    the older term state) takes the same answer in again: human_labels.jsonl is never cut."""
    fb, state, rstate = _session_run(tmp_path)
    store = label.QueryStore(tmp_path)
    first, _ = fb.after(state, rstate, 0, 64, [])
    q = store.queries()
    assert len(q) == 2 and int(first.terms["preference"].fixed["count"]) == 0
    store.answer(q[0]["id"], 1.0)
    store.answer(q[1]["id"], "skip")
    second, m = fb.after(first, rstate, 64, 128, [])
    held = second.terms["preference"].fixed
    assert (
        int(held["count"]) == 1
        and float(held["label"][0]) == 1.0
        and m["reward/preference/human_labels"] == 1
    )
    np.testing.assert_array_equal(np.asarray(held["obs"][0]), store.load(q[0]["id"])["obs"])
    rows = read_labels(tmp_path / "labels.jsonl")
    assert [(r["query"], r["by"]) for r in rows] == [(q[0]["id"], "human")]
    assert len(store.queries()) == 4 and len(store.pending()) == 2  # room 6 - 1 held, 2 a session
    (tmp_path / "labels.jsonl").write_text("")  # a resume to the checkpoint before the session
    again, _ = fb.after(first, rstate, 64, 128, [])
    assert int(again.terms["preference"].fixed["count"]) == 1
    assert [r["query"] for r in read_labels(tmp_path / "labels.jsonl")] == [q[0]["id"]]


def test_a_person_needs_frames(tmp_path):
    with pytest.raises(ValueError, match="frames"):
        ppo.train(
            config_lib.build(ppo.Config, overrides={**OVER, "env_options": {}, "runs_dir": str(tmp_path)})
        )
    assert not list(tmp_path.iterdir())  # before any run directory exists


def _eventually(check, seconds: float = 10.0) -> bool:
    """Whether ``check()`` comes true within ``seconds`` (a reloading page raises meanwhile)."""
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if check():
                return True
        except Exception:  # noqa: BLE001 (a stale element while the page reloads)
            pass
        time.sleep(0.1)
    return False


def test_the_page_in_a_headless_browser(tmp_path):
    """A real browser on two stored queries of synthetic frames: the first query's two clips
    load, a click on "right" writes its label, the page moves on to the second."""
    webdriver = pytest.importorskip("selenium.webdriver")
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chrome or not driver_path:
        pytest.skip("no chromium / chromedriver installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("agent: ppo\n")
    store = label.QueryStore(run_dir)
    frames = np.zeros((2, 4, 48, 48, 3), np.uint8)
    frames[0, :, 10:20, 10:20] = (255, 0, 0)  # a red square on the left, a green one on the right
    frames[1, :, 30:40, 30:40] = (0, 200, 0)
    first, second = (
        store.add("preference", 64, frames, np.zeros((2, 4), np.int32), [0, 1], [0, 4]) for _ in "ab"
    )
    httpd, url = label.serve_in_thread(run_dir)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        browser.get(url + "/")
        assert browser.find_element("id", "query").get_attribute("data-id") == first
        width = browser.execute_script("return document.getElementById('clip0').naturalWidth")
        assert width == 144  # the GIF loaded: 48 px x 3
        browser.find_element("id", "right").click()
        assert _eventually(lambda: label.QueryStore(run_dir).answers() == {first: 1.0})
        # the page reloads with the next query
        assert _eventually(lambda: browser.find_element("id", "query").get_attribute("data-id") == second)
    finally:
        browser.quit()
        httpd.shutdown()


def test_a_person_labels_a_dmc_task_from_its_rendered_simulator_states(tmp_path):
    """Vector observations: the agent keeps each step's physics state in its replay and the
    session renders the chosen segments; a stored state renders the live env's very frame."""
    from rl.agents import sac

    env, _ = envs.make("dmc:cartpole-balance", 1, 0, render=True)
    env.reset()
    for _ in range(5):
        env.step(np.ones((1, 1), np.float32))
    renderer = envs.StateRenderer("dmc:cartpole-balance", {})
    try:
        np.testing.assert_array_equal(renderer(env.physics_states())[0], env.envs[0].render())
    finally:
        renderer.close(), env.close()
    streams = {"preference": {**STREAMS["preference"], "inputs": "obs_action"}}
    over = {"env": "dmc:cartpole-balance", "hidden": [16, 16], "batch_size": 32, "learning_starts": 1000,
            "total_steps": 160, "eval_episodes": 1, "runs_dir": str(tmp_path), "run_name": "s",
            "shaper": {"terms": ["preference"], "streams": streams}}  # fmt: skip
    sac.train(config_lib.build(sac.Config, overrides=over))
    store = label.QueryStore(next(tmp_path.glob("*/s")))
    queries = store.queries()
    assert [q["step"] for q in queries] == [64, 64, 128, 128]
    pair = store.load(queries[0]["id"])
    assert pair["obs"].shape == (2, 4, 5) and pair["frames"].shape == (2, 4, 64, 64, 3)
    assert np.ptp(pair["frames"][0].astype(int), axis=0).max() > 0  # the clip moves
