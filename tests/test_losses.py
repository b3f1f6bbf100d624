"""The loss terms against independent computations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from vae_jax import losses


def test_bernoulli_nll_matches_scipy_log_pmf_on_binary_pixels():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (4, 28, 28, 1))
  x = (rng.random((4, 28, 28, 1)) < 0.3).astype(np.float64)
  expected = -stats.bernoulli.logpmf(x, 1 / (1 + np.exp(-logits))).reshape(4, -1).sum(-1)
  got = losses.bernoulli_nll(jnp.asarray(logits, jnp.float32), jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_bernoulli_nll_is_cross_entropy_for_grey_pixels():
  rng = np.random.default_rng(1)
  logits = rng.normal(0, 2, (3, 784))
  x = rng.random((3, 784))
  p = 1 / (1 + np.exp(-logits))
  expected = -(x * np.log(p) + (1 - x) * np.log1p(-p)).sum(-1)
  got = losses.bernoulli_nll(jnp.asarray(logits, jnp.float32), jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("logit", [-1e4, -200.0, -104.0, 104.0, 200.0, 1e4])
def test_bernoulli_nll_is_finite_and_exact_at_extreme_logits(logit):
  logits = jnp.full((2, 4), logit, jnp.float32)
  x = jnp.array([[0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
  nll = losses.bernoulli_nll(logits, x)
  grads = jax.grad(lambda l: losses.bernoulli_nll(l, x).sum())(logits)
  assert np.all(np.isfinite(nll)) and np.all(np.isfinite(grads))
  # A confidently wrong pixel costs |logit| nats; a confidently right one ~0.
  wrong = np.where(logit > 0, 1.0 - np.asarray(x), np.asarray(x)).sum(-1)
  np.testing.assert_allclose(nll, wrong * abs(logit), rtol=1e-6)


def test_bernoulli_nll_gradient_is_sigmoid_minus_pixel():
  rng = np.random.default_rng(3)
  logits = rng.normal(0, 4, (3, 784)).astype(np.float32)
  x = rng.random((3, 784)).astype(np.float32)
  grads = jax.grad(lambda l: losses.bernoulli_nll(l, x).sum())(jnp.asarray(logits))
  np.testing.assert_allclose(grads, 1 / (1 + np.exp(-logits.astype(np.float64))) - x,
                             rtol=1e-5, atol=1e-6)


def test_bernoulli_nll_agrees_with_optax_cross_entropy():
  rng = np.random.default_rng(4)
  logits = jnp.asarray(rng.normal(0, 6, (5, 784)), jnp.float32)
  x = jnp.asarray(rng.random((5, 784)), jnp.float32)
  expected = optax.sigmoid_binary_cross_entropy(logits, x).sum(-1)
  np.testing.assert_allclose(losses.bernoulli_nll(logits, x), expected, rtol=1e-6)


def test_gaussian_kl_closed_form_matches_monte_carlo():
  rng = np.random.default_rng(2)
  mean, logvar = rng.normal(0, 1, (3, 4)), rng.normal(0, 0.7, (3, 4))
  std = np.exp(0.5 * logvar)
  z = mean + std * rng.standard_normal((400_000, 3, 4))
  log_ratio = stats.norm.logpdf(z, mean, std) - stats.norm.logpdf(z)
  monte_carlo = log_ratio.sum(-1).mean(0)
  standard_error = log_ratio.sum(-1).std(0) / np.sqrt(z.shape[0])
  closed = np.asarray(losses.gaussian_kl(jnp.asarray(mean), jnp.asarray(logvar)))
  assert np.all(np.abs(closed - monte_carlo) < 5 * standard_error)
  assert np.all(standard_error < 0.01)


def test_gaussian_kl_is_zero_only_at_the_prior():
  assert float(losses.gaussian_kl(jnp.zeros((1, 3)), jnp.zeros((1, 3)))[0]) == 0.0
  assert float(losses.gaussian_kl(jnp.full((1, 3), 0.1), jnp.zeros((1, 3)))[0]) > 0.0


def test_loss_terms_weights_kl_by_beta_and_ae_has_no_kl():
  rng = np.random.default_rng(3)
  logits = jnp.asarray(rng.normal(size=(2, 28, 28, 1)), jnp.float32)
  x = jnp.asarray(rng.random((2, 28, 28, 1)), jnp.float32)
  mean, logvar = jnp.ones((2, 2)), jnp.zeros((2, 2))
  terms = losses.loss_terms(logits, x, mean, logvar, beta=4.0)
  np.testing.assert_allclose(terms["kl"], [1.0, 1.0])
  np.testing.assert_allclose(terms["loss"], terms["recon"] + 4.0, rtol=1e-6)
  ae = losses.loss_terms(logits, x, mean, None, beta=4.0)
  np.testing.assert_array_equal(ae["kl"], 0.0)
  np.testing.assert_array_equal(ae["loss"], ae["recon"])
