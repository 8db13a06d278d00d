"""One file per agent. Each module defines ``Config``, ``train(cfg, run=None, resume=None)``
and ``evaluate(cfg, state, episodes, video_path=None)``; the CLI finds them here."""

import difflib
import importlib

AGENTS = {
    "random": "rl.agents.random",
    "sac": "rl.agents.sac",
    "ppo": "rl.agents.ppo",
    "dreamer": "rl.agents.dreamer",
}


def get(name: str):
    if name not in AGENTS:
        close = difflib.get_close_matches(name, list(AGENTS), n=3)
        raise ValueError(
            f"unknown agent '{name}'; agents: {', '.join(AGENTS)}"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
        )
    return importlib.import_module(AGENTS[name])
