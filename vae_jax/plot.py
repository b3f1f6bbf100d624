"""Entry point that redraws a run's figures from its checkpoints: python -m vae_jax.plot --workdir=W."""

from __future__ import annotations

import os
from typing import Optional

from absl import app, flags

from vae_jax import cli
from vae_jax.config import ConfigError

cli.define_shared(flags.DEFINE_bool, "overwrite", False,
                  "Replace the figures already in --out (else refused).")
cli.key_flags("workdir", "epoch", "out", "data_dir", "manual_dir", "overwrite")
FLAGS = flags.FLAGS


def refuse_to_replace(out: str, folders: list[str]) -> None:
  """A ConfigError if a folder already holds a file that a milestone writes."""
  from vae_jax import report
  found = [os.path.join(folder, name) for folder in folders for name in report.MILESTONE_FILES
           if os.path.exists(os.path.join(folder, name))]
  if found:
    more = f" and {len(found) - 1} more of the files it would write" if len(found) > 1 else ""
    raise ConfigError(f"--out={out} already holds {found[0]}{more}; pass --overwrite to "
                      "replace them, or another --out")


def redraw(workdir: str, epoch: Optional[int] = None, out: Optional[str] = None,
           data_dir: Optional[str] = None, manual_dir: Optional[str] = None,
           overwrite: bool = False) -> list[str]:
  """Restores each requested milestone and writes its figures; returns the folders.

  Into W/plots/epoch_EEE, or into out (with several epochs, out/epoch_EEE), where files
  of the same names are replaced only with overwrite."""
  from vae_jax import report, restore, train, workdir as workdir_lib

  with restore.open_run(workdir, data_dir, manual_dir) as run:
    epochs = restore.milestone_epochs(run, epoch)
    targets = [out if out is None or epoch is not None else os.path.join(out, f"epoch_{e:03d}")
               for e in epochs]
    if out and not overwrite:
      refuse_to_replace(out, targets)
    if out:
      workdir_lib.check_writable(out, "out")
    # Into the run: one command at a time (a training, or another plot, may be drawing);
    # held refuses a workdir it cannot write.
    with workdir_lib.held(workdir, "workdir", by_this_process=not out) as refusal:
      if refusal:
        raise refusal
      # The training images only for an AE's prior: the figures show the validation split.
      data = train.Data(train=train.load_prior_fit(run.config, run.model),
                        val=train.load_val(run.config))
      if out:  # only once the run and its data are found: a bad --workdir leaves no new folder
        workdir_lib.ensure_dir(out, "out")
      history = workdir_lib.read_metrics(workdir)
      return [report.write_milestone(restore.restore(run, e), run.model, run.config, data,
                                     history, workdir, e, run.mesh, out=target)
              for e, target in zip(epochs, targets)]


def redraw_from_flags() -> None:
  if not FLAGS.workdir:
    raise ConfigError("--workdir is required: the run folder to redraw")
  cli.refuse_unused(("classifier_workdir",), "vae_jax.plot")
  from vae_jax import input_pipeline, workdir as workdir_lib
  if FLAGS.out:
    workdir_lib.refuse_file(FLAGS.out, "out")  # created by redraw, once the run is found

  def draw():
    for folder in redraw(FLAGS.workdir, FLAGS.epoch, FLAGS.out, FLAGS.data_dir, FLAGS.manual_dir,
                         cli.shared_value("overwrite", False)):
      print(f"figures written to {folder}")

  cli.run_reporting(draw, (ConfigError, input_pipeline.DataError))


def main(argv: list[str]) -> None:
  cli.main_with(argv, redraw_from_flags, "interrupted; the figures drawn before it are "
                "kept: run plot again for the rest (with --out, add --overwrite)")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
