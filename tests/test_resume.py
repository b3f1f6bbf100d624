"""Runs that survive a kill, a half-written checkpoint, changed settings and a divergence."""

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest

from conftest import REPO, milestone_epochs
from vae_jax import checkpoints, input_pipeline, models, parallel, restore, software, steps, train
from vae_jax import config as config_lib, workdir as workdir_lib
from vae_jax.config import Config, ConfigError


def small_config(tfds_dir, mnist_dir, **changes):
  # 16 steps an epoch on real MNIST; a checkpoint every epoch so a kill can land anywhere.
  base = Config(epochs=6, milestones=(6,), train_examples=2048, checkpoint_every=1,
                data_dir=tfds_dir, manual_dir=mnist_dir)
  return dataclasses.replace(base, **changes)


def cli_args(config, workdir):
  return [f"--workdir={workdir}", f"--epochs={config.epochs}",
          f"--milestones={','.join(map(str, config.milestones))}",
          f"--train_examples={config.train_examples}", f"--checkpoint_every={config.checkpoint_every}",
          f"--data_dir={config.data_dir}", f"--manual_dir={config.manual_dir}"]


def final_state(workdir, config):
  model = models.make_model(config.model, config.arch, config.latent_dim)
  tx = steps.make_optimizer(config)
  template = parallel.put_replicated(steps.init_state(model, tx, config.seed), parallel.make_mesh())
  with checkpoints.RunCheckpoints(workdir, read_only=True) as manager:
    return manager.restore_milestone(config.epochs, template)


def assert_states_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_sigkill_and_rerun_ends_bit_identical_to_an_uninterrupted_run(tmp_path, tfds_dir, mnist_dir):
  config = small_config(tfds_dir, mnist_dir)
  uninterrupted = str(tmp_path / "uninterrupted")
  train.train_and_evaluate(config, uninterrupted, log=lambda _: None)

  killed = str(tmp_path / "killed")
  command = [sys.executable, "-m", "vae_jax.main", *cli_args(config, killed)]
  env = dict(os.environ, PYTHONPATH=REPO)
  process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while len(workdir_lib.read_metrics(killed)) < 3 and process.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  time.sleep(0.15)  # land somewhere inside the next epoch or save
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
  rows_at_kill = len(workdir_lib.read_metrics(killed))
  assert 3 <= rows_at_kill < 6

  rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr
  assert "resuming from the checkpoint of epoch" in rerun.stdout
  assert_states_equal(final_state(killed, config), final_state(uninterrupted, config))
  assert workdir_lib.read_metrics(killed) == [
      dict(r, seconds=r2["seconds"]) for r, r2 in
      zip(workdir_lib.read_metrics(uninterrupted), workdir_lib.read_metrics(killed))]


