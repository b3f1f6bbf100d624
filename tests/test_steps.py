"""The compiled train step, the whole-epoch scan and batched evaluation."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vae_jax import models, steps
from vae_jax.config import Config


def fake_digits(n, seed=0):
  """uint8 images with structure (bright strokes on black), not uniform noise."""
  rng = np.random.default_rng(seed)
  images = np.zeros((n, 28, 28, 1), np.uint8)
  for i in range(n):
    r, c = rng.integers(4, 20, 2)
    images[i, r:r + 8, c:c + 3] = 255
    images[i, r:r + 3, c:c + 8] = 200
  return images


def setup(model_name="vae", arch="mlp", seed=0, learning_rate=1e-3):
  config = Config(model=model_name, arch=arch, batch_size=32, learning_rate=learning_rate,
                  seed=seed)
  model = models.make_model(model_name, arch, 2)
  tx = steps.make_optimizer(config)
  return config, model, tx, steps.init_state(model, tx, seed)


def fake_labels(n, seed=0):
  return np.random.default_rng(seed).integers(0, 10, n).astype(np.int32)


def reference_terms(model, params, images_u8, key, labels=None):
  """Per-image (recon, kl) [B], computed apart from vae_jax.losses and steps: pixels scaled
  here, optax's cross-entropy and the closed-form KL on the model's raw outputs."""
  images = jnp.asarray(images_u8, jnp.float32) / 255.0
  logits, mean, logvar = model.apply({"params": params}, images, key, labels)
  recon = optax.sigmoid_binary_cross_entropy(logits, images).sum(axis=(1, 2, 3))
  kl = (jnp.zeros_like(recon) if logvar is None
        else 0.5 * (jnp.exp(logvar) + mean ** 2 - 1.0 - logvar).sum(-1))
  return recon, kl


def reference_loss(model, params, images_u8, key, labels=None):
  """The mean loss per image (reference_terms)."""
  recon, kl = reference_terms(model, params, images_u8, key, labels)
  return (recon + kl).mean()


def sample_key(state):
  """The documented key of a step's codes: (seed, step), whatever the epoch."""
  return jax.random.fold_in(jax.random.fold_in(state.rng, steps.SAMPLE_STREAM), state.step)


@pytest.mark.parametrize("model_name", ["vae", "cvae", "ae"])
def test_one_step_changes_every_parameter_and_lowers_the_loss(model_name):
  config, model, tx, state = setup(model_name)
  state = state.replace(step=jnp.int32(3), epoch=jnp.int32(1))  # keys must come from the step
  images, labels = fake_digits(32), fake_labels(32)
  step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, beta=1.0))
  new_state, sums = step(state, jnp.asarray(images), labels)
  assert int(new_state.step) == 4
  for old, new in zip(jax.tree.leaves(state.params), jax.tree.leaves(new_state.params)):
    assert not np.array_equal(old, new)
  # Same batch, same sample key: the step must have lowered this exact objective.
  before = float(reference_loss(model, state.params, images, sample_key(state), labels))
  after = float(reference_loss(model, new_state.params, images, sample_key(state), labels))
  np.testing.assert_allclose(float(sums["loss"]) / 32, before, rtol=1e-5)
  assert after < before


def test_a_step_descends_the_gradient_of_the_batch_mean_loss():
  """With plain SGD the parameter change is -lr times the gradient of the mean loss per
  image (not of its sum, nor of another key's loss)."""
  _, model, _, state = setup("vae")
  tx = optax.sgd(0.01)
  state = state.replace(opt_state=tx.init(state.params), step=jnp.int32(5))
  images = fake_digits(32)
  new_state, _ = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, beta=1.0))(
      state, jnp.asarray(images))
  grads = jax.grad(reference_loss, argnums=1)(model, state.params, images, sample_key(state))
  for old, new, grad in zip(*(jax.tree.leaves(t) for t in (state.params, new_state.params,
                                                           grads))):
    np.testing.assert_allclose(new - old, -0.01 * grad, rtol=1e-3, atol=1e-7)


def test_each_step_draws_its_own_codes_from_the_step_alone():
  _, model, tx, state = setup("vae")
  images = jnp.asarray(fake_digits(32))
  step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, beta=1.0))
  loss = lambda s: float(step(s, images)[1]["loss"])
  at_step_3 = state.replace(step=jnp.int32(3))
  assert loss(at_step_3) != loss(at_step_3.replace(step=jnp.int32(4)))
  assert loss(at_step_3) == loss(at_step_3.replace(epoch=jnp.int32(7)))


def train_epochs(seed, epochs=2, images=None):
  config, model, tx, state = setup(seed=seed)
  images = jnp.asarray(fake_digits(256) if images is None else images)
  epoch = jax.jit(functools.partial(steps.train_epoch, model=model, tx=tx, beta=1.0,
                                    batch_size=config.batch_size))
  for _ in range(epochs):
    state, terms = epoch(state, images)
  return state, terms


