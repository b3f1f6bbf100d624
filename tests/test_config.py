"""Config validation, milestones, and config.json."""

import dataclasses

import pytest

from vae_jax import config as config_lib
from vae_jax.config import Config, ConfigError


def test_milestones_beyond_epochs_are_dropped_and_the_last_epoch_added():
  config = Config(epochs=60, milestones=(50, 20, 80, 100))
  assert config.milestone_epochs == (20, 50, 60)
  assert config.dropped_milestones == (80, 100)
  assert Config().milestone_epochs == (20, 50, 80, 100, 150)


def test_default_workdir_names_the_run():
  assert config_lib.default_workdir(Config(model="ae", arch="conv", latent_dim=8)) == \
      "runs/mnist_ae_conv_z8"


@pytest.mark.parametrize("change,flag", [
    (dict(latent_dim=0), "--latent_dim"), (dict(epochs=0), "--epochs"),
    (dict(milestones=(10, -1)), "--milestones"), (dict(model="gan"), "--model"),
    (dict(arch="resnet"), "--arch"), (dict(dataset="cifar10"), "--dataset"),
    (dict(batch_size=0), "--batch_size"), (dict(batch_size=60_001), "--batch_size"),
    (dict(train_examples=100, batch_size=128), "--batch_size"),
    (dict(learning_rate=0.0), "--learning_rate"), (dict(learning_rate=float("nan")), "--learning_rate"),
    (dict(beta=-1.0), "--beta"), (dict(manual_dir="/no/such/folder"), "--manual_dir"),
    (dict(train_examples=60_001), "--train_examples"), (dict(seed=2**63), "--seed"),
    (dict(seed=-1), "--seed"), (dict(seed=2**32), "--seed"),
    (dict(checkpoint_every=0), "--checkpoint_every"), (dict(num_devices=0), "--num_devices"),
    (dict(beta=float("inf")), "--beta"), (dict(learning_rate=float("inf")), "--learning_rate"),
])
def test_invalid_settings_name_the_flag(change, flag):
  with pytest.raises(ConfigError, match=flag) as error:
    config_lib.validate(dataclasses.replace(Config(), **change))
  assert "\n" not in str(error.value)


def test_manual_dir_must_hold_the_four_files(tmp_path):
  (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
  with pytest.raises(ConfigError, match="lacks train-labels-idx1-ubyte.gz"):
    config_lib.validate(Config(manual_dir=str(tmp_path)))


def test_valid_defaults_and_real_manual_dir_pass(mnist_dir):
  config_lib.validate(Config())
  config_lib.validate(Config(manual_dir=mnist_dir))


@pytest.mark.parametrize("change", [dict(train_examples=60_000),
                                    dict(train_examples=128, batch_size=128),
                                    dict(checkpoint_every=1, num_devices=1, beta=0.0)])
def test_settings_at_their_limits_are_valid(change):
  config_lib.validate(dataclasses.replace(Config(), **change))


def test_config_json_round_trip(tmp_path):
  config = Config(model="ae", arch="conv", latent_dim=5, milestones=(3, 7), train_examples=500,
                  beta=0.5, manual_dir="/data")
  config_lib.save(config, str(tmp_path))
  assert config_lib.load(str(tmp_path)) == config


def test_result_differences_ignore_epochs_and_paths():
  old = Config()
  assert config_lib.differences(old, Config(epochs=300, milestones=(5,), data_dir="/x")) == []
  assert config_lib.differences(old, Config(latent_dim=3, beta=2.0)) == [
      "latent_dim: 2 -> 3", "beta: 1.0 -> 2.0"]


@pytest.mark.parametrize("change", [
    dict(dataset="fashion_mnist"), dict(model="ae"), dict(arch="conv"), dict(latent_dim=3),
    dict(batch_size=64), dict(beta=2.0), dict(seed=1), dict(train_examples=500),
    dict(binarize="dynamic")])
def test_each_setting_that_changes_what_is_trained_refuses_a_resume(change):
  (name, _), = change.items()
  found = config_lib.differences(Config(), Config(**change))
  assert len(found) == 1 and found[0].startswith(f"{name}: "), found


def test_every_setting_either_defines_the_run_or_may_change_on_resume():
  # A new Config field must be sorted into one of the two lists (or resumes go unchecked).
  fields = [f.name for f in dataclasses.fields(Config)]
  assert sorted(config_lib.RESULT_FIELDS + config_lib.RESUMABLE_FIELDS) == sorted(fields)


def test_all_training_images_equal_their_number_given_explicitly():
  assert config_lib.differences(Config(), Config(train_examples=60_000)) == []
  assert config_lib.differences(Config(), Config(train_examples=59_999)) == [
      "train_examples: None -> 59999"]


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"latent_dim": 2, "colour": 1, "epochs": [3'])
def test_a_damaged_config_file_is_a_one_line_error(tmp_path, text):
  (tmp_path / config_lib.CONFIG_FILE).write_text(text)
  with pytest.raises(ConfigError, match="is not a vae_jax config") as error:
    config_lib.load(str(tmp_path))
  assert "\n" not in str(error.value)
  assert (tmp_path / config_lib.CONFIG_FILE).read_text() == text
