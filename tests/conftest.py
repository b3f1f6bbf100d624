"""Shared fixtures: the real data folders, a prepared tfds data dir, small configs."""

import os
import sys

# On a GPU, XLA times several convolution algorithms and takes the fastest, so two
# programs holding the same convolution (the whole-epoch scan and a per-step jit) can round
# differently. Deterministic ops make the choice fixed; the option is GPU-only, so on CPU
# (CI) it changes nothing. Set before JAX starts its backend, which reads XLA_FLAGS once.
os.environ["XLA_FLAGS"] = " ".join(
    filter(None, (os.environ.get("XLA_FLAGS"), "--xla_gpu_deterministic_ops=true")))

import jax  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # so that plain `pytest` finds vae_jax too
SHARED_DATA = os.environ.get("VAE_JAX_SHARED_DATA",
                             os.path.join(os.path.dirname(REPO), "shared", "data"))


@pytest.fixture(scope="session", autouse=True)
def float32_products_on_accelerators():
  """The tests check math to float32 tolerances. On a GPU, JAX lets float32 matrix
  products and convolutions run in TF32 (10-bit mantissas, relative errors near 1e-3),
  so there the tests ask for full float32 ("highest"). CPUs compute float32 products in
  float32 either way, so on CPU (CI) nothing changes. The environment variable carries
  the setting to the runs that tests start as subprocesses (test_resume compares one with
  a run in this process, bit for bit)."""
  if jax.default_backend() != "cpu":
    jax.config.update("jax_default_matmul_precision", "highest")
    os.environ["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"
  yield


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


def milestone_epochs(workdir: str) -> list[int]:
  """The milestone epochs saved in workdir, read through a manager that is closed again."""
  from vae_jax import checkpoints

  with checkpoints.RunCheckpoints(workdir, read_only=True) as manager:
    return manager.milestone_epochs()


@pytest.fixture
def closed_managers(monkeypatch):
  """The vae_jax.checkpoints.RunCheckpoints closed so far (each close is recorded, then
  done)."""
  from vae_jax import checkpoints

  closed, close = [], checkpoints.RunCheckpoints.close

  def recorded_close(self):
    closed.append(self)
    close(self)

  monkeypatch.setattr(checkpoints.RunCheckpoints, "close", recorded_close)
  return closed
