"""Read the official MNIST gzip IDX files into uint8 numpy arrays."""
import gzip
import os

import numpy as np


def _read_idx(path, offset):
  with gzip.open(path, "rb") as f:
    return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def load_mnist(folder, split="train"):
  """Returns (images [N,28,28] uint8, labels [N] uint8) for split 'train' or 't10k'."""
  images = _read_idx(os.path.join(folder, f"{split}-images-idx3-ubyte.gz"), 16)
  labels = _read_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte.gz"), 8)
  return images.reshape(-1, 28, 28), labels