def test_ctrl_c_stops_at_the_epoch_end_with_that_epoch_saved(tmp_path, tfds_dir, mnist_dir):
  config = small_config(tfds_dir, mnist_dir)
  workdir = str(tmp_path / "run")
  env = dict(os.environ, PYTHONPATH=REPO)
  process = subprocess.Popen([sys.executable, "-m", "vae_jax.main", *cli_args(config, workdir)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while len(workdir_lib.read_metrics(workdir)) < 2 and process.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  process.send_signal(signal.SIGINT)
  stderr = process.communicate(timeout=120)[1]
  assert process.returncode == 130, stderr
  assert "Traceback" not in stderr
  last = stderr.strip().splitlines()[-1]
  match = re.fullmatch(r"interrupted after epoch (\d), which is saved; the same command goes on "
                       r"from there", last)
  assert match, stderr
  # The epoch it stopped after is the newest checkpoint, and the metrics end there too.
  stopped = int(match.group(1))
  assert 2 <= stopped < config.epochs
  assert max(checkpoints.saved_epochs(workdir)) == stopped
  assert workdir_lib.read_metrics(workdir)[-1]["epoch"] == stopped


def test_a_second_ctrl_c_stops_at_once(tmp_path, tfds_dir, mnist_dir):
  # All 60,000 images: epochs of seconds, so the second Ctrl-C lands inside the next one.
  config = small_config(tfds_dir, mnist_dir, train_examples=None)
  workdir = str(tmp_path / "run")
  args = [a for a in cli_args(config, workdir) if not a.startswith("--train_examples")]
  process = subprocess.Popen([sys.executable, "-m", "vae_jax.main", *args],
                             env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while not workdir_lib.read_metrics(workdir) and process.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  process.send_signal(signal.SIGINT)
  time.sleep(0.5)  # the first is handled: training now waits for the epoch's end
  process.send_signal(signal.SIGINT)
  stdout, stderr = process.communicate(timeout=120)
  assert process.returncode == 130, stderr
  assert "Ctrl-C: stopping once this epoch is done" in stdout
  assert stderr.strip().splitlines()[-1] == (
      "stopped at once; the same command resumes from the newest checkpoint")
  assert "Traceback" not in stderr
  assert max(checkpoints.saved_epochs(workdir)) < config.epochs


def test_a_stop_under_overwrite_says_to_go_on_without_it(tmp_path, tfds_dir, mnist_dir):
  """--overwrite in the command would throw the saved epochs away: the advice drops it."""
  config = small_config(tfds_dir, mnist_dir, epochs=3, milestones=(3,))
  workdir = str(tmp_path / "run")

  def press_ctrl_c_after_epoch_1(line):
    if line.startswith("epoch    1/"):
      os.kill(os.getpid(), signal.SIGINT)  # the handler training installed asks for a stop

  before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN under nohup
  with pytest.raises(train.Interrupted, match=r"^interrupted after epoch 1, which is saved; "
                     r"the same command without --overwrite goes on from there$"):
    train.train_and_evaluate(config, workdir, overwrite=True, log=press_ctrl_c_after_epoch_1)
  assert checkpoints.saved_epochs(workdir) == [1]
  assert signal.getsignal(signal.SIGINT) is before  # restored

  # A divergence now: the advice keeps the checkpoint there is (none in an empty folder).
  nan = {"loss": float("nan"), "recon": 0.0, "kl": 0.0}
  diverging = types.SimpleNamespace(train_epoch=lambda state, *data: (state, nan),
                                    evaluate=lambda state, *data: nan)
  for folder, overwrite, advice in (
      (workdir, True, "epoch 1 .*Try a smaller --learning_rate; drop --overwrite, or it starts afresh"),
      (workdir, False, "epoch 1 .*Try a smaller --learning_rate"),
      (str(tmp_path / "empty"), True, "none. Try a smaller --learning_rate")):
    manager = checkpoints.RunCheckpoints(folder)
    with pytest.raises(train.NonFiniteLossError, match=rf"Last good checkpoint: {advice}\.$"):
      train.train_one_epoch(diverging, None, (), (), 2, manager, overwrite)
    manager.close()


def test_half_written_checkpoint_is_never_restored(tmp_path, tfds_dir, mnist_dir):
  config = small_config(tfds_dir, mnist_dir, epochs=2, milestones=(2,))
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir, log=lambda _: None)
  latest = os.path.join(workdir, checkpoints.LATEST_DIR)
  assert sorted(os.listdir(latest)) == ["1"]
  # What a kill during the save of epoch 5 leaves: Orbax's temporary folder, not finalised.
  partial = os.path.join(latest, "5.orbax-checkpoint-tmp")
  shutil.copytree(os.path.join(latest, "1"), partial)
  os.remove(os.path.join(partial, "_CHECKPOINT_METADATA"))
  with checkpoints.RunCheckpoints(workdir, read_only=True) as manager:
    assert manager.newest_description().startswith("epoch 2 ")
    assert manager.latest.all_steps() == [1]

  # A row whose epoch never reached a checkpoint (a kill after the row was written).
  with open(os.path.join(workdir, workdir_lib.METRICS_FILE), "a") as f:
    f.write("3," + ",".join(["999.0"] * (len(workdir_lib.METRICS_COLUMNS) - 1)) + "\n")

  lines = []
  train.train_and_evaluate(dataclasses.replace(config, epochs=4, milestones=(4,)), workdir,
                           log=lines.append)
  assert any("resuming from the checkpoint of epoch 2" in l for l in lines)
  rows = workdir_lib.read_metrics(workdir)
  assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and rows[2]["train_loss"] != 999.0
  # Only the newest periodic checkpoint is kept (the folder Orbax never finalised stays).
  assert [d for d in os.listdir(latest) if d.isdigit()] == ["3"]


def test_other_settings_are_refused_and_overwrite_starts_afresh(tmp_path, tfds_dir, mnist_dir):
  config = small_config(tfds_dir, mnist_dir, epochs=1, milestones=(1,))
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir, log=lambda _: None)
  before = sorted(os.listdir(workdir))
  with pytest.raises(ConfigError, match=r"latent_dim: 2 -> 3; beta: 1.0 -> 2.0"):
    train.train_and_evaluate(dataclasses.replace(config, latent_dim=3, beta=2.0), workdir)
  assert sorted(os.listdir(workdir)) == before
  assert workdir_lib.read_metrics(workdir)[0]["epoch"] == 1

  lines = []
  train.train_and_evaluate(dataclasses.replace(config, latent_dim=3), workdir, overwrite=True,
                           log=lines.append)
  assert not any("resuming" in l for l in lines)
  assert final_state(workdir, dataclasses.replace(config, latent_dim=3)).params[
      "encoder"]["mean"]["kernel"].shape[-1] == 3


def test_divergence_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path, tfds_dir, mnist_dir):
  config = small_config(tfds_dir, mnist_dir, epochs=2, milestones=(2,))
  workdir = str(tmp_path / "run")
  good = train.train_and_evaluate(config, workdir, log=lambda _: None)
  absurd = dataclasses.replace(config, epochs=4, milestones=(4,), learning_rate=1e30)
  with pytest.raises(train.NonFiniteLossError,
                     match=r"epoch 3: .*non-finite.*Last good checkpoint: epoch 2 "):
    train.train_and_evaluate(absurd, workdir, log=lambda _: None)
  assert [r["epoch"] for r in workdir_lib.read_metrics(workdir)] == [1, 2]
  assert_states_equal(final_state(workdir, config), good)
  assert milestone_epochs(workdir) == [2]
  # No epoch was added: config.json records no change (the learning rate trained nothing).
  assert config_lib.load(workdir) == config and config_lib.changes_on_resume(workdir) == []


