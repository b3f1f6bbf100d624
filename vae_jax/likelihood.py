"""Importance-sampled log p(x) (the IWAE bound), the ELBO and latent-usage statistics, in nats."""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from vae_jax import losses

# encode(x [B, ...]) -> (mean, logvar) [B, D] of the diagonal Gaussian q(z|x).
Encode = Callable[[jax.Array], tuple[jax.Array, jax.Array]]
# log_likelihood(x [B, ...], z [B, D]) -> log p(x|z) [B], e.g. -bernoulli_nll(decode(z), x).
LogLikelihood = Callable[[jax.Array, jax.Array], jax.Array]

LOG_2PI = math.log(2.0 * math.pi)

# Burda et al. (2015) call latent dimension d active if Var_x(E_q[z_d | x]) > 0.01: the
# posterior mean moves with the data. An inactive unit's posterior is (nearly) the prior.
ACTIVE_UNIT_THRESHOLD = 1e-2


def _finite_max(x: jax.Array, axis: int) -> jax.Array:
  """Max over axis (keepdims), 0 where it is not finite, and constant for autodiff.

  Shifting by an infinite max would give inf - inf = NaN; for a finite max the shift is
  exact, and stop_gradient keeps the (shift-free) softmax gradient.
  """
  m = jnp.max(x, axis=axis, keepdims=True)
  return jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))


def log_sum_exp(x: jax.Array, axis: int = 0) -> jax.Array:
  """log sum exp(x) over axis, max-shifted: exact for huge entries; -inf if all are -inf
  (with a zero gradient there, not 0 * inf = NaN); NaN if any entry is NaN."""
  m = _finite_max(x, axis)
  total = jnp.sum(jnp.exp(x - m), axis=axis)
  empty = total == 0  # only -inf entries (a NaN total is not, and stays NaN)
  return jnp.squeeze(m, axis) + jnp.where(empty, -jnp.inf, jnp.log(jnp.where(empty, 1.0, total)))


def log_mean_exp(x: jax.Array, axis: int = 0) -> jax.Array:
  """log mean exp(x) over axis = log_sum_exp(x) - log(n); -inf if all entries are -inf,
  NaN if any is NaN."""
  return log_sum_exp(x, axis) - math.log(x.shape[axis])


