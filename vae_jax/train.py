"""The training loop: data, resume, compiled epochs, metrics, milestone checkpoints and figures."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from typing import Callable, NamedTuple, Optional

import jax

from vae_jax import checkpoints, hosts, models, parallel, report, software, steps
from vae_jax import workdir as workdir_lib
from vae_jax import config as config_lib
from vae_jax.config import Config, ConfigError, validate
from vae_jax.input_pipeline import DataError, Split, binarize_fixed, load_split, train_split


class NonFiniteLossError(RuntimeError):
  """Training produced NaN or Inf; the message names the epoch and the last good checkpoint."""


class Interrupted(Exception):
  """Ctrl-C stopped training at an epoch's end, with that epoch saved; the message says so."""


def same_command(overwrite: bool) -> str:
  """The command that goes on with a stopped run: with --overwrite it would start afresh."""
  return "the same command without --overwrite" if overwrite else "the same command"


@contextlib.contextmanager
def stop_at_epoch_end(log: Callable[[str], None], again: str):
  """While active, a first Ctrl-C (SIGINT) asks training to stop once the current epoch
  is done and saved: yields a function telling whether it was pressed. A second Ctrl-C
  ends the process at once, as a kill would (a finished checkpoint survives that; one
  being written is never restored). Outside the main thread, signals stay as they are.
  again: the command that resumes, for the message."""
  if threading.current_thread() is not threading.main_thread():
    yield lambda: False
    return
  pressed = []

  def at_once(signum, frame):
    os.write(2, f"\nstopped at once; {again} resumes from the newest checkpoint\n".encode())
    os._exit(config_lib.INTERRUPTED_STATUS)

  def after_epoch(signum, frame):
    pressed.append(True)
    signal.signal(signal.SIGINT, at_once)
    log("Ctrl-C: stopping once this epoch is done and saved (press it again to stop at once)")

  previous = signal.signal(signal.SIGINT, after_epoch)
  try:
    yield lambda: bool(pressed)
  finally:
    signal.signal(signal.SIGINT, previous)


class Data(NamedTuple):
  train: Optional[Split]  # None where nothing reads it (redrawing a VAE's figures)
  val: Split


def load_data(config: Config) -> Data:
  """The training split (first train_examples) and the test split as validation data.

  With binarize="dynamic", training images are binarized afresh at every step (in
  steps.train_step) and the validation images once, with a fixed seed.
  """
  return Data(train=load_train(config), val=load_val(config))


def load_train(config: Config) -> Split:
  """The first train_examples training images, as stored (grey)."""
  return load_split(config.dataset, train_split(config.train_examples), config.data_dir,
                    config.manual_dir)


def load_prior_fit(config: Config, model) -> Optional[Split]:
  """The training images an AE's prior is fitted to (their codes define it); None for a
  variational model, whose prior is N(0, I) and reads no data."""
  return None if model.variational else load_train(config)


def load_val(config: Config) -> Split:
  """The test split, binarized once with a fixed seed where training binarizes."""
  val = load_split(config.dataset, "test", config.data_dir, config.manual_dir)
  return binarize_fixed(val) if config.binarize == "dynamic" else val


def metrics_row(epoch: int, train_terms, val_terms, seconds: float) -> dict[str, float]:
  row = {"epoch": epoch}
  for prefix, terms in (("train", train_terms), ("val", val_terms)):
    row.update({f"{prefix}_{k}": float(terms[k]) for k in ("loss", "recon", "kl")})
  row["seconds"] = seconds
  return row


def progress_line(row: dict[str, float], epochs: int, eta_seconds: float) -> str:
  return (f"epoch {row['epoch']:4d}/{epochs}  train {row['train_loss']:8.3f} "
          f"(recon {row['train_recon']:8.3f} kl {row['train_kl']:6.3f})  "
          f"val {row['val_loss']:8.3f} (recon {row['val_recon']:8.3f} kl {row['val_kl']:6.3f})  "
          f"{row['seconds']:6.2f}s  eta {eta_seconds / 60:5.1f} min")


def train_one_epoch(fns, state: steps.TrainState, train_data, val_data, epoch: int,
                    manager: checkpoints.RunCheckpoints,
                    overwrite: bool) -> tuple[steps.TrainState, dict]:
  """One compiled epoch and the validation pass -> (state, metrics row); NonFiniteLossError
  if the loss is no longer finite (its advice says to drop --overwrite, which would discard
  the last good checkpoint)."""
  epoch_start = time.time()
  state, train_terms = fns.train_epoch(state, *train_data)
  val_terms = jax.block_until_ready(fns.evaluate(state, *val_data))
  row = metrics_row(epoch, train_terms, val_terms, time.time() - epoch_start)
  if not all(math.isfinite(v) for v in row.values()):
    raise NonFiniteLossError(
        f"epoch {epoch}: the loss became non-finite (train {row['train_loss']}, "
        f"val {row['val_loss']}); training stopped. Last good checkpoint: "
        f"{manager.newest_description()}. Try a smaller --learning_rate"
        + ("; drop --overwrite, or it starts afresh."
           if overwrite and manager.newest_epoch() is not None else "."))
  return state, row


