"""The command line end to end on tfds mock data: train, checkpoint, figures, redraw."""

import dataclasses
import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags
from conftest import milestone_epochs

from vae_jax import (checkpoints, classifier, cli, evaluate, generate, main, models, parallel,
                     plot, report, steps)
from vae_jax import workdir as workdir_lib
from vae_jax import config as config_lib
from vae_jax.config import Config

FIGURES = ("samples.png", "reconstructions.png", "latent_scatter.png", "loss_curves.png",
           "interpolation.png", "latents.npz")


def run_entry_point(entry_main, argv):
  flags.FLAGS.unparse_flags()
  cli.parse_flags(["prog"] + argv)
  entry_main(["prog"])


@pytest.fixture
def mock_mnist():
  with tfds.testing.mock_data(num_examples=96):
    yield


def test_data_paths_are_kept_absolute(tmp_path, monkeypatch):
  # config.json must name the data wherever a later resume, plot or evaluate runs from.
  monkeypatch.chdir(tmp_path)
  flags.FLAGS.unparse_flags()
  cli.parse_flags(["prog", "--data_dir=tfds", "--manual_dir=~/mnist"])
  config = main.config_from_flags()
  assert config.data_dir == str(tmp_path / "tfds")
  assert config.manual_dir == os.path.join(os.path.expanduser("~"), "mnist")


def test_every_setting_reaches_the_config_from_its_flag(tmp_path):
  expected = Config(dataset="fashion_mnist", model="cvae", arch="conv", latent_dim=5, epochs=7,
                    milestones=(3, 6), batch_size=64, learning_rate=0.002, beta=0.5, seed=7,
                    train_examples=640, binarize="dynamic", checkpoint_every=3, num_devices=1,
                    data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "files"))
  unchanged = [f.name for f in dataclasses.fields(Config)
               if getattr(expected, f.name) == getattr(Config(), f.name)]
  assert not unchanged, f"give these a value other than the default here: {unchanged}"
  flags.FLAGS.unparse_flags()
  cli.parse_flags(["prog", "--milestones=3,6"] + [
      f"--{f.name}={getattr(expected, f.name)}" for f in dataclasses.fields(Config)
      if f.name != "milestones"])
  assert main.config_from_flags() == expected


@pytest.mark.parametrize("model_name,arch", [("vae", "mlp"), ("ae", "mlp"), ("vae", "conv")])
def test_train_then_redraw_from_checkpoint(tmp_path, mock_mnist, model_name, arch):
  workdir = str(tmp_path / "run")
  run_entry_point(main.main, [f"--workdir={workdir}", f"--model={model_name}", f"--arch={arch}",
                              "--epochs=2", "--milestones=1", "--batch_size=16",
                              f"--data_dir={tmp_path / 'tfds'}"])
  config = config_lib.load(workdir)
  assert (config.model, config.arch, config.epochs) == (model_name, arch, 2)
  assert [r["epoch"] for r in workdir_lib.read_metrics(workdir)] == [1, 2]
  with open(os.path.join(workdir, "metrics.csv")) as f:
    assert f.readline().strip() == ",".join(workdir_lib.METRICS_COLUMNS)
  assert milestone_epochs(workdir) == [1, 2]
  for epoch in (1, 2):
    folder = workdir_lib.plots_dir(workdir, epoch)
    for name in FIGURES + ("latent_manifold.png",):
      assert os.path.getsize(os.path.join(folder, name)) > 0, name

  # The redraw needs no flag about the model, and reproduces the arrays exactly.
  out = tmp_path / "redrawn"
  run_entry_point(plot.main, [f"--workdir={workdir}", "--epoch=2", f"--out={out}"])
  original = np.load(os.path.join(workdir_lib.plots_dir(workdir, 2), "latents.npz"))
  redrawn = np.load(out / "latents.npz")
  for key in ("means", "labels", "coords"):
    np.testing.assert_array_equal(original[key], redrawn[key])
  for name in FIGURES:
    assert (out / name).stat().st_size > 0
  assert sorted(os.listdir(out)) == sorted(report.MILESTONE_FILES)  # z = 2: all of them

  # Without a classifier the Fréchet distance is absent and the result says how to get one;
  # with one (here untrained: the plumbing is under test, not the number) it is computed.
  classifier_dir = str(tmp_path / "classifier")
  if model_name == "vae":
    run_entry_point(evaluate.main, [f"--workdir={workdir}", "--num_importance_samples=2",
                                    f"--classifier_workdir={classifier_dir}"])
    with open(os.path.join(workdir, "eval_epoch_002.json")) as f:
      missing = json.load(f)
    assert missing["frechet_distance"] is None
    assert "python -m vae_jax.classifier" in missing["frechet_note"]
  classifier.save_classifier(classifier.new_classifier(), classifier_dir)
  run_entry_point(evaluate.main, [f"--workdir={workdir}", "--num_importance_samples=20",
                                  "--chunk_size=7", "--eval_batch_size=16",
                                  f"--classifier_workdir={classifier_dir}"])
  with open(os.path.join(workdir, "eval_epoch_002.json")) as f:
    result = json.load(f)
  assert result["epoch"] == 2 and result["num_test_images"] == 96
  assert result["frechet_distance"] > 0 and result["frechet_samples"] == 10_000
  if model_name == "vae":
    assert len(result["kl_per_dim"]) == 2 and 0 <= result["active_units"] <= 2
    # The IWAE bound (K = 20) sits above the ELBO on average; both are log-densities < 0.
    assert result["test_elbo"] < result["test_log_likelihood"] < 0
    val_loss = workdir_lib.read_metrics(workdir)[-1]["val_loss"]
    assert abs(-result["test_elbo"] - val_loss) < 0.05 * val_loss
  else:
    assert "test_elbo" not in result and "test_log_likelihood" not in result
    # An AE is deterministic: the test split's reconstruction term is the last val_recon.
    val_recon = workdir_lib.read_metrics(workdir)[-1]["val_recon"]
    assert result["test_recon"] == pytest.approx(val_recon, rel=1e-5)


