"""The suite runs with implicit rank promotion as an error: a [B] + [B, k] that broadcasts by
accident (a scalar bonus on a vector reward) fails instead of computing the wrong thing. The
environment variable carries it into the subprocesses (`rl train`, experiment scripts) and
the notebook kernels the tests start.

One persistent XLA compilation cache per test run, shared by both xdist workers and the
subprocesses: many tests build the same programs (a SAC update on the same shapes, a
term's update) under new jit objects, and a cache hit replaces a compile of seconds by a
file read. The cache starts empty on every run (no state carried between runs) and is
removed when the run ends.

XLA's CPU backend compiles at LLVM optimization level 0 in the suite: the tests' programs are
small and compiled once or a few times each, so compile time dominates their run time, and
level 0 cuts it by about a quarter (a PPO run with four intrinsic terms: 43 s to 31 s). The
programs' HLO and numerics checks are the same; only the machine code is less optimized. The
few tests whose time goes into running, not compiling (the learning checks: thousands of
updates of one program) are marked ``optimized`` and run in a child pytest at XLA's default
level 2. Measured one after the other on the 2-core CPU while training runs shared it, level 0
against level 2: Envelope's DST check 121 s / 69 s, PPO on CartPole 80 / 55, the jitted PPO on
CartPole 89 / 72, Dreamer's bandit 154 / 137; SAC's Pendulum check gained nothing (84 / 88), nor
did MO-PPO's front or the frame reward model, so they stay at level 0."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import pytest

os.environ["JAX_NUMPY_RANK_PROMOTION"] = "raise"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
jax.config.update("jax_numpy_rank_promotion", "raise")

_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ  # the controller (or a run without xdist)
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="rewardlab-xla-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


_CHILD = "REWARDLAB_TEST_OPTIMIZED"  # set in the child that runs an ``optimized`` test


def pytest_configure(config):
    config.addinivalue_line("markers", "optimized: run in a child pytest at XLA's optimization level 2")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """An ``optimized`` test runs in a fresh pytest process whose XLA compiles at level 2;
    its failure (output included) fails the test here."""
    if pyfuncitem.get_closest_marker("optimized") is None or os.environ.get(_CHILD):
        return None
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_backend_optimization_level" not in f]
    env = {**os.environ, _CHILD: "1", "XLA_FLAGS": " ".join([*flags, "--xla_backend_optimization_level=2"])}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        pyfuncitem.nodeid,
    ]
    out = subprocess.run(cmd, cwd=pyfuncitem.config.rootpath, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail(
            f"{pyfuncitem.nodeid} at optimization level 2:\n{out.stdout[-6000:]}{out.stderr[-2000:]}",
            pytrace=False,
        )
    return True


def pytest_unconfigure(config):
    if _OWN_CACHE and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture
def sigkill_after_checkpoint():
    """A function ``(cmd, run_dir, settle=0.0, timeout=300)``: start ``cmd`` (an ``rl train``),
    SIGKILL it ``settle`` seconds after ``run_dir`` has its first checkpoint, and check one was
    written before the kill (the resume tests' start)."""

    def kill(cmd, run_dir, settle: float = 0.0, timeout: float = 300):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline and not list((run_dir / "checkpoints").glob("step_*/meta.json")):
            time.sleep(0.2)
        time.sleep(settle)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert list((run_dir / "checkpoints").glob("step_*/meta.json")), "no checkpoint before the kill"

    return kill
