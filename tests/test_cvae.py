"""The conditional VAE end to end: training, figures, generate, evaluate; and on real MNIST,
generated digits that the in-project classifier recognises as the digit asked for."""

import json
import os

import matplotlib.pyplot as plt
import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags

from vae_jax import classifier, cli, evaluate, generate, main, train
from vae_jax import workdir as workdir_lib
from vae_jax.config import Config


def run_entry_point(entry_main, argv):
  flags.FLAGS.unparse_flags()
  cli.parse_flags(["prog"] + argv)
  entry_main(["prog"])


def one_line_error(entry_main, argv, capsys) -> str:
  with pytest.raises(SystemExit) as exit_info:
    run_entry_point(entry_main, argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  return err


@pytest.fixture(scope="module")
def mock_cvae_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("cvae")
  workdir = str(root / "run")
  with tfds.testing.mock_data(num_examples=96):
    run_entry_point(main.main, [f"--workdir={workdir}", "--model=cvae", "--epochs=2",
                                "--milestones=1,2", "--batch_size=16",
                                f"--data_dir={root / 'tfds'}"])
  return workdir


def test_cvae_trains_and_draws_one_sample_row_per_label(mock_cvae_run):
  folder = workdir_lib.plots_dir(mock_cvae_run, 1)
  for name in ("samples.png", "reconstructions.png", "latent_scatter.png", "latent_manifold.png",
               "interpolation.png", "loss_curves.png", "latents.npz"):
    assert os.path.getsize(os.path.join(folder, name)) > 0, name
  row = workdir_lib.read_metrics(mock_cvae_run)[0]
  assert row["train_kl"] > 0 and row["val_recon"] > 0


def test_cvae_sample_grid_row_c_column_j_is_z_j_decoded_as_label_c(mock_cvae_run, monkeypatch):
  import jax

  from vae_jax import plots, report, restore, steps

  run = restore.open_run(mock_cvae_run)
  state = restore.restore(run, 1)
  run.manager.close()
  drawn = {}
  monkeypatch.setattr(plots, "image_grid",
                      lambda images, path, title, row_labels=None: drawn.update(
                          images=images, row_labels=row_labels))
  prior = report.latent_prior(run.model, None, 2)
  report.draw_samples(state, run.model, run.config, prior, "unused", "run")
  assert drawn["images"].shape == (10, report.SAMPLES_SIDE, 28, 28)
  assert list(drawn["row_labels"]) == [str(d) for d in range(10)]
  # Row d: the same codes of the seed's figure stream, decoded with label d.
  key = jax.random.fold_in(jax.random.PRNGKey(run.config.seed), steps.FIGURE_STREAM)
  z = jax.random.normal(key, (report.SAMPLES_SIDE, 2))
  for label in (0, 6):
    onehot = jax.nn.one_hot(np.full(len(z), label), 10)
    logits = run.model.apply({"params": state.params}, z, onehot, method="decode")
    np.testing.assert_allclose(drawn["images"][label], jax.nn.sigmoid(logits)[..., 0], atol=1e-6)
  assert not np.allclose(drawn["images"][0], drawn["images"][6])


def test_generate_writes_the_requested_number_of_digits(mock_cvae_run, tmp_path, capsys):
  out = tmp_path / "sevens" / "seven.png"
  run_entry_point(generate.main, [f"--workdir={mock_cvae_run}", "--digit=7", "--num=10",
                                  f"--out={out}", f"--classifier_workdir={tmp_path / 'none'}"])
  printed = capsys.readouterr().out
  assert printed.startswith(f"wrote {out}: 10 samples of label 7 from epoch 2")  # the newest
  image = plt.imread(out)
  assert image.shape[0] > 50 and image.shape[1] > 50
  assert generate.grid_shape(10) == (3, 4) and generate.grid_shape(64) == (8, 8)
  grid = generate.as_grid(np.zeros((10, 28, 28)), 4)
  assert grid.shape == (3, 4, 28, 28) and grid[2, 2:].min() == 1.0 and grid[2, :2].max() == 0.0
  # An existing --out is the user's: replaced only when asked.
  args = [f"--workdir={mock_cvae_run}", "--digit=3", "--num=4", f"--out={out}",
          f"--classifier_workdir={tmp_path / 'none'}"]
  written = out.read_bytes()
  assert f"--out={out} exists; pass --overwrite" in one_line_error(generate.main, args, capsys)
  assert out.read_bytes() == written
  run_entry_point(generate.main, args + ["--overwrite"])
  assert capsys.readouterr().out.startswith(f"wrote {out}: 4 samples of label 3")
  assert out.read_bytes() != written
  # The codes come from --sample_seed (0 unless given): another seed, other images.
  seed_0 = out.read_bytes()
  run_entry_point(generate.main, args + ["--overwrite", "--sample_seed=5"])
  assert out.read_bytes() != seed_0
  run_entry_point(generate.main, args + ["--overwrite", "--sample_seed=0"])
  assert out.read_bytes() == seed_0


def test_generate_refuses_what_the_run_cannot_do(mock_cvae_run, tmp_path, capsys):
  base = [f"--workdir={mock_cvae_run}"]
  assert "--digit is required" in one_line_error(generate.main, base, capsys)
  assert "--digit=12 must be a label 0-9" in one_line_error(
      generate.main, base + ["--digit=12"], capsys)
  assert "--num=0" in one_line_error(generate.main, base + ["--digit=1", "--num=0"], capsys)
  assert "--num=10001" in one_line_error(generate.main, base + ["--digit=1", "--num=10001"],
                                         capsys)
  assert "--sample_seed" in one_line_error(
      generate.main, base + ["--digit=1", f"--sample_seed={2**63}"], capsys)
  assert "--num_test_examples=0" in one_line_error(
      evaluate.main, base + ["--num_test_examples=0"], capsys)
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  assert "cannot be written" in one_line_error(
      generate.main, base + ["--digit=1", f"--out={blocker / 'x.png'}"], capsys)
  assert blocker.read_text() == "not a folder"
  assert "must name a .png" in one_line_error(
      generate.main, base + ["--digit=1", f"--out={tmp_path / 'x.txt'}"], capsys)
  assert not (tmp_path / "x.txt").exists()


def test_evaluate_reports_the_requested_label_accuracy(mock_cvae_run, tmp_path):
  classifier_dir = str(tmp_path / "classifier")
  # Untrained: the plumbing is under test here; the real test below checks the number.
  classifier.save_classifier(classifier.new_classifier(), classifier_dir)
  with tfds.testing.mock_data(num_examples=96):
    run_entry_point(evaluate.main, [f"--workdir={mock_cvae_run}", "--num_importance_samples=5",
                                    f"--classifier_workdir={classifier_dir}"])
  with open(os.path.join(mock_cvae_run, "eval_epoch_002.json")) as f:  # the last milestone
    result = json.load(f)
  assert result["model"] == "cvae" and "p(x | label)" in result["conditioning"]
  assert result["test_elbo"] < result["test_log_likelihood"] < 0
  assert len(result["label_accuracy_per_class"]) == 10
  # 10,000 samples ask for each label 1,000 times: the overall rate is the mean of the rates.
  assert result["label_accuracy"] == pytest.approx(np.mean(result["label_accuracy_per_class"]),
                                                   abs=1e-4)


def test_a_vae_run_takes_no_digit(tmp_path, capsys):
  workdir = str(tmp_path / "vae")
  with tfds.testing.mock_data(num_examples=32):
    run_entry_point(main.main, [f"--workdir={workdir}", "--epochs=1", "--batch_size=16",
                                f"--data_dir={tmp_path / 'tfds'}"])
  err = one_line_error(generate.main, [f"--workdir={workdir}", "--digit=3"], capsys)
  assert "needs a conditional run (--model=cvae)" in err
  run_entry_point(generate.main, [f"--workdir={workdir}", "--num=5"])
  assert os.path.getsize(os.path.join(workdir, "generated_epoch_001.png")) > 0


def test_real_cvae_digits_are_recognised_as_the_digit_asked_for(tmp_path, mnist_dir, tfds_dir):
  common = dict(data_dir=tfds_dir, manual_dir=mnist_dir)
  judge = classifier.train_classifier(
      Config(epochs=1, train_examples=6_000, batch_size=32, **common), str(tmp_path / "clf"),
      log=lambda _: None)
  assert judge.test_accuracy > 0.9
  config = Config(model="cvae", epochs=2, milestones=(2,), **common)
  train.train_and_evaluate(config, str(tmp_path / "run"), log=lambda _: None)
  rates = []
  for digit in range(10):
    out = tmp_path / f"digit{digit}.png"
    summary = generate.generate(str(tmp_path / "run"), digit, num=100, out=str(out),
                                classifier_workdir=str(tmp_path / "clf"))
    rates.append(int(summary.split("recognises ")[1].split(" of")[0]) / 100)
  # A CVAE conditions on the label from the first epochs; 2 epochs reach ~0.9 on our machine.
  assert np.mean(rates) > 0.8, rates
  assert min(rates) > 0.5, rates
