"""Opening a saved run for plot, evaluate and generate (vae_jax.restore)."""

import subprocess
import sys

import pytest

from test_parallel import FOUR_DEVICES

from vae_jax import checkpoints, config as config_lib, models, parallel, restore, steps
from vae_jax.config import Config, ConfigError


def saved_run(workdir: str, milestones=(1, 2), num_devices=None) -> Config:
  """A run folder as training leaves it: config.json and these milestone checkpoints."""
  config = Config(batch_size=16, data_dir=f"{workdir}/old_tfds", num_devices=num_devices)
  config_lib.save(config, workdir)
  model = models.make_model(config.model, config.arch, config.latent_dim)
  state = parallel.put_replicated(
      steps.init_state(model, steps.make_optimizer(config), config.seed), parallel.make_mesh())
  manager = checkpoints.RunCheckpoints(workdir)
  for epoch in milestones:
    manager.save_milestone(epoch, state)
  manager.close()
  return config


def test_a_run_opens_with_the_data_dir_given_and_the_epoch_asked_for(tmp_path, closed_managers):
  saved_run(str(tmp_path))
  closed_managers.clear()
  with pytest.raises(ConfigError, match="--epoch=3 is not saved .*saved epochs: 1, 2"):
    with restore.open_run(str(tmp_path), data_dir=str(tmp_path / "moved")) as run:
      assert run.config.data_dir == str(tmp_path / "moved")
      assert restore.milestone_epochs(run, 1) == [1]
      assert restore.milestone_epochs(run, None) == [1, 2]
      restore.milestone_epochs(run, 3)
  assert closed_managers == [run.manager]  # by the with statement, on the error
  with restore.open_run(str(tmp_path)) as kept:
    assert kept.config.data_dir == str(tmp_path / "old_tfds")
  assert closed_managers == [run.manager, kept.manager]
  with checkpoints.RunCheckpoints(str(tmp_path), read_only=True) as manager:
    assert manager.milestone_epochs() == [1, 2]
  assert closed_managers[-1] is manager


def test_a_run_without_a_milestone_yet_is_one_line(tmp_path, closed_managers):
  saved_run(str(tmp_path), milestones=())
  closed_managers.clear()
  with pytest.raises(ConfigError, match="holds no milestone checkpoint yet"):
    restore.open_run(str(tmp_path))
  assert len(closed_managers) == 1  # the checkpoints it had opened are closed again


def test_a_run_opens_on_as_many_devices_as_it_trained_on(tmp_path):
  saved_run(str(tmp_path), num_devices=2)
  code = ("import sys; from vae_jax import restore; run = restore.open_run(sys.argv[1]); "
          "print(run.mesh.size); run.manager.close()")
  result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=FOUR_DEVICES,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split()[-1] == "2"  # of the 4 visible


