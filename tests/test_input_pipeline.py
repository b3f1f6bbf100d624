"""The real tfds loader on the official MNIST and Fashion-MNIST files."""

import numpy as np
import pytest

from vae_jax import input_pipeline


def test_real_mnist_from_manual_dir(mnist_dir, tfds_dir):
  train = input_pipeline.load_split("mnist", input_pipeline.train_split(1000), tfds_dir, mnist_dir)
  test = input_pipeline.load_split("mnist", "test", tfds_dir, mnist_dir)
  assert train.images.shape == (1000, 28, 28, 1) and train.images.dtype == np.uint8
  assert test.images.shape == (10_000, 28, 28, 1)
  assert test.labels.dtype == np.int32 and set(np.unique(test.labels)) == set(range(10))
  # Real digits: mostly black background, bright strokes, ~19% of pixels inked.
  assert train.images.max() == 255 and 0.1 < (train.images > 127).mean() < 0.3
  np.testing.assert_array_equal(np.bincount(test.labels),
                                [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])


def test_real_fashion_mnist_from_manual_dir(fashion_dir, tfds_dir):
  test = input_pipeline.load_split("fashion_mnist", "test", tfds_dir, fashion_dir)
  assert test.images.shape == (10_000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(test.labels), [1000] * 10)


def test_to_float_scales_to_unit_interval():
  x = input_pipeline.to_float(np.array([0, 51, 255], np.uint8))
  assert x.dtype == np.float32
  np.testing.assert_allclose(x, [0.0, 0.2, 1.0])


def test_fixed_binarization_is_reproducible_and_draws_each_pixel_with_its_intensity():
  levels = np.array([0, 64, 192, 255], np.uint8)  # p = 0, ~0.25, ~0.75, 1
  images = np.repeat(levels, 500 * 784).reshape(4, 500, 28, 28, 1)
  split = input_pipeline.Split(images.reshape(2000, 28, 28, 1), np.arange(2000, dtype=np.int32))
  a, b = input_pipeline.binarize_fixed(split), input_pipeline.binarize_fixed(split)
  np.testing.assert_array_equal(a.images, b.images)
  assert set(np.unique(a.images)) == {0, 255}
  drawn = a.images.reshape(4, -1) == 255
  for level, ones in zip(levels, drawn):
    p = level / 255
    assert abs(ones.mean() - p) <= 4 * np.sqrt(p * (1 - p) / ones.size)  # exact at p = 0, 1
  np.testing.assert_array_equal(a.labels, split.labels)


def test_fixed_binarization_takes_a_seed_as_prng_key_does():
  """Runs made before seeds were checked may hold a negative seed: it draws (rather than
  numpy's ValueError) as its 32-bit twin does, the seed PRNGKey makes of it."""
  import jax

  split = input_pipeline.Split(np.full((4, 28, 28, 1), 128, np.uint8), np.zeros(4, np.int32))
  assert (jax.random.PRNGKey(-1) == jax.random.PRNGKey(2**32 - 1)).all()
  np.testing.assert_array_equal(input_pipeline.binarize_fixed(split, seed=-1).images,
                                input_pipeline.binarize_fixed(split, seed=2**32 - 1).images)
  assert (input_pipeline.binarize_fixed(split, seed=1).images
          != input_pipeline.binarize_fixed(split, seed=2).images).any()


def test_offline_without_manual_dir_says_to_pass_it(monkeypatch, tmp_path):
  # A real attempt waits minutes for tfds's retries; its error is what requests raises.
  import requests
  import tensorflow_datasets as tfds

  def offline(*args, **kwargs):
    raise requests.exceptions.ConnectionError("Failed to resolve 'storage.googleapis.com'")

  monkeypatch.setattr(tfds, "load", offline)
  with pytest.raises(input_pipeline.DataError, match="pass --manual_dir=FOLDER"):
    input_pipeline.load_split("mnist", "test", str(tmp_path))
