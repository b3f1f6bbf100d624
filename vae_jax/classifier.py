"""A small digit classifier whose features score generated images: python -m vae_jax.classifier."""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from typing import Any, Callable, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import app, flags

from vae_jax import checkpoints, cli, input_pipeline, models, quiet, steps
from vae_jax import config as config_lib
from vae_jax import workdir as workdir_lib
from vae_jax.config import Config, ConfigError
from vae_jax.input_pipeline import to_float
from vae_jax.models import IMAGE_SHAPE

NUM_FEATURES = 128
NUM_CLASSES = 10
INFO_FILE = workdir_lib.CLASSIFIER_FILE
CHECKPOINT_DIR = "checkpoints"
EVAL_BATCH = 500
# Folded out of PRNGKey(seed). The classifier is a program of its own, so its keys may
# coincide with a VAE run's of the same seed (they do: split = fold_in 0 and 1).
INIT_STREAM, SHUFFLE_STREAM = 0, 1

# This entry point's defaults. vae_jax.main (and others) define flags of the same names, and
# absl allows one definition per name in a process; see cli.define_shared.
DEFAULTS = {"dataset": "mnist", "epochs": 3, "batch_size": 128, "learning_rate": 1e-3,
            "seed": 0, "train_examples": None, "overwrite": False}


def define_flag(define: Callable, name: str, help_text: str) -> None:
  cli.define_shared(define, name, DEFAULTS[name], help_text)


def flag_value(name: str) -> Any:
  return cli.shared_value(name, DEFAULTS[name])


define_flag(flags.DEFINE_string, "dataset", f"One of {', '.join(config_lib.DATASETS)}.")
define_flag(flags.DEFINE_integer, "epochs", "Training epochs.")
define_flag(flags.DEFINE_integer, "batch_size", "Training batch size.")
define_flag(flags.DEFINE_float, "learning_rate", "Adam learning rate.")
define_flag(flags.DEFINE_integer, "seed", "Seed of the initialisation and shuffling.")
define_flag(flags.DEFINE_integer, "train_examples",
            "Use only the first N training images (default all).")
define_flag(flags.DEFINE_bool, "overwrite", "Replace a classifier already in --workdir.")
cli.key_flags("workdir", "data_dir", "manual_dir")
FLAGS = flags.FLAGS


