"""The suite runs with implicit rank promotion as an error: a [B] + [B, k] that broadcasts by
accident (a scalar bonus on a vector reward) fails instead of computing the wrong thing. The
environment variable carries it into the subprocesses (`rl train`, experiment scripts) and
the notebook kernels the tests start.

One persistent XLA compilation cache per test run, shared by both xdist workers and the
subprocesses: many tests build the same programs (a SAC update on the same shapes, a
term's update) under new jit objects, and a cache hit replaces a compile of seconds by a
file read. The cache starts empty on every run (no state carried between runs) and is
removed when the run ends."""

import os
import shutil
import tempfile

import jax

os.environ["JAX_NUMPY_RANK_PROMOTION"] = "raise"
jax.config.update("jax_numpy_rank_promotion", "raise")

_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ  # the controller (or a run without xdist)
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="rewardlab-xla-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    if _OWN_CACHE and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