def test_same_seed_gives_bit_identical_parameters_and_other_seed_does_not():
  a, _ = train_epochs(seed=7)
  b, _ = train_epochs(seed=7)
  c, _ = train_epochs(seed=8)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a.params),
                                                     jax.tree.leaves(c.params)))


def per_step_epoch(state, images, step, labels=None):
  """The reference: one Python-driven step per batch, the batches in epoch_batches' order."""
  sums = []
  for idx in np.asarray(steps.epoch_batches(state, images.shape[0], 32)):
    state, batch_sums = step(state, images[idx], None if labels is None else labels[idx])
    sums.append(float(batch_sums["loss"]))
  return state.replace(epoch=state.epoch + 1), sum(sums)


def assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("model_name,arch", [("vae", "mlp"), ("vae", "conv"), ("cvae", "mlp")])
def test_whole_epoch_scan_is_bit_identical_to_per_step_training(model_name, arch):
  config, model, tx, state = setup(model_name, arch=arch)
  images = jnp.asarray(fake_digits(100))  # 100 = 3 batches of 32 + 4 dropped
  labels = jnp.asarray(fake_labels(100)) if model.conditional else None
  epoch = jax.jit(functools.partial(steps.train_epoch, model=model, tx=tx, beta=1.0,
                                    batch_size=32),
                  compiler_options=steps.epoch_compiler_options())  # as compile_fns does
  train_step = functools.partial(steps.train_step, model=model, tx=tx, beta=1.0)
  scanned, terms = epoch(state, images, labels)

  plain_jit, loss_sum = per_step_epoch(state, images, jax.jit(train_step), labels)
  np.testing.assert_allclose(terms["loss"], loss_sum / 96, rtol=1e-6)
  if arch == "mlp":
    assert_trees_equal(scanned, plain_jit)
  else:
    # XLA:CPU picks another (equally exact) convolution algorithm at the top level of a
    # program than inside a loop body, so plain-jit conv steps agree only to rounding.
    # The same step compiled as a one-step loop is the bit-exact per-step reference.
    for x, y in zip(jax.tree.leaves(scanned), jax.tree.leaves(plain_jit)):
      np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
    @jax.jit
    def one_step_loop(state, batch, _):
      state, sums = jax.lax.scan(train_step, state, batch[None])
      return state, jax.tree.map(lambda t: t[0], sums)

    looped, _ = per_step_epoch(state, images, one_step_loop)
    assert_trees_equal(scanned, looped)


def test_epoch_batches_are_a_fresh_permutation_each_epoch():
  _, _, _, state = setup()
  first = np.asarray(steps.epoch_batches(state, 100, 32))
  second = np.asarray(steps.epoch_batches(state.replace(epoch=state.epoch + 1), 100, 32))
  assert first.shape == (3, 32)
  assert len(np.unique(first)) == 96 and len(np.unique(second)) == 96
  assert not np.array_equal(first, second)


def test_map_batches_uses_every_image_once_with_a_padded_last_batch():
  images = jnp.arange(10 * 2 * 2 * 1, dtype=jnp.uint8).reshape(10, 2, 2, 1)
  out = jax.jit(lambda x: steps.map_batches(lambda b, i: b.sum(axis=(1, 2, 3)), x, 4))(images)
  np.testing.assert_array_equal(out, np.asarray(images).reshape(10, -1).sum(-1))
  # A pytree of arrays is batched together: each batch keeps images and labels paired.
  labels = jnp.arange(10) * 100
  pairs = jax.jit(lambda d: steps.map_batches(
      lambda b, i: b[0].sum(axis=(1, 2, 3)).astype(jnp.int32) + b[1], d, 4))((images, labels))
  np.testing.assert_array_equal(pairs, np.asarray(images).reshape(10, -1).sum(-1) + labels)


