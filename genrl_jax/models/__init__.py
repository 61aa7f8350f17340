"""genrl_jax.models."""
