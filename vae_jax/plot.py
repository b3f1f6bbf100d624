"""Entry point that redraws a run's figures from its checkpoints: python -m vae_jax.plot --workdir=W."""

from __future__ import annotations

from typing import Optional

from absl import app, flags

from vae_jax import cli
from vae_jax import config as config_lib
from vae_jax.config import ConfigError

flags.DEFINE_integer("epoch", None, "The milestone epoch to redraw (default: every saved one).")
flags.DEFINE_string("out", None, "Folder for the figures (default W/plots/epoch_EEE).")
FLAGS = flags.FLAGS


def redraw(workdir: str, epoch: Optional[int] = None, out: Optional[str] = None,
           data_dir: Optional[str] = None, manual_dir: Optional[str] = None) -> list[str]:
  """Restores each requested milestone and writes its figures; returns the folders."""
  import dataclasses
  import os

  from vae_jax import checkpoints, models, parallel, report, steps, train, workdir as workdir_lib

  config = config_lib.load(workdir)
  config = dataclasses.replace(config, data_dir=data_dir or config.data_dir,
                               manual_dir=manual_dir or config.manual_dir)
  manager = checkpoints.RunCheckpoints(workdir, read_only=True)
  saved = manager.milestone_epochs()
  if not saved:
    raise ConfigError(f"--workdir={workdir} holds no milestone checkpoint yet")
  if epoch is not None and epoch not in saved:
    raise ConfigError(f"--epoch={epoch} is not saved in {workdir}; saved epochs: "
                      f"{', '.join(map(str, saved))}")
  mesh = parallel.make_mesh(config.num_devices)
  model = models.make_model(config.model, config.arch, config.latent_dim)
  tx = steps.make_optimizer(config)
  template = parallel.put_replicated(steps.init_state(model, tx, config.seed), mesh)
  data = train.load_data(config)
  history = workdir_lib.read_metrics(workdir)
  folders = []
  for e in saved if epoch is None else [epoch]:
    state = manager.restore_milestone(e, template)
    target = out if out is None or epoch is not None else os.path.join(out, f"epoch_{e:03d}")
    folders.append(report.write_milestone(state, model, config, data, history, workdir, e,
                                          mesh, out=target))
  manager.close()
  return folders


def redraw_from_flags() -> None:
  if not FLAGS.workdir:
    raise ConfigError("--workdir is required: the run folder to redraw")
  from vae_jax import input_pipeline

  def draw():
    for folder in redraw(FLAGS.workdir, FLAGS.epoch, FLAGS.out, FLAGS.data_dir, FLAGS.manual_dir):
      print(f"figures written to {folder}")

  cli.run_reporting(draw, (ConfigError, input_pipeline.DataError))


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]} (flags are written --name=value)")
  cli.run_reporting(redraw_from_flags, (ConfigError,))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
