"""The files of a run's workdir: config.json, metrics.csv and the plot folders."""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import glob
import os
import shutil
from typing import Iterator, Optional

from vae_jax import config as config_lib
from vae_jax.config import Config, ConfigError

METRICS_FILE = "metrics.csv"
METRICS_COLUMNS = ("epoch", "train_loss", "train_recon", "train_kl",
                   "val_loss", "val_recon", "val_kl", "seconds")
# What marks a folder as vae_jax.classifier's (it is no VAE run, and a run is no classifier).
CLASSIFIER_FILE = "classifier.json"
# config.json last: a discard cut short still leaves a folder that says it is a run.
RUN_CONTENTS = ("checkpoints", "checkpoints_latest", "plots", METRICS_FILE,
                config_lib.CONFIG_FILE)
# What vae_jax.evaluate and vae_jax.generate write into a run: results of that run only.
RUN_RESULTS = ("eval_epoch_*.json", "generated_*epoch_*.png")


def plots_dir(workdir: str, epoch: int) -> str:
  return os.path.join(workdir, "plots", f"epoch_{epoch:03d}")


def refuse_file(path: str, flag: str) -> None:
  """A ConfigError if the folder given as --flag is a file."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"--{flag}={path} is a file, not a folder")


def ensure_dir(path: str, flag: str) -> None:
  """Creates the folder given as --flag (if needed); a one-line ConfigError if it cannot be one."""
  refuse_file(path, flag)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"--{flag}={path} cannot be created ({e.strerror or e})") from None


def check_writable(path: str, flag: str) -> None:
  """A ConfigError, before any work, if the existing folder given as --flag cannot be
  written (a read-only mount, or no permission)."""
  if os.path.isdir(path) and not os.access(path, os.W_OK):
    raise ConfigError(f"--{flag}={path} is not writable; make it writable, or use another "
                      f"--{flag}")


LOCK_FILE = ".vae_jax.lock"  # what training and plot lock; kept (removing it would race)


@contextlib.contextmanager
def held(folder: str, flag: str, by_this_process: bool = True) -> Iterator[Optional[ConfigError]]:
  """Holds folder (created if missing) for this process alone while the block runs. Yields
  None if it does, else the error that says why not: another process holds it (in_use),
  or it cannot be a folder or hold the lock. The lock (flock on folder/LOCK_FILE, opened
  for writing, which NFS needs) ends with the process however that ends. If no run began
  there (no config.json), the lock file made here and an empty folder made here are
  removed at the end. Where the file system has no locks, the folder counts as held.
  With by_this_process False, yields None and touches nothing (in a multi-host run, only
  the writer holds the workdir)."""
  if not by_this_process:
    yield None
    return
  created = not os.path.exists(folder)
  lock = os.path.join(folder, LOCK_FILE)
  made_lock = not os.path.exists(lock)
  try:
    ensure_dir(folder, flag)
    check_writable(folder, flag)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
  except ConfigError as e:
    yield e
    return
  except OSError as e:
    yield ConfigError(f"--{flag}={folder} cannot hold its lock file {LOCK_FILE} "
                      f"({e.strerror or e})")
    return
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      yield in_use(folder)
      return
    except OSError as e:
      if e.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
        raise
    try:
      yield None
    finally:
      if made_lock and not is_run(folder):  # a run that never began: leave no trace
        with contextlib.suppress(OSError):
          os.remove(lock)
          if created:
            os.rmdir(folder)  # only if empty
  finally:
    os.close(fd)


def in_use(workdir: str) -> ConfigError:
  """The error of a command that finds the workdir held by another."""
  return ConfigError(f"--workdir={workdir} is in use by another vae_jax command that writes "
                     "to it (a training, or a plot without --out); run this once it has ended, "
                     "or use another --workdir")


def check(workdir: str, config: Config, overwrite: bool) -> list[str]:
  """Whether a run with config may train in workdir; changes nothing there.

  Refuses a file, a folder it cannot write, a classifier's folder, a folder that holds
  files of a run's names but no config.json (not a run: nothing of it is read or
  discarded), and (unless overwrite) a run with other settings. Returns the resumable
  settings that changed (config_lib.RESUMABLE_FIELDS).
  """
  refuse_file(workdir, "workdir")
  check_writable(workdir, "workdir")
  if os.path.isfile(os.path.join(workdir, CLASSIFIER_FILE)):
    raise ConfigError(f"--workdir={workdir} holds a classifier ({CLASSIFIER_FILE}), not a "
                      "VAE run; use another --workdir")
  if not is_run(workdir):
    found = [os.path.basename(path) for path in run_files(workdir)]
    if found:
      raise ConfigError(f"--workdir={workdir} holds {', '.join(found)} but no "
                        f"{config_lib.CONFIG_FILE}, so it is not a vae_jax run; use another "
                        "--workdir")
    return []
  if overwrite:  # the run is discarded, whatever its config.json says (or fails to)
    return []
  old = config_lib.load(workdir)
  differences = config_lib.differences(old, config)
  if differences:
    raise ConfigError(
        f"--workdir={workdir} holds a run with other settings ({'; '.join(differences)}); "
        "use another --workdir, or --overwrite to discard that run")
  return config_lib.differences(old, config, config_lib.RESUMABLE_FIELDS)


def is_run(workdir: str) -> bool:
  """Whether workdir holds a vae_jax run (its config.json)."""
  return os.path.isfile(os.path.join(workdir, config_lib.CONFIG_FILE))


def run_files(workdir: str) -> list[str]:
  """The paths in workdir that a run's evaluations and the run write, those that exist
  (config.json last)."""
  results = sorted(path for pattern in RUN_RESULTS
                   for path in glob.glob(os.path.join(glob.escape(workdir), pattern)))
  contents = [os.path.join(workdir, name) for name in RUN_CONTENTS]
  return results + [path for path in contents if os.path.lexists(path)]


def prepare(workdir: str, config: Config, overwrite: bool, write_config: bool = True,
            trains_with: Optional[dict] = None) -> None:
  """Creates the folder and writes config.json (unless not write_config; with the record
  entry trains_with, config_lib.save), after check(); with overwrite, first discards any
  earlier run there: the run's own files and the results evaluated from it, nothing else
  in the folder."""
  if overwrite:
    for path in run_files(workdir):
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
      else:
        os.remove(path)
  ensure_dir(workdir, "workdir")
  if write_config:
    config_lib.save(config, workdir, trains_with=trains_with)


def read_metrics(workdir: str) -> list[dict[str, float]]:
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.isfile(path):
    return []
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    if reader.fieldnames is not None and tuple(reader.fieldnames) != METRICS_COLUMNS:
      raise ConfigError(f"{path} is damaged (its header is not {','.join(METRICS_COLUMNS)}); "
                        "repair it, or move the file away to go on without the loss history")
    try:
      return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
              for row in reader]
    except (TypeError, ValueError):  # a missing or non-numeric field
      raise ConfigError(f"{path} is damaged (a row is incomplete or not numbers); repair the "
                        "row, or move the file away to go on without the loss history") from None


def write_metrics(workdir: str, rows: list[dict[str, float]]) -> None:
  path = os.path.join(workdir, METRICS_FILE)
  tmp = path + ".tmp"
  with open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=METRICS_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp, path)  # atomic: a kill never leaves a half-written file


def truncate_metrics(workdir: str, last_epoch: int, write: bool = True) -> list[dict[str, float]]:
  """Keeps the rows up to last_epoch (those of the restored state) and returns them; only
  reads if not write."""
  rows = [r for r in read_metrics(workdir) if r["epoch"] <= last_epoch]
  if write:
    write_metrics(workdir, rows)
  return rows
