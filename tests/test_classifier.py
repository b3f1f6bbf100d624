"""The digit classifier: features, training, checkpoint, command line, and real MNIST."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds
from absl import flags

from vae_jax import classifier, cli, input_pipeline
from vae_jax import main as vae_main  # noqa: F401  Shares flag names: both must coexist.
from vae_jax.config import Config, ConfigError


def labelled_digits(n, seed=0):
  """uint8 images whose label is where a bright bar sits: learnable in a few steps."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, n).astype(np.int32)
  images = rng.integers(0, 40, (n, 28, 28, 1)).astype(np.uint8)
  for i, label in enumerate(labels):
    images[i, 2 + 2 * label:4 + 2 * label, 4:24] = 255
  return images, labels


def run_entry_point(argv):
  flags.FLAGS.unparse_flags()
  cli.parse_flags(["prog"] + argv)
  classifier.main(["prog"])


def test_features_and_predict_take_uint8_or_float_images_of_any_count():
  clf = classifier.new_classifier(seed=0)
  images, _ = labelled_digits(7)
  feats_u8 = classifier.features(clf, images, batch_size=3)  # 3 batches, the last one padded
  feats_float = classifier.features(clf, images.astype(np.float32) / 255.0)
  assert feats_u8.shape == (7, classifier.NUM_FEATURES) and feats_u8.dtype == np.float32
  np.testing.assert_allclose(feats_u8, feats_float, rtol=1e-5, atol=1e-5)
  # Each image's features are its own: batching and padding change nothing.
  np.testing.assert_allclose(classifier.features(clf, images[4:5]), feats_u8[4:5], atol=1e-5)
  labels = classifier.predict(clf, images)
  assert labels.shape == (7,) and labels.dtype == np.int32 and set(labels) <= set(range(10))
  np.testing.assert_array_equal(labels, classifier.predict(clf, jnp.asarray(images) / 255.0))
  assert classifier.features(clf, images[:0]).shape == (0, classifier.NUM_FEATURES)
  with pytest.raises(ValueError, match=r"\[N, 28, 28, 1\]"):
    classifier.features(clf, images[..., 0])


def test_training_epochs_lower_the_loss():
  images, labels = labelled_digits(256)
  clf = classifier.new_classifier(seed=0)
  tx = optax.adam(1e-3)
  state = classifier.TrainState(clf.params, tx.init(clf.params))
  epoch = classifier.compile_epoch(clf.model, tx, batch_size=32)

  def loss(params):
    return float(classifier.batch_loss(params, jnp.asarray(images), jnp.asarray(labels), clf.model))

  losses = [loss(state.params)]
  for e in range(3):
    state, _ = epoch(state, jnp.asarray(images), jnp.asarray(labels), classifier.shuffle_key(0, e))
    losses.append(loss(state.params))
  assert losses[0] > 1.5 and losses[-1] < 0.5 * losses[0]
  assert classifier.accuracy(clf._replace(params=state.params), images, labels) > 0.9


