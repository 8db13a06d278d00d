"""Time the official DreamerV3 (danijar/dreamerv3) train step on CPU: the other side of
``experiments/bench/dreamer.py --official``. It runs in DreamerV3's own virtualenv (JAX 0.4.33),
never in this project's, so it imports nothing of ``rl``.

Setup (once; Python 3.11, CPU JAX instead of the repository's CUDA pin):
    git clone https://github.com/danijar/dreamerv3 DV3_SRC      # tested at e3f02248
    python3.11 -m venv DV3_VENV
    DV3_VENV/bin/pip install "jax[cpu]==0.4.33" "numpy<2" "elements>=3.19.1" "ninjax>=3.5.1" \
        "portal>=3.5.0" granular scope chex einops jaxtyping optax tqdm ruamel.yaml
Run:  DV3_VENV/bin/python experiments/bench/dreamerv3_official.py --src DV3_SRC [--steps 5]

Builds the config the way dreamerv3/main.py does (defaults + dmc_proprio, which
merges size1m), builds dreamerv3.Agent for a 5-d vector observation and a 1-d
continuous action in [-1, 1], feeds random batches shaped like the replay
stream's (B, T + replay_context), compiles with one agent.train call and times
the next --steps calls. Prints one `RESULT {...}` JSON line.

Config keys set on top of defaults + dmc_proprio (size1m):
  logdir=/tmp/dv3_logdir, batch_size=16, batch_length=64 (the defaults anyway),
  jax.platform=cpu, jax.prealloc=False, jax.compute_dtype=<--precision>,
  and, passed only to the Agent's jax options (not keys of configs.yaml):
  precompile=False (no ahead-of-time compile of train AND report in __init__;
  the first agent.train call compiles instead), profiler=False (the trace it
  would start at update 100 is never reached here anyway).
"""

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

SRC = None  # the repository checkout (--src)


def make_config(precision):
    import elements
    import ruamel.yaml as yaml

    configs = yaml.YAML(typ="safe").load((SRC / "dreamerv3" / "configs.yaml").read_text())
    config = elements.Config(configs["defaults"])
    for name in ["dmc_proprio"]:  # its `<<: *size1m` merges the size1m block
        config = config.update(configs[name])
    return config.update(
        {
            "logdir": str(pathlib.Path(tempfile.gettempdir()) / "dv3_logdir"),
            "batch_size": 16,
            "batch_length": 64,
            "jax.platform": "cpu",
            "jax.prealloc": False,
            "jax.compute_dtype": precision,
        }
    )


def random_batch(agent, rng, B, T):
    """A batch like embodied.streams.Consec(prefix=replay_context) yields."""
    data = {}
    for key, space in agent.spaces.items():
        shape = (B, T, *space.shape)
        if space.dtype == bool:
            data[key] = np.zeros(shape, bool)
        elif np.issubdtype(space.dtype, np.floating):
            data[key] = rng.standard_normal(shape).astype(space.dtype)
        else:
            data[key] = rng.integers(0, 255, shape).astype(space.dtype)
    data["is_first"][:, 0] = True
    data["action"] = rng.uniform(-1, 1, data["action"].shape).astype(np.float32)
    data["consec"][:] = 0  # consec_train=1: every chunk is chunk 0
    if "dyn/stoch" in data:  # replay-context entries: one-hot latents
        stoch = data["dyn/stoch"]
        idx = rng.integers(0, stoch.shape[-1], stoch.shape[:-1])
        data["dyn/stoch"] = np.eye(stoch.shape[-1], dtype=np.float32)[idx]
    return data


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", required=True, help="a checkout of danijar/dreamerv3")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    global SRC
    SRC = pathlib.Path(args.src)
    if not (SRC / "dreamerv3" / "configs.yaml").exists():
        sys.exit(f"{SRC} is not a dreamerv3 checkout (no dreamerv3/configs.yaml)")
    sys.path.insert(0, str(SRC))
    import elements

    config = make_config(args.precision)
    import jax
    from dreamerv3.agent import Agent
    from embodied.jax import internal

    obs_space = {
        "vector": elements.Space(np.float32, (5,)),
        "reward": elements.Space(np.float32),
        "is_first": elements.Space(bool),
        "is_last": elements.Space(bool),
        "is_terminal": elements.Space(bool),
    }
    act_space = {"action": elements.Space(np.float32, (1,), -1.0, 1.0)}
    jaxcfg = dict(config.jax, precompile=False, profiler=False)
    agent_config = elements.Config(
        **config.agent,
        logdir=config.logdir,
        seed=config.seed,
        jax=jaxcfg,
        batch_size=config.batch_size,
        batch_length=config.batch_length,
        replay_context=config.replay_context,
        report_length=config.report_length,
        replica=config.replica,
        replicas=config.replicas,
    )

    t0 = time.perf_counter()
    agent = Agent(obs_space, act_space, agent_config)
    build_seconds = time.perf_counter() - t0
    # agent.params also holds optimizer moments, the slow critic and norm stats;
    # the trained modules are those the optimizer counts (dyn enc dec rew con pol val).
    trained = ("dyn/", "enc/", "dec/", "rew/", "con/", "pol/", "val/")
    nparams = sum(int(v.size) for k, v in agent.params.items() if k.startswith(trained))

    B, T = config.batch_size, config.batch_length + config.replay_context
    rng = np.random.default_rng(0)
    batches = []
    for i in range(args.steps + 1):  # host->device outside the timed region
        data = internal.device_put(random_batch(agent, rng, B, T), agent.train_sharded)
        data["seed"] = agent._seeds(i, agent.train_mirrored)
        batches.append(data)

    carry = agent.init_train(B)

    def step(carry, data):
        carry, outs, mets = agent.train(carry, data)
        jax.block_until_ready((carry, agent.params))
        return carry, mets

    t0 = time.perf_counter()
    carry, _ = step(carry, batches[0])
    compile_seconds = time.perf_counter() - t0

    times = []
    mets = {}
    for data in batches[1:]:
        t0 = time.perf_counter()
        carry, mets = step(carry, data)
        times.append(time.perf_counter() - t0)
    loss = {k: float(v) for k, v in mets.items() if np.size(v) == 1 and "loss" in k}
    print("losses of the last fetched step:", loss, file=sys.stderr)

    print(
        "RESULT "
        + json.dumps(
            {
                "seconds_per_update": float(np.mean(times)),
                "seconds_per_update_median": float(np.median(times)),
                "update_times": [round(t, 4) for t in times],
                "compile_seconds": compile_seconds,  # first agent.train call
                "build_seconds": build_seconds,  # Agent(...): param init (traced)
                "precision": args.precision,
                "jax": jax.__version__,
                "backend": jax.default_backend(),
                "batch": [config.batch_size, config.batch_length],
                "replay_context": config.replay_context,
                "params": nparams,
                "config": "defaults+dmc_proprio(size1m)",
            }
        )
    )


if __name__ == "__main__":
    main()
