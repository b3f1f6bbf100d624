"""The software a run is trained with (vae_jax.software) and config.json's record of it."""

import os
import platform
import subprocess

import flax
import jax
import jaxlib
import optax
import orbax.checkpoint as ocp
import pytest

from test_restore import saved_run

from vae_jax import checkpoints, config as config_lib, models, parallel, software, steps
from vae_jax.config import Config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_versions_name_the_installed_libraries_and_this_commit():
  head = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True,
                        text=True, check=True).stdout.strip()
  dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                         capture_output=True, text=True, check=True).stdout.strip()
  assert software.versions() == {
      "python": platform.python_version(), "jax": jax.__version__,
      "jaxlib": jaxlib.__version__, "flax": flax.__version__, "optax": optax.__version__,
      "orbax-checkpoint": ocp.__version__,
      "vae_jax": head[:12] + ("-dirty" if dirty else "")}


def test_code_outside_a_git_checkout_or_without_git_is_of_unknown_version(tmp_path, monkeypatch):
  monkeypatch.setattr(software, "__file__", str(tmp_path / "software.py"))
  assert software.code_version() == "unknown"
  monkeypatch.undo()
  monkeypatch.setenv("PATH", str(tmp_path))  # no git to run
  assert software.code_version() == "unknown"
  assert software.package_version("no-such-distribution") == "absent"


def test_an_epoch_was_trained_by_the_last_entry_from_it_or_before():
  first, second = {"jax": "1"}, {"jax": "2"}
  record = [software.record_entry(1, first), "edited", {"from_epoch": "9"},
            software.record_entry(51, second)]
  assert software.trained_epoch_with(record, 0) is None
  assert software.trained_epoch_with(record, 1) == first
  assert software.trained_epoch_with(record, 50) == first
  assert software.trained_epoch_with(record, 51) == second
  assert software.trained_epoch_with(record, 150) == second
  assert software.trained_epoch_with([], 5) is None
  assert software.differences({"jax": "1", "flax": "3"}, {"jax": "2", "flax": "3"}) == {
      "jax": "jax 1 (here 2)"}
  assert software.differences({"tensorflow": "2"}, {}) == {
      "tensorflow": "tensorflow 2 (here absent)"}


def test_config_json_adds_an_entry_only_when_the_software_changes(tmp_path):
  workdir = str(tmp_path)
  config = Config()
  here = software.versions()
  older = {**here, "jax": "0.0.1"}
  config_lib.save(config, workdir, trains_with=software.record_entry(1, older))
  config_lib.save(config, workdir, trains_with=software.record_entry(21, older))
  config_lib.save(config, workdir, resumed=(40, ["epochs: 40 -> 80"]),
                  trains_with=software.record_entry(41, here))
  config_lib.save(config, workdir)  # a save that trains nothing keeps the record
  assert config_lib.trained_with(workdir) == [{"from_epoch": 1, "versions": older},
                                              {"from_epoch": 41, "versions": here}]
  assert config_lib.load(workdir) == config  # the record is no setting
  assert software.changed_since(workdir, 40) == {"jax": f"jax 0.0.1 (here {here['jax']})"}
  assert software.changed_since(workdir, 41) == {}


def test_a_checkpoint_that_cannot_be_restored_names_the_other_software_that_trained_it(
    tmp_path):
  workdir = str(tmp_path)
  config = saved_run(workdir, milestones=(1, 3))
  here = software.versions()
  older = {**here, "orbax-checkpoint": "0.0.1"}
  config_lib.save(config, workdir, trains_with=software.record_entry(1, older))
  config_lib.save(config, workdir, trains_with=software.record_entry(3, here))
  other = models.make_model(config.model, config.arch, config.latent_dim + 1)  # other shapes
  template = parallel.put_replicated(
      steps.init_state(other, steps.make_optimizer(config), config.seed), parallel.make_mesh())
  with checkpoints.RunCheckpoints(workdir, read_only=True) as manager:
    with pytest.raises(checkpoints.CheckpointError) as by_older:
      manager.restore_milestone(1, template)
    with pytest.raises(checkpoints.CheckpointError) as by_this:
      manager.restore_milestone(3, template)
  assert "\n" not in str(by_older.value)
  assert str(by_older.value).endswith(
      f"; it was trained with other libraries: orbax-checkpoint 0.0.1 (here "
      f"{here['orbax-checkpoint']}). Install those versions ({workdir}/config.json lists them "
      "under trained_with) and retry; if it is damaged, move it out of the run folder to "
      "resume from the checkpoint before it")
  assert str(by_this.value).endswith("; it is damaged or of another model. Move it out of the "
                                     "run folder to resume from the checkpoint before it")
  # Only the code differs (any older run): damaged or of another model, by that commit.
  config_lib.save(config, workdir, trains_with=software.record_entry(
      3, {**here, "vae_jax": "0123456789ab"}))
  with checkpoints.RunCheckpoints(workdir, read_only=True) as manager:
    with pytest.raises(checkpoints.CheckpointError) as by_other_code:
      manager.restore_milestone(3, template)
  assert str(by_other_code.value).endswith(
      f"; it is damaged or of another model; it was trained by vae_jax 0123456789ab (here "
      f"{here['vae_jax']}), whose model may differ. Move it out of the run folder to resume "
      "from the checkpoint before it")
