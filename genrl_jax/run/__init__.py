"""genrl_jax.run."""
