"""experiments/gpu/saved_splits.py: the splits tfds built, saved and read back unchanged, and
vae_jax.main trained on them as on tfds's own (how the GPU figures were made)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from vae_jax import input_pipeline, workdir as workdir_lib

sys.path.insert(0, os.path.join(REPO, "experiments", "gpu"))
import saved_splits  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory, mnist_dir, tfds_dir):
  path = str(tmp_path_factory.mktemp("splits") / "mnist.npz")
  saved_splits.save(path, "mnist", mnist_dir, tfds_dir)
  return path


@pytest.mark.parametrize("split", ["train[:300]", "test"])
def test_saved_splits_are_tfds_splits(saved, mnist_dir, tfds_dir, split):
  expected = input_pipeline.load_split("mnist", split, data_dir=tfds_dir, manual_dir=mnist_dir)
  got = saved_splits.saved_loader(saved)("mnist", split)
  np.testing.assert_array_equal(got.images, expected.images)
  np.testing.assert_array_equal(got.labels, expected.labels)
  assert got.images.dtype == np.uint8 and got.labels.dtype == np.int32


@pytest.mark.parametrize("dataset, split", [("fashion_mnist", "test"), ("mnist", "validation")])
def test_a_split_that_was_not_saved_is_a_data_error(saved, dataset, split):
  with pytest.raises(input_pipeline.DataError, match="holds mnist's train and test splits"):
    saved_splits.saved_loader(saved)(dataset, split)


def test_training_on_saved_splits_matches_training_on_tfds(saved, tmp_path, mnist_dir, tfds_dir):
  flags = ["--train_examples=512", "--epochs=1", "--batch_size=64"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  runs = {
      "saved": [sys.executable, os.path.join(REPO, "experiments", "gpu", "saved_splits.py"),
                "train", saved],
      "tfds": [sys.executable, "-m", "vae_jax.main", f"--data_dir={tfds_dir}",
               f"--manual_dir={mnist_dir}"],
  }
  losses = {}
  for name, command in runs.items():
    workdir = str(tmp_path / name)
    result = subprocess.run([*command, *flags, f"--workdir={workdir}"], capture_output=True,
                            text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    (row,) = workdir_lib.read_metrics(workdir)
    losses[name] = (row["train_loss"], row["val_loss"])
  assert losses["saved"] == losses["tfds"]