def test_each_epoch_shuffles_with_its_own_key(tmp_path):
  """Two epochs of train_classifier equal two epochs run by hand with the keys
  fold_in(fold_in(PRNGKey(seed), SHUFFLE_STREAM), epoch) for epochs 0 and 1."""
  config = Config(epochs=2, batch_size=16, seed=3, data_dir=str(tmp_path / "tfds"))
  with tfds.testing.mock_data(num_examples=64):
    trained = classifier.train_classifier(config, str(tmp_path / "clf"), log=lambda _: None)
    train = input_pipeline.load_split("mnist", "train", data_dir=config.data_dir)
  clf = classifier.new_classifier(config.seed)
  tx = optax.adam(config.learning_rate)
  state = classifier.TrainState(clf.params, tx.init(clf.params))
  epoch = classifier.compile_epoch(clf.model, tx, config.batch_size)
  root = jax.random.fold_in(jax.random.PRNGKey(config.seed), classifier.SHUFFLE_STREAM)
  for e in range(2):
    state, _ = epoch(state, jnp.asarray(train.images), jnp.asarray(train.labels),
                     jax.random.fold_in(root, e))
  for a, b in zip(jax.tree.leaves(trained.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)


def test_save_then_load_gives_identical_predictions(tmp_path):
  images, _ = labelled_digits(50)
  clf = classifier.new_classifier(seed=4, dataset="fashion_mnist")._replace(test_accuracy=0.5)
  classifier.save_classifier(clf, str(tmp_path), {"epochs": 2})
  loaded = classifier.load_classifier(str(tmp_path))
  assert (loaded.dataset, loaded.test_accuracy) == ("fashion_mnist", 0.5)
  for a, b in zip(jax.tree.leaves(clf.params), jax.tree.leaves(loaded.params)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(classifier.predict(clf, images), classifier.predict(loaded, images))
  np.testing.assert_array_equal(classifier.features(clf, images),
                                classifier.features(loaded, images))
  with pytest.raises(classifier.MissingClassifierError, match="of fashion_mnist, not mnist"):
    classifier.load_classifier(str(tmp_path), dataset="mnist")


def test_a_classifier_of_another_dataset_points_to_one_of_the_right_dataset(tmp_path,
                                                                            monkeypatch):
  monkeypatch.chdir(tmp_path)  # the default folders, runs/classifier_*, are relative
  elsewhere = str(tmp_path / "fashion")
  classifier.save_classifier(classifier.new_classifier(dataset="fashion_mnist"), elsewhere)
  with pytest.raises(classifier.MissingClassifierError) as info:
    classifier.load_classifier(elsewhere, dataset="mnist")
  # Never advice to overwrite this (good) classifier of the other dataset.
  assert str(info.value) == (
      f"{elsewhere} holds a classifier of fashion_mnist, not mnist; use one of mnist, e.g. "
      "trained with: python -m vae_jax.classifier --dataset=mnist --workdir=runs/classifier_mnist")
  # Where it sits in mnist's default folder, the command that replaces it says so.
  classifier.save_classifier(classifier.new_classifier(dataset="fashion_mnist"),
                             "runs/classifier_mnist")
  with pytest.raises(classifier.MissingClassifierError, match="classifier_mnist --overwrite$"):
    classifier.load_classifier("runs/classifier_mnist", dataset="mnist")


def test_advice_to_train_a_classifier_overwrites_only_what_it_must(tmp_path):
  folder = str(tmp_path)
  assert not classifier.train_command(folder, "mnist").endswith("--overwrite")
  (tmp_path / classifier.CHECKPOINT_DIR).mkdir()  # a save cut short: refused without it
  assert classifier.train_command(folder, "mnist").endswith("--overwrite")
  with pytest.raises(classifier.MissingClassifierError, match="--overwrite$"):
    classifier.load_classifier(folder)


@pytest.mark.parametrize("damage", ["info", "checkpoint"])
def test_a_damaged_classifier_is_a_one_line_config_error(tmp_path, damage):
  classifier.save_classifier(classifier.new_classifier(), str(tmp_path))
  if damage == "info":
    (tmp_path / classifier.INFO_FILE).write_text("{}")
  else:
    step = tmp_path / classifier.CHECKPOINT_DIR / "0"
    for path in sorted(step.rglob("*"), reverse=True):
      if path.is_file():
        path.write_bytes(b"")  # every file of the checkpoint truncated
  with pytest.raises(classifier.MissingClassifierError) as info:
    classifier.load_classifier(str(tmp_path), dataset="mnist")
  message = str(info.value)
  assert message.startswith(f"{tmp_path} holds a damaged classifier (") and "\n" not in message
  assert message.endswith(f"--dataset=mnist --workdir={tmp_path} --overwrite")


def test_saving_never_replaces_checkpoints_that_are_not_a_classifiers(tmp_path, capsys):
  mine = tmp_path / classifier.CHECKPOINT_DIR / "my_model.ckpt"
  mine.parent.mkdir()
  mine.write_text("mine")
  with pytest.raises(ConfigError, match=f"holds {classifier.CHECKPOINT_DIR}/ but no "):
    classifier.save_classifier(classifier.new_classifier(), str(tmp_path))
  # The command line refuses before it loads or trains anything, in one line.
  with pytest.raises(SystemExit) as exit_info:
    run_entry_point([f"--workdir={tmp_path}", "--data_dir=/nonexistent"])
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.strip() == (
      f"error: --workdir={tmp_path} holds checkpoints/ but no classifier.json: not a "
      "classifier's (or a save cut short); use another --workdir, or pass --overwrite to "
      "replace its checkpoints/")
  assert mine.read_text() == "mine"
  classifier.save_classifier(classifier.new_classifier(), str(tmp_path), overwrite=True)
  assert not mine.exists() and classifier.load_classifier(str(tmp_path)).dataset == "mnist"


def test_a_missing_classifier_is_a_one_line_config_error(tmp_path):
  with pytest.raises(ConfigError) as info:
    classifier.load_classifier(str(tmp_path / "nowhere"))
  message = str(info.value)
  assert isinstance(info.value, classifier.MissingClassifierError) and "\n" not in message
  folder = tmp_path / "nowhere"
  assert message == (f"{folder} holds no trained classifier; train one with: "
                     f"python -m vae_jax.classifier --dataset=mnist --workdir={folder}")
  assert not os.path.exists(tmp_path / "nowhere")  # looking creates nothing


def test_command_line_on_mock_data(tmp_path, capsys):
  workdir = str(tmp_path / "clf")
  with tfds.testing.mock_data(num_examples=96):
    # No --epochs: the classifier's own default applies, not vae_jax.main's 150.
    run_entry_point([f"--workdir={workdir}", "--batch_size=16", f"--data_dir={tmp_path / 'tfds'}"])
    out = capsys.readouterr().out
    assert "epoch 3/3: train loss" in out and "test accuracy" in out
    with open(os.path.join(workdir, classifier.INFO_FILE)) as f:
      info = json.load(f)
    assert (info["dataset"], info["epochs"], info["train_examples"]) == ("mnist", 3, 96)
    assert 0.0 <= info["test_accuracy"] <= 1.0 and len(info["seconds_per_epoch"]) == 3
    loaded = classifier.load_classifier(workdir, dataset="mnist")
    assert loaded.test_accuracy == info["test_accuracy"]

    # A second run refuses to replace the classifier, in one line with exit status 2 ...
    with pytest.raises(SystemExit) as exit_info:
      run_entry_point([f"--workdir={workdir}", "--epochs=1", "--batch_size=16",
                       f"--data_dir={tmp_path / 'tfds'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --workdir={workdir} already holds a trained classifier; "
                   "pass --overwrite to train a new one")
    # ... unless told to.
    run_entry_point([f"--workdir={workdir}", "--epochs=1", "--batch_size=16", "--overwrite",
                     f"--data_dir={tmp_path / 'tfds'}"])
    with open(os.path.join(workdir, classifier.INFO_FILE)) as f:
      assert json.load(f)["epochs"] == 1
    assert os.listdir(os.path.join(workdir, classifier.CHECKPOINT_DIR)) == ["1"]

  with pytest.raises(SystemExit) as exit_info:
    run_entry_point([f"--workdir={workdir}", "--dataset=cifar10"])
  assert exit_info.value.code == 2
  assert "--dataset='cifar10' is not one of" in capsys.readouterr().err


def test_one_epoch_on_real_mnist(tmp_path, mnist_dir, tfds_dir):
  # Batches of 32, for 187 Adam steps: batches of 128 (46 steps) reach only 91.5%.
  config = Config(dataset="mnist", epochs=1, train_examples=6_000, batch_size=32,
                  data_dir=tfds_dir, manual_dir=mnist_dir)
  lines = []
  clf = classifier.train_classifier(config, str(tmp_path), log=lines.append)
  assert clf.test_accuracy > 0.9  # 0.950 on our machine
  assert any(line.startswith("epoch 1/1: train loss") for line in lines)
  assert classifier.load_classifier(str(tmp_path)).test_accuracy == clf.test_accuracy
