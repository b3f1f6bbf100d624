"""The Fréchet distance against closed forms, and its behaviour on awkward covariances."""

import numpy as np
import pytest

from vae_jax import frechet


def diagonal_closed_form(mu_a, var_a, mu_b, var_b):
  """Gaussians with diagonal (so commuting) covariances: no matrix square root needed."""
  return float(np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2))


def eigh_trace_sqrt(sigma_a, sigma_b):
  """Tr (S_a S_b)^{1/2} = sum sqrt(eig(S_a^{1/2} S_b S_a^{1/2})), by symmetric eigensolvers only."""
  w, v = np.linalg.eigh(sigma_a)
  root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  return float(np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ sigma_b @ root_a), 0, None)).sum())


def random_cov(rng, dim, rank=None):
  factor = rng.normal(size=(dim, rank or dim))
  return factor @ factor.T / dim


def test_gaussian_stats_are_float64_mean_and_unbiased_covariance():
  feats = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
  mu, sigma = frechet.gaussian_stats(feats)
  assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (3, 3)
  centred = feats.astype(np.float64) - feats.mean(axis=0, dtype=np.float64)
  np.testing.assert_allclose(mu, feats.astype(np.float64).mean(axis=0))
  np.testing.assert_allclose(sigma, centred.T @ centred / 49)


def test_diagonal_covariances_match_the_closed_form():
  rng = np.random.default_rng(1)
  mu_a, mu_b = rng.normal(size=8), rng.normal(size=8)
  var_a, var_b = rng.uniform(0.1, 3.0, 8), rng.uniform(0.1, 3.0, 8)
  got = frechet.frechet_distance_from_stats(mu_a, np.diag(var_a), mu_b, np.diag(var_b))
  assert got == pytest.approx(diagonal_closed_form(mu_a, var_a, mu_b, var_b), rel=1e-10)


def test_full_covariances_match_an_eigendecomposition():
  rng = np.random.default_rng(2)
  sigma_a, sigma_b = random_cov(rng, 20), random_cov(rng, 20)
  mu_a, mu_b = rng.normal(size=20), rng.normal(size=20)
  expected = (np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a) + np.trace(sigma_b)
              - 2 * eigh_trace_sqrt(sigma_a, sigma_b))
  assert frechet.frechet_distance_from_stats(mu_a, sigma_a, mu_b, sigma_b) == pytest.approx(
      expected, rel=1e-9)


def test_zero_for_identical_sets_and_symmetric():
  rng = np.random.default_rng(3)
  a, b = rng.normal(size=(300, 16)), rng.normal(1.0, 2.0, size=(200, 16))
  assert frechet.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
  assert frechet.frechet_distance(a, b) > 1.0
  assert frechet.frechet_distance(a, b) == pytest.approx(frechet.frechet_distance(b, a), rel=1e-9)


def test_a_mean_shift_adds_its_square():
  feats = np.random.default_rng(4).normal(size=(500, 10))
  shift = np.zeros(10)
  for size in (0.5, 1.0, 2.0, 4.0):
    shift[3] = size  # covariances are equal, so only ||shift||^2 remains
    assert frechet.frechet_distance(feats, feats + shift) == pytest.approx(size ** 2, rel=1e-6)


def test_samples_converge_to_the_closed_form():
  rng = np.random.default_rng(5)
  mu_a, mu_b = np.zeros(4), np.array([1.0, 0.0, -0.5, 0.0])
  var_a, var_b = np.array([1.0, 2.0, 0.5, 1.0]), np.array([1.0, 0.5, 0.5, 3.0])
  exact = diagonal_closed_form(mu_a, var_a, mu_b, var_b)
  errors = []
  for n in (1_000, 10_000, 100_000):
    a = mu_a + np.sqrt(var_a) * rng.normal(size=(n, 4))
    b = mu_b + np.sqrt(var_b) * rng.normal(size=(n, 4))
    errors.append(abs(frechet.frechet_distance(a, b) - exact))
  assert errors[-1] < 0.02 * exact
  assert errors[-1] < errors[0]


