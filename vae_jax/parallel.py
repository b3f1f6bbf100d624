"""Data parallelism: a Mesh over the devices, the batch sharded, all else replicated."""

from __future__ import annotations

from typing import Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vae_jax.config import ConfigError

DATA_AXIS = "data"


def make_mesh(num_devices: Optional[int] = None) -> Mesh:
  """A 1-D mesh over the first num_devices devices (default: all, on all hosts)."""
  devices = jax.devices()
  if num_devices is not None:
    if num_devices > len(devices):
      raise ConfigError(
          f"--num_devices={num_devices} but only {len(devices)} "
          f"{jax.default_backend()} device(s) are visible")
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def restored_device_count(trained_on: Optional[int], visible: int, batch_size: int) -> int:
  """How many devices to redraw or evaluate a run on: as many as it trained on (None: all
  visible) where they are visible; else the most visible devices that divide its batch
  size. The results agree to float tolerance whatever the count (tests/test_parallel.py),
  so a run trained on 8 devices can be redrawn on a laptop."""
  wanted = min(trained_on or visible, visible)
  return max(n for n in range(1, wanted + 1) if batch_size % n == 0)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  if batch_size % mesh.size:
    raise ConfigError(
        f"--batch_size={batch_size} is not divisible by the {mesh.size} devices; "
        f"use a multiple of {mesh.size} or set --num_devices")


def put_replicated(tree, mesh: Mesh):
  """Places host arrays on every device of the mesh; every process passes the same values."""
  sharding = replicated(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda idx: np.asarray(x)[idx]),
      tree)
