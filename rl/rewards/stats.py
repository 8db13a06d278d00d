"""Running mean and variance (Chan et al. 1979 parallel merge), on device or on the host."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class RunningStats(NamedTuple):
    """Running mean and variance over every value seen (Chan et al. 1979 parallel merge).

    Works on device arrays (inside jit) and on host numpy arrays (``host()``: float64, for a
    per-step loop on the host, where each jax.numpy call would cost a dispatch)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def zeros(cls, shape=()) -> RunningStats:
        return cls(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32), jnp.float32(1e-4))

    def host(self) -> RunningStats:
        return RunningStats(*(np.asarray(a, np.float64) for a in jax.device_get(self)))

    def merge(self, x, axes) -> RunningStats:
        """Fold the values of ``x`` reduced over ``axes`` into the statistics."""
        xp = np if isinstance(self.mean, np.ndarray) and isinstance(x, np.ndarray) else jnp
        n = 1
        for a in axes:
            n = n * x.shape[a]
        b_mean, b_var = xp.mean(x, axis=axes), xp.var(x, axis=axes)
        total = self.count + n
        delta = b_mean - self.mean
        mean = self.mean + delta * n / total
        m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / total
        return RunningStats(mean, m2 / total, total)

    def normalize(self, x, eps: float = 1e-8):
        """(x - mean) / std, the statistics broadcast over ``x``'s leading axes."""
        if isinstance(x, np.ndarray) and isinstance(self.mean, np.ndarray):  # host loop: plain numpy
            return (x - self.mean) / (self.var + eps) ** 0.5
        mean, var = jnp.broadcast_to(self.mean, x.shape), jnp.broadcast_to(self.var, x.shape)
        return (x - mean) / (var + eps) ** 0.5

    def scale(self, x, eps: float = 1e-8):
        """x / std (the sign and zero kept), broadcast over ``x``'s leading axes."""
        return x / jnp.sqrt(jnp.broadcast_to(self.var, x.shape) + eps)

    def merge_masked(self, x, mask) -> RunningStats:
        """Fold the values of ``x`` where ``mask`` ([lead], the leading axes of ``x``) is true;
        trailing axes (objectives) keep their own statistics. An all-false mask changes nothing."""
        m = jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x.shape)
        axes = tuple(range(mask.ndim))
        n = jnp.sum(mask.astype(jnp.float32))
        safe = jnp.maximum(n, 1.0)
        b_mean = jnp.sum(jnp.where(m, x, 0.0), axes) / safe
        b_var = jnp.sum(jnp.where(m, (x - jnp.broadcast_to(b_mean, x.shape)) ** 2, 0.0), axes) / safe
        total = self.count + n
        delta = b_mean - self.mean
        mean = self.mean + delta * n / total
        m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / total
        return RunningStats(mean, m2 / total, total)