def test_singular_covariances_are_handled():
  # Fewer samples than features and dead (constant) features: both covariances are
  # singular, as with a classifier's ReLU features on a few hundred samples.
  rng = np.random.default_rng(6)
  a, b = rng.normal(size=(40, 64)), rng.normal(0.5, 2.0, size=(40, 64))
  a[:, :8] = b[:, :8] = 0.0
  mu_a, sigma_a = frechet.gaussian_stats(a)
  mu_b, sigma_b = frechet.gaussian_stats(b)
  expected = (np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a) + np.trace(sigma_b)
              - 2 * eigh_trace_sqrt(sigma_a, sigma_b))
  got = frechet.frechet_distance(a, b)
  assert np.isfinite(got) and got == pytest.approx(expected, rel=1e-6)
  # All-constant sets: zero covariances, the distance is the squared mean shift.
  assert frechet.frechet_distance(np.ones((5, 3)), np.zeros((7, 3))) == pytest.approx(3.0)


def test_bad_input_is_refused():
  with pytest.raises(ValueError, match="N >= 2"):
    frechet.gaussian_stats(np.zeros((1, 4)))
  with pytest.raises(ValueError, match="NaN"):
    frechet.gaussian_stats(np.full((3, 2), np.nan))
  with pytest.raises(ValueError, match="different feature sizes"):
    frechet.frechet_distance(np.zeros((3, 2)), np.zeros((3, 4)))


def test_matrices_that_are_not_covariances_are_refused():
  """-I times I has no real square root, and eps on the diagonals cannot give it one."""
  with pytest.raises(ValueError, match="no real square root even with 1e-06 added"):
    frechet.frechet_distance_from_stats(np.zeros(3), -np.eye(3), np.zeros(3), np.eye(3))


def test_a_failed_square_root_is_retried_with_eps_on_the_diagonals(monkeypatch):
  real_sqrtm, calls = frechet.scipy.linalg.sqrtm, []

  def sqrtm_failing_once(matrix):
    calls.append(matrix)
    return np.full_like(matrix, np.nan) if len(calls) == 1 else real_sqrtm(matrix)

  monkeypatch.setattr(frechet.scipy.linalg, "sqrtm", sqrtm_failing_once)
  rng = np.random.default_rng(7)
  sigma_a, sigma_b = random_cov(rng, 6), random_cov(rng, 6)
  got = frechet.frechet_distance_from_stats(np.zeros(6), sigma_a, np.ones(6), sigma_b, eps=1e-6)
  offset = 1e-6 * np.eye(6)
  np.testing.assert_allclose(calls[1], (sigma_a + offset) @ (sigma_b + offset))
  expected = 6 + np.trace(sigma_a) + np.trace(sigma_b) - 2 * eigh_trace_sqrt(sigma_a, sigma_b)
  assert got == pytest.approx(expected, rel=1e-5)


def test_an_inexact_square_root_is_retried(monkeypatch):
  """A finite, real root that does not square back to the product is not trusted."""
  real_sqrtm, calls = frechet.scipy.linalg.sqrtm, []

  def sqrtm_inexact_once(matrix):
    calls.append(matrix)
    return real_sqrtm(matrix) * (1.1 if len(calls) == 1 else 1.0)

  monkeypatch.setattr(frechet.scipy.linalg, "sqrtm", sqrtm_inexact_once)
  rng = np.random.default_rng(8)
  sigma_a, sigma_b = random_cov(rng, 6), random_cov(rng, 6)
  got = frechet.frechet_distance_from_stats(np.zeros(6), sigma_a, np.zeros(6), sigma_b, eps=1e-6)
  assert len(calls) == 2
  expected = np.trace(sigma_a) + np.trace(sigma_b) - 2 * eigh_trace_sqrt(sigma_a, sigma_b)
  assert got == pytest.approx(expected, rel=1e-5)
