"""Trains with vae_jax.main on a machine without TensorFlow, from splits tfds built elsewhere.

The lent GPU machine has JAX but neither TensorFlow nor tensorflow-datasets, and nothing
can be installed there beyond 64 MiB of wheels; TensorFlow is larger. So tfds builds the
dataset here, `save` writes its two splits, exactly as `input_pipeline.load_split` returns
them, to one .npz, and `train` runs the unchanged `python -m vae_jax.main` with
`load_split` answered from that file. Everything after loading (the compiled epochs,
checkpoints, figures) is the real command's.

  python experiments/gpu/saved_splits.py save mnist.npz --manual_dir=../shared/data/mnist
  python experiments/gpu/saved_splits.py train mnist.npz --latent_dim=2 --epochs=150
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

SPLITS = ("train", "test")


def save(path: str, dataset: str, manual_dir: str | None, data_dir: str | None) -> None:
  from vae_jax import input_pipeline

  arrays = {"dataset": np.array(dataset)}
  for split in SPLITS:
    loaded = input_pipeline.load_split(dataset, split, data_dir=data_dir, manual_dir=manual_dir)
    arrays.update({f"{split}_images": loaded.images, f"{split}_labels": loaded.labels})
  np.savez_compressed(path, **arrays)


def saved_loader(path: str):
  """A stand-in for input_pipeline.load_split that answers from the saved splits ("train",
  "train[:N]" and "test" of the saved dataset)."""
  from vae_jax.input_pipeline import DataError, Split

  saved = np.load(path)

  def load_split(dataset, split, data_dir=None, manual_dir=None):
    del data_dir, manual_dir  # the splits are already built
    name, _, first = split.partition("[:")
    if dataset != str(saved["dataset"]) or name not in SPLITS:
      raise DataError(f"{path} holds {saved['dataset']}'s train and test splits, "
                      f"not {dataset}'s {split}")
    count = int(first.rstrip("]")) if first else None
    return Split(images=saved[f"{name}_images"][:count], labels=saved[f"{name}_labels"][:count])

  return load_split


def train(path: str, flags: list[str]) -> None:
  from absl import app

  from vae_jax import cli, main, train as train_lib

  train_lib.load_split = saved_loader(path)  # train.load_train / load_val call it by this name
  sys.argv = ["vae_jax.main", *flags]
  app.run(main.main, flags_parser=cli.parse_flags)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
  """(the command's arguments, the flags left for vae_jax.main)."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  saving = commands.add_parser("save", help="build the splits with tfds and save them")
  saving.add_argument("npz")
  saving.add_argument("--dataset", default="mnist")
  saving.add_argument("--manual_dir")
  saving.add_argument("--data_dir")
  training = commands.add_parser("train", help="vae_jax.main on the saved splits; "
                                  "the other flags are vae_jax.main's")
  training.add_argument("npz")
  args, rest = parser.parse_known_args(argv)
  if args.command == "save" and rest:
    parser.error(f"save takes no {' '.join(rest)}")
  return args, rest


if __name__ == "__main__":
  args, main_flags = parse_args(sys.argv[1:])
  if args.command == "save":
    save(args.npz, args.dataset, args.manual_dir, args.data_dir)
  else:
    train(args.npz, main_flags)
