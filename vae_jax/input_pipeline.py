"""MNIST and Fashion-MNIST from tensorflow-datasets, as numpy arrays."""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

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
  import tensorflow_datasets as tfds  # Heavy (imports TensorFlow): load lazily.

  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  try:
    data = tfds.load(
        dataset, split=split, data_dir=data_dir, batch_size=-1,
        download_and_prepare_kwargs={"download_config": download_config})
  except tfds.download.NonMatchingChecksumError as e:
    raise DataError(
        f"a {dataset} file failed its checksum ({_first_line(e)}); it is corrupt "
        "or truncated: replace it with the official file") from e
  arrays = tfds.as_numpy(data)
  return Split(images=arrays["image"].astype(np.uint8),
               labels=arrays["label"].astype(np.int32))


def _first_line(error: Exception) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[0] if lines else type(error).__name__


def to_float(images_u8):
  """uint8 pixels -> float32 in [0, 1]; works on numpy and jax arrays."""
  return images_u8.astype("float32") / 255.0
