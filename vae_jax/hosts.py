"""Multi-host runs (--distributed): which process writes a run's files, and keeping the
processes in step. With a single process, as in every run but a multi-host one, each of
these is trivial."""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils


def is_writer() -> bool:
  """Whether this process writes config.json, metrics.csv and the figures: the first one.

  Every process computes the same values (each holds the whole replicated state and the
  replicated metrics), so one writing them is enough, and two would race on a shared
  file system. Orbax coordinates the checkpoints across processes itself."""
  return jax.process_index() == 0


def wait_for_all(name: str) -> None:
  """Returns once every process has reached wait_for_all(name)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
  """Whether flag is true on any process: the same answer on all of them, so that all
  take the same branch (stop after this epoch, say) and none waits for the others forever."""
  if jax.process_count() == 1:
    return flag
  return bool(np.asarray(multihost_utils.process_allgather(np.array([flag]))).any())