def test_corrupt_data_file_gives_a_checksum_hint(tmp_path, mnist_dir):
  corrupt = tmp_path / "mnist"
  shutil.copytree(mnist_dir, corrupt)
  target = corrupt / "t10k-labels-idx1-ubyte.gz"
  os.chmod(target, 0o644)
  target.write_bytes(target.read_bytes()[:1000])
  env = dict(os.environ, PYTHONPATH=REPO)
  result = subprocess.run(
      [sys.executable, "-m", "vae_jax.main", f"--workdir={tmp_path / 'run'}", "--epochs=1",
       f"--manual_dir={corrupt}", f"--data_dir={tmp_path / 'tfds'}"],
      env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, result.stderr
  assert "t10k-labels-idx1-ubyte.gz" in errors[0] and "checksum" in errors[0]
  assert "Traceback" not in result.stderr


def test_overwrite_keeps_the_old_run_when_the_new_data_fails_to_load(tmp_path, tfds_dir, mnist_dir,
                                                                     fashion_dir):
  config = small_config(tfds_dir, mnist_dir, epochs=1, milestones=(1,))
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir, log=lambda _: None)
  before = sorted(os.listdir(workdir))
  # Fashion-MNIST's files under MNIST's names: tfds's checksums reject them.
  wrong_files = dataclasses.replace(config, manual_dir=fashion_dir, data_dir=str(tmp_path / "tfds"))
  with pytest.raises(input_pipeline.DataError, match="not the official mnist file"):
    train.train_and_evaluate(wrong_files, workdir, overwrite=True, log=lambda _: None)
  assert sorted(os.listdir(workdir)) == before
  assert milestone_epochs(workdir) == [1]


