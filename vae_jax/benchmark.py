"""Entry point that measures training speed: python -m vae_jax.benchmark --arch=mlp."""

from __future__ import annotations

import json
import platform
import time

from absl import app, flags

from vae_jax import cli, software
from vae_jax import config as config_lib
from vae_jax.config import Config, ConfigError

# This entry point's defaults; vae_jax.main defines flags of the same names (cli.define_shared).
DEFAULTS = {"model": "vae", "arch": "mlp", "latent_dim": 2, "batch_size": 128,
            "train_examples": 60_000, "epochs": 3, "num_devices": None}
for define, name, help_text in (
    (flags.DEFINE_string, "model", f"One of {', '.join(config_lib.MODELS)}."),
    (flags.DEFINE_string, "arch", f"One of {', '.join(config_lib.ARCHS)}."),
    (flags.DEFINE_integer, "latent_dim", "Dimension of the latent code."),
    (flags.DEFINE_integer, "batch_size", "Global batch size."),
    (flags.DEFINE_integer, "train_examples", "Images per epoch."),
    (flags.DEFINE_integer, "epochs", "Timed epochs, after one untimed warm-up epoch."),
    (flags.DEFINE_integer, "num_devices", "Use only the first N devices (default all)."),
):
  cli.define_shared(define, name, DEFAULTS[name], help_text)


def flag_value(name: str):
  return cli.shared_value(name, DEFAULTS[name])


def epoch_inputs(config: Config):
  """(mesh, compiled functions, initial state, data) for timing config's epochs.

  The images are random uint8 and the labels random (speed does not depend on their
  values), so no dataset is needed; they live on the device like real training data.
  """
  import numpy as np

  from vae_jax import models, parallel, steps

  mesh = parallel.make_mesh(config.num_devices)
  parallel.check_batch_size(config.batch_size, mesh)
  model = models.make_model(config.model, config.arch, config.latent_dim)
  tx = steps.make_optimizer(config)
  fns = steps.compile_fns(model, tx, config, mesh)
  state = parallel.put_replicated(steps.init_state(model, tx, config.seed), mesh)
  rng = np.random.default_rng(0)
  data = parallel.put_replicated(
      (rng.integers(0, 256, (config.num_train, 28, 28, 1), np.uint8),
       rng.integers(0, models.NUM_CLASSES, (config.num_train,), np.int32)), mesh)
  return mesh, fns, state, data


def timing_config(arch: str, train_examples: int, model: str = "vae",
                  batch_size: int = 128) -> Config:
  """A one-epoch config of train_examples images (batch 128 unless said), for CompiledEpoch."""
  return Config(model=model, arch=arch, batch_size=batch_size, train_examples=train_examples,
                epochs=1, milestones=(1,))


class CompiledEpoch:
  """config's train epoch (epoch_inputs), compiled and run once untimed, so that first-run
  allocations stay out of any timing. Each call trains one more epoch, on the state the
  last one left, and returns its seconds."""

  def __init__(self, config: Config):
    self.mesh, fns, self.state, self.data = epoch_inputs(config)
    start = time.perf_counter()
    self.compiled = fns.train_epoch.lower(self.state, *self.data).compile()
    self.compile_seconds = time.perf_counter() - start
    self()

  def __call__(self) -> float:
    import jax

    start = time.perf_counter()
    self.state, terms = self.compiled(self.state, *self.data)
    jax.block_until_ready(terms)
    return time.perf_counter() - start


def measure(config: Config, epochs: int) -> dict:
  """Compiles the epoch, runs one warm-up epoch, then times `epochs` whole epochs."""
  import jax

  epoch = CompiledEpoch(config)
  seconds = [epoch() for _ in range(epochs)]
  images_per_epoch = (config.num_train // config.batch_size) * config.batch_size
  return {
      "framework": "jax", "model": config.model, "arch": config.arch,
      "batch_size": config.batch_size, "latent_dim": config.latent_dim,
      "images_per_sec": round(images_per_epoch * epochs / sum(seconds), 1),
      "compile_seconds": round(epoch.compile_seconds, 3),
      "epoch_seconds": [round(s, 3) for s in seconds],
      "timed_images": images_per_epoch * epochs,
      "backend": jax.default_backend(), "devices": epoch.mesh.size,
      "device_kind": jax.devices()[0].device_kind,
      "versions": software.versions(), "machine": platform.machine(),
  }


def benchmark_from_flags() -> None:
  # It times random images, and writes nothing: the run-folder and data flags do not apply.
  cli.refuse_unused(("workdir", "data_dir", "manual_dir", "epoch", "out", "classifier_workdir"),
                    "vae_jax.benchmark")
  epochs = flag_value("epochs")
  config = Config(model=flag_value("model"), arch=flag_value("arch"),
                  latent_dim=flag_value("latent_dim"), batch_size=flag_value("batch_size"),
                  train_examples=flag_value("train_examples"),
                  num_devices=flag_value("num_devices"), epochs=epochs, milestones=(epochs,))
  config_lib.validate(config)
  print(json.dumps(measure(config, epochs)))


def main(argv: list[str]) -> None:
  cli.main_with(argv, benchmark_from_flags, "interrupted; the benchmark writes nothing")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