def load_data_everywhere(config: Config) -> Data:
  """load_data on every process, the writer first (it may build the dataset into a shared
  data_dir) and the others once it has; if any process fails, all raise, so that none
  waits for the others and nothing in the workdir has changed (a data error loses
  nothing, also with --overwrite)."""
  data, error = None, None

  def load():
    nonlocal data, error
    try:
      data = load_data(config)
    except Exception as e:  # re-raised below, once every process knows
      error = e

  if hosts.is_writer():
    load()
  hosts.wait_for_all("the writer loaded the data")
  if not hosts.is_writer():
    load()
  if hosts.any_process(error is not None):
    raise error or DataError("another process of this run could not load the data; its "
                             "error says why")
  return data


# Draws the figures of a milestone, (state, epoch) -> their folder (report.write_milestone
# with the run's model, config, data, metrics history, workdir and mesh).
DrawFigures = Callable[[steps.TrainState, int], str]


def redraw_unfinished_figures(manager: checkpoints.RunCheckpoints, state: steps.TrainState,
                              draw: DrawFigures, workdir: str, log: Callable[[str], None]) -> None:
  """Draws the figures of each saved milestone up to the restored epoch that has none
  (the run was stopped while drawing them)."""
  unfinished = [epoch for epoch in manager.milestone_epochs() if epoch <= int(state.epoch)
                and not os.path.isdir(workdir_lib.plots_dir(workdir, epoch))]
  hosts.wait_for_all("figures listed")  # every process draws the same ones
  for epoch in unfinished:
    milestone = state if epoch == int(state.epoch) else manager.restore_milestone(epoch, state)
    folder = draw(milestone, epoch)  # on every process, whether or not it logs
    log(f"milestone {epoch}: figures drawn in {folder} (the run had stopped before they were)")


def save_milestone(manager: checkpoints.RunCheckpoints, state: steps.TrainState, epoch: int,
                   draw: DrawFigures, log: Callable[[str], None]) -> None:
  """The milestone checkpoint of epoch and its figures."""
  manager.save_milestone(epoch, state)
  folder = draw(state, epoch)  # on every process, whether or not it logs
  manager.wait_for_saves(epoch)  # written while the figures were drawn; saved only now
  log(f"milestone {epoch}: checkpoint saved, figures in {folder}")


def resume_line(epoch: int, workdir: str, changed: list[str]) -> str:
  """The log line of a resume; a change may come from a flag the command left out."""
  line = f"resuming from the checkpoint of epoch {epoch} in {workdir}"
  if not changed:
    return line
  return (f"{line} with changed settings: {'; '.join(changed)} (a flag left out takes its "
          f"default, not {config_lib.CONFIG_FILE}'s)")


class Command(NamedTuple):
  """What a checked training command will do (check_command)."""
  mesh: jax.sharding.Mesh
  changed: list[str]  # settings that differ from the run's config.json, as workdir.check says
  resuming: bool      # workdir holds a run that this command goes on with


def check_command(config: Config, workdir: str, overwrite: bool) -> Command:
  """Every check that needs no data, before anything is loaded or written: the settings,
  the devices, and that the workdir holds no run these settings would damage."""
  validate(config)
  mesh = parallel.make_mesh(config.num_devices)
  parallel.check_batch_size(config.batch_size, mesh)
  changed = workdir_lib.check(workdir, config, overwrite)
  saved = [] if overwrite else checkpoints.saved_epochs(workdir)
  if saved and max(saved) > config.epochs:
    raise ConfigError(f"--epochs={config.epochs}, but {workdir} already holds epoch "
                      f"{max(saved)}; pass --epochs={max(saved)} or more to go on training it")
  return Command(mesh, changed, resuming=workdir_lib.is_run(workdir) and not overwrite)


def train_and_evaluate(config: Config, workdir: str, overwrite: bool = False,
                       log: Callable[[str], None] = print) -> steps.TrainState:
  """Trains (or resumes) a run in workdir; checkpoints and figures at each milestone.

  One command at a time writes to a workdir: while this one trains, another training (or
  a plot without --out) in it is refused, and this one is refused if another holds it.
  In a multi-host run every process calls this alike; only the first writes the files
  and logs progress (vae_jax.hosts)."""
  check_command(config, workdir, overwrite)  # its refusals first: they touch nothing
  with workdir_lib.held(workdir, "workdir", by_this_process=hosts.is_writer()) as refusal:
    if hosts.any_process(refusal is not None):  # all stop, none waits for the writer
      raise refusal or ConfigError("the first process of this run could not hold the "
                                   "workdir; its error says why")
    try:
      return train_holding_workdir(config, workdir, overwrite, log)
    except checkpoints.CheckpointWriteError as e:
      raise stopped_by_write(e, workdir, overwrite) from None


