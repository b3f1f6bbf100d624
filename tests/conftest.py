"""Shared fixtures: the real data folders, a prepared tfds data dir, small configs."""

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # so that plain `pytest` finds vae_jax too
SHARED_DATA = os.environ.get("VAE_JAX_SHARED_DATA",
                             os.path.join(os.path.dirname(REPO), "shared", "data"))


@pytest.fixture(scope="session")
def mnist_dir() -> str:
  path = os.path.join(SHARED_DATA, "mnist")
  assert os.path.isdir(path), f"the official MNIST files are expected in {path}"
  return path


@pytest.fixture(scope="session")
def fashion_dir() -> str:
  path = os.path.join(SHARED_DATA, "fashion_mnist")
  assert os.path.isdir(path), f"the official Fashion-MNIST files are expected in {path}"
  return path


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> str:
  """Where tfds builds the real datasets; VAE_JAX_TFDS_DIR lets CI reuse a cache."""
  return os.environ.get("VAE_JAX_TFDS_DIR") or str(tmp_path_factory.mktemp("tfds"))
