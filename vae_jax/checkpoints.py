"""Orbax checkpoints of a run: one per milestone epoch, plus the newest periodic one."""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
import warnings
from typing import Optional, TypeVar

import jax
import orbax.checkpoint as ocp

from vae_jax import config as config_lib
from vae_jax import quiet, software
from vae_jax.config import ConfigError, first_line

State = TypeVar("State")
MILESTONE_DIR, LATEST_DIR = "checkpoints", "checkpoints_latest"


class CheckpointError(ConfigError):
  """A checkpoint that cannot be restored (damaged, or of another model); one line."""


class CheckpointWriteError(CheckpointError):
  """A checkpoint that could not be written (a full disk); the message names the epoch and
  the reason, and the caller adds what to do."""

  def __init__(self, epoch: int, error: BaseException):
    super().__init__(f"the checkpoint of epoch {epoch} could not be written "
                     f"({write_failure(error)})")


def saved_epochs(workdir: str) -> list[int]:
  """The epochs of the finished checkpoints of either kind in workdir, without opening
  them (Orbax names a step's folder by its number only once the save has finished)."""
  return sorted(int(name) for d in (MILESTONE_DIR, LATEST_DIR)
                if os.path.isdir(os.path.join(workdir, d))
                for name in os.listdir(os.path.join(workdir, d)) if name.isdigit())


# The checkpoints whose restore has begun and not succeeded, as tensorstore writes their
# folders in its errors; and the checkpoint folders with a save not yet known to have
# succeeded, as their folders appear in tensorstore's and Orbax's words.
_restoring: set[str] = set()
_saving: set[str] = set()
ORBAX_READ_COROUTINE = "_read_array_index_and_device_put"
ORBAX_WRITE_COROUTINE = "async_serialize_from_host.<locals>.write_fragment"
SAVE_FAILED_LOG = "Save Finalize thread"  # Orbax's own error log of a failed save, unnamed


def folder_spellings(folder: str) -> set[str]:
  """folder as it appears in tensorstore's errors: absolute, ending in /, and also with
  bytes outside printable ASCII as \\xNN (and \\ before ', " and \\)."""
  folder = os.path.join(os.path.abspath(folder), "")
  escaped = "".join(
      f"\\x{b:02x}" if b < 0x20 or b >= 0x7f else ("\\" if chr(b) in "'\"\\" else "") + chr(b)
      for b in folder.encode("utf-8", "surrogateescape"))
  return {folder, escaped}


def tensorstore_spellings(checkpoint: str) -> set[str]:
  """The checkpoint's folder as tensorstore's errors quote it (folder_spellings)."""
  return {quote + path for quote in "'\"" for path in folder_spellings(checkpoint)}


def _names_a_checkpoint_in_flight(error) -> bool:
  """Whether error (or a message) names a checkpoint being restored or saved."""
  return error is not None and any(path in str(error) for path in _restoring | _saving)


def _raised_in_orbax_read(error: Optional[BaseException]) -> bool:
  """Whether error came out of Orbax's read coroutine while a restore was unfinished (its
  shape errors name no file)."""
  frames = traceback.walk_tb(error.__traceback__) if error is not None else ()
  return bool(_restoring) and any(frame.f_code.co_name == ORBAX_READ_COROUTINE
                                  for frame, _ in frames)


def _is_late_read(unraisable) -> bool:
  """A failed restore leaves tensorstore's other reads behind, and they end as tracebacks
  nobody can catch: a report to the event loop Orbax has already closed, or a read
  coroutine that failed while it was being discarded."""
  error = unraisable.exc_value
  return bool(_restoring or _saving) and (
      (isinstance(error, RuntimeError) and str(error) == "Event loop is closed")
      or _names_a_checkpoint_in_flight(error))


def _is_orphaned_read(record: logging.LogRecord) -> bool:
  """asyncio's report of such a read that failed with nobody waiting for it ("Task
  exception was never retrieved"); its error names the checkpoint's files, or (a shape
  that differs) comes from Orbax's read."""
  error = record.exc_info[1] if record.exc_info else None
  return ("exception was never retrieved" in record.getMessage()
          and (_names_a_checkpoint_in_flight(error) or _raised_in_orbax_read(error)))


