"""genrl_jax: a JAX functional research codebase for generative models and RL."""

__version__ = "0.1.0"