def test_figures_cut_short_are_drawn_on_resume_and_a_lower_epochs_needs_overwrite(
    tmp_path, tfds_dir, mnist_dir):
  config = small_config(tfds_dir, mnist_dir, epochs=2, milestones=(2,))
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir, log=lambda _: None)
  folder = workdir_lib.plots_dir(workdir, 2)
  means = np.load(os.path.join(folder, "latents.npz"))["means"]
  # What a kill while drawing leaves: the .partial folder, no epoch_002.
  shutil.rmtree(folder)
  os.makedirs(folder + ".partial")
  lines = []
  train.train_and_evaluate(config, workdir, log=lines.append)
  assert any(l.startswith("milestone 2: figures drawn") for l in lines), lines
  assert "already trained for 2 epochs" in lines[-1]
  assert not os.path.exists(folder + ".partial")
  assert {"samples.png", "reconstructions.png", "latent_scatter.png", "latent_manifold.png",
          "loss_curves.png", "interpolation.png", "latents.npz"} <= set(os.listdir(folder))
  np.testing.assert_array_equal(np.load(os.path.join(folder, "latents.npz"))["means"], means)

  with pytest.raises(ConfigError, match=r"--epochs=1, but .* already holds epoch 2"):
    train.train_and_evaluate(dataclasses.replace(config, epochs=1, milestones=(1,)), workdir)
  assert config_lib.load(workdir).epochs == 2
  # --overwrite discards the run, so its epochs no longer count.
  train.train_and_evaluate(dataclasses.replace(config, epochs=1, milestones=(1,)), workdir,
                           overwrite=True, log=lambda _: None)
  assert checkpoints.saved_epochs(workdir) == [1] and config_lib.load(workdir).epochs == 1


# tensorstore's reads still in flight when the restore fails report to a closed event
# loop; checkpoints drops those reports, so pytest must not see them either.
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_damaged_checkpoint_is_one_line_naming_it(tmp_path, tfds_dir, mnist_dir,
                                                    closed_managers):
  config = small_config(tfds_dir, mnist_dir, epochs=1, milestones=(1,))
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir, log=lambda _: None)
  step = os.path.join(workdir, checkpoints.MILESTONE_DIR, "1")
  # The arrays' files: the checkpoint opens, then all its reads fail, most of them after
  # the restore has given up. Unless hidden, they printed tracebacks after the error line
  # in 4 of 5 command-line runs.
  data_files = [os.path.join(d, f) for d, _, files in os.walk(step) for f in files
                if d.endswith(os.path.join("ocdbt.process_0", "d"))]
  assert data_files
  for path in data_files:
    with open(path, "wb") as f:
      f.write(np.random.default_rng(0).bytes(100))
  with pytest.raises(checkpoints.CheckpointError) as error:
    with restore.open_run(workdir) as run:
      restore.restore(run, 1)
  message = str(error.value)
  assert "\n" not in message and step in message and "Move it out" in message
  assert "Error reading" in message and "TensorStore" not in message  # tensorstore's own words
  longer = dataclasses.replace(config, epochs=2, milestones=(2,))
  closed_managers.clear()
  with pytest.raises(checkpoints.CheckpointError):
    train.train_and_evaluate(longer, workdir, log=lambda _: None)
  assert len(closed_managers) == 1  # the run's checkpoints, closed on the error
  # From the command line: the error line and nothing else (no stray tracebacks). Whether
  # the abandoned reads report is a matter of timing, so three tries (unhidden, they
  # printed in 4 runs of 5, so three clean runs would come about once in 125).
  for _ in range(3):
    result = subprocess.run([sys.executable, "-m", "vae_jax.main", *cli_args(longer, workdir)],
                            env=dict(os.environ, PYTHONPATH=REPO), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: the checkpoint {step} cannot"), lines


def test_a_damaged_metrics_file_is_one_line(tmp_path):
  workdir_lib.write_metrics(str(tmp_path), [dict.fromkeys(workdir_lib.METRICS_COLUMNS, 1)])
  with open(tmp_path / workdir_lib.METRICS_FILE, "a") as f:
    f.write("2,150.5,140.1\n")  # a row cut short
  with pytest.raises(ConfigError, match="metrics.csv is damaged"):
    workdir_lib.read_metrics(str(tmp_path))


def test_a_metrics_file_without_its_header_is_one_line(tmp_path):
  workdir_lib.write_metrics(str(tmp_path), [dict.fromkeys(workdir_lib.METRICS_COLUMNS, 1)])
  path = tmp_path / workdir_lib.METRICS_FILE
  path.write_text("".join(path.read_text().splitlines(keepends=True)[1:]))  # header lost
  with pytest.raises(ConfigError, match="metrics.csv is damaged .its header"):
    workdir_lib.read_metrics(str(tmp_path))


def test_a_run_stopped_before_its_last_milestone_gets_one_at_a_lower_epochs(tmp_path, tfds_dir,
                                                                          mnist_dir):
  # A run stopped after epoch 2 of 4 (what Ctrl-C leaves: only checkpoints_latest/2),
  # then declared done at --epochs=2: epoch 2 is now its last epoch, so it gets the
  # milestone checkpoint and figures that the last epoch always gets.
  config = small_config(tfds_dir, mnist_dir, epochs=4, milestones=(4,), checkpoint_every=2)
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir, log=lambda _: None)
  shutil.rmtree(os.path.join(workdir, checkpoints.MILESTONE_DIR, "4"))
  shutil.rmtree(workdir_lib.plots_dir(workdir, 4))
  assert checkpoints.saved_epochs(workdir) == [2]
  lines = []
  done = dataclasses.replace(config, epochs=2, milestones=(2,))
  train.train_and_evaluate(done, workdir, log=lines.append)
  assert any(l.startswith("milestone 2: checkpoint saved") for l in lines), lines
  assert milestone_epochs(workdir) == [2]
  assert "latent_scatter.png" in os.listdir(workdir_lib.plots_dir(workdir, 2))
  assert config_lib.load(workdir) == done
  assert config_lib.changes_on_resume(workdir) == [
      {"after_epoch": 2, "changes": ["epochs: 4 -> 2", "milestones: (4,) -> (2,)"]}]

  # Done now: the same command, or one with another learning rate, changes nothing.
  before = (workdir_lib.read_metrics(workdir), config_lib.load(workdir))
  lines = []
  train.train_and_evaluate(dataclasses.replace(done, learning_rate=0.5), workdir, log=lines.append)
  assert lines == [f"{workdir} is already trained for 2 epochs; pass a larger --epochs to go on"]
  assert (workdir_lib.read_metrics(workdir), config_lib.load(workdir)) == before