def test_checkpoint_round_trip_is_bit_identical(tmp_path):
  config = config_lib.Config(batch_size=16)
  model = models.make_model("vae", "mlp", 2)
  tx = steps.make_optimizer(config)
  mesh = parallel.make_mesh()
  state = parallel.put_replicated(steps.init_state(model, tx, seed=3), mesh)
  images = parallel.put_replicated(np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1),
                                                                     dtype=np.uint8), mesh)
  state, _ = steps.compile_fns(model, tx, config, mesh).train_epoch(state, images)
  with checkpoints.RunCheckpoints(str(tmp_path)) as manager:
    manager.save_milestone(1, state)
  template = parallel.put_replicated(steps.init_state(model, tx, seed=99), mesh)
  with checkpoints.RunCheckpoints(str(tmp_path), read_only=True) as manager:
    restored = manager.restore_milestone(1, template)
  assert type(restored) is type(state)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
  assert int(restored.epoch) == 1 and int(restored.step) == 4


class WideTrunk(nn.Module):
  """The README's example architecture ("Extending"), 64 units wide instead of 1024."""

  @nn.compact
  def __call__(self, images, condition=None):
    x = models.with_condition(images.reshape((images.shape[0], -1)), condition)
    return nn.relu(nn.Dense(64)(x))


class WideDecoder(nn.Module):
  @nn.compact
  def __call__(self, z, condition=None):
    x = nn.relu(nn.Dense(64)(models.with_condition(z, condition)))
    return nn.Dense(784)(x).reshape((z.shape[0],) + models.IMAGE_SHAPE)


@pytest.mark.parametrize("model_name", ["vae", "cvae"])
def test_a_new_architecture_registered_as_the_readme_says_trains_and_redraws(
    tmp_path, mock_mnist, monkeypatch, model_name):
  monkeypatch.setitem(models.TRUNKS, "wide", WideTrunk)
  monkeypatch.setitem(models.DECODERS, "wide", WideDecoder)
  monkeypatch.setattr(config_lib, "ARCHS", config_lib.ARCHS + ("wide",))
  workdir = str(tmp_path / "run")
  run_entry_point(main.main, [f"--workdir={workdir}", "--arch=wide", f"--model={model_name}",
                              "--epochs=2", "--milestones=2", "--batch_size=16",
                              f"--data_dir={tmp_path / 'tfds'}"])
  losses = [r["train_loss"] for r in workdir_lib.read_metrics(workdir)]
  assert len(losses) == 2 and np.isfinite(losses).all()
  assert milestone_epochs(workdir) == [2]
  out = tmp_path / "redrawn"
  run_entry_point(plot.main, [f"--workdir={workdir}", "--epoch=2", f"--out={out}"])
  for name in FIGURES:
    assert (out / name).stat().st_size > 0, name