class MissingClassifierError(ConfigError):
  """A folder holds no trained classifier; the message says how to train one."""


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """nn.max_pool(x, (2, 2), (2, 2)) as a reshape and a max, whose gradient XLA:CPU
  computes faster than max_pool's select-and-scatter (an epoch: 30 s instead of 51 s)."""
  b, h, w, c = x.shape
  return x.reshape((b, h // 2, 2, w // 2, 2, c)).max(axis=(2, 4))


class DigitNet(nn.Module):
  """Conv 32 3x3 -> ReLU -> max-pool 2x2 -> Conv 64 3x3 -> ReLU -> max-pool 2x2 ->
  Dense 128 (the features) -> ReLU -> Dense 10.

  The features are the Dense 128 outputs before the ReLU: closer to Gaussian than the
  rectified ones (no mass piled up at 0), which the Fréchet distance assumes. On CPU the
  convolutions are models.conv_class()'s matrix-product form: an epoch takes 30 s
  instead of 570 s with nn.Conv (2 cores), for the same function and parameters.
  """

  def setup(self):
    conv = models.conv_class()
    self.conv_0 = conv(32, (3, 3))
    self.conv_1 = conv(64, (3, 3))
    self.embed = nn.Dense(NUM_FEATURES)
    self.head = nn.Dense(NUM_CLASSES)

  def features(self, images: jax.Array) -> jax.Array:
    """Images [B, 28, 28, 1] in [0, 1] -> penultimate features [B, 128]."""
    x = max_pool_2x2(nn.relu(self.conv_0(images)))
    x = max_pool_2x2(nn.relu(self.conv_1(x)))
    return self.embed(x.reshape((x.shape[0], -1)))

  def __call__(self, images: jax.Array) -> jax.Array:
    """Images [B, 28, 28, 1] in [0, 1] -> logits [B, 10]."""
    return self.head(nn.relu(self.features(images)))


class Classifier(NamedTuple):
  model: DigitNet
  params: Any
  dataset: str
  test_accuracy: Optional[float]  # None until evaluated


def new_classifier(seed: int = 0, dataset: str = "mnist") -> Classifier:
  """An untrained classifier, initialised from seed."""
  model = DigitNet()
  key = jax.random.fold_in(jax.random.PRNGKey(seed), INIT_STREAM)
  params = model.init(key, jnp.zeros((1,) + IMAGE_SHAPE, jnp.float32))["params"]
  return Classifier(model, params, dataset, None)


# ---- inference -------------------------------------------------------------------------


def _as_float(batch: jax.Array) -> jax.Array:
  """uint8 pixels are 0..255; anything else is taken as intensities in [0, 1]."""
  return to_float(batch) if batch.dtype == jnp.uint8 else batch.astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("model", "output", "batch_size"))
def _map_images(params, images: jax.Array, *, model: DigitNet, output: str, batch_size: int):
  def fn(batch, _):
    x = _as_float(batch)
    if output == "features":
      return model.apply({"params": params}, x, method=DigitNet.features)
    return jnp.argmax(model.apply({"params": params}, x), axis=-1).astype(jnp.int32)

  return steps.map_batches(fn, images, batch_size)


def _run(classifier: Classifier, images, output: str, batch_size: int) -> np.ndarray:
  if tuple(images.shape[1:]) != IMAGE_SHAPE:
    raise ValueError(f"images must be [N, 28, 28, 1], got shape {tuple(images.shape)}")
  n = images.shape[0]
  if n == 0:
    return np.zeros((0, NUM_FEATURES) if output == "features" else (0,),
                    np.float32 if output == "features" else np.int32)
  return np.asarray(_map_images(classifier.params, jnp.asarray(images), model=classifier.model,
                                output=output, batch_size=min(batch_size, n)))


def features(classifier: Classifier, images, batch_size: int = EVAL_BATCH) -> np.ndarray:
  """Penultimate features float32 [N, 128] of images uint8 (0..255) or float in [0, 1]."""
  return _run(classifier, images, "features", batch_size)


def predict(classifier: Classifier, images, batch_size: int = EVAL_BATCH) -> np.ndarray:
  """Predicted labels int32 [N] of images uint8 (0..255) or float in [0, 1]."""
  return _run(classifier, images, "labels", batch_size)


def accuracy(classifier: Classifier, images, labels) -> float:
  return float(np.mean(predict(classifier, images) == np.asarray(labels)))


# ---- training --------------------------------------------------------------------------


class TrainState(NamedTuple):
  params: Any
  opt_state: Any


def batch_loss(params, images_u8: jax.Array, labels: jax.Array, model: DigitNet) -> jax.Array:
  """Mean cross-entropy of a batch, in nats."""
  logits = model.apply({"params": params}, to_float(images_u8))
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def train_step(state: TrainState, images_u8: jax.Array, labels: jax.Array, *, model: DigitNet,
               tx: optax.GradientTransformation) -> tuple[TrainState, jax.Array]:
  loss, grads = jax.value_and_grad(batch_loss)(state.params, images_u8, labels, model)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return TrainState(optax.apply_updates(state.params, updates), opt_state), loss


def shuffle_key(seed: int, epoch: int) -> jax.Array:
  return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), SHUFFLE_STREAM), epoch)


def train_epoch(state: TrainState, images_u8: jax.Array, labels: jax.Array, key: jax.Array, *,
                model: DigitNet, tx: optax.GradientTransformation,
                batch_size: int) -> tuple[TrainState, jax.Array]:
  """A whole epoch of shuffled batches as one scan -> (state, mean batch loss)."""
  num_steps = images_u8.shape[0] // batch_size  # the remainder is dropped
  batches = jax.random.permutation(key, images_u8.shape[0])[: num_steps * batch_size]

  def step(state, idx):
    return train_step(state, images_u8[idx], labels[idx], model=model, tx=tx)

  state, losses = jax.lax.scan(step, state, batches.reshape(num_steps, batch_size))
  return state, losses.mean()


def compile_epoch(model: DigitNet, tx: optax.GradientTransformation, batch_size: int) -> Callable:
  """(state, images_u8, labels, key) -> (state, mean loss); donates the state."""
  return jax.jit(functools.partial(train_epoch, model=model, tx=tx, batch_size=batch_size),
                 donate_argnums=0, compiler_options=steps.epoch_compiler_options())


def check_workdir(workdir: str, overwrite: bool) -> None:
  """A ConfigError unless workdir may receive a new classifier."""
  refuse_foreign_folder(workdir, overwrite)
  if has_classifier(workdir) and not overwrite:
    raise ConfigError(f"--workdir={workdir} already holds a trained classifier; "
                      "pass --overwrite to train a new one")


