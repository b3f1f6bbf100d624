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