def test_config_json_records_the_settings_and_software_changed_on_each_resume(
    tmp_path, tfds_dir, mnist_dir, monkeypatch):
  config = small_config(tfds_dir, mnist_dir, epochs=1, milestones=(1,))
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir, log=lambda _: None)
  assert config_lib.changes_on_resume(workdir) == []
  here = software.versions()
  assert config_lib.trained_with(workdir) == [{"from_epoch": 1, "versions": here}]
  slower = dataclasses.replace(config, epochs=2, milestones=(2,), learning_rate=5e-4)

  # Ctrl-C while compiling the resumed run: config.json still holds the settings that
  # trained the saved epochs, so the next command sees (and records) the same change.
  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(steps, "compile_fns", interrupted)
    with pytest.raises(KeyboardInterrupt):
      train.train_and_evaluate(slower, workdir, log=lambda _: None)
  assert config_lib.load(workdir) == config
  lines = []
  train.train_and_evaluate(slower, workdir, log=lines.append)
  assert lines[0] == (
      f"resuming from the checkpoint of epoch 1 in {workdir} with changed settings: "
      "learning_rate: 0.001 -> 0.0005; epochs: 1 -> 2; milestones: (1,) -> (2,) "
      "(a flag left out takes its default, not config.json's)")
  # Done: the same command again trains nothing and records nothing.
  train.train_and_evaluate(slower, workdir, log=lambda _: None)
  assert config_lib.changes_on_resume(workdir) == [{"after_epoch": 1, "changes": [
      "learning_rate: 0.001 -> 0.0005", "epochs: 1 -> 2", "milestones: (1,) -> (2,)"]}]
  assert config_lib.load(workdir) == slower  # the records are no settings
  assert config_lib.trained_with(workdir) == [{"from_epoch": 1, "versions": here}]
  newer = {**here, "jax": "99.0"}  # epoch 3 is trained by other software
  monkeypatch.setattr(software, "versions", lambda: newer)
  train.train_and_evaluate(dataclasses.replace(slower, epochs=3, milestones=(3,)), workdir,
                           log=lambda _: None)
  assert [r["after_epoch"] for r in config_lib.changes_on_resume(workdir)] == [1, 2]
  assert config_lib.trained_with(workdir) == [{"from_epoch": 1, "versions": here},
                                              {"from_epoch": 3, "versions": newer}]


