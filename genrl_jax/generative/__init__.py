"""genrl_jax.generative: training and evaluation of generative models (VAE)."""
