"""The IWAE estimate of log p(x) against the exact likelihood of probabilistic PCA.

pPCA: p(z) = N(0, I_D), p(x|z) = N(W z + mu, sigma^2 I_P), so p(x) = N(mu, W W^T + sigma^2 I)
exactly (scipy, float64). W has orthogonal columns, so the exact posterior is a diagonal
Gaussian, which our q(z|x) can represent. The estimator runs in float32, as for the VAE.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from vae_jax import likelihood, losses, models

P, D, SIGMA = 6, 2, 0.5
# q(z|x) = the exact posterior with its mean moved by SHIFT posterior standard deviations
# and its variance multiplied by INFLATE, in every dimension. Then log w - log p(x) =
# log p(z|x) - log q(z|x) has the same distribution for every x, with
#   K = 1:  E[gap] = -KL(q || posterior) = -D/2 (INFLATE + SHIFT^2 - 1 - log INFLATE) = -3.15,
#   K -> oo: E[gap] ~ -rho / (2K), rho = Var_q(w) / p(x)^2 = 3.43 (closed form below),
# so the gaps at K = 10 and 100 (~ -0.24, -0.017) stand clear of the Monte-Carlo error
# of their mean over NUM_X images (standard errors ~ 0.008, 0.002: sqrt(rho / K / NUM_X)).
# INFLATE > 1/2 keeps Var_q(w) finite; INFLATE > 1 even keeps w bounded.
SHIFT, INFLATE = 1.5, 3.0
NUM_X = 8000
KS = (1, 10, 100, 1000, 5000)


def relative_weight_variance(shift: float, inflate: float, dims: int) -> float:
  """rho = E_q[(p/q)^2] - 1 for p = N(0, 1), q = N(shift, inflate) per dimension."""
  a = 1.0 - 1.0 / (2.0 * inflate)
  second_moment = (np.sqrt(inflate / (2.0 * a))
                   * np.exp(shift**2 / (2.0 * inflate) + (shift / inflate)**2 / (4.0 * a)))
  return second_moment**dims - 1.0


class PPCA:
  """A random pPCA model with its exact marginal and exact (diagonal) posterior."""

  def __init__(self, seed: int):
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(P, D)))      # orthonormal columns
    self.w = basis * np.array([2.0, 0.8])                  # W^T W = diag(4, 0.64)
    self.mu = rng.normal(size=P)
    # Exact posterior: cov = (I + W^T W / sigma^2)^-1, mean = cov W^T (x - mu) / sigma^2.
    self.post_var = 1.0 / (1.0 + np.diag(self.w.T @ self.w) / SIGMA**2)   # [D]
    self.post_gain = (self.post_var[:, None] * self.w.T) / SIGMA**2       # [D, P]
    self.data = (rng.normal(size=(NUM_X, D)) @ self.w.T + self.mu
                 + SIGMA * rng.normal(size=(NUM_X, P)))

  def exact_log_px(self, x: np.ndarray) -> np.ndarray:
    cov = self.w @ self.w.T + SIGMA**2 * np.eye(P)
    return stats.multivariate_normal(self.mu, cov).logpdf(np.asarray(x, np.float64))

  def encoder(self, shift: float = 0.0, inflate: float = 1.0):
    """q(z|x): the exact posterior, mean moved by shift std's and variance times inflate."""
    gain = jnp.asarray(self.post_gain, jnp.float32)
    mu = jnp.asarray(self.mu, jnp.float32)
    offset = jnp.asarray(shift * np.sqrt(self.post_var), jnp.float32)
    logvar = jnp.asarray(np.log(inflate * self.post_var), jnp.float32)

    def encode(x):
      return (x - mu) @ gain.T + offset, jnp.broadcast_to(logvar, (x.shape[0], D))
    return encode

  def log_likelihood(self, x, z):
    """log N(x; W z + mu, sigma^2 I): [B]."""
    w, mu = jnp.asarray(self.w, jnp.float32), jnp.asarray(self.mu, jnp.float32)
    return likelihood.log_normal(x, z @ w.T + mu, jnp.full_like(x, 2.0 * np.log(SIGMA)))


@pytest.fixture(scope="module")
def ppca() -> PPCA:
  return PPCA(seed=0)


