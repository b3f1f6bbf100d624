"""A run's model and trained state, rebuilt from its workdir alone (config.json + checkpoints)."""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple, Optional

import flax.linen as nn
import jax
from jax.sharding import Mesh

from vae_jax import checkpoints, models, parallel, steps, workdir as workdir_lib
from vae_jax import config as config_lib
from vae_jax.config import Config, ConfigError


class Run(NamedTuple):
  config: Config
  model: nn.Module
  mesh: Mesh
  manager: checkpoints.RunCheckpoints
  template: steps.TrainState      # a freshly initialised state: what checkpoints restore into


def open_run(workdir: str, data_dir: Optional[str] = None,
             manual_dir: Optional[str] = None) -> Run:
  """Reads config.json (data paths may be overridden) and opens the checkpoints read-only."""
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
  manager = checkpoints.RunCheckpoints(workdir, read_only=True)
  if not manager.milestone_epochs():
    raise ConfigError(f"--workdir={workdir} holds no milestone checkpoint yet")
  mesh = parallel.make_mesh(parallel.restored_device_count(
      config.num_devices, len(jax.devices()), config.batch_size))
  model = models.make_model(config.model, config.arch, config.latent_dim)
  template = parallel.put_replicated(
      steps.init_state(model, steps.make_optimizer(config), config.seed), mesh)
  return Run(config, model, mesh, manager, template)


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
