"""Experiment scripts at their smoke budget, and `rl train | eval | report` end to end."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rl import config as config_lib
from rl import report as report_lib

ROOT = Path(__file__).resolve().parent.parent
# one MuJoCo task for both agents and one Atari game; PPO's DMC, Atari and MiniGrid paths
# have their own smoke tests in test_ppo.py
TASKS = "gym:Hopper-v5,atari:Pong"


def rl(*args, cwd):
    return subprocess.run([sys.executable, "-m", "rl.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_baselines_arms_build_for_every_task_and_report_beside_cleanrl(tmp_path):
    """Every arm x task x budget of the baselines grid is a valid config of its agent, and its
    report puts CleanRL's numbers beside the runs (the grid's launch and report run end to end
    in ``test_a_reward_experiment_runs_end_to_end_at_smoke_budget``)."""
    from rl import agents

    module = _load("baselines.py")
    for arm, tasks in module.ARMS.items():
        agent = agents.get(arm)
        for task in tasks:
            for budget in module.BUDGETS:
                args = module.overrides_for(arm, task, 2048, budget)
                presets = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
                rest = [
                    a for i, a in enumerate(args) if a != "--config" and (i == 0 or args[i - 1] != "--config")
                ]
                cfg = config_lib.build(agent.Config, presets, [*rest, f"env={task}"])
                assert cfg.total_steps == 2048 and cfg.env == task
                if task.startswith("atari:"):
                    assert cfg.num_envs == (2 if budget == "smoke" else 8), (task, budget)
    _fake_run(tmp_path, "sac__gym-Hopper-v5__s0", "gym:Hopper-v5", 1000.0, agent="sac")
    _fake_run(tmp_path, "ppo__atari-Pong__s0", "atari:Pong", -20.0)
    md = report_lib.report(tmp_path, tmp_path, references=module.REFERENCES, title="t").read_text()
    assert "| sac | gym:Hopper-v5 | 1 |" in md and "2,310 (CleanRL" in md
    assert "| ppo | atari:Pong | 1 |" in md


def test_train_eval_report_end_to_end(tmp_path):
    out = rl(
        "train", "ppo", "--config", "ppo-cartpole", "total_steps=2048", "eval_episodes=2",
        "seed=0", "run_name=cp0", "runs_dir=runs", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "done: eval/episode_return" in out.stdout
    _fake_run(tmp_path / "runs" / "quickstart", "cp1", "gym:CartPole-v1", 100.0)  # a second seed
    run = tmp_path / "runs" / "quickstart" / "cp0"
    out = rl("eval", str(run), "--episodes", "3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((run / "eval.json").read_text())["episodes"] == 3
    out = rl("report", "runs", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    md = (tmp_path / "runs" / "report.md").read_text()
    assert "| ppo | gym:CartPole-v1 | 2 |" in md


def test_report_iqm_matches_a_direct_computation():
    import numpy as np
    from scipy import stats

    scores = np.array([[1.0], [2.0], [3.0], [4.0], [100.0], [5.0], [6.0], [7.0]])
    point, lo, hi = report_lib.iqm_ci({"x": scores}, reps=500)["x"]
    assert point == pytest.approx(stats.trim_mean(scores[:, 0], 0.25))
    assert lo <= point <= hi


def test_the_training_log_score_is_the_mean_of_the_last_ten_episodes(tmp_path):
    rows = [
        {"step": 1, "train/episodes": 4, "train/episode_return": 1.0},
        {"step": 2, "loss/value": 0.3},  # a window with no finished episode
        {"step": 3, "train/episodes": 8, "train/episode_return": 2.0},
        {"step": 4, "train/episodes": 3, "train/episode_return": 5.0},
    ]
    assert report_lib.train_score(rows) == pytest.approx((3 * 5.0 + 7 * 2.0) / 10)  # the oldest in part
    assert report_lib.train_score(rows, episodes=20) == pytest.approx((15 + 16 + 4) / 15)  # all there are
    assert report_lib.train_score(rows[1:2]) is None
    d = tmp_path / "ppo__gym-CartPole-v1__s0"
    _fake_run(tmp_path, d.name, "gym:CartPole-v1", 50.0)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = report_lib.report(tmp_path, tmp_path, title="t").read_text()
    assert "| ppo | gym:CartPole-v1 | 1 | 50.0 | [50.0, 50.0] | 50.0 | 2.90 | - |" in md


def test_report_of_an_empty_directory_says_so(tmp_path):
    out = rl("report", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 2 and "no runs under" in out.stderr


def _load(script):
    import importlib.util

    spec = importlib.util.spec_from_file_location(script[:-3], ROOT / "experiments" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _arm_config(module, arm, task):
    """The config an arm's run gets on a task, as `rl train` would build it (no training)."""
    from rl import agents
    from rl import config as config_lib

    args = [*module.TASKS[task], *module.ARMS[arm].overrides]
    presets = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
    overrides = [a for i, a in enumerate(args) if a != "--config" and (i == 0 or args[i - 1] != "--config")]
    agent = agents.get(module.ARMS[arm].agent)
    return agent, config_lib.build(agent.Config, presets, [*overrides, f"env={task}"])


