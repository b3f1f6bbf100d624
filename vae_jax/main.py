"""Entry point for training: python -m vae_jax.main --latent_dim=2 --epochs=150."""

from __future__ import annotations

import os
import sys
from typing import Optional

from absl import app, flags

from vae_jax import cli
from vae_jax import config as config_lib
from vae_jax import workdir as workdir_lib
from vae_jax.config import Config, ConfigError

flags.DEFINE_string("model", "vae", f"One of {', '.join(config_lib.MODELS)}.")
flags.DEFINE_string("arch", "mlp", f"One of {', '.join(config_lib.ARCHS)}.")
flags.DEFINE_string("dataset", "mnist", f"One of {', '.join(config_lib.DATASETS)}.")
flags.DEFINE_integer("latent_dim", 2, "Dimension of the latent code.")
flags.DEFINE_integer("epochs", 150, "Number of training epochs.")
flags.DEFINE_list("milestones", ["20", "50", "80", "100", "150"],
                  "Epochs with a checkpoint and figures; the last epoch is always one.")
flags.DEFINE_integer("batch_size", 128, "Training batch size (global, over all devices).")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_float("beta", 1.0, "Weight of the KL term (VAE).")
flags.DEFINE_integer("seed", 0, "Seed of every random number of the run: 0..2**32-1.")
flags.DEFINE_string("binarize", "none", "none: pixels in [0, 1]; dynamic: a fresh Bernoulli "
                    "binarization every epoch, the test set binarized once (Burda et al. 2015).")
flags.DEFINE_integer("train_examples", None, "Use only the first N training images (default all).")
flags.DEFINE_integer("checkpoint_every", 10, "Also keep the newest state every N epochs, for resuming.")
flags.DEFINE_integer("num_devices", None, "Use only the first N devices (default all).")
flags.DEFINE_bool("overwrite", False, "Discard any run in --workdir and start afresh (else an earlier run resumes).")
flags.DEFINE_bool("distributed", False, "Multi-host: call jax.distributed.initialize() first.")
cli.key_flags("workdir", "data_dir", "manual_dir")
FLAGS = flags.FLAGS


def parse_milestones(values: list[str]) -> tuple[int, ...]:
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise ConfigError(
        f"--milestones={','.join(values)} must be positive integers, e.g. --milestones=20,50,80"
    ) from None


def config_from_flags() -> Config:
  return Config(
      dataset=FLAGS.dataset, model=FLAGS.model, arch=FLAGS.arch, latent_dim=FLAGS.latent_dim,
      epochs=FLAGS.epochs, milestones=parse_milestones(FLAGS.milestones),
      batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate, beta=FLAGS.beta,
      seed=FLAGS.seed, train_examples=FLAGS.train_examples, binarize=FLAGS.binarize,
      checkpoint_every=FLAGS.checkpoint_every, num_devices=FLAGS.num_devices,
      data_dir=absolute(FLAGS.data_dir), manual_dir=absolute(FLAGS.manual_dir))


def absolute(path: Optional[str]) -> Optional[str]:
  """A data path as config.json keeps it: absolute, so that a resume, plot or evaluate
  run from another directory finds the data."""
  return os.path.abspath(os.path.expanduser(path)) if path else None


def initialize_distributed() -> None:
  """jax.distributed.initialize(), which finds the coordinator on a TPU pod or under
  SLURM; elsewhere its error becomes a ConfigError naming the flag."""
  import jax
  try:
    jax.distributed.initialize()
  except (ValueError, RuntimeError) as e:
    raise ConfigError(f"--distributed: jax.distributed.initialize() failed "
                      f"({config_lib.first_line(e)}); launch every process under SLURM or "
                      "on a TPU pod slice, as the README's multi-host section shows") from None


def train_from_flags() -> None:
  cli.refuse_unused(("epoch", "out", "classifier_workdir"), "vae_jax.main")
  config = config_from_flags()
  config_lib.validate(config)  # before anything heavy is imported, loaded or compiled
  if config.dropped_milestones and FLAGS["milestones"].present:  # the defaults drop silently
    print(f"note: --milestones after --epochs={config.epochs} are dropped: "
          f"{','.join(map(str, config.dropped_milestones))}", file=sys.stderr)
  workdir = FLAGS.workdir or config_lib.default_workdir(config)
  try:
    if FLAGS.distributed:
      initialize_distributed()
    from vae_jax import input_pipeline, train  # Heavy imports (JAX, TensorFlow) after validation.
  except KeyboardInterrupt:  # Ctrl-C in the first seconds: nothing is written yet
    goes_on = workdir_lib.is_run(workdir) and not FLAGS.overwrite
    print("interrupted while starting, before anything was written; the same command "
          + ("resumes the run" if goes_on else "starts again"), file=sys.stderr)
    sys.exit(config_lib.INTERRUPTED_STATUS)
  try:
    cli.run_reporting(lambda: train.train_and_evaluate(config, workdir, overwrite=FLAGS.overwrite),
                      (ConfigError, input_pipeline.DataError, train.NonFiniteLossError))
  except train.Interrupted as e:  # Ctrl-C during training: stopped at an epoch's end
    print(str(e), file=sys.stderr)
    sys.exit(config_lib.INTERRUPTED_STATUS)
  except KeyboardInterrupt:  # Ctrl-C while loading or compiling
    from vae_jax import checkpoints
    saved = checkpoints.saved_epochs(workdir)
    where = f"epoch {max(saved)}, the newest checkpoint" if saved else "the start (none saved yet)"
    print(f"interrupted; {train.same_command(FLAGS.overwrite)} resumes from {where}",
          file=sys.stderr)
    sys.exit(config_lib.INTERRUPTED_STATUS)


def main(argv: list[str]) -> None:
  cli.main_with(argv, train_from_flags, "interrupted")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
