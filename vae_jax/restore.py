"""A run's model and trained state, rebuilt from its workdir alone (config.json + checkpoints)."""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple, Optional

import flax.linen as nn
import jax
from jax.sharding import Mesh

from vae_jax import checkpoints, input_pipeline, models, parallel, steps, workdir as workdir_lib
from vae_jax import config as config_lib
from vae_jax.config import Config, ConfigError


class Run(NamedTuple):
  config: Config
  model: nn.Module
  mesh: Mesh
  manager: checkpoints.RunCheckpoints
  template: steps.TrainState      # a freshly initialised state: what checkpoints restore into

  # `with open_run(...) as run:` closes the checkpoints at the block's end, error or not.
  def __enter__(self) -> "Run":
    return self

  def __exit__(self, *exc_info) -> None:
    self.manager.close()


def open_run(workdir: str, data_dir: Optional[str] = None,
             manual_dir: Optional[str] = None) -> Run:
  """Reads config.json (data paths may be overridden) and opens the checkpoints read-only;
  close them with run.manager.close(), or open the run in a `with` statement."""
  if manual_dir:
    config_lib.validate_manual_dir(manual_dir)
  if not os.path.exists(workdir):
    raise ConfigError(f"--workdir={workdir} does not exist")
  workdir_lib.refuse_file(workdir, "workdir")
  config = config_lib.load(workdir)
  config = dataclasses.replace(config, data_dir=data_dir or config.data_dir,
                               manual_dir=manual_dir or config.manual_dir)
  config_lib.check_restorable(config, workdir)
  if data_dir:
    config_lib.validate_data_dir(data_dir)
  elif config.data_dir and os.path.isfile(config.data_dir):
    raise ConfigError(f"the run's data_dir {config.data_dir} (in its {config_lib.CONFIG_FILE}) "
                      "is now a file, not a folder; pass --data_dir")
  if not manual_dir:
    check_stored_manual_dir(config)
  manager = checkpoints.RunCheckpoints(workdir, read_only=True)
  try:
    if not manager.milestone_epochs():
      raise ConfigError(f"--workdir={workdir} holds no milestone checkpoint yet")
    mesh = parallel.make_mesh(parallel.restored_device_count(
        config.num_devices, len(jax.devices()), config.batch_size))
    model = models.make_model(config.model, config.arch, config.latent_dim)
    template = parallel.put_replicated(
        steps.init_state(model, steps.make_optimizer(config), config.seed), mesh)
  except BaseException:  # the caller gets no run to close
    manager.close()
    raise
  return Run(config, model, mesh, manager, template)


def check_stored_manual_dir(config: Config) -> None:
  """A ConfigError if the run's manual_dir no longer holds the official files and tfds has
  not built the dataset yet: tfds would try to download it, for minutes if offline."""
  if not config.manual_dir:
    return
  try:
    config_lib.validate_manual_dir(config.manual_dir)
  except ConfigError:
    if not input_pipeline.is_built(config.dataset, config.data_dir):
      raise ConfigError(
          f"the run's manual_dir {config.manual_dir} (in its {config_lib.CONFIG_FILE}) no longer "
          f"holds the official {config.dataset} files, and tfds has not built {config.dataset} "
          "in the data_dir yet; pass --manual_dir=FOLDER holding the four *-idx?-ubyte.gz "
          "files") from None


def milestone_epochs(run: Run, epoch: Optional[int]) -> list[int]:
  """[epoch] if it was saved, every saved milestone if epoch is None; else a clear error."""
  saved = run.manager.milestone_epochs()
  if epoch is None:
    return saved
  if epoch not in saved:
    raise ConfigError(f"--epoch={epoch} is not saved in the workdir; saved epochs: "
                      f"{', '.join(map(str, saved))}")
  return [epoch]


def restore(run: Run, epoch: int) -> steps.TrainState:
  return run.manager.restore_milestone(epoch, run.template)