def _keep_report(record: logging.LogRecord) -> bool:
  return not _is_orphaned_read(record)


def _is_failed_write(record: logging.LogRecord) -> bool:
  """Orbax's error logs (through absl) of a save that failed, each with its traceback:
  the save's own one-line error (RunCheckpoints.wait_for_saves) says what failed."""
  error = record.exc_info[1] if record.exc_info else None
  return (bool(_saving) and record.levelno >= logging.ERROR and "orbax" in record.pathname
          and (SAVE_FAILED_LOG in record.getMessage()
               or _names_a_checkpoint_in_flight(record.getMessage())
               or _names_a_checkpoint_in_flight(error)))


def _keep_orbax_log(record: logging.LogRecord) -> bool:
  return not _is_failed_write(record)


def _hide_late_reads() -> None:
  """Keeps the late reads of a failed restore, and the reports of a failed save, away
  from its one-line error; every other unraisable exception, log record and warning still
  goes where it went. Once per process (pytest puts its own hook and warning filters back
  around each test)."""
  previous = sys.unraisablehook
  if getattr(previous, "drops_late_reads", False):
    return

  def hook(unraisable):
    if not _is_late_read(unraisable):
      previous(unraisable)

  hook.drops_late_reads = True
  sys.unraisablehook = hook
  logging.getLogger("asyncio").addFilter(_keep_report)
  logging.getLogger("absl").addFilter(_keep_orbax_log)
  for coroutine in (ORBAX_READ_COROUTINE, ORBAX_WRITE_COROUTINE):  # never begun, once failed
    warnings.filterwarnings("ignore", category=RuntimeWarning,
                            message=re.escape(f"coroutine '{coroutine}' was never awaited"))


def failure_reason(error: BaseException, most: int = 240) -> str:
  """What went wrong deepest down, in one line of at most `most` characters: Orbax wraps
  tensorstore's error (which names the array and the file) in one that adds a repr of
  the whole TensorStore spec."""
  while error.__cause__ is not None:
    error = error.__cause__
  line = f"{type(error).__name__}: {first_line(error)}".split(" See full TensorStore")[0]
  return line if len(line) <= most else line[:most - 1] + "…"


def write_failure(error: BaseException) -> str:
  """Why a save failed: the system's words where tensorstore names an OS error code (its
  own message gives them last, past any length a line can show), else failure_reason."""
  match = re.search(r"\[os_error_code='(\d+)'\]", str(error))
  return os.strerror(int(match.group(1))) if match else failure_reason(error)


def _restore(manager: ocp.CheckpointManager, epoch: int, template: State) -> State:
  checkpoint = os.path.join(str(manager.directory), str(epoch))
  _hide_late_reads()
  spellings = tensorstore_spellings(checkpoint) - _restoring
  _restoring.update(spellings)  # before the restore: its late reads may end before it returns
  try:
    state = manager.restore(epoch, args=ocp.args.StandardRestore(abstract_like(template)))
  except Exception as e:  # Orbax raises ValueError, OSError, ... with many-line messages
    raise CheckpointError(f"the checkpoint {checkpoint} cannot be restored "
                          f"({failure_reason(e)}); {restore_advice(checkpoint, epoch)}") from None
  _restoring.difference_update(spellings)  # restored: none of its reads is left behind
  return state


def restore_advice(checkpoint: str, epoch: int) -> str:
  """What to do about a checkpoint that cannot be restored: install the libraries that
  saved it where the run's config.json records others than these, else (damaged, or of
  another model) move it out; naming the vae_jax commit that trained it if it differs."""
  workdir = os.path.dirname(os.path.dirname(checkpoint))
  changed = software.changed_since(workdir, epoch)
  libraries = [text for name, text in changed.items() if name in software.PACKAGES]
  code = (f"; it was trained by {changed['vae_jax']}, whose model may differ"
          if "vae_jax" in changed else "")
  if libraries:
    return (f"it was trained with other libraries: {', '.join(libraries)}{code}. Install "
            f"those versions ({os.path.join(workdir, config_lib.CONFIG_FILE)} lists them "
            f"under {config_lib.SOFTWARE_KEY}) and retry; if it is damaged, move it out of "
            "the run folder to resume from the checkpoint before it")
  return (f"it is damaged or of another model{code}. Move it out of the run folder to "
          "resume from the checkpoint before it")