def test_only_the_late_reads_of_a_checkpoint_being_restored_are_dropped(tmp_path, monkeypatch):
  """A failed restore's other reads fail later, reported by asyncio ("Task exception was
  never retrieved") or as unraisable exceptions, or are never begun (a RuntimeWarning);
  those naming the checkpoint, or Orbax's read, are dropped, any other report goes through."""
  import inspect
  import logging
  import types
  import warnings

  from orbax.checkpoint._src.serialization import serialization

  passed_on = []
  monkeypatch.setattr(sys, "unraisablehook", passed_on.append)
  monkeypatch.setattr(checkpoints, "_restoring", set())
  sys.unraisablehook(types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed")))
  with warnings.catch_warnings(record=True) as warned:
    warnings.simplefilter("always")
    checkpoints._hide_late_reads()
    for name in (checkpoints.ORBAX_READ_COROUTINE, "something_else"):
      warnings.warn(f"coroutine '{name}' was never awaited", RuntimeWarning)
  assert [str(w.message) for w in warned] == ["coroutine 'something_else' was never awaited"]
  # the read coroutine that a failed restore leaves unawaited (a pinned Orbax's private name)
  assert inspect.iscoroutinefunction(getattr(serialization, checkpoints.ORBAX_READ_COROUTINE))
  folder = tmp_path / "café"
  checkpoints._restoring.update(checkpoints.tensorstore_spellings(str(folder / "checkpoints" / "2")))

  def read_error(step: str, where: str = str(folder)) -> ValueError:
    return ValueError(f'OUT_OF_RANGE: Error reading "params.kernel/0.0" in OCDBT database at '
                      f'local file "{where}/checkpoints/{step}/default/": Requested byte '
                      "range [0, 12) is not valid for value of size 8")

  as_tensorstore_writes_it = str(folder).encode().decode("ascii", "backslashreplace")
  assert "\\xc3\\xa9" in as_tensorstore_writes_it  # é, as tensorstore escapes it

  def reported(message: str, error: Exception) -> bool:
    record = logging.getLogger("asyncio").makeRecord(
        "asyncio", logging.ERROR, __file__, 1, message, (), (type(error), error, None))
    return logging.getLogger("asyncio").filter(record)

  assert not reported("Task exception was never retrieved", read_error("2"))
  assert not reported("Task exception was never retrieved",
                      read_error("2", as_tensorstore_writes_it))
  assert not reported("_GatheringFuture exception was never retrieved", read_error("2"))
  assert reported("Task exception was never retrieved", read_error("20"))  # not being restored
  assert reported("Task exception was never retrieved", read_error("2", f"/mnt{folder}"))
  assert reported("Task exception was never retrieved", ValueError("something else"))
  assert reported("Unclosed client session", read_error("2"))
  # A shape that differs names no file; the error's traceback passes through Orbax's read.
  def raised_in(function_name: str) -> ValueError:
    namespace = {}
    exec(f"def {function_name}():\n  raise ValueError('Requested shape: (256, 3) is not "
         "compatible with the stored shape: (256, 2).')", namespace)
    try:
      namespace[function_name]()
    except ValueError as e:
      return e

  assert not reported("Task exception was never retrieved",
                      raised_in(checkpoints.ORBAX_READ_COROUTINE))
  assert reported("Task exception was never retrieved", raised_in("another_coroutine"))
  for error in (read_error("2"), RuntimeError("Event loop is closed"), read_error("20"),
                ValueError("something else")):
    sys.unraisablehook(types.SimpleNamespace(exc_value=error))
  # Before any restore, "Event loop is closed" went through too.
  assert [str(u.exc_value) for u in passed_on] == [
      "Event loop is closed", str(read_error("20")), "something else"]
  checkpoints._restoring.clear()  # no restore unfinished: Orbax's read errors go through
  assert reported("Task exception was never retrieved",
                  raised_in(checkpoints.ORBAX_READ_COROUTINE))


def test_a_restore_that_succeeds_leaves_no_reads_to_hide(tmp_path, monkeypatch):
  monkeypatch.setattr(checkpoints, "_restoring", set())
  saved_run(str(tmp_path))
  with restore.open_run(str(tmp_path)) as run:
    restore.restore(run, 2)
  assert checkpoints._restoring == set()


def test_a_failed_restore_is_told_by_its_deepest_cause_in_one_short_line():
  def chained() -> Exception:
    try:
      try:
        raise ValueError('OUT_OF_RANGE: Error reading "params.kernel/0.0"\nsecond line')
      except ValueError as read_error:
        raise Exception("Encountered error while reading array index: (slice(0, 2, 1),). "
                        "See full TensorStore details: <bound method ...>") from read_error
    except Exception as e:
      return e

  assert (checkpoints.failure_reason(chained())
          == 'ValueError: OUT_OF_RANGE: Error reading "params.kernel/0.0"')
  wrapped_only = Exception("Encountered error while reading array index: (slice(0, 2, 1),). "
                           "See full TensorStore details: <bound method ...>")
  assert (checkpoints.failure_reason(wrapped_only)
          == "Exception: Encountered error while reading array index: (slice(0, 2, 1),).")
  long = checkpoints.failure_reason(OSError("x" * 500), most=40)
  assert len(long) == 40 and long.startswith("OSError: xxx") and long.endswith("…")