def load_splits(config: Config) -> tuple[input_pipeline.Split, input_pipeline.Split]:
  """The (train, test) splits of config.dataset; a ConfigError if a batch is larger than
  the training set."""
  load = functools.partial(input_pipeline.load_split, config.dataset,
                           data_dir=config.data_dir, manual_dir=config.manual_dir)
  train, test = load(input_pipeline.train_split(config.train_examples)), load("test")
  if len(train.labels) < config.batch_size:
    raise ConfigError(f"--batch_size={config.batch_size} is larger than the training set "
                      f"({len(train.labels)} images)")
  return train, test


def train_classifier(config: Config, workdir: str, overwrite: bool = False,
                     log: Callable[[str], None] = print) -> Classifier:
  """Trains on config.dataset, evaluates on its test split each epoch, saves to workdir.

  Of config it uses dataset, epochs, batch_size, learning_rate, seed, train_examples,
  data_dir and manual_dir.
  """
  check_workdir(workdir, overwrite)
  train, test = load_splits(config)
  classifier = new_classifier(config.seed, config.dataset)
  tx = optax.adam(config.learning_rate)
  state = TrainState(classifier.params, tx.init(classifier.params))
  images, labels = jax.device_put(train.images), jax.device_put(train.labels)
  test_images = jax.device_put(test.images)  # uint8 on the device, like the train split

  log(f"training on {len(train.labels)} {config.dataset} images, "
      f"{len(train.labels) // config.batch_size} steps per epoch, on {jax.default_backend()}")
  start = time.perf_counter()
  epoch_fn = compile_epoch(classifier.model, tx, config.batch_size).lower(
      state, images, labels, shuffle_key(config.seed, 0)).compile()
  log(f"compiled the epoch in {time.perf_counter() - start:.1f} s")
  seconds, accuracies = [], []
  for epoch in range(config.epochs):
    start = time.perf_counter()
    state, loss = epoch_fn(state, images, labels, shuffle_key(config.seed, epoch))
    loss = float(loss)  # waits for the epoch
    seconds.append(time.perf_counter() - start)
    classifier = classifier._replace(params=state.params)
    accuracies.append(accuracy(classifier, test_images, test.labels))
    log(f"epoch {epoch + 1}/{config.epochs}: train loss {loss:.4f}, "
        f"test accuracy {accuracies[-1]:.2%}, {seconds[-1]:.1f} s")

  classifier = classifier._replace(test_accuracy=accuracies[-1])
  save_classifier(classifier, workdir, {
      "epochs": config.epochs, "train_examples": len(train.labels),
      "batch_size": config.batch_size, "learning_rate": config.learning_rate, "seed": config.seed,
      "test_accuracy_per_epoch": accuracies, "seconds_per_epoch": [round(s, 2) for s in seconds],
  }, overwrite)
  log(f"classifier saved to {workdir} (test accuracy {classifier.test_accuracy:.2%})")
  return classifier


# ---- saving and loading ----------------------------------------------------------------


def _manager(workdir: str, read_only: bool) -> ocp.CheckpointManager:
  directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
  if not read_only:
    return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True))
  # Orbax warns on every read-only open, which is all that loading does.
  with quiet.absl_warnings_off():
    return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))


def has_classifier(workdir: str) -> bool:
  """classifier.json is written after the checkpoint: its presence means a complete save."""
  return os.path.isfile(os.path.join(workdir, INFO_FILE))


def refuse_foreign_folder(workdir: str, overwrite: bool = False) -> None:
  """A ConfigError if saving a classifier in workdir would replace checkpoints/ that are
  not a classifier's: a VAE run's, or (unless overwrite) any without classifier.json,
  which is another program's folder or a classifier save cut short."""
  if os.path.isfile(os.path.join(workdir, config_lib.CONFIG_FILE)):
    raise ConfigError(f"--workdir={workdir} holds a VAE run ({config_lib.CONFIG_FILE}), "
                      "not a classifier; use another --workdir")
  if (os.path.exists(os.path.join(workdir, CHECKPOINT_DIR)) and not has_classifier(workdir)
      and not overwrite):
    raise ConfigError(f"--workdir={workdir} holds {CHECKPOINT_DIR}/ but no {INFO_FILE}: not a "
                      "classifier's (or a save cut short); use another --workdir, or pass "
                      f"--overwrite to replace its {CHECKPOINT_DIR}/")