def test_plot_names_the_saved_epochs(tmp_path, mock_mnist, capsys):
  workdir = str(tmp_path / "run")
  run_entry_point(main.main, [f"--workdir={workdir}", "--epochs=1", "--batch_size=16",
                              f"--data_dir={tmp_path / 'tfds'}"])
  with pytest.raises(SystemExit) as exit_info:
    run_entry_point(plot.main, [f"--workdir={workdir}", "--epoch=7"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "--epoch=7 is not saved" in err and "saved epochs: 1" in err
  assert len(err.strip().splitlines()) == 1
  # A --manual_dir that is not there is named, not handed to tfds (which would try to
  # download for minutes, then say to pass the flag the user had passed).
  for entry_main in (plot.main, evaluate.main, generate.main):
    with pytest.raises(SystemExit) as exit_info:
      run_entry_point(entry_main, [f"--workdir={workdir}", "--manual_dir=/no/such/folder"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: --manual_dir=/no/such/folder does not exist or is not a folder")

  # Files in --out of the names a redraw writes are the user's: replaced only if asked.
  out = tmp_path / "figures"
  (out / "epoch_001").mkdir(parents=True)
  (out / "epoch_001" / "latents.npz").write_text("mine")
  (out / "samples.png").write_text("mine too")
  for args, held in (([], "epoch_001/latents.npz"), (["--epoch=1"], "samples.png")):
    with pytest.raises(SystemExit) as exit_info:
      run_entry_point(plot.main, [f"--workdir={workdir}", f"--out={out}", *args])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --out={out} already holds {out / held}; pass --overwrite to replace them, "
        "or another --out")
  assert (out / "samples.png").read_text() == "mine too"
  run_entry_point(plot.main, [f"--workdir={workdir}", f"--out={out}", "--epoch=1", "--overwrite"])
  assert sorted(os.listdir(out)) == sorted(report.MILESTONE_FILES + ("epoch_001",))

  # Without --out, the run's own figures are redrawn in place (they are the run's, not the
  # user's: no --overwrite needed), the same arrays as training drew.
  folder = workdir_lib.plots_dir(workdir, 1)
  trained = dict(np.load(os.path.join(folder, "latents.npz")))
  for name in ("samples.png", "latents.npz"):
    os.remove(os.path.join(folder, name))
  run_entry_point(plot.main, [f"--workdir={workdir}"])
  assert sorted(os.listdir(folder)) == sorted(report.MILESTONE_FILES)
  redrawn = np.load(os.path.join(folder, "latents.npz"))
  for key, value in trained.items():
    np.testing.assert_array_equal(redrawn[key], value)


def test_dynamically_binarized_run_trains_and_evaluates(tmp_path, mock_mnist):
  workdir = str(tmp_path / "run")
  run_entry_point(main.main, [f"--workdir={workdir}", "--binarize=dynamic", "--epochs=1",
                              "--batch_size=16", f"--data_dir={tmp_path / 'tfds'}"])
  assert config_lib.load(workdir).binarize == "dynamic"
  # An explicit, empty classifier folder: the default (runs/classifier_mnist) is relative to
  # where the tests run, and may hold a real classifier.
  run_entry_point(evaluate.main, [f"--workdir={workdir}", "--num_importance_samples=5",
                                  f"--classifier_workdir={tmp_path / 'no_classifier'}"])
  with open(os.path.join(workdir, "eval_epoch_001.json")) as f:
    result = json.load(f)
  assert result["binarize"] == "dynamic" and "note" not in result
  assert result["frechet_distance"] is None
  assert result["test_elbo"] < 0


def test_ctrl_c_while_loading_says_where_the_same_command_resumes(tmp_path, mock_mnist,
                                                                  capsys, monkeypatch):
  from vae_jax import train

  workdir = str(tmp_path / "run")
  args = [f"--workdir={workdir}", "--batch_size=16", f"--data_dir={tmp_path / 'tfds'}"]

  def ctrl_c(config):
    raise KeyboardInterrupt

  def interrupted_while_loading(extra):
    with monkeypatch.context() as patch:
      patch.setattr(train, "load_data_everywhere", ctrl_c)
      try:
        with pytest.raises(SystemExit) as exit_info:
          run_entry_point(main.main, args + extra)
      except KeyboardInterrupt:  # not handled: fail this test, not the whole session
        pytest.fail("Ctrl-C while loading ended in a KeyboardInterrupt")
    assert exit_info.value.code == config_lib.INTERRUPTED_STATUS
    return capsys.readouterr().err.strip().splitlines()

  assert interrupted_while_loading(["--epochs=1"]) == [
      "interrupted; the same command resumes from the start (none saved yet)"]
  assert not os.path.exists(os.path.join(workdir, "config.json"))  # nothing was written
  run_entry_point(main.main, args + ["--epochs=1"])
  capsys.readouterr()
  assert interrupted_while_loading(["--epochs=2"]) == [
      "interrupted; the same command resumes from epoch 1, the newest checkpoint"]
  # --overwrite had not yet discarded anything: without it, the run goes on from epoch 1.
  assert interrupted_while_loading(["--epochs=2", "--overwrite"]) == [
      "interrupted; the same command without --overwrite resumes from epoch 1, the newest "
      "checkpoint"]
  assert checkpoints.saved_epochs(workdir) == [1] and config_lib.load(workdir).epochs == 1