@pytest.mark.parametrize("script", ["icm.py", "hire.py"])
def test_reward_experiment_arms_build_the_shapers_they_describe(script):
    """Every arm x task of the reward experiments validates, and builds the Shaper its
    docstring promises (streams, fusion, weights, schedules in env steps)."""
    module = _load(script)
    for arm in module.ARMS:
        for task in module.TASKS:
            agent, cfg = _arm_config(module, arm, task)
            shaper = agent.build_shaper(cfg)
            names = [s.name for s in shaper.streams]
            if script == "icm.py":
                assert names == (["extrinsic"] if arm == "ppo" else ["extrinsic", "icm"]), (arm, task)
                if arm == "ppo+icm-decay":  # 0.5% less per 2,048-step rollout
                    w = float(shaper.intrinsic_weight(2048 * 10)) * float(shaper.streams[1].weight(0))
                    assert w == pytest.approx(0.001 * 0.995**10, rel=1e-3)
            else:
                fused = arm in ("sum", "product", "max", "cycle")
                assert names == ["extrinsic", *(module.TERMS if fused else [arm])]
                assert shaper.fuse == (arm if fused else "sum") and float(
                    shaper.intrinsic_weight(0)
                ) == pytest.approx(0.01)
                assert all(s.normalize in ("std", "return") for s in shaper.streams[1:])
                if arm == "cycle":
                    assert shaper.cycle_every == 20480


def _fake_run(root, name, env, score, agent="ppo"):
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(f"agent: {agent}\nenv: {env}\nseed: 0\nrun_name: {name}\n")
    (d / "metrics.jsonl").write_text(json.dumps({"step": 10, "train/episode_return": score}) + "\n")
    (d / "summary.json").write_text(json.dumps({"eval/episode_return": score}))


def test_report_scores_multi_objective_runs_by_hypervolume_and_eum(tmp_path):
    """A run whose evaluation is a front gets the front table: IQM of the seeds' final
    hypervolume and EUM (single-objective runs do not appear in it)."""
    for seed, (hv, eum) in enumerate([(300.0, 5.0), (350.0, 6.0), (400.0, 7.0), (380.0, 6.5)]):
        name = f"envelope__mo-deep-sea-treasure-v0__s{seed}"
        _fake_run(tmp_path, name, "mo:deep-sea-treasure-v0", score=eum, agent="envelope")
        summary = {"eval/episode_return": eum, "eval/hypervolume": hv, "eval/eum": eum}
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    _fake_run(tmp_path, "ppo__gym-CartPole-v1__s0", "gym:CartPole-v1", score=500.0)
    md = report_lib.report(tmp_path, tmp_path, title="t").read_text()
    front_table = md[md.index("Multi-objective runs") :]
    row = next(
        x for x in front_table.splitlines() if x.startswith("| envelope | mo:deep-sea-treasure-v0 | 4 |")
    )
    cells = [c.strip() for c in row.split("|")]
    assert cells[4] == "365" and cells[6] == "6.25"  # IQM of 4 seeds: the mean of the middle two
    assert "| ppo |" not in front_table
    fronts = json.loads((tmp_path / "results.json").read_text())["fronts"]
    assert [f["arm"] for f in fronts] == ["envelope"] and fronts[0]["n"] == 4


def test_report_layout_is_tasks_by_arms_in_the_arm_order(tmp_path):
    arms = ["icm", "rnd", "sum"]
    for i, arm in enumerate(arms):
        for task in ("minigrid:A", "atari:B"):
            _fake_run(tmp_path, f"{arm}__{task.replace(':', '-')}__s0", task, score=0.25 * i)
    md = report_lib.report(tmp_path, tmp_path, title="t", arm_order=["sum", "icm", "rnd"]).read_text()
    assert "| task | sum | icm | rnd |" in md
    row = next(line for line in md.splitlines() if line.startswith("| minigrid:A |"))
    assert row.split("|")[2].strip() == "0.50"  # sum's score, first column


