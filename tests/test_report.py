"""The arrays behind the figures: priors, scatter coordinates, manifold grid, interpolation."""

import dataclasses

import jax
import numpy as np
import optax
from scipy import stats

from vae_jax import models, report, steps
from vae_jax.config import Config
from vae_jax.input_pipeline import Split


def test_interpolation_pairs_join_two_classes_and_lines_end_at_the_codes():
  labels = np.array([3, 1, 0, 2, 5, 4, 1, 7, 6, 9, 8, 0])
  pairs = report.interpolation_pairs(labels)
  assert pairs.shape == (5, 2)
  np.testing.assert_array_equal(labels[pairs], [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]])
  a, b = np.random.default_rng(0).normal(size=(2, 5, 3))
  line = report.interpolate(a, b, steps=4)
  assert line.shape == (5, 4, 3)
  np.testing.assert_allclose(line[:, 0], a)
  np.testing.assert_allclose(line[:, -1], b)
  np.testing.assert_allclose(line[:, 1], a + (b - a) / 3)


def test_ae_prior_is_the_gaussian_of_the_codes():
  codes = np.random.default_rng(1).multivariate_normal([1.0, -2.0], [[2.0, 0.6], [0.6, 0.5]], 200_000)
  prior = report.latent_prior(models.make_model("ae", "mlp", 2), codes, 2)
  np.testing.assert_allclose(prior.mean, [1.0, -2.0], atol=0.02)
  np.testing.assert_allclose(prior.chol @ prior.chol.T, [[2.0, 0.6], [0.6, 0.5]], atol=0.03)
  vae_prior = report.latent_prior(models.make_model("vae", "mlp", 2), None, 2)
  np.testing.assert_array_equal(vae_prior.chol, np.eye(2))


def test_manifold_axes_are_the_central_gaussian_quantiles():
  prior = report.LatentPrior(np.zeros(2), np.eye(2), "N(0, I)")
  gx, gy = report.manifold_axes(prior)
  np.testing.assert_allclose(gx, stats.norm.ppf((np.arange(20) + 0.5) / 20))
  assert abs(gx[0] + 1.96) < 0.01 and abs(gx[-1] - 1.96) < 0.01
  np.testing.assert_allclose(gx, gy)


def test_scatter_uses_principal_components_above_two_dimensions():
  rng = np.random.default_rng(2)
  means = rng.normal(size=(1000, 5)) * np.array([5.0, 0.1, 3.0, 0.1, 0.1])
  coords, labels = report.scatter_coords(means)
  assert coords.shape == (1000, 2) and "principal component 1" in labels[0]
  # The first component carries the largest variance, the second the next.
  assert coords[:, 0].var() > coords[:, 1].var() > 5.0
  same, names = report.scatter_coords(means[:, :2])
  np.testing.assert_array_equal(same, means[:, :2])
  assert names == ("z[0]", "z[1]")


def test_dynamically_binarized_ae_prior_fits_the_codes_of_binary_images():
  model = models.make_model("ae", "mlp", 2)
  state = steps.init_state(model, optax.adam(1e-3), seed=0)
  grey = np.random.default_rng(3).integers(60, 200, (64, 28, 28, 1)).astype(np.uint8)
  train = Split(images=grey, labels=np.zeros(64, np.int32))
  config = Config(model="ae", latent_dim=2, batch_size=16, binarize="dynamic", seed=5)
  # The images binarized once with the run's seed, as binarize_fixed draws them.
  binary = np.random.default_rng(5).random(grey.shape, dtype=np.float32) < grey / 255.0
  encode = jax.jit(lambda x: model.apply({"params": state.params}, x, None, method="encode")[0])
  codes = np.asarray(encode(binary.astype(np.float32)))
  prior = report.model_prior(state, model, config, train)
  np.testing.assert_allclose(prior.mean, codes.mean(axis=0), rtol=1e-5, atol=1e-6)
  grey_prior = report.model_prior(state, model, dataclasses.replace(config, binarize="none"), train)
  assert np.abs(grey_prior.mean - prior.mean).max() > 1e-3


def test_interpolation_pairs_take_the_first_image_of_each_class():
  labels = np.array([1, 0, 1, 0, 3, 2, 3, 2, 5, 4, 5, 4, 7, 6, 7, 6, 9, 8, 9, 8])
  first = [int(np.flatnonzero(labels == c)[0]) for c in range(10)]
  np.testing.assert_array_equal(report.interpolation_pairs(labels),
                                [[first[2 * i], first[2 * i + 1]] for i in range(5)])


def test_scatter_components_are_of_the_centred_means():
  rng = np.random.default_rng(4)
  means = rng.normal(size=(2000, 4)) * np.array([3.0, 1.0, 0.5, 0.2]) + 100.0
  coords, _ = report.scatter_coords(means)
  _, vectors = np.linalg.eigh(np.cov(means.T))  # ascending eigenvalues
  expected = (means - means.mean(axis=0)) @ vectors[:, ::-1][:, :2]
  signs = np.sign(np.sum(coords * expected, axis=0))  # a component's sign is arbitrary
  np.testing.assert_allclose(coords * signs, expected, rtol=1e-4, atol=1e-3)


def test_codes_and_manifold_axes_follow_a_correlated_prior():
  cov = np.array([[4.0, 1.2], [1.2, 1.0]])
  prior = report.LatentPrior(np.array([1.0, -1.0]), np.linalg.cholesky(cov), "fitted")
  codes = report.draw_codes(prior, jax.random.PRNGKey(0), 200_000)
  np.testing.assert_allclose(codes.mean(axis=0), prior.mean, atol=0.02)
  np.testing.assert_allclose(np.cov(codes.T), cov, atol=0.04)
  gx, gy = report.manifold_axes(prior)
  q = stats.norm.ppf(report.manifold_quantiles())
  np.testing.assert_allclose(gx, 1.0 + 2.0 * q, rtol=1e-6)  # marginal sd sqrt(4)
  np.testing.assert_allclose(gy, -1.0 + 1.0 * q, rtol=1e-6)  # marginal sd sqrt(1)

