"""MNIST and Fashion-MNIST from tensorflow-datasets, as numpy arrays."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Optional

import numpy as np

from vae_jax import quiet
from vae_jax.config import SEED_BITS

CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
}


class DataError(RuntimeError):
  """The dataset could not be built or read; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray  # uint8 [N, 28, 28, 1], pixel values 0..255
  labels: np.ndarray  # int32 [N]


def train_split(train_examples: Optional[int]) -> str:
  return "train" if train_examples is None else f"train[:{train_examples}]"


def load_split(dataset: str, split: str, data_dir: Optional[str] = None,
               manual_dir: Optional[str] = None) -> Split:
  """Loads a whole tfds split into memory.

  With manual_dir, tfds builds the dataset from the official files in that
  folder (checksums verified) instead of downloading them.
  """
  tfds = _import_tfds()
  import requests  # what tfds downloads with
  from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

  download_config = tfds.download.DownloadConfig(
      manual_dir=manual_dir, extract_dir=_extract_dir(dataset, data_dir) if manual_dir else None)
  try:
    data = tfds.load(dataset, split=split, data_dir=data_dir,
                     download_and_prepare_kwargs={"download_config": download_config})
  except NonMatchingChecksumError as e:
    path = re.search(r"downloaded to (\S+?),", str(e))
    raise DataError(
        f"{path.group(1) if path else 'a ' + dataset + ' file'} failed tfds's checksum "
        f"check: it is not the official {dataset} file (corrupt, truncated, or of another "
        "dataset); replace it with the official file") from e
  except requests.exceptions.RequestException as e:
    raise DataError(f"could not download {dataset} (no internet?); on a machine offline, "
                    "pass --manual_dir=FOLDER holding the four official *-idx?-ubyte.gz "
                    "files") from e
  # Fixed-size batches rather than batch_size=-1, which needs a known cardinality
  # (tfds.testing.mock_data has none).
  batches = list(tfds.as_numpy(data.batch(10_000)))
  return Split(images=np.concatenate([b["image"] for b in batches]).astype(np.uint8),
               labels=np.concatenate([b["label"] for b in batches]).astype(np.int32))


def is_built(dataset: str, data_dir: Optional[str]) -> bool:
  """Whether tfds has the dataset prepared in data_dir already (it then needs no files)."""
  builder = _import_tfds().builder(dataset, data_dir=data_dir)
  with quiet.absl_warnings_off():  # tfds warns of the version it lacks
    return builder.is_prepared()


def _import_tfds():
  """tensorflow_datasets, imported on first use: it imports TensorFlow, which is only
  its engine here (it computes nothing of ours), so its C++ INFO lines and its oneDNN
  notice are kept off the console."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  import tensorflow_datasets as tfds
  return tfds


def _extract_dir(dataset: str, data_dir: Optional[str]) -> str:
  """A folder of its own per dataset for the files tfds extracts from manual_dir.

  tfds names an extracted manual file after its file name alone, and MNIST and
  Fashion-MNIST use the same four names: sharing the default folder would build
  one dataset from the other's files.
  """
  root = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
  return os.path.join(root, "downloads", "extracted_manual", dataset)


# The test set of a dynamically binarized run is binarized once, with this seed, the
# same for every run, so that test log-likelihoods of different runs are comparable.
TEST_BINARIZATION_SEED = 0


def binarize_fixed(split: Split, seed: int = TEST_BINARIZATION_SEED) -> Split:
  """One Bernoulli draw per pixel with p = intensity: uint8 images with values {0, 255}.

  The seed is taken modulo 2**SEED_BITS, as jax.random.PRNGKey takes it, so that a run
  made before seeds were checked (a negative one, say) draws where its keys point.
  """
  p = split.images.astype(np.float32) / 255.0
  drawn = np.random.default_rng(seed % 2**SEED_BITS).random(p.shape, dtype=np.float32) < p
  return Split(images=drawn.astype(np.uint8) * 255, labels=split.labels)


def to_float(images_u8):
  """uint8 pixels -> float32 in [0, 1]; works on numpy and jax arrays."""
  return images_u8.astype("float32") / 255.0
