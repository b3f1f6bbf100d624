"""Entry point that draws new images from a trained run:

  python -m vae_jax.generate --workdir=W --digit=7 --num=64 --out=seven.png

A cvae run decodes z ~ N(0, I) with the requested label (--digit: the class index, also
for Fashion-MNIST); a vae or ae run draws from its prior and takes no --digit. When the
in-project classifier exists, it says how many of the images it recognises as asked.
"""

from __future__ import annotations

import math
import os
from typing import Optional

from absl import app, flags

from vae_jax import cli
from vae_jax.config import ConfigError, validate_seed

flags.DEFINE_integer("digit", None, "The label to generate (0-9); cvae runs only.")
flags.DEFINE_integer("num", 64, f"How many images (at most {10_000:,}).")
flags.DEFINE_integer("sample_seed", 0, "Seed of the codes z.")
cli.define_shared(flags.DEFINE_bool, "overwrite", False, "Replace an existing --out file.")
cli.key_flags("workdir", "epoch", "out", "classifier_workdir", "data_dir", "manual_dir")
FLAGS = flags.FLAGS

MAX_IMAGES = 10_000  # a 100 x 100 grid: beyond that one PNG stops being a figure


def grid_shape(num: int) -> tuple[int, int]:
  """(rows, columns) of the most nearly square grid that holds num images."""
  columns = math.ceil(math.sqrt(num))
  return math.ceil(num / columns), columns


def as_grid(images, columns: int):
  """[N, 28, 28] -> [rows, columns, 28, 28], the last row filled with white."""
  import numpy as np

  rows = math.ceil(len(images) / columns)
  blank = np.ones((rows * columns - len(images),) + images.shape[1:], images.dtype)
  return np.concatenate([images, blank]).reshape((rows, columns) + images.shape[1:])


def check_request(model_name: str, conditional: bool, digit: Optional[int], num: int,
                  out: Optional[str], overwrite: bool = False) -> None:
  """A clear ConfigError for a request the run cannot serve."""
  from vae_jax import models

  if not 1 <= num <= MAX_IMAGES:
    raise ConfigError(f"--num={num} must be an integer from 1 to {MAX_IMAGES}")
  if conditional and digit is None:
    raise ConfigError(f"--digit is required: this run's --model is {model_name}; pick a "
                      f"label 0-{models.NUM_CLASSES - 1}")
  if not conditional and digit is not None:
    raise ConfigError(f"--digit={digit} needs a conditional run (--model=cvae); this run's "
                      f"--model is {model_name}, which draws from its prior without a label")
  if digit is not None and not 0 <= digit < models.NUM_CLASSES:
    raise ConfigError(f"--digit={digit} must be a label 0-{models.NUM_CLASSES - 1}")
  if out is not None and not out.lower().endswith(".png"):
    raise ConfigError(f"--out={out} must name a .png file")
  if out is not None and os.path.exists(out) and not overwrite:
    raise ConfigError(f"--out={out} exists; pass --overwrite to replace it")


def write_grid(images, out: str, title: str) -> None:
  """images [N, 28, 28] as one nearly square PNG grid at out; a ConfigError if it cannot
  be written."""
  from vae_jax import plots

  try:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    plots.image_grid(as_grid(images, grid_shape(len(images))[1]), out, title)
  except OSError as e:
    raise ConfigError(f"--out={out} cannot be written: {e.strerror or e}") from None


def recognised(images, digit: int, judge: str, dataset: str) -> int:
  """How many of images [N, 28, 28] the classifier in judge labels as digit."""
  from vae_jax import classifier as classifier_lib

  clf = classifier_lib.load_classifier(judge, dataset)
  return int((classifier_lib.predict(clf, images[..., None]) == digit).sum())


def generate(workdir: str, digit: Optional[int] = None, num: int = 64, out: Optional[str] = None,
             epoch: Optional[int] = None, sample_seed: int = 0,
             data_dir: Optional[str] = None, manual_dir: Optional[str] = None,
             classifier_workdir: Optional[str] = None, overwrite: bool = False) -> str:
  """Writes num generated images as one PNG grid; returns a one-line summary.

  An existing --out file is replaced only with overwrite; the default file, in the run's
  folder, is this command's own and is always redrawn.
  """
  import jax
  import numpy as np

  from vae_jax import classifier as classifier_lib, report, restore, train
  from vae_jax.input_pipeline import CLASS_NAMES

  validate_seed("sample_seed", sample_seed)
  with restore.open_run(workdir, data_dir, manual_dir) as run:
    config, model = run.config, run.model
    check_request(config.model, model.conditional, digit, num, out, overwrite)
    epoch = restore.milestone_epochs(run, epoch)[-1]
    state = restore.restore(run, epoch)
  prior = report.model_prior(state, model, config, train.load_prior_fit(config, model),
                             run.mesh)
  z = report.draw_codes(prior, jax.random.PRNGKey(sample_seed), num)
  labels = None if digit is None else np.full((num,), digit, np.int32)
  images = report.decode_probs(state.params, model, z, labels)

  name = "" if digit is None else f"digit_{digit}_"
  out = out or os.path.join(workdir, f"generated_{name}epoch_{epoch:03d}.png")
  what = "samples" if digit is None else f"samples of label {CLASS_NAMES[config.dataset][digit]}"
  write_grid(images, out, f"{config.dataset} {config.model}/{config.arch}, "
             f"z={config.latent_dim}, epoch {epoch}: {num} {what}, {prior.description}")
  summary = f"wrote {out}: {num} {what} from epoch {epoch}"
  judge = classifier_workdir or cli.default_classifier_workdir(config.dataset)
  if digit is not None and classifier_lib.has_classifier(judge):
    summary += (f"; the classifier in {judge} recognises "
                f"{recognised(images, digit, judge, config.dataset)} of {num} as asked")
  return summary


def generate_from_flags() -> None:
  if not FLAGS.workdir:
    raise ConfigError("--workdir is required: the run folder to generate from")
  from vae_jax import input_pipeline

  cli.run_reporting(
      lambda: print(generate(FLAGS.workdir, FLAGS.digit, FLAGS.num, FLAGS.out, FLAGS.epoch,
                             FLAGS.sample_seed, FLAGS.data_dir, FLAGS.manual_dir,
                             FLAGS.classifier_workdir, cli.shared_value("overwrite", False))),
      (ConfigError, input_pipeline.DataError))


def main(argv: list[str]) -> None:
  cli.main_with(argv, generate_from_flags)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
