"""What the comparison scripts share: the official MNIST gzip IDX files, read into uint8
numpy arrays, and the flags of one training run."""
import argparse
import gzip
import os

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_MANUAL_DIR = os.path.join(_REPO, "..", "shared", "data", "mnist")


def _read_idx(path, offset):
  with gzip.open(path, "rb") as f:
    return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def load_mnist(folder, split="train"):
  """Returns (images [N,28,28] uint8, labels [N] uint8) for split 'train' or 't10k'."""
  images = _read_idx(os.path.join(folder, f"{split}-images-idx3-ubyte.gz"), 16)
  labels = _read_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte.gz"), 8)
  return images.reshape(-1, 28, 28), labels


def run_parser(description):
  """An argument parser with the flags every framework's training script takes."""
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--arch", choices=["mlp", "conv"], default="mlp")
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--latent_dim", type=int, default=2)
  p.add_argument("--epochs", type=int, default=2)
  p.add_argument("--manual_dir", default=DEFAULT_MANUAL_DIR)
  p.add_argument("--train_examples", type=int, default=60000)
  p.add_argument("--seed", type=int, default=0)
  return p
