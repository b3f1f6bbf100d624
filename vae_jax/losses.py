"""Per-image loss terms of the VAE and AE, in nats."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


def bernoulli_nll(logits: jax.Array, images: jax.Array) -> jax.Array:
  """-log p(x | z) of pixels in [0, 1] under Bernoulli(sigmoid(logits)).

  Summed over all pixels: [B, ...] -> [B]. The cross-entropy
  -x log sigmoid(l) - (1 - x) log sigmoid(-l) equals softplus(l) - x l, which costs one
  exp and one log1p per pixel (optax's form computes log1p(exp(-|l|)) twice).
  softplus is computed stably, so extreme logits give finite values, never NaN.
  """
  per_pixel = jax.nn.softplus(logits) - images * logits
  return per_pixel.reshape(per_pixel.shape[0], -1).sum(axis=-1)


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, I)) in closed form: [B, D] -> [B]."""
  return 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar, axis=-1)


def loss_terms(logits: jax.Array, images: jax.Array, mean: jax.Array,
               logvar: Optional[jax.Array], beta: float) -> dict[str, jax.Array]:
  """Per-image terms [B]: loss = recon + beta * kl (kl = 0 for an AE)."""
  recon = bernoulli_nll(logits, images)
  kl = jnp.zeros_like(recon) if logvar is None else gaussian_kl(mean, logvar)
  return {"loss": recon + beta * kl, "recon": recon, "kl": kl}