def test_a_folder_with_run_files_but_no_config_is_refused_and_kept(tmp_path, tfds_dir, mnist_dir):
  # Not a vae_jax run: neither training nor --overwrite reads or removes anything of it.
  folder = tmp_path / "thesis"
  (folder / "plots").mkdir(parents=True)
  (folder / "plots" / "figure_3.txt").write_text("mine")
  (folder / "metrics.csv").write_text("a,b\n1,2\n")
  config = small_config(tfds_dir, mnist_dir, epochs=1, milestones=(1,))
  for overwrite in (False, True):
    with pytest.raises(ConfigError, match=r"holds plots, metrics.csv but no config.json"):
      train.train_and_evaluate(config, str(folder), overwrite=overwrite, log=lambda _: None)
  assert sorted(os.listdir(folder)) == ["metrics.csv", "plots"]
  assert (folder / "plots" / "figure_3.txt").read_text() == "mine"
  results = tmp_path / "results"  # only files of the names evaluate and generate write
  results.mkdir()
  (results / "eval_epoch_007.json").write_text("{}")
  with pytest.raises(ConfigError, match=r"holds eval_epoch_007.json but no config.json"):
    train.train_and_evaluate(config, str(results), overwrite=True, log=lambda _: None)
  assert os.listdir(results) == ["eval_epoch_007.json"]


def test_overwrite_also_discards_the_old_runs_evaluations(tmp_path):
  # The evaluate and generate outputs of the discarded run must not sit beside the new one.
  config = Config(epochs=1, milestones=(1,))
  config_lib.save(config, str(tmp_path))
  for name in ("eval_epoch_001_first20.json", "generated_digit7_epoch_001.png", "notes.txt",
               "generated_mine.png"):
    (tmp_path / name).write_text("x")
  workdir_lib.prepare(str(tmp_path), dataclasses.replace(config, beta=3.0), overwrite=True)
  assert sorted(os.listdir(tmp_path)) == ["config.json", "generated_mine.png", "notes.txt"]
  assert config_lib.load(str(tmp_path)).beta == 3.0


def test_overwrite_replaces_a_run_whose_config_file_is_damaged(tmp_path):
  workdir = str(tmp_path)
  (tmp_path / config_lib.CONFIG_FILE).write_text('{"latent_dim": 2, "epo')  # cut short
  (tmp_path / workdir_lib.METRICS_FILE).write_text("epoch\n")
  config = Config(epochs=1, milestones=(1,))
  with pytest.raises(ConfigError, match="is not a vae_jax config"):
    workdir_lib.check(workdir, config, overwrite=False)
  assert workdir_lib.check(workdir, config, overwrite=True) == []
  workdir_lib.prepare(workdir, config, overwrite=True)
  assert sorted(os.listdir(tmp_path)) == ["config.json"]
  assert config_lib.load(workdir) == config


def holding_process(workdir: str) -> subprocess.Popen:
  """Another process that holds workdir as a training does (workdir.held), until killed."""
  code = ("import sys, time\n"
          "from vae_jax import workdir\n"
          "with workdir.held(sys.argv[1], 'workdir') as refusal:\n"
          "  print(refusal, flush=True)\n"
          "  time.sleep(600)\n")
  holder = subprocess.Popen([sys.executable, "-c", code, workdir], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=REPO))
  assert holder.stdout.readline() == "None\n"
  return holder


