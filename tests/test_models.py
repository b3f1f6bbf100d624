"""Shapes, parameter counts and gradients of the models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import config as config_lib
from vae_jax import losses, models


def dense(n_in, n_out):
  return n_in * n_out + n_out


def conv(n_in, n_out, k=3):
  return k * k * n_in * n_out + n_out


def expected_param_count(model, arch, d):
  heads = 1 if model == "ae" else 2
  y = 10 if model == "cvae" else 0  # the one-hot label enters encoder and decoder
  if arch == "mlp":
    encoder = dense(784 + y, 512) + dense(512, 256) + heads * dense(256, d)
    decoder = dense(d + y, 256) + dense(256, 512) + dense(512, 784)
  else:
    encoder = conv(1 + y, 32) + conv(32, 64) + dense(7 * 7 * 64, 16) + heads * dense(16, d)
    decoder = dense(d + y, 7 * 7 * 64) + conv(64, 64) + conv(64, 32) + conv(32, 1)
  return encoder + decoder


@pytest.mark.parametrize("model_name", ["vae", "cvae", "ae"])
@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("latent_dim", [2, 5])
def test_shapes_and_parameter_counts(model_name, arch, latent_dim):
  model = models.make_model(model_name, arch, latent_dim)
  params = models.init_params(model, jax.random.PRNGKey(0))
  count = sum(p.size for p in jax.tree.leaves(params))
  assert count == expected_param_count(model_name, arch, latent_dim)
  images = jax.random.uniform(jax.random.PRNGKey(1), (3, 28, 28, 1))
  labels = jnp.array([0, 4, 9])
  logits, mean, logvar = model.apply({"params": params}, images, jax.random.PRNGKey(2), labels)
  assert logits.shape == (3, 28, 28, 1)
  assert mean.shape == (3, latent_dim)
  assert (logvar is None) == (model_name == "ae")
  if logvar is not None:
    assert logvar.shape == (3, latent_dim)
  z = jnp.ones((4, latent_dim))
  assert model.apply({"params": params}, z, labels[:1].repeat(4),
                     method="decode").shape == (4, 28, 28, 1)


def test_mlp_vae_has_the_documented_size():
  params = models.init_params(models.make_model("vae", "mlp", 2), jax.random.PRNGKey(0))
  assert sum(p.size for p in jax.tree.leaves(params)) == 1_068_820


def test_the_mlp_vae_is_the_documented_network(latent_dim=2):
  """Encoder 784 -> 512 -> 256 (ReLU) -> mean, logvar; decoder z -> 256 -> 512 (ReLU) ->
  784 logits (no activation), recomputed in float64 numpy from the parameters."""
  model = models.make_model("vae", "mlp", latent_dim)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64),
                   models.init_params(model, jax.random.PRNGKey(0)))
  relu = lambda a: np.maximum(a, 0.0)  # noqa: E731
  def layer(q, a):
    return a @ q["kernel"] + q["bias"]
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(3, 28, 28, 1)).astype(np.float32)
  z = rng.normal(size=(3, latent_dim)).astype(np.float32)
  trunk, net = p["encoder"]["trunk"], p["decoder"]["net"]
  h = relu(layer(trunk["Dense_1"], relu(layer(trunk["Dense_0"], x.reshape(3, -1)))))
  logits = layer(net["Dense_2"], relu(layer(net["Dense_1"], relu(layer(net["Dense_0"], z)))))
  mean, logvar = model.apply({"params": p}, x, method="encode")
  np.testing.assert_allclose(mean, layer(p["encoder"]["mean"], h), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(logvar, layer(p["encoder"]["logvar"], h), rtol=1e-4, atol=1e-5)
  decoded = model.apply({"params": p}, z, method="decode")
  np.testing.assert_allclose(decoded, logits.reshape(3, 28, 28, 1), rtol=1e-4, atol=1e-5)
  assert logits.min() < 0  # logits: a ReLU on them would show


def test_reparameterize_is_mean_plus_scaled_noise_and_differentiable():
  key = jax.random.PRNGKey(3)
  mean, logvar = jnp.array([[0.5, -1.0]]), jnp.array([[0.2, -0.4]])
  eps = jax.random.normal(key, mean.shape)
  z = models.reparameterize(key, mean, logvar)
  np.testing.assert_allclose(z, mean + jnp.exp(0.5 * logvar) * eps, rtol=1e-6)
  d_mean = jax.grad(lambda m: models.reparameterize(key, m, logvar).sum())(mean)
  d_logvar = jax.grad(lambda lv: models.reparameterize(key, mean, lv).sum())(logvar)
  np.testing.assert_allclose(d_mean, 1.0)
  np.testing.assert_allclose(d_logvar, 0.5 * jnp.exp(0.5 * logvar) * eps, rtol=1e-6)


def test_gradients_reach_the_encoder_through_the_sample():
  model = models.make_model("vae", "mlp", 2)
  params = models.init_params(model, jax.random.PRNGKey(0))
  images = jax.random.uniform(jax.random.PRNGKey(1), (8, 28, 28, 1))

  def recon_only(p):  # no KL: the encoder is reached only through z
    logits, _, _ = model.apply({"params": p}, images, jax.random.PRNGKey(2))
    return losses.bernoulli_nll(logits, images).mean()

  grads = jax.grad(recon_only)(params)["encoder"]
  for head in ("mean", "logvar"):
    assert float(jnp.abs(grads[head]["kernel"]).sum()) > 0.0


def test_logvar_is_clipped_so_the_kl_stays_finite():
  model = models.make_model("vae", "mlp", 2)
  params = models.init_params(model, jax.random.PRNGKey(0))
  params = jax.tree.map(lambda p: p, params)
  params["encoder"]["logvar"]["bias"] = jnp.array([1e4, -1e4])
  mean, logvar = model.apply({"params": params}, jnp.ones((1, 28, 28, 1)), method="encode")
  np.testing.assert_allclose(logvar[0], [models.LOGVAR_MAX, models.LOGVAR_MIN])
  assert np.isfinite(losses.gaussian_kl(mean, logvar)).all()


def test_conv_model_is_the_same_function_on_every_backend(monkeypatch):
  """The CPU layers (PatchConv, MatmulConvTranspose) and flax's own (used on GPU/TPU)
  share the parameter tree and give the same outputs: checkpoints move between backends."""
  model = models.make_model("vae", "conv", 2)
  images = jax.random.uniform(jax.random.PRNGKey(1), (5, 28, 28, 1))
  outputs, trees = [], []
  for cpu in (True, False):
    monkeypatch.setattr(models, "on_cpu", lambda cpu=cpu: cpu)
    params = models.init_params(model, jax.random.PRNGKey(0))
    trees.append(jax.tree.map(np.asarray, params))
    outputs.append(model.apply({"params": trees[0]}, images, jax.random.PRNGKey(2)))
  assert jax.tree.structure(trees[0]) == jax.tree.structure(trees[1])
  for a, b in zip(jax.tree.leaves(trees[0]), jax.tree.leaves(trees[1])):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(outputs[0], outputs[1]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_label_condition_is_one_hot_and_passes_blends_through():
  np.testing.assert_array_equal(models.label_condition(jnp.array([2, 0])),
                                np.eye(10, dtype=np.float32)[[2, 0]])
  blend = jnp.full((1, 10), 0.1)
  np.testing.assert_array_equal(models.label_condition(blend), blend)
  images = jnp.zeros((2, 28, 28, 1))
  planes = models.label_channels(images, models.label_condition(jnp.array([3, 7])))
  assert planes.shape == (2, 28, 28, 11)
  np.testing.assert_array_equal(planes[0, 5, 9, 1:], np.eye(10)[3])   # every pixel holds it
  np.testing.assert_array_equal(planes[1, 27, 0, 1:], np.eye(10)[7])


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_cvae_encoder_and_decoder_read_the_label(arch):
  model = models.make_model("cvae", arch, 2)
  params = models.init_params(model, jax.random.PRNGKey(0))
  images = jax.random.uniform(jax.random.PRNGKey(1), (2, 28, 28, 1))
  twice = jnp.concatenate([images[:1], images[:1]])
  mean, _ = model.apply({"params": params}, twice, jnp.array([3, 5]), method="encode")
  assert not np.allclose(mean[0], mean[1])          # same image, other label: other posterior
  z = jnp.zeros((2, 2))
  logits = model.apply({"params": params}, z, jnp.array([3, 5]), method="decode")
  assert not np.allclose(logits[0], logits[1])      # same z, other label: other image
  # An integer label and its one-hot are the same input.
  np.testing.assert_allclose(
      logits, model.apply({"params": params}, z, jax.nn.one_hot(jnp.array([3, 5]), 10),
                          method="decode"), rtol=1e-6)
  with pytest.raises(ValueError, match="needs the labels"):
    model.apply({"params": params}, z, method="decode")


@pytest.mark.parametrize("model_name", ["vae", "ae"])
def test_unconditional_models_ignore_labels(model_name):
  """Callers may pass labels to any model; only a conditional one reads them."""
  model = models.make_model(model_name, "mlp", 2)
  params = models.init_params(model, jax.random.PRNGKey(0))
  images = jax.random.uniform(jax.random.PRNGKey(1), (2, 28, 28, 1))
  key = jax.random.PRNGKey(2)
  with_labels = model.apply({"params": params}, images, key, jnp.array([1, 2]))
  without = model.apply({"params": params}, images, key)
  for a, b in zip(jax.tree.leaves(with_labels), jax.tree.leaves(without)):
    np.testing.assert_array_equal(a, b)


def test_the_flags_offer_exactly_the_registered_models_and_architectures():
  # Adding a model or an architecture means one entry on each side (README, "Extending").
  assert config_lib.MODELS == tuple(models.MODELS)
  assert config_lib.ARCHS == tuple(models.TRUNKS) == tuple(models.DECODERS)
