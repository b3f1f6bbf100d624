"""The frozen configuration of a run: every setting, its validation, and config.json."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
from typing import Any, Optional

MODELS = ("vae", "cvae", "ae")
BINARIZATIONS = ("none", "dynamic")
ARCHS = ("mlp", "conv")
DATASETS = ("mnist", "fashion_mnist")
TRAIN_SIZE = {"mnist": 60_000, "fashion_mnist": 60_000}
MANUAL_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
CONFIG_FILE = "config.json"
CHANGES_KEY = "changed_on_resume"  # config.json's record of resumes (see save); not a setting
SOFTWARE_KEY = "trained_with"  # config.json's record of the software that trained it (see save)

# Settings that define what is trained. A workdir refuses to resume when one of
# these differs. The rest may change on resume: epochs and milestones (to extend a
# run), paths and device count (to move it), and the learning rate (to go on
# after a divergence with a smaller one); such changes are logged.
RESULT_FIELDS = (
    "dataset", "model", "arch", "latent_dim", "batch_size", "beta", "seed", "train_examples",
    "binarize",
)
RESUMABLE_FIELDS = ("learning_rate", "epochs", "milestones", "checkpoint_every", "num_devices",
                    "data_dir", "manual_dir")


# The shell's status for a process ended by Ctrl-C; here, where importing defines no flags.
INTERRUPTED_STATUS = 128 + signal.SIGINT


class ConfigError(ValueError):
  """A setting is invalid; the message is one line naming the flag."""


def first_line(error: BaseException) -> str:
  """The first line of an error's message (or its type's name), for a one-line error."""
  return (str(error).strip().splitlines() or [type(error).__name__])[0]


@dataclasses.dataclass(frozen=True)
class Config:
  """Every setting of a training run; built by main.py, stored as config.json."""

  dataset: str = "mnist"
  model: str = "vae"
  arch: str = "mlp"
  latent_dim: int = 2
  epochs: int = 150
  milestones: tuple[int, ...] = (20, 50, 80, 100, 150)
  batch_size: int = 128
  learning_rate: float = 1e-3
  beta: float = 1.0
  seed: int = 0
  train_examples: Optional[int] = None
  binarize: str = "none"
  checkpoint_every: int = 10
  num_devices: Optional[int] = None
  data_dir: Optional[str] = None
  manual_dir: Optional[str] = None

  @property
  def milestone_epochs(self) -> tuple[int, ...]:
    """Milestones that fall within the run, plus the last epoch, sorted."""
    return tuple(sorted({m for m in self.milestones if m <= self.epochs} | {self.epochs}))

  @property
  def dropped_milestones(self) -> tuple[int, ...]:
    return tuple(sorted(m for m in self.milestones if m > self.epochs))

  @property
  def num_train(self) -> int:
    full = TRAIN_SIZE[self.dataset]
    return full if self.train_examples is None else min(self.train_examples, full)


def default_workdir(config: Config) -> str:
  return os.path.join(
      "runs", f"{config.dataset}_{config.model}_{config.arch}_z{config.latent_dim}")


def choices() -> dict[str, tuple[str, ...]]:
  """The values each naming setting may take, read at call time: a name registered later
  (see the README's "Extending") counts."""
  return {"dataset": DATASETS, "model": MODELS, "arch": ARCHS, "binarize": BINARIZATIONS}


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ConfigError(f"--{name}={value!r} is not one of: {', '.join(choices)}")


def _at_least(name: str, value: int, low: int, what: str = "an integer") -> None:
  if value < low:
    raise ConfigError(f"--{name}={value} must be {what} >= {low}")


def validate(config: Config) -> None:
  """Raises ConfigError (one line, naming the flag) for the first invalid setting."""
  for name, allowed in choices().items():
    _choice(name, getattr(config, name), allowed)
  _at_least("latent_dim", config.latent_dim, 1)
  _at_least("epochs", config.epochs, 1)
  if not config.milestones or any(m < 1 for m in config.milestones):
    raise ConfigError(
        f"--milestones={','.join(map(str, config.milestones))} must be positive "
        "integers, e.g. --milestones=20,50,80")
  _at_least("checkpoint_every", config.checkpoint_every, 1)
  if config.train_examples is not None:
    _at_least("train_examples", config.train_examples, 1)
    full = TRAIN_SIZE[config.dataset]
    if config.train_examples > full:
      raise ConfigError(f"--train_examples={config.train_examples} is larger than the "
                        f"{config.dataset} training set ({full} images); use 1..{full}")
  validate_seed("seed", config.seed)
  _at_least("batch_size", config.batch_size, 1)
  if config.batch_size > config.num_train:
    raise ConfigError(
        f"--batch_size={config.batch_size} is larger than the training set "
        f"({config.num_train} images); use 1..{config.num_train}")
  for name in ("learning_rate", "beta"):
    value = getattr(config, name)
    low_ok = value > 0 if name == "learning_rate" else value >= 0
    if not (math.isfinite(value) and low_ok):
      sign = "positive" if name == "learning_rate" else "non-negative"
      raise ConfigError(f"--{name}={value} must be a finite {sign} number")
  if config.num_devices is not None:
    _at_least("num_devices", config.num_devices, 1)
  validate_data_dir(config.data_dir)
  if config.manual_dir is not None:
    validate_manual_dir(config.manual_dir)


def validate_data_dir(data_dir: Optional[str]) -> None:
  """tfds creates a missing data dir; a file in its place is the user's mistake."""
  if data_dir is not None and os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise ConfigError(f"--data_dir={data_dir} is a file, not a folder")


SEED_BITS = 32


def validate_seed(name: str, seed: int) -> None:
  """jax.random.PRNGKey keeps only a seed's low 32 bits (without jax_enable_x64), so a
  seed outside 0..2**32 - 1 would silently repeat another run's randomness."""
  if not 0 <= seed < 2**SEED_BITS:
    raise ConfigError(f"--{name}={seed} must be in 0..{2**SEED_BITS - 1} (jax's PRNGKey keeps "
                      f"{SEED_BITS} bits: other seeds would repeat these)")


def validate_manual_dir(manual_dir: str) -> None:
  if not os.path.isdir(manual_dir):
    raise ConfigError(f"--manual_dir={manual_dir} does not exist or is not a folder")
  missing = [f for f in MANUAL_FILES if not os.path.isfile(os.path.join(manual_dir, f))]
  if missing:
    raise ConfigError(
        f"--manual_dir={manual_dir} lacks {', '.join(missing)} "
        f"(it must hold the four official files: {', '.join(MANUAL_FILES)})")


def to_dict(config: Config) -> dict[str, Any]:
  d = dataclasses.asdict(config)
  d["milestones"] = list(config.milestones)
  return d


def from_dict(d: dict[str, Any]) -> Config:
  known = {f.name for f in dataclasses.fields(Config)}
  d = {k: v for k, v in d.items() if k in known}
  d["milestones"] = tuple(d.get("milestones", Config.milestones))
  return Config(**d)


def _read_json(workdir: str) -> dict[str, Any]:
  """config.json as written, {} if there is none (check() has refused a damaged one)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


def save(config: Config, workdir: str,
         resumed: Optional[tuple[int, list[str]]] = None,
         trains_with: Optional[dict[str, Any]] = None) -> None:
  """Writes config.json, keeping its records of the settings changed on resume and of the
  software that trained the run. resumed = (epoch, changes): the run goes on after epoch
  with these settings changed (differences() of RESUMABLE_FIELDS); they join the record in
  the same write, so that a run extended with, say, a smaller learning rate says so long
  after its log is gone. trains_with: a software.record_entry for the epochs this command
  trains; it joins the record if its versions differ from the last entry's."""
  old = _read_json(workdir)
  changes = _record(old, CHANGES_KEY)
  if resumed:
    changes = changes + [{"after_epoch": resumed[0], "changes": resumed[1]}]
  software = _record(old, SOFTWARE_KEY)
  last = software[-1] if software else {}
  if trains_with and not (isinstance(last, dict) and
                          last.get("versions") == trains_with["versions"]):
    software = software + [trains_with]
  records = {key: record for key, record in ((CHANGES_KEY, changes), (SOFTWARE_KEY, software))
             if record}
  os.makedirs(workdir, exist_ok=True)
  tmp = os.path.join(workdir, CONFIG_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump({**to_dict(config), **records}, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, os.path.join(workdir, CONFIG_FILE))  # atomic: never half-written


def _record(config_json: Any, key: str) -> list[Any]:
  """One of config.json's records; [] if it has none (or something else, edited by hand)."""
  record = config_json.get(key, []) if isinstance(config_json, dict) else []
  return record if isinstance(record, list) else []


def changes_on_resume(workdir: str) -> list[dict[str, Any]]:
  """The record that save keeps: [{"after_epoch": E, "changes": [...]}, ...]."""
  return _record(_read_json(workdir), CHANGES_KEY)


def trained_with(workdir: str) -> list[dict[str, Any]]:
  """The record that save keeps: [{"from_epoch": E, "versions": {...}}, ...]; [] for a run
  without one, or whose config.json cannot be read (its own error comes elsewhere)."""
  try:
    return _record(_read_json(workdir), SOFTWARE_KEY)
  except (OSError, ValueError):
    return []


def load(workdir: str) -> Config:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise ConfigError(f"--workdir={workdir} holds no {CONFIG_FILE}: not a vae_jax run")
  try:
    d = _read_json(workdir)
    if not isinstance(d, dict):
      raise TypeError("not a JSON object")
    return from_dict(d)
  except (json.JSONDecodeError, TypeError) as e:
    raise ConfigError(f"{path} is not a vae_jax config ({e}); restore it from a copy, "
                      "or start the run in another --workdir") from None


def check_restorable(config: Config, workdir: str) -> None:
  """A ConfigError if the run names a dataset, model, arch or binarization this code
  lacks (a run made by extended code): it cannot be rebuilt here. Training does not ask:
  its own checks name the differing settings, and --overwrite may replace such a run."""
  for name, allowed in choices().items():
    if getattr(config, name) not in allowed:
      raise ConfigError(
          f"{os.path.join(workdir, CONFIG_FILE)} names --{name}={getattr(config, name)}, which "
          f"this code does not have (only {', '.join(allowed)}): use the code that made the run")


def differences(old: Config, new: Config, fields: tuple[str, ...] = RESULT_FIELDS) -> list[str]:
  """The fields that differ, as 'name: old -> new'. train_examples compares the images
  used, so that all of them (None) equals their number given explicitly."""
  def value(config: Config, name: str):
    return config.num_train if name == "train_examples" else getattr(config, name)

  return [
      f"{name}: {getattr(old, name)!r} -> {getattr(new, name)!r}"
      for name in fields
      if value(old, name) != value(new, name)
  ]