def test_one_command_at_a_time_writes_to_a_workdir(tmp_path, tfds_dir, mnist_dir):
  from vae_jax import plot

  config = small_config(tfds_dir, mnist_dir, epochs=1, milestones=(1,))
  workdir = str(tmp_path / "run")
  # Two trainings in one workdir replaced each other's checkpoints and metrics.
  holder = holding_process(workdir)
  try:
    with pytest.raises(ConfigError, match=re.escape(
        f"--workdir={workdir} is in use by another vae_jax command that writes to it")):
      train.train_and_evaluate(config, workdir, log=lambda _: None)
    assert os.listdir(workdir) == [workdir_lib.LOCK_FILE]  # nothing of this command's
  finally:
    holder.kill()
    holder.wait()
  # The lock ends with the process that held it, however it ended.
  train.train_and_evaluate(config, workdir, log=lambda _: None)
  before = os.listdir(workdir_lib.plots_dir(workdir, 1))
  holder = holding_process(workdir)
  try:
    with pytest.raises(ConfigError, match="is in use by another vae_jax command"):
      train.train_and_evaluate(dataclasses.replace(config, epochs=2, milestones=(2,)), workdir,
                               log=lambda _: None)
    with pytest.raises(ConfigError, match="is in use by another vae_jax command"):
      plot.redraw(workdir)  # into the run, where a training may be drawing
    assert os.listdir(workdir_lib.plots_dir(workdir, 1)) == before
    assert checkpoints.saved_epochs(workdir) == [1]
    assert plot.redraw(workdir, out=str(tmp_path / "figures")) == [str(tmp_path / "figures" /
                                                                       "epoch_001")]
  finally:
    holder.kill()
    holder.wait()
  # A new workdir that a training created and never began (a data error) is removed
  # again; one that another process holds is not removed by a command it refused.
  new = str(tmp_path / "new")
  with pytest.raises(ValueError):
    with workdir_lib.held(new, "workdir") as refusal:
      assert refusal is None
      raise ValueError("the data failed to load")
  assert not os.path.exists(new)
  holder = holding_process(new)
  try:
    with workdir_lib.held(new, "workdir") as refusal:
      assert "is in use by another vae_jax command" in str(refusal)
    assert os.listdir(new) == [workdir_lib.LOCK_FILE]
  finally:
    holder.kill()
    holder.wait()


def test_a_workdir_that_cannot_be_written_is_refused_before_any_work(
    tmp_path, tfds_dir, mnist_dir, monkeypatch):
  from vae_jax import evaluate, plot

  config = small_config(tfds_dir, mnist_dir, epochs=1, milestones=(1,))
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir, log=lambda _: None)
  # As on a read-only mount (root may write anywhere else, so os.access is what says so).
  writable = os.access
  monkeypatch.setattr(os, "access", lambda path, mode, **kw: (
      False if mode == os.W_OK and os.path.abspath(path) == workdir else writable(path, mode)))

  def loading(*args, **kwargs):
    raise AssertionError("loaded data before refusing")
  monkeypatch.setattr(train, "load_split", loading)
  message = f"--workdir={workdir} is not writable; make it writable, or use another --workdir"
  with pytest.raises(ConfigError, match=re.escape(message)):
    train.train_and_evaluate(dataclasses.replace(config, epochs=2, milestones=(2,)), workdir,
                             log=lambda _: None)
  with pytest.raises(ConfigError, match=re.escape(message)):
    plot.redraw(workdir)
  with pytest.raises(ConfigError, match=re.escape(message)):
    evaluate.evaluate_run(workdir, num_importance_samples=2)


def test_a_checkpoint_that_cannot_be_written_stops_training_in_one_line(
    tmp_path, tfds_dir, mnist_dir):
  config = small_config(tfds_dir, mnist_dir, epochs=1, milestones=(1,))
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir, log=lambda _: None)
  longer = dataclasses.replace(config, epochs=3, milestones=(3,))
  # Files above 1 MB cannot be written, as on a full disk: the checkpoint's arrays (about
  # 10 MB) fail, in Orbax's background threads.
  result = subprocess.run(
      ["bash", "-c", 'ulimit -f 1000 && exec "$@"', "bash", sys.executable, "-m",
       "vae_jax.main", *cli_args(longer, workdir)],
      env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
      "error: the checkpoint of epoch 2 could not be written (File too large); training "
      "stopped. Once it can be written (room on the disk, say), the same command resumes "
      "from epoch 1, the newest saved checkpoint"]
  assert checkpoints.saved_epochs(workdir) == [1]
  lines = []
  train.train_and_evaluate(longer, workdir, log=lines.append)
  assert lines[0].startswith("resuming from the checkpoint of epoch 1")
  assert checkpoints.saved_epochs(workdir) == [1, 2, 3]
  assert [row["epoch"] for row in workdir_lib.read_metrics(workdir)] == [1, 2, 3]