@pytest.mark.parametrize("model_name", ["vae", "cvae"])
def test_evaluate_is_the_mean_of_per_image_terms(model_name):
  config, model, tx, state = setup(model_name)
  images, labels = jnp.asarray(fake_digits(70)), jnp.asarray(fake_labels(70))
  got = jax.jit(functools.partial(steps.evaluate, model=model, beta=1.0, batch_size=32))(
      state, images, labels)
  key = jax.random.fold_in(state.rng, steps.EVAL_STREAM)
  # Batches of 32, 32 and 6 (the last one partial), each with its own key.
  recon, kl = (np.concatenate(terms) for terms in zip(*[
      reference_terms(model, state.params, images[i:i + 32], jax.random.fold_in(key, i // 32),
                      labels[i:i + 32]) for i in range(0, 70, 32)]))
  assert len(recon) == 70
  for name, expected in (("loss", recon + kl), ("recon", recon), ("kl", kl)):
    np.testing.assert_allclose(got[name], expected.mean(), rtol=1e-5)


def test_beta_weights_the_kl_in_the_compiled_step_epoch_and_evaluation():
  config, model, tx, _ = setup("vae")
  state, _ = train_epochs(seed=0)  # trained a little, so that the KL is not ~0
  images = jnp.asarray(fake_digits(64, seed=1))
  _, sums = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, beta=4.0))(
      state, images[:32])
  _, epoch_terms = jax.jit(functools.partial(steps.train_epoch, model=model, tx=tx, beta=4.0,
                                             batch_size=32))(state, images)
  val_terms = jax.jit(functools.partial(steps.evaluate, model=model, beta=4.0, batch_size=32))(
      state, images)
  for terms in (sums, epoch_terms, val_terms):
    assert float(terms["kl"]) > 0.1
    np.testing.assert_allclose(terms["loss"], terms["recon"] + 4.0 * terms["kl"], rtol=1e-5)
  # The gradient is of the beta-weighted loss: beta changes the step.
  step = lambda beta: jax.jit(functools.partial(steps.train_step, model=model, tx=tx,
                                                beta=beta))(state, images[:32])[0]
  changed = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(step(1.0).params),
                                                   jax.tree.leaves(step(4.0).params))]
  assert any(changed)


def test_dynamic_binarization_is_bernoulli_with_the_pixel_intensity():
  images = jnp.full((200, 28, 28, 1), 64, jnp.uint8)  # p = 64/255 ~ 0.251
  drawn = np.asarray(steps.dynamic_binarize(jax.random.PRNGKey(0), images))
  assert set(np.unique(drawn)) == {0, 255}
  ones = (drawn == 255).mean()
  assert abs(ones - 64 / 255) < 4 * np.sqrt(0.25 * 0.75 / drawn.size)
  again = np.asarray(steps.dynamic_binarize(jax.random.PRNGKey(1), images))
  assert not np.array_equal(drawn, again)


def test_binarized_training_draws_afresh_each_step():
  # An AE draws no codes: at the same params its loss depends on the step only through
  # the binarization.
  config, model, tx, state = setup("ae")
  images = jnp.asarray(fake_digits(32))
  step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, beta=1.0, binarize=True))
  plain = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, beta=1.0))
  later = state.replace(step=state.step + 1)
  grey, grey_later = (float(plain(s, images)[1]["loss"]) for s in (state, later))
  drawn, drawn_later = (float(step(s, images)[1]["loss"]) for s in (state, later))
  assert grey == grey_later
  assert drawn != drawn_later and grey not in (drawn, drawn_later)
  # Same (seed, step) -> same draw: the step is a pure function of the state.
  assert float(step(state, images)[1]["loss"]) == drawn


def test_binarization_and_codes_have_keys_of_their_own():
  """A binarized step draws its pixels from (seed, BINARIZE_STREAM, step) and its codes
  from (seed, SAMPLE_STREAM, step): two streams, so the draws are not correlated."""
  _, model, tx, state = setup("vae")
  state = state.replace(step=jnp.int32(2))
  images = fake_digits(32)
  step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, beta=1.0, binarize=True))
  loss = float(step(state, jnp.asarray(images))[1]["loss"]) / 32
  pixel_key = jax.random.fold_in(jax.random.fold_in(state.rng, steps.BINARIZE_STREAM), state.step)
  assert not np.array_equal(pixel_key, sample_key(state))
  drawn = steps.dynamic_binarize(pixel_key, jnp.asarray(images))
  np.testing.assert_allclose(
      loss, float(reference_loss(model, state.params, drawn, sample_key(state))), rtol=1e-5)
  other_draw = steps.dynamic_binarize(sample_key(state), jnp.asarray(images))
  assert abs(loss - float(reference_loss(model, state.params, other_draw,
                                         sample_key(state)))) > 1e-3


@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_the_compiled_epoch_binarizes_as_the_config_says(binarize):
  config, model, tx, state = setup("ae")
  config = dataclasses.replace(config, binarize=binarize)
  images = jnp.asarray(fake_digits(64))
  epoch = functools.partial(steps.train_epoch, model=model, tx=tx, beta=1.0, batch_size=32)
  _, expected = jax.jit(functools.partial(epoch, binarize=binarize == "dynamic"))(state, images)
  _, other = jax.jit(functools.partial(epoch, binarize=binarize != "dynamic"))(state, images)
  own_buffers = jax.tree.map(jnp.copy, state)  # the compiled epoch donates its state
  _, compiled = steps.compile_fns(model, tx, config).train_epoch(own_buffers, images)
  assert float(compiled["loss"]) == float(expected["loss"]) != float(other["loss"])