def abstract_like(state: State) -> State:
  """Shapes, dtypes and shardings of state: what Orbax restores into."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


class RunCheckpoints:
  """Milestone checkpoints (all kept) in W/checkpoints/<epoch>; the newest periodic one in
  W/checkpoints_latest/<epoch>. Two managers, so that keeping only the newest periodic
  checkpoint can never delete a milestone. Each step directory is finalised atomically by
  Orbax, so a save interrupted by a kill is never listed or restored."""

  def __init__(self, workdir: str, read_only: bool = False):
    workdir = self.workdir = os.path.abspath(workdir)
    self.failed = False  # a save failed (CheckpointWriteError)
    # The checkpoint folders as Orbax's and tensorstore's reports of a save name them.
    self.folder_spellings = {path for d in (MILESTONE_DIR, LATEST_DIR)
                             for path in folder_spellings(os.path.join(workdir, d))}
    # Orbax warns on every read-only open, which is what plot and evaluate want.
    with quiet.absl_warnings_off(read_only):
      self.milestones = ocp.CheckpointManager(
          os.path.join(workdir, MILESTONE_DIR),
          options=ocp.CheckpointManagerOptions(create=not read_only, read_only=read_only))
      self.latest = ocp.CheckpointManager(
          os.path.join(workdir, LATEST_DIR),
          options=ocp.CheckpointManagerOptions(max_to_keep=1, create=not read_only,
                                               read_only=read_only))

  def milestone_epochs(self) -> list[int]:
    return sorted(self.milestones.all_steps())

  def _newest(self) -> Optional[tuple[int, ocp.CheckpointManager]]:
    candidates = [(m.latest_step(), m) for m in (self.milestones, self.latest)
                  if m.latest_step() is not None]
    return max(candidates, key=lambda c: c[0]) if candidates else None

  def newest_epoch(self) -> Optional[int]:
    newest = self._newest()
    return None if newest is None else newest[0]

  def newest_description(self) -> str:
    newest = self._newest()
    if newest is None:
      return "none"
    epoch, manager = newest
    return f"epoch {epoch} ({os.path.join(str(manager.directory), str(epoch))})"

  def restore_newest(self, template: State) -> Optional[State]:
    """The newest saved state of either kind, placed like template; None if there is none."""
    newest = self._newest()
    if newest is None:
      return None
    epoch, manager = newest
    return _restore(manager, epoch, template)

  def restore_milestone(self, epoch: int, template: State) -> State:
    return _restore(self.milestones, epoch, template)

  def save_milestone(self, epoch: int, state) -> None:
    self._save(self.milestones, epoch, state)

  def save_latest(self, epoch: int, state) -> None:
    self._save(self.latest, epoch, state)

  def _save(self, manager: ocp.CheckpointManager, epoch: int, state) -> None:
    """Begins the save (Orbax prepares the folder here and writes the arrays in the
    background); a CheckpointWriteError if the folder cannot be prepared."""
    _hide_late_reads()
    _saving.update(self.folder_spellings)  # until the save is known to be written
    try:
      manager.save(epoch, args=ocp.args.StandardSave(state))
    except Exception as e:  # e.g. no space left for the folder or its metadata
      self.failed = True
      raise CheckpointWriteError(epoch, e) from None

  def wait_for_saves(self, epoch: int) -> None:
    """Returns once every save begun so far is written (Orbax writes in the background); a
    CheckpointWriteError if one failed, e.g. on a full disk."""
    try:
      for manager in (self.milestones, self.latest):
        manager.wait_until_finished()
    except Exception as e:  # Orbax re-raises the writer thread's error, with tensorstore's words
      self.failed = True
      raise CheckpointWriteError(epoch, e) from None
    _saving.difference_update(self.folder_spellings)  # written: none of its reports is left

  def __enter__(self) -> "RunCheckpoints":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def close(self) -> None:
    """Waits for asynchronous saves to finish; closing again does nothing more. The reports
    of a failed save stay hidden (they come as late as the process's end)."""
    for manager in (self.milestones, self.latest):
      manager.wait_until_finished()
      manager.close()
    if not self.failed:
      _saving.difference_update(self.folder_spellings)