def save_classifier(classifier: Classifier, workdir: str, info: Optional[dict] = None,
                    overwrite: bool = False) -> None:
  """The params as an Orbax checkpoint in W/checkpoints/<epochs>, then W/classifier.json.

  Replaces any classifier already there; refuses other checkpoints (refuse_foreign_folder).
  """
  refuse_foreign_folder(workdir, overwrite)
  info = {"dataset": classifier.dataset, "epochs": 0, "test_accuracy": classifier.test_accuracy,
          **(info or {})}
  os.makedirs(workdir, exist_ok=True)
  info_path = os.path.join(workdir, INFO_FILE)
  if os.path.exists(info_path):
    os.remove(info_path)  # first, so that a save cut short never pairs old info with new params
  shutil.rmtree(os.path.join(workdir, CHECKPOINT_DIR), ignore_errors=True)
  manager = _manager(workdir, read_only=False)
  manager.save(info["epochs"], args=ocp.args.StandardSave(classifier.params))
  manager.wait_until_finished()
  manager.close()
  with open(info_path + ".tmp", "w") as f:
    json.dump(info, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(info_path + ".tmp", info_path)  # atomic: never half-written


def train_command(workdir: str, dataset: str) -> str:
  """The command that trains a classifier of dataset into workdir, with --overwrite where
  the folder holds one (or a classifier's checkpoints/) that it would replace."""
  replaces = has_classifier(workdir) or os.path.exists(os.path.join(workdir, CHECKPOINT_DIR))
  return (f"python -m vae_jax.classifier --dataset={dataset} --workdir={workdir}"
          + (" --overwrite" if replaces else ""))


def load_classifier(workdir: str, dataset: Optional[str] = None) -> Classifier:
  """The classifier saved in workdir; MissingClassifierError if there is none, if it was
  trained on another dataset than `dataset` (when given), or if it cannot be read."""
  command = train_command(workdir, dataset or "mnist")
  if not has_classifier(workdir):
    raise MissingClassifierError(f"{workdir} holds no trained classifier; train one with: {command}")
  damaged = f"{workdir} holds a damaged classifier ({{}}); train it again with: {command}"
  if not os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)):
    raise MissingClassifierError(damaged.format(f"no {CHECKPOINT_DIR}/"))
  try:
    with open(os.path.join(workdir, INFO_FILE)) as f:
      info = json.load(f)
    trained_on = info["dataset"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise MissingClassifierError(damaged.format(f"{INFO_FILE}: {type(e).__name__} {e}")) from e
  if dataset is not None and trained_on != dataset:
    raise MissingClassifierError(
        f"{workdir} holds a classifier of {trained_on}, not {dataset}; use one of {dataset}, "
        f"e.g. trained with: {train_command(cli.default_classifier_workdir(dataset), dataset)}")
  manager = _manager(workdir, read_only=True)
  try:
    if manager.latest_step() is None:
      raise MissingClassifierError(damaged.format(f"an empty {CHECKPOINT_DIR}/"))
    template = new_classifier(dataset=trained_on)
    params = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(
        checkpoints.abstract_like(template.params)))
  except MissingClassifierError:
    raise
  except Exception as e:  # Orbax raises many kinds for a damaged checkpoint
    raise MissingClassifierError(damaged.format(f"its checkpoint: {type(e).__name__}")) from e
  finally:
    manager.close()
  return template._replace(params=params, test_accuracy=info.get("test_accuracy"))


# ---- entry point -----------------------------------------------------------------------


def config_from_flags() -> Config:
  epochs = flag_value("epochs")
  return Config(dataset=flag_value("dataset"), epochs=epochs, milestones=(epochs,),
                batch_size=flag_value("batch_size"), learning_rate=flag_value("learning_rate"),
                seed=flag_value("seed"), train_examples=flag_value("train_examples"),
                data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir)


def train_from_flags() -> None:
  cli.refuse_unused(("epoch", "out", "classifier_workdir"), "vae_jax.classifier")
  config = config_from_flags()
  config_lib.validate(config)  # the same checks and messages as vae_jax.main's flags
  workdir = FLAGS.workdir or os.path.join("runs", f"classifier_{config.dataset}")
  workdir_lib.ensure_dir(workdir, "workdir")  # before training, not after
  cli.run_reporting(lambda: train_classifier(config, workdir, overwrite=flag_value("overwrite")),
                    (ConfigError, input_pipeline.DataError))


def main(argv: list[str]) -> None:
  cli.main_with(argv, train_from_flags, "interrupted; the same command trains the "
                "classifier again (with --overwrite if it was being saved)")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