def test_a_reward_experiment_runs_end_to_end_at_smoke_budget(tmp_path):
    """One tiny grid through the real script: launch, run, report."""
    cmd = [sys.executable, str(ROOT / "experiments" / "hire.py"), "--budget", "smoke", "--runs-dir",
           str(tmp_path), "--arms", "icm", "--tasks", "minigrid:MiniGrid-DoorKey-8x8-v0"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    root = tmp_path / "hire-smoke"
    runs = report_lib.find_runs(root)
    assert [r["arm"] for r in runs] == ["icm"] and runs[0]["finished"]
    metrics = [
        json.loads(x) for x in open(root / "icm__minigrid-MiniGrid-DoorKey-8x8-v0__s0" / "metrics.jsonl")
    ]
    assert any(
        "reward/icm_norm" in m for m in metrics
    )  # the arm's Shaper trained (fusions: unit tests above)
    assert "| icm | minigrid:MiniGrid-DoorKey-8x8-v0 | 1 |" in (root / "report.md").read_text()
    # a rerun finds the finished run and launches nothing new
    written = (root / "icm__minigrid-MiniGrid-DoorKey-8x8-v0__s0" / "metrics.jsonl").read_bytes()
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0 and len(report_lib.find_runs(root)) == 1
    assert (root / "icm__minigrid-MiniGrid-DoorKey-8x8-v0__s0" / "metrics.jsonl").read_bytes() == written


def test_the_intrinsic_experiment_arms_build_rlexplores_settings():
    """Each arm's overrides, with the task's, make a valid PPO config with RLeXplore's
    benchmark settings (rllte's reward branch, src/utils.py: minibatches of 2,048; its
    MiniGrid network; E3B's 512-feature MinigridEncoder)."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import intrinsic

    from rl.agents import ppo

    task = "xminigrid:MiniGrid-DoorKey-16x16"
    for name, arm in intrinsic.ARMS.items():
        args = [*intrinsic.TASKS[task], *arm.overrides]
        presets = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
        overrides = [
            a for i, a in enumerate(args) if a != "--config" and (i == 0 or args[i - 1] != "--config")
        ]
        cfg = config_lib.build(ppo.Config, presets, config_lib.parse_overrides(overrides))
        assert (cfg.num_envs, cfg.num_steps, cfg.update_epochs, cfg.batch_size // cfg.num_minibatches) == (
            256,
            32,
            4,
            2048,
        )
        assert (cfg.torso, cfg.hidden, cfg.actor_gain) == ("rlexplore", (), 1.0)  # rllte's orthogonal heads
        assert (cfg.lr, cfg.clip_coef, cfg.ent_coef, cfg.gamma) == (2.5e-4, 0.1, 0.01, 0.99)
        assert cfg.shaper.extrinsic["weight"] == 100
        if name == "ppo":
            assert cfg.shaper.terms == []
            continue
        assert cfg.shaper.intrinsic_weight == 0.25 and cfg.shaper.terms
        assert all(cfg.shaper.streams[t]["normalize"] == "std" for t in cfg.shaper.terms)
        assert (name.startswith("hire-") and len(cfg.shaper.terms) == 4) or cfg.shaper.terms == [name]
        shaper = ppo.build_shaper(cfg)
        for s in shaper.streams[1:]:  # every embedding is rllte's MinigridEncoder(512)
            assert (s.term.torso, s.term.features) == ("rlexplore", 512), (name, s.name)
            if s.name in ("icm", "ngu", "e3b"):
                assert tuple(s.term.hidden) == (512,), (name, s.name)
        if name in ("rnd", "ngu"):  # rllte's obs_rms with its 640 random warm-up steps per env
            rnd = shaper.streams[1].term if name == "rnd" else shaper.streams[1].term.rnd
            assert (rnd.obs_norm, rnd.warmup_steps, rnd.torso) == ("rms", 640, "rlexplore")
            assert shaper.warmup_steps() == 640
            assert rnd.update_proportion == (1.0 if name == "rnd" else 0.1)
        if name == "ngu":  # and its inverse-dynamics encoder (rllte's pseudo-counts: obs_rms=True)
            assert shaper.streams[1].term.obs_norm == "rms"
        if name in ("re3", "disagreement", "e3b", "icm"):  # doorkey_5.sh passes --obs_rms to every arm
            assert (shaper.streams[1].term.obs_norm, shaper.warmup_steps()) == ("rms", 640)
    assert set(intrinsic.PUBLISHED) <= set(intrinsic.ARMS)
    # the env comparison: the same settings, the XLand task seen through MiniGrid's interface
    assert [*intrinsic.TASKS[intrinsic.FARAMA], "env_options.interface=minigrid"] == intrinsic.TASKS[task]


def test_the_intrinsic_report_puts_rlexplores_scores_beside_each_arm(tmp_path):
    """The report of the intrinsic grid (its runs are PPO's jitted path, whose every term runs
    in tests/test_jaxenvs.py) names RLeXplore's score for each arm."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import intrinsic

    task = "xminigrid:MiniGrid-DoorKey-16x16"
    for arm in ("ppo", "e3b"):
        _fake_run(tmp_path, f"{arm}__{task.replace(':', '-')}__s0", task, 0.5)
    md = report_lib.report(tmp_path, tmp_path, references=intrinsic.REFERENCES, title="t").read_text()
    assert f"| e3b | {task} | 1 |" in md and "0.98 (RLeXplore, 10M steps)" in md
    assert "0.37 (RLeXplore, 10M steps)" in md


def test_the_dreamsmooth_arms_set_only_the_smoothing():
    sys.path.insert(0, str(ROOT / "experiments"))
    import dreamsmooth

    from rl.agents import dreamer

    built = {}
    for name, arm in dreamsmooth.ARMS.items():
        args = list(arm.overrides)
        presets = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
        overrides = [
            a for i, a in enumerate(args) if a != "--config" and (i == 0 or args[i - 1] != "--config")
        ]
        built[name] = config_lib.build(dreamer.Config, presets, config_lib.parse_overrides(overrides))
    assert {n: c.shaper.smoothing for n, c in built.items()} == {
        "none": "none", "gaussian": "gaussian", "uniform": "uniform", "ema": "ema"}  # fmt: skip
    same = {n: {**vars(c), "shaper": None} for n, c in built.items()}
    assert all(v == same["none"] for v in same.values())  # nothing else differs between arms
    assert set(dreamsmooth.TASKS) - set(dreamsmooth.DREAMERV3) == {"dmc:cartpole-swingup_events"}  # ours


def test_the_dreamsmooth_diagnostic_counts_each_event_type_at_its_step_and_window():
    sys.path.insert(0, str(ROOT / "experiments"))
    import dreamsmooth

    reward = np.zeros(30)
    reward[[5, 12, 20]] = [1.0, 1.0, 2.0]
    events = [[] for _ in range(30)]
    events[5], events[12], events[20] = [0], [1], [2, 3]  # two types at once: reward 2
    pred = np.zeros(30)
    pred[5] = 0.6  # type 0 predicted at its step
    pred[[10, 11, 13, 14]] = 0.2  # type 1 smeared around its step (a smoothed head)
    pred[20] = 0.9  # types 2 and 3: 0.9 / 2 is under half
    hits = dreamsmooth.event_hits(pred, reward, events, window=4)
    assert hits == {
        0: {"step": [True], "window": [True]},
        1: {"step": [False], "window": [True]},
        2: {"step": [False], "window": [False]},
        3: {"step": [False], "window": [False]},
    }
    pred[16] = 0.2  # 5 steps off: outside a window of 4
    assert dreamsmooth.event_hits(pred, reward, events, window=4)[1]["window"] == [True]
    assert dreamsmooth.event_hits(pred, reward, events, window=0)[1]["window"] == [False]


def test_the_pebble_arms_set_the_budget_and_the_teacher_and_smoke_reaches_every_phase():
    """Each arm x task (paper and smoke budgets) is a valid config of its agent: the SAC arm
    trains on the true reward; the PEBBLE arms differ from pebble-1000 only in the label budget
    or the teacher; PrefPPO learns from the same kind of stream; at the smoke budget the
    sessions fall inside its 400 steps."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import pebble

    from rl.agents import ppo, sac

    def build(arm, task, smoke):
        args = list(pebble.ARMS[arm].overrides)
        if smoke:
            args += [*pebble.SMOKE.get(task, []), *pebble.SMOKE.get((arm, task), [])]
        presets = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
        rest = [a for i, a in enumerate(args) if a != "--config" and (i == 0 or args[i - 1] != "--config")]
        agent = {"sac": sac, "ppo": ppo}[pebble.ARMS[arm].agent]
        return config_lib.build(agent.Config, presets, [*rest, f"env={task}"])

    for task in pebble.TASKS:
        for smoke in (False, True):
            built = {arm: build(arm, task, smoke) for arm in pebble.ARMS}
            assert built["sac"].shaper.terms == [] and built["sac"].reset_critic_at == 0
            ref = built["pebble-1000"].shaper.streams["preference"]
            for arm, cfg in built.items():
                if arm == "sac":
                    continue
                p = cfg.shaper.streams["preference"]
                assert (
                    cfg.shaper.terms == ["state_entropy", "preference"]
                    and cfg.shaper.extrinsic["weight"] == 0.0
                )
                differ = {k for k in set(p) | set(ref) if p.get(k) != ref.get(k)}
                if arm.startswith("prefppo"):  # B-Pref's PrefPPO schedule: sessions every 32,000 steps
                    differ -= {"start", "feedback_start", "feedback_every"}
                assert differ <= {"capacity", "per_session", "teacher"}, (arm, differ)
                if smoke:
                    agent = ppo if arm.startswith("prefppo") else sac
                    pref = agent.build_shaper(cfg).streams[2].term
                    assert pref.feedback_start < 400 and getattr(cfg, "reset_critic_at", 0) < 400
            assert ref["segment"] == (10 if smoke else 50) and ref["query"] == "disagreement"  # the preset's
            assert {a: built[a].shaper.streams["preference"]["capacity"] for a in ("pebble-100", "pebble-500")} == {
                "pebble-100": 100, "pebble-500": 500}  # fmt: skip


def test_the_envelope_experiment_scores_a_front_against_the_true_one(tmp_path):
    """Its tasks' overrides build valid configs; a run whose front is the true Deep Sea Treasure
    front scores a 0% gap and all 10 points, one missing its best treasure loses exactly that
    point's share; the report lists each task."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import envelope_dst

    from rl.agents import envelope
    from rl.rewards import multiobjective as mo

    for task, (overrides, _) in envelope_dst.TASKS.items():
        cfg = config_lib.build(
            envelope.Config, overrides={"env": task, **config_lib.parse_overrides(overrides)}
        )
        assert cfg.env == task
    task = "mo:deep-sea-treasure-v0"
    true = mo.known_front(task, 1.0)
    root = tmp_path / "envelope-paper"
    for seed, points in ((0, true), (1, true[:-1])):  # seed 1 misses (23.7, -19)
        run = root / f"envelope__mo-deep-sea-treasure-v0__s{seed}"
        run.mkdir(parents=True)
        mo.write_front(run / "front.json", points, np.full((len(points), 2), 0.5), {}, step=100,
                       ref_point=[0.0, -25.0], discounted=points.tolist())  # fmt: skip
    s0, s1 = (envelope_dst.score(root / f"envelope__mo-deep-sea-treasure-v0__s{s}", task) for s in (0, 1))
    assert s0["gap"] == pytest.approx(0.0) and s0["hits"] == 10 and s0["true_hv"] == pytest.approx(401.8)
    lost = mo.hypervolume(true, [0, -25]) - mo.hypervolume(true[:-1], [0, -25])
    assert s1["hits"] == 9 and s1["hv"] == pytest.approx(401.8 - lost)
    md = envelope_dst.write_report(root, root, list(envelope_dst.TASKS), "paper").read_text()
    assert "| mo:deep-sea-treasure-v0 | 2 | 100 |" in md and "10/9 of 10" in md
    # every fake weight is (0.5, 0.5): one linear optimum by the discounted utility, (14, -7)
    # (undiscounted it would be (16.1, -9))
    assert s0["linear_opt_points"] == 1 and s0["linear_opt_hv"] == pytest.approx(14 * (25 - 7))
    assert (
        "- mo:deep-sea-treasure-v0 seed 0: none" in md
        and "- mo:deep-sea-treasure-v0 seed 1: (23.7, -19)" in md
    )
    assert "| mo:minecart-v0 | 0 |" in md


def test_the_cmorl_experiment_tables_both_protocols(tmp_path):
    """Its arms' overrides build valid configs; the protocol tables aggregate each run's
    front.json per (arm, env) and the fronts' plot is written."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import cmorl as cmorl_experiment

    from rl import agents
    from rl.rewards import multiobjective as mo

    for name, arm in cmorl_experiment.ARMS.items():
        for task in cmorl_experiment.TASKS:
            for smoke in (False, True):  # the smoke keys are the agent's own
                extra = cmorl_experiment.SMOKE[task] + cmorl_experiment.SMOKE[(name, task)] if smoke else []
                overrides = config_lib.parse_overrides([*arm.overrides, *extra])
                cfg = config_lib.build(agents.get(arm.agent).Config, overrides={"env": task, **overrides})
                assert cfg.env_options["max_episode_steps"] == (16 if smoke else 500)  # C-MORL's episodes
                assert cfg.eval_gamma == 0.99 and cfg.eval_episodes == (1 if smoke else 5)
    root = tmp_path / "cmorl-paper"
    for arm, scale in (("cmorl", 2.0), ("mo_ppo_linear", 1.0)):
        for seed in (0, 1):
            run = root / f"{arm}__mo-mo-hopper-2obj-v5__s{seed}"
            run.mkdir(parents=True)
            points = scale * np.array([[10.0, 1.0], [5.0, 5.0], [1.0, 10.0]]) + seed
            protocols = {
                key: {**mo.front_metrics(points * f, [-100, -100], mo.simplex_grid(2, 0.01))}
                for key, f in (("cmorl", 1.0), ("morl_baselines", 3.0))
            }
            mo.write_front(run / "front.json", points, np.full((3, 2), 0.5), {}, env="mo:mo-hopper-2obj-v5",
                           ref_point=[-100, -100], protocols=protocols)  # fmt: skip
    (root / "report.md").write_text("# report\n")
    cmorl_experiment.append_protocols(root, root)
    md = (root / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| cmorl | mo:mo-hopper-2obj-v5 | 2 |")]
    assert len(rows) == 2  # one per protocol
    hv = np.mean(
        [
            mo.hypervolume(2.0 * np.array([[10.0, 1.0], [5.0, 5.0], [1.0, 10.0]]) + s, [-100, -100])
            for s in (0, 1)
        ]
    )
    assert f"{hv:,.4g}" in rows[0]
    assert (root / "fronts-mo-mo-hopper-2obj-v5.png").exists()


def test_the_ibarz_experiment_builds_its_arms_and_needs_its_demonstrator(tmp_path):
    """Each arm x game x budget is a valid PPO config (the demos arm with the paths the script
    adds); the preference arms train on the learned reward alone, from frames; phase 2 refuses
    to record before the demonstrator has finished. (The whole pipeline at smoke budget,
    ``python experiments/ibarz_atari.py --budget smoke``, takes minutes: not a test.)"""
    sys.path.insert(0, str(ROOT / "experiments"))
    import ibarz_atari

    from rl.agents import ppo

    for name, arm in ibarz_atari.ARMS.items():
        for task in ibarz_atari.TASKS:
            for smoke in (False, True):
                extra = ibarz_atari.SMOKE[task] + ibarz_atari.SMOKE.get((name, task), []) if smoke else []
                if name == "pref_demos":
                    extra += ["demos=d.npz", "shaper.streams.preference.demos=d.npz"]
                presets = [arm.overrides[1]] if arm.overrides[:1] == ("--config",) else []
                overrides = config_lib.parse_overrides([*arm.overrides[2 if presets else 0 :], *extra])
                cfg = config_lib.build(ppo.Config, presets, {"env": task, **overrides})
                stream = cfg.shaper.streams.get("preference", {})
                if name == "ppo":
                    assert cfg.shaper.terms == [] and cfg.bc_epochs == 0
                else:
                    assert cfg.shaper.extrinsic["weight"] == 0 and stream["inputs"] == "obs"
                    assert (cfg.bc_epochs > 0) == (name == "pref_demos") == (stream.get("demo_pairs", 0) > 0)
    with pytest.raises(FileNotFoundError, match="demonstrator"):
        ibarz_atari.record_demos(tmp_path, "atari:Pong", 2)


def test_vmap_seeds_groups_an_arms_seeds_into_one_rl_train_and_resumes_them_alone(tmp_path, monkeypatch):
    from rl import experiment as experiment_lib

    arm = experiment_lib.Arm("ppo", ("shaper.terms=[e3b]",))
    parts = [
        experiment_lib.job("x", tmp_path, "e3b", arm, "xminigrid:DoorKey", s, ["total_steps=64"])
        for s in (0, 3)
    ]
    group = experiment_lib.vmapped(parts)
    cmd = list(group.cmd)
    assert cmd[cmd.index("--seeds") + 1] == "0,3"
    assert "run_name=e3b__xminigrid-DoorKey__s{seed}" in cmd and not any(x.startswith("seed=") for x in cmd)
    assert [x for x in cmd if x.startswith(("shaper.", "total_steps"))] == [
        "shaper.terms=[e3b]",
        "total_steps=64",
    ]
    # the names the runs get are the ones each seed's own job expects
    assert [p.run_dir.name for p in parts] == ["e3b__xminigrid-DoorKey__s0", "e3b__xminigrid-DoorKey__s3"]
    ran = []
    monkeypatch.setattr(experiment_lib, "_run", lambda cmd, log: ran.append(list(cmd)) or 0)
    assert experiment_lib.run_one(group) == 0 and ran == [cmd]  # nothing started: together
    ran.clear()
    (parts[1].run_dir / "checkpoints" / "step_64").mkdir(parents=True)
    (parts[1].run_dir / "checkpoints" / "step_64" / "meta.json").write_text("{}")
    assert experiment_lib.run_one(group) == 0
    assert [c[c.index("rl.cli") + 1] for c in ran] == ["train", "resume"]  # seed 3 resumes alone
    assert "seed=0" in ran[0] and str(parts[1].run_dir) in ran[1]


def test_the_intrinsic_milestones_read_first_success_and_solved_off_the_metrics(tmp_path):
    """A window of one lucky episode is not "solved"; the summed env return weighs each
    window's per-step mean reward by its steps."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import intrinsic

    d = tmp_path / "e3b__xminigrid-DoorKey__s0"
    d.mkdir()
    (d / "config.yaml").write_text(
        "agent: ppo\nenv: xminigrid:DoorKey\nseed: 0\nrun_name: e3b__xminigrid-DoorKey__s0\n"
    )
    rows = [
        {"step": 1_000_000, "reward/extrinsic": 0.0, "ppo/entropy": 1.9},
        {"step": 2_000_000, "reward/extrinsic": 0.01, "train/episodes": 1, "train/episode_return": 0.9, "ppo/entropy": 1.5},
        {"step": 4_000_000, "reward/extrinsic": 0.02, "train/episodes": 30, "train/episode_return": 0.4, "ppo/entropy": 1.2},
        {"step": 5_000_000, "reward/extrinsic": 0.5, "train/episodes": 40, "train/episode_return": 0.8, "ppo/entropy": 0.7},
    ]  # fmt: skip
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = intrinsic.milestones(tmp_path)
    row = table.splitlines()[-1]
    # first success at 2M; solved at 5M (2M has 1 episode, 4M averages 0.4); 0.01 x 1M + 0.02 x 2M + 0.5 x 1M
    assert row == "| e3b__xminigrid-DoorKey__s0 | 5.00M | 2.00M | 5.00M | 550000.0 | 40, 0.80 | 0.70 |", table
    assert intrinsic.milestones(tmp_path, min_episodes=1).splitlines()[-1].split(" | ")[3] == "2.00M"


def test_pebbles_pair_accuracy_ranks_segments_inside_episodes():
    """A reward equal to the true one up to scale and shift orders every pair right (1.0), its
    negation every pair wrong; no window crosses an episode boundary."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import pebble

    rng = np.random.default_rng(0)
    true = rng.normal(size=600)
    ep = np.repeat([0, 1, 2], 200)
    assert pebble.pair_accuracy(3 * true + 1, true, ep, 50, 1000)["accuracy"] == 1.0
    assert pebble.pair_accuracy(-true, true, ep, 50, 1000)["accuracy"] == 0.0
    assert 0.3 < pebble.pair_accuracy(rng.normal(size=600), true, ep, 50, 1000)["accuracy"] < 0.7
    # episodes of 60 steps: a window of 50 starts at steps 0-10 of each, never across a boundary
    starts = pebble.window_starts(np.repeat(np.arange(10), 60), 50)
    assert starts.tolist() == [60 * e + k for e in range(10) for k in range(11)]
    with pytest.raises(ValueError, match="windows inside episodes"):
        pebble.pair_accuracy(true[:60], true[:60], np.arange(60), 50, 10)
