"""The suite runs with implicit rank promotion as an error: a [B] + [B, k] that broadcasts by
accident (a scalar bonus on a vector reward) fails instead of computing the wrong thing. The
environment variable carries it into the subprocesses (`rl train`, experiment scripts) and
the notebook kernels the tests start."""

import os

import jax

os.environ["JAX_NUMPY_RANK_PROMOTION"] = "raise"
jax.config.update("jax_numpy_rank_promotion", "raise")