def iwae(encode, log_likelihood, num_samples, chunk_size=250):
  return jax.jit(functools.partial(likelihood.iwae_bound, encode=encode,
                                   log_likelihood=log_likelihood, num_samples=num_samples,
                                   chunk_size=chunk_size))


@pytest.fixture(scope="module")
def gaps(ppca) -> dict[int, np.ndarray]:
  """estimate - exact log p(x) [NUM_X] for each K, with the imperfect q, one key per K."""
  x = jnp.asarray(ppca.data, jnp.float32)
  exact = ppca.exact_log_px(ppca.data)
  encode = ppca.encoder(SHIFT, INFLATE)
  return {k: np.asarray(iwae(encode, ppca.log_likelihood, k, chunk_size=64)(
      jax.random.PRNGKey(k), x), np.float64) - exact
          for k in KS}


@pytest.mark.parametrize("values", [[1000.0, 1000.0], [-1e30, 0.0], [-np.inf, -np.inf],
                                    [-np.inf, 0.0], [np.inf, 0.0], [88.0, 89.0, -3.0],
                                    [-2000.0, -2001.0], [1.0, np.nan, 2.0]])
def test_log_mean_exp_is_stable_and_matches_scipy(values):
  x = np.asarray(values, np.float64)
  with np.errstate(divide="ignore"):    # scipy warns on log(0) for the all -inf case
    expected = special.logsumexp(x) - np.log(x.size)
  got = float(likelihood.log_mean_exp(jnp.asarray(x, jnp.float32), axis=0))
  if np.isneginf(expected):
    assert got == -np.inf
  elif np.isnan(expected):  # a broken weight must show, not read as log p = -inf
    assert np.isnan(got)
  else:
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_log_mean_exp_divides_by_the_size_of_the_reduced_axis():
  x = np.random.default_rng(1).normal(0, 3, (3, 5))
  np.testing.assert_allclose(likelihood.log_mean_exp(jnp.asarray(x, jnp.float32), axis=0),
                             special.logsumexp(x, axis=0) - np.log(3), rtol=1e-6)


