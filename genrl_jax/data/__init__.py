"""genrl_jax.data."""
