"""The software a run is trained with: recorded in its config.json (trained_with), named
when one of its checkpoints cannot be restored, and printed by the benchmark."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from typing import Optional

from vae_jax import config as config_lib

# The libraries that build, train and checkpoint the state (their versions decide whether a
# checkpoint restores and what it computes).
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint")
UNKNOWN = "unknown"


def code_version() -> str:
  """The git commit of this code, with -dirty if it has uncommitted changes; 'unknown'
  outside a git checkout."""
  try:
    result = subprocess.run(
        ["git", "-C", os.path.dirname(os.path.abspath(__file__)), "describe", "--always",
         "--dirty", "--abbrev=12", "--exclude=*"], capture_output=True, text=True, timeout=30)
  except (OSError, subprocess.SubprocessError):
    return UNKNOWN
  return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else UNKNOWN


def package_version(name: str) -> str:
  """The installed distribution's version; 'absent' for one without metadata (a source
  build on the path)."""
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return "absent"


def versions() -> dict[str, str]:
  """Python's version, each of PACKAGES' and this code's (vae_jax)."""
  return {"python": platform.python_version(),
          **{name: package_version(name) for name in PACKAGES},
          "vae_jax": code_version()}


def record_entry(first_epoch: int, used: dict[str, str]) -> dict:
  """An entry of config.json's trained_with: the software that trains from first_epoch on."""
  return {"from_epoch": first_epoch, "versions": used}


def trained_epoch_with(record: list[dict], epoch: int) -> Optional[dict[str, str]]:
  """The versions that trained epoch: the last entry of the record from it or before; None
  if the record has none (a run trained before the record was kept)."""
  entries = [entry["versions"] for entry in record if _is_entry(entry)
             and entry["from_epoch"] <= epoch]
  return entries[-1] if entries else None


def _is_entry(entry) -> bool:
  """Whether entry is as record_entry makes it (config.json may have been edited)."""
  return (isinstance(entry, dict) and isinstance(entry.get("from_epoch"), int)
          and isinstance(entry.get("versions"), dict))


def differences(recorded: dict[str, str], current: dict[str, str]) -> dict[str, str]:
  """{name: 'name recorded (here current)'} for each recorded version that differs from
  current's."""
  return {name: f"{name} {version} (here {current.get(name, 'absent')})"
          for name, version in recorded.items() if current.get(name) != version}


def changed_since(workdir: str, epoch: int) -> dict[str, str]:
  """differences() between the software that trained epoch of the run in workdir (its
  config.json's record) and this; {} where the record has none."""
  recorded = trained_epoch_with(config_lib.trained_with(workdir), epoch)
  return differences(recorded, versions()) if recorded else {}