def test_log_mean_exp_reduces_the_given_axis_and_has_finite_gradients():
  x = np.random.default_rng(1).normal(0, 30, (3, 5))
  x[1, 2] = -np.inf
  got = likelihood.log_mean_exp(jnp.asarray(x, jnp.float32), axis=1)
  np.testing.assert_allclose(got, special.logsumexp(x, axis=1) - np.log(5), rtol=1e-6)
  # The gradient is the softmax: exactly 0 at the -inf entry, not NaN.
  grad = jax.grad(lambda v: likelihood.log_mean_exp(v, axis=1).sum())(jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(grad, special.softmax(x, axis=1), atol=1e-6)
  assert float(grad[1, 2]) == 0.0


def test_log_mean_exp_of_only_minus_inf_is_minus_inf_with_a_zero_gradient():
  x = jnp.asarray([[-np.inf, -np.inf], [0.0, 1.0]], jnp.float32)
  got = likelihood.log_mean_exp(x, axis=1)
  assert float(got[0]) == -np.inf
  grad = jax.grad(lambda v: likelihood.log_mean_exp(v, axis=1).sum())(x)
  np.testing.assert_array_equal(grad[0], [0.0, 0.0])
  np.testing.assert_allclose(grad[1], special.softmax([0.0, 1.0]), rtol=1e-6)


def test_log_normal_matches_scipy():
  rng = np.random.default_rng(2)
  z, mean, logvar = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
  expected = stats.norm.logpdf(z, mean, np.exp(0.5 * logvar)).sum(-1)
  got = likelihood.log_normal(*(jnp.asarray(a, jnp.float32) for a in (z, mean, logvar)))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  np.testing.assert_allclose(likelihood.log_standard_normal(jnp.asarray(z, jnp.float32)),
                             stats.norm.logpdf(z).sum(-1), rtol=1e-5)


@pytest.mark.parametrize("num_samples", [1, 10, 1000])
def test_exact_posterior_makes_every_weight_equal_log_px(ppca, num_samples):
  # With q = p(z|x), w = p(x, z) / p(z|x) = p(x) for every z: no Monte-Carlo error at all,
  # only float32 rounding of terms of a few nats.
  x = ppca.data[:200]
  got = iwae(ppca.encoder(), ppca.log_likelihood, num_samples, chunk_size=64)(
      jax.random.PRNGKey(3), jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(got, ppca.exact_log_px(x), rtol=0, atol=2e-5)


@pytest.mark.parametrize("k", KS)
def test_iwae_is_below_exact_log_px_on_average(gaps, k):
  # Burda et al., Theorem 1: E[estimate] <= log p(x). 4 standard errors of the mean over
  # NUM_X images leave room for the Monte-Carlo error, never for a bias upwards.
  g = gaps[k]
  assert g.mean() <= 4 * g.std() / np.sqrt(g.size), (k, g.mean())


def test_iwae_converges_to_exact_log_px(gaps):
  mean_gap = {k: gaps[k].mean() for k in KS}
  std_err = {k: gaps[k].std() / np.sqrt(NUM_X) for k in KS}
  # K = 1 is the ELBO: its expected gap is -KL(q || exact posterior), in closed form.
  kl = 0.5 * D * (INFLATE + SHIFT**2 - 1.0 - np.log(INFLATE))
  assert abs(mean_gap[1] + kl) < 4 * std_err[1], (mean_gap[1], -kl)
  # Burda et al., Theorem 1: E[estimate] rises with K. The steps 1 -> 10 -> 100 -> 5000
  # (expected ~ -3.15, -0.24, -0.017, -0.0003) each exceed 4 standard errors (>= 7 expected).
  for lo, hi in [(1, 10), (10, 100), (100, 5000)]:
    margin = 4 * np.hypot(std_err[lo], std_err[hi])
    assert mean_gap[lo] + margin < mean_gap[hi], (lo, hi, mean_gap)
  # At K = 5000 the bias ~ rho / 2K = 3.4e-4 nats and the standard error ~ 3e-4, so a
  # 2e-3 tolerance is > 5 standard errors above the bias; float32 adds ~1e-5.
  rho = relative_weight_variance(SHIFT, INFLATE, D)
  assert rho / (2 * 5000) < 5e-4 and std_err[5000] < 5e-4
  assert abs(mean_gap[5000]) < 2e-3, mean_gap


def test_one_sample_iwae_is_the_elbo(ppca):
  x = jnp.asarray(ppca.data[:500], jnp.float32)
  key = jax.random.PRNGKey(4)
  encode = ppca.encoder(SHIFT, INFLATE)
  bound = iwae(encode, ppca.log_likelihood, 1)(key, x)
  closures = dict(encode=encode, log_likelihood=ppca.log_likelihood)
  elbo = jax.jit(functools.partial(likelihood.elbo, **closures))(key, x)
  np.testing.assert_allclose(bound, elbo, rtol=1e-6, atol=1e-5)
  # The analytic-KL ELBO has the same expectation (over z) as the sampled one.
  analytic = jax.jit(functools.partial(likelihood.elbo_analytic_kl, **closures))(key, x)
  diff = np.asarray(analytic - elbo, np.float64)
  assert abs(diff.mean()) < 4 * diff.std() / np.sqrt(diff.size)


def test_elbo_stays_exact_for_a_nearly_collapsed_posterior():
  # sigma = exp(-15) ~ 3e-7 next to mean 5: float32 z - mean keeps no digits of
  # sigma * eps, so log q must come from eps. log p(x|z) = 0 leaves log p(z) - log q(z|x).
  mean, logvar = jnp.full((3, 2), 5.0), jnp.full((3, 2), -30.0)
  key = jax.random.PRNGKey(6)
  eps = np.asarray(likelihood.sample_noise(key, 0, (3, 2)), np.float64)
  z = 5.0 + np.exp(-15.0) * eps
  expected = (stats.norm.logpdf(z) - stats.norm.logpdf(eps) - 15.0).sum(-1)
  elbo = likelihood.elbo(key, jnp.zeros((3, 1)), lambda x: (mean, logvar),
                         lambda x, z: jnp.zeros(z.shape[0]))
  np.testing.assert_allclose(elbo, expected, rtol=1e-6)


def test_iwae_does_not_depend_on_chunk_size(ppca):
  # Sample k's noise depends on (key, k) only; 5000 = 714 * 7 + 2 also pads a last chunk.
  x = jnp.asarray(ppca.data[:100], jnp.float32)
  encode, key = ppca.encoder(SHIFT, INFLATE), jax.random.PRNGKey(5)
  small, large = (iwae(encode, ppca.log_likelihood, 5000, c)(key, x) for c in (7, 1000))
  np.testing.assert_allclose(small, large, rtol=0, atol=1e-5)


@functools.lru_cache(maxsize=None)
def vae_closures(arch: str):
  """The VAE with random parameters of the right shapes and fan-in scale, and its closures.

  The values do not matter to these tests, and numpy draws them in milliseconds where
  models.init_params, op by op on the CPU, takes seconds.
  """
  model = models.make_model("vae", arch, 2)
  shapes = jax.eval_shape(lambda key: models.init_params(model, key), jax.random.PRNGKey(0))
  rng = np.random.default_rng(10)
  params = jax.tree.map(lambda s: jnp.asarray(
      rng.normal(0.0, 1.0 / np.sqrt(np.prod(s.shape[:-1])), s.shape), jnp.float32), shapes)
  encode = lambda x: model.apply({"params": params}, x, method="encode")
  decode = lambda z: model.apply({"params": params}, z, method="decode")
  return model, params, encode, lambda x, z: -losses.bernoulli_nll(decode(z), x)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_vae_elbo_is_minus_the_training_loss_and_iwae_runs_in_chunks(arch):
  model, params, encode, log_likelihood = vae_closures(arch)
  images = jax.random.uniform(jax.random.PRNGKey(6), (4, 28, 28, 1))
  key = jax.random.PRNGKey(7)
  # The model samples z from its key directly; sample 0 of the estimators uses fold_in(key, 0).
  logits, mean, logvar = jax.jit(model.apply)({"params": params}, images,
                                              jax.random.fold_in(key, 0))
  loss = losses.loss_terms(logits, images, mean, logvar, beta=1.0)["loss"]
  elbo = jax.jit(functools.partial(likelihood.elbo_analytic_kl, encode=encode,
                                   log_likelihood=log_likelihood))(key, images)
  np.testing.assert_allclose(elbo, -loss, rtol=1e-5)
  # The decoder sees chunk_size * B codes at once (vmapped over the chunk), 8 = 2 * 3 + 2.
  bound = iwae(encode, log_likelihood, 8, chunk_size=3)(key, images)
  assert bound.shape == (4,) and np.all(np.isfinite(bound))


def test_iwae_memory_grows_with_the_chunk_not_with_k():
  # Compiled, not run: XLA's buffer assignment for K = 5000 samples of a batch of 100.
  _, _, encode, log_likelihood = vae_closures("mlp")
  images = jnp.zeros((100, 28, 28, 1))
  temp = {c: iwae(encode, log_likelihood, 5000, c).lower(jax.random.PRNGKey(0), images)
          .compile().memory_analysis().temp_size_in_bytes for c in (10, 100)}
  all_logits = 5000 * 100 * 784 * 4                     # 1.6 GB if K were not chunked
  assert temp[10] < all_logits / 100, temp
  assert temp[100] > 5 * temp[10], temp                 # ~ linear in the chunk


def test_kl_per_dimension_sums_to_gaussian_kl():
  rng = np.random.default_rng(8)
  mean = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
  logvar = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
  per_dim = likelihood.kl_per_dimension(mean, logvar)
  assert per_dim.shape == (5, 3) and np.all(np.asarray(per_dim) >= 0)
  np.testing.assert_allclose(per_dim.sum(-1), losses.gaussian_kl(mean, logvar), rtol=1e-6)


def test_active_units_counts_dimensions_whose_posterior_mean_varies():
  rng = np.random.default_rng(9)
  # Standard deviations over the data 1, 0.2, 0.05, 0 (a constant 3), 0.3: variances
  # 1, 0.04, 0.0025, 0, 0.09 against the threshold 0.01 -> 3 active.
  means = rng.normal(size=(10_000, 5)) * np.array([1.0, 0.2, 0.05, 0.0, 0.3])
  means[:, 3] = 3.0
  means = jnp.asarray(means, jnp.float32)
  assert int(likelihood.active_units(means)) == 3
  assert int(likelihood.active_units(means, threshold=0.05)) == 2
  assert int(jax.jit(likelihood.active_units)(means)) == 3
  np.testing.assert_allclose(likelihood.posterior_mean_variance(means),
                             np.var(np.asarray(means, np.float64), axis=0), rtol=1e-3, atol=1e-7)
