"""sora_jax: spacetime-patch VAE + diffusion transformer for text-to-video, in JAX/Flax."""

__version__ = "0.1.0"
