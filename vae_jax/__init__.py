"""vae_jax: variational and plain autoencoders for handwritten digits in JAX/Flax."""