def stopped_by_write(error: checkpoints.CheckpointWriteError, workdir: str,
                     overwrite: bool) -> checkpoints.CheckpointError:
  """The one line of a training that a checkpoint it could not write stopped."""
  saved = checkpoints.saved_epochs(workdir)
  again = (f"{same_command(overwrite)} resumes from epoch {max(saved)}, the newest saved "
           "checkpoint" if saved else "the same command starts it again (no checkpoint is "
           "saved yet)")
  return checkpoints.CheckpointError(f"{error}; training stopped. Once it can be written "
                                     f"(room on the disk, say), {again}")


def train_holding_workdir(config: Config, workdir: str, overwrite: bool,
                          log: Callable[[str], None]) -> steps.TrainState:
  """train_and_evaluate, once this process holds the workdir."""
  writer = hosts.is_writer()
  notice = log  # what the user must see wherever it happens: a Ctrl-C on this process
  if not writer:
    log = lambda line: None  # noqa: E731
  # Checked again now that this process holds the workdir: another may have changed it.
  mesh, changed, resuming = check_command(config, workdir, overwrite)
  data = load_data_everywhere(config)  # before anything in workdir changes
  versions = software.versions() if writer else {}  # what config.json records
  # A new run's config.json is written at once. A resumed run's is rewritten only once the
  # command has added to the run (record_resume), in one write with the record of what
  # changed.
  if writer:
    workdir_lib.prepare(workdir, config, overwrite, write_config=not resuming,
                        trains_with=software.record_entry(1, versions))
  hosts.wait_for_all("workdir prepared")
  model = models.make_model(config.model, config.arch, config.latent_dim)
  tx = steps.make_optimizer(config)
  fns = steps.compile_fns(model, tx, config, mesh)
  # Closed on every way out: an error before training too (a damaged checkpoint).
  with checkpoints.RunCheckpoints(workdir) as manager:
    fresh = parallel.put_replicated(steps.init_state(model, tx, config.seed), mesh)
    state = manager.restore_newest(fresh) or fresh
    start = int(state.epoch)
    history = workdir_lib.truncate_metrics(workdir, start, write=writer)  # appended to below

    def draw(milestone_state: steps.TrainState, epoch: int) -> str:
      return report.write_milestone(milestone_state, model, config, data, history, workdir,
                                    epoch, mesh)

    redraw_unfinished_figures(manager, state, draw, workdir, log)
    finished = start == config.epochs

    def record_resume() -> None:
      """A resumed run's config.json: these settings, what changed and the software, once
      an epoch is trained without a NaN (before its metrics and checkpoint), or the last
      milestone is added."""
      if resuming and writer:
        config_lib.save(config, workdir, resumed=(start, changed) if start and changed else None,
                        trains_with=software.record_entry(  # finished: the milestone's
                            start if finished else start + 1, versions))

    if finished:
      # Stopped there (Ctrl-C), and now the run's last epoch: it gets the last milestone.
      if start not in manager.milestone_epochs():
        record_resume()
        save_milestone(manager, state, start, draw, log)
      log(f"{workdir} is already trained for {start} epochs; pass a larger --epochs to go on")
      return state
    if start:
      log(resume_line(start, workdir, changed))
    train_data, val_data = parallel.put_replicated(
        ((data.train.images, data.train.labels), (data.val.images, data.val.labels)), mesh)
    log(f"training {config.model}/{config.arch} z={config.latent_dim} on "
        f"{len(data.train.images)} {config.dataset} images, {mesh.size} "
        f"{jax.default_backend()} device(s); epochs {start + 1}..{config.epochs}, "
        f"milestones {list(config.milestone_epochs)}; compiling...")
    # Also while close() waits for the last saves (closing again at the with's end is a no-op).
    with stop_at_epoch_end(notice, same_command(overwrite)) as stop_requested:
      try:
        run_start = time.time()
        for epoch in range(start + 1, config.epochs + 1):
          state, row = train_one_epoch(fns, state, train_data, val_data, epoch, manager, overwrite)
          if epoch == start + 1:
            record_resume()
          history.append(row)
          if writer:
            workdir_lib.write_metrics(workdir, history)
          seconds_per_epoch = (time.time() - run_start) / (epoch - start)
          log(progress_line(row, config.epochs, seconds_per_epoch * (config.epochs - epoch)))
          milestone = epoch in config.milestone_epochs
          if milestone:
            save_milestone(manager, state, epoch, draw, log)
          # Asked once the milestone is saved (a Ctrl-C while it was drawn counts), and of
          # every process: all stop after the same epoch.
          stop = hosts.any_process(stop_requested())
          if not milestone and (epoch % config.checkpoint_every == 0 or stop):
            manager.save_latest(epoch, state)
            manager.wait_for_saves(epoch)
          if stop and epoch < config.epochs:
            raise Interrupted(f"interrupted after epoch {epoch}, which is saved; "
                              f"{same_command(overwrite)} goes on from there")
      finally:
        manager.close()  # waits for asynchronous saves, also when training stopped early
    return state
