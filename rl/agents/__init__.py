"""One file per agent. Each module defines ``Config``, ``train(cfg, run=None, resume=None)``
and ``evaluate(cfg, state, episodes, video_path=None)``; the CLI finds them here."""

import difflib
import importlib
from pathlib import Path

AGENTS = {
    "random": "rl.agents.random",
    "sac": "rl.agents.sac",
    "ppo": "rl.agents.ppo",
    "dreamer": "rl.agents.dreamer",
    "envelope": "rl.agents.envelope",
    "cmorl": "rl.agents.cmorl",
    "mo_ppo": "rl.agents.mo_ppo",
    "pgmorl": "rl.agents.pgmorl",
}


def get(name: str):
    if name not in AGENTS:
        close = difflib.get_close_matches(name, list(AGENTS), n=3)
        raise ValueError(
            f"unknown agent '{name}'; agents: {', '.join(AGENTS)}"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
        )
    return importlib.import_module(AGENTS[name])


def restore(run_dir):
    """A run's agent module, config, and its latest checkpoint's state and loop state:
    ``(module, cfg, state, loop, checkpoint_dir)`` (``rl eval`` and offline diagnostics)."""
    import jax

    from rl import checkpoint, envs
    from rl import config as config_lib

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    data = config_lib.load_yaml(run_dir / "config.yaml")
    module = get(data.pop("agent"))
    cfg = config_lib.build(module.Config, overrides=data)
    ckpt = checkpoint.latest(run_dir / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'}")
    spec = envs.make_spec(cfg.env, cfg.num_envs, cfg.seed, **cfg.env_options)  # the state's structure
    template = module.init(cfg, spec, jax.random.PRNGKey(cfg.seed)), module.init_loop(cfg, spec)
    state, loop = checkpoint.load(ckpt, *template)[:2]
    return module, cfg, state, loop, ckpt
