"""genrl_jax.rl."""
