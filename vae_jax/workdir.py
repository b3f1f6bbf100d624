"""The files of a run's workdir: config.json, metrics.csv and the plot folders."""

from __future__ import annotations

import csv
import os
import shutil

from vae_jax import config as config_lib
from vae_jax.config import Config, ConfigError

METRICS_FILE = "metrics.csv"
METRICS_COLUMNS = ("epoch", "train_loss", "train_recon", "train_kl",
                   "val_loss", "val_recon", "val_kl", "seconds")
RUN_CONTENTS = ("checkpoints", "checkpoints_latest", "plots", METRICS_FILE,
                config_lib.CONFIG_FILE)


def plots_dir(workdir: str, epoch: int) -> str:
  return os.path.join(workdir, "plots", f"epoch_{epoch:03d}")


def prepare(workdir: str, config: Config, overwrite: bool) -> list[str]:
  """Writes config.json; refuses a workdir trained with other settings unless overwrite.

  With overwrite, any earlier run there is discarded: only the run's own files are
  removed, nothing else in the folder.
  Returns the resumable settings that changed (config_lib.RESUMABLE_FIELDS).
  """
  changed = []
  if os.path.isfile(os.path.join(workdir, config_lib.CONFIG_FILE)):
    old = config_lib.load(workdir)
    differences = config_lib.differences(old, config)
    changed = config_lib.differences(old, config, config_lib.RESUMABLE_FIELDS)
    if differences and not overwrite:
      raise ConfigError(
          f"--workdir={workdir} holds a run with other settings ({'; '.join(differences)}); "
          "use another --workdir, or --overwrite to discard that run")
    if overwrite:
      changed = []
      for name in RUN_CONTENTS:
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
          shutil.rmtree(path)
        elif os.path.exists(path):
          os.remove(path)
  config_lib.save(config, workdir)
  return changed


def read_metrics(workdir: str) -> list[dict[str, float]]:
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.isfile(path):
    return []
  with open(path, newline="") as f:
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
            for row in csv.DictReader(f)]


def write_metrics(workdir: str, rows: list[dict[str, float]]) -> None:
  path = os.path.join(workdir, METRICS_FILE)
  tmp = path + ".tmp"
  with open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=METRICS_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp, path)  # atomic: a kill never leaves a half-written file


def truncate_metrics(workdir: str, last_epoch: int) -> list[dict[str, float]]:
  """Keeps the rows up to last_epoch (those of the restored state) and returns them."""
  rows = [r for r in read_metrics(workdir) if r["epoch"] <= last_epoch]
  write_metrics(workdir, rows)
  return rows
