"""Suite-wide JAX settings. Implicit rank promotion stays allowed for now: the networks and
running statistics still broadcast [B, D] against [D] in places (making the suite run with
``jax_numpy_rank_promotion="raise"`` is open work); the Shaper itself widens a scalar stream
to a vector reward explicitly."""