def log_normal(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """log N(z; mean, diag(exp(logvar))), summed over the last axis: [..., D] -> [...]."""
  return -0.5 * jnp.sum(LOG_2PI + logvar + jnp.square(z - mean) * jnp.exp(-logvar), axis=-1)


def log_standard_normal(z: jax.Array) -> jax.Array:
  """log N(z; 0, I), summed over the last axis: [..., D] -> [...]."""
  return -0.5 * jnp.sum(LOG_2PI + jnp.square(z), axis=-1)


def sample_noise(key: jax.Array, k: jax.Array, shape: tuple[int, ...],
                 dtype=jnp.float32) -> jax.Array:
  """eps ~ N(0, I) [B, D] of importance sample k: a function of (key, k, shape) only.

  So an estimate does not depend on how its samples are chunked. It does depend on the
  batch shape: a caller evaluating a split folds the batch index into key (as
  evaluate.evaluate_run does) and gets the same numbers for the same batching.
  """
  return jax.random.normal(jax.random.fold_in(key, k), shape, dtype)


def _log_weights(x: jax.Array, mean: jax.Array, logvar: jax.Array, eps: jax.Array,
                 log_likelihood: LogLikelihood) -> jax.Array:
  """log w = log p(x|z) + log p(z) - log q(z|x) at z = mean + sigma * eps: [B]."""
  z = mean + jnp.exp(0.5 * logvar) * eps
  # log q from eps, not from (z - mean) / sigma: with sigma ~ 1e-7 (logvar near its -30
  # clip) float32 z - mean keeps no digits of sigma * eps, and log q would be garbage.
  log_q = -0.5 * jnp.sum(LOG_2PI + logvar + jnp.square(eps), axis=-1)
  return log_likelihood(x, z) + log_standard_normal(z) - log_q


def iwae_bound(key: jax.Array, x: jax.Array, encode: Encode, log_likelihood: LogLikelihood,
               num_samples: int, chunk_size: int = 100) -> jax.Array:
  """The IWAE bound log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x): [B], in nats.

  A lower bound on log p(x) in expectation, rising to it as K = num_samples grows; K = 1
  is the ELBO. The K samples go chunk_size at a time through one lax.map, each chunk
  reduced to its log-sum-exp [B], so memory is O(chunk_size * B * pixels), never
  O(K * B * pixels): log_likelihood sees chunk_size * B codes at once (vmapped over the
  chunk). Sample k's noise is sample_noise(key, k, [B, D]), so the result is the same
  for any chunk_size up to float rounding. num_samples and chunk_size set shapes, so
  they must be Python ints (static under jit), as must the closures encode and
  log_likelihood.
  """
  if num_samples < 1 or chunk_size < 1:
    raise ValueError(f"num_samples={num_samples} and chunk_size={chunk_size} must be >= 1")
  mean, logvar = encode(x)
  chunk_size = min(chunk_size, num_samples)
  num_chunks = -(-num_samples // chunk_size)
  # The last chunk is padded with samples k >= K; their weights are masked to -inf.
  sample_ids = jnp.arange(num_chunks * chunk_size).reshape(num_chunks, chunk_size)

  def chunk_log_sum_exp(ids: jax.Array) -> jax.Array:
    eps = jax.vmap(lambda k: sample_noise(key, k, mean.shape, mean.dtype))(ids)
    log_w = jax.vmap(lambda e: _log_weights(x, mean, logvar, e, log_likelihood))(eps)
    log_w = jnp.where((ids < num_samples)[:, None], log_w, -jnp.inf)
    return log_sum_exp(log_w, axis=0)

  per_chunk = jax.lax.map(chunk_log_sum_exp, sample_ids)   # [num_chunks, B]
  return log_sum_exp(per_chunk, axis=0) - math.log(num_samples)


def elbo(key: jax.Array, x: jax.Array, encode: Encode,
         log_likelihood: LogLikelihood) -> jax.Array:
  """Single-sample ELBO log p(x|z) + log p(z) - log q(z|x), z ~ q(z|x): [B], in nats.

  Uses sample 0's noise, so it equals iwae_bound(key, ..., num_samples=1).
  """
  mean, logvar = encode(x)
  return _log_weights(x, mean, logvar, sample_noise(key, 0, mean.shape, mean.dtype),
                      log_likelihood)


def elbo_analytic_kl(key: jax.Array, x: jax.Array, encode: Encode,
                     log_likelihood: LogLikelihood) -> jax.Array:
  """ELBO with the KL in closed form: log p(x|z) - KL(q(z|x) || p(z)): [B], in nats.

  Same expectation as elbo, lower variance; with the same noise it is minus the
  training loss at beta = 1.
  """
  mean, logvar = encode(x)
  z = mean + jnp.exp(0.5 * logvar) * sample_noise(key, 0, mean.shape, mean.dtype)
  return log_likelihood(x, z) - losses.gaussian_kl(mean, logvar)


def kl_per_dimension(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(q(z_d|x) || N(0, 1)) per latent dimension in closed form: [B, D] -> [B, D].

  Sums over D to losses.gaussian_kl. Averaged over a split it shows which dimensions
  carry information; one whose mean KL is ~0 (say < 0.01 nats) is collapsed to the prior.
  """
  return 0.5 * (jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar)


def posterior_mean_variance(means: jax.Array) -> jax.Array:
  """Var over the data of the posterior mean E_q[z_d | x], per dimension: [N, D] -> [D]."""
  return jnp.var(means, axis=0)


def active_units(means: jax.Array, threshold: float = ACTIVE_UNIT_THRESHOLD) -> jax.Array:
  """How many dimensions have Var_x(E_q[z_d | x]) > threshold (Burda et al.): int32 [].

  means: the posterior means [N, D] of a whole split (e.g. the 10,000 test images).
  """
  return jnp.sum(posterior_mean_variance(means) > threshold).astype(jnp.int32)
