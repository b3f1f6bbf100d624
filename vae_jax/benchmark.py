"""Entry point that measures training speed: python -m vae_jax.benchmark --arch=mlp."""

from __future__ import annotations

import json
import platform
import time

from absl import app, flags

from vae_jax import cli
from vae_jax import config as config_lib
from vae_jax.config import Config, ConfigError

flags.DEFINE_string("model", "vae", f"One of {', '.join(config_lib.MODELS)}.")
flags.DEFINE_string("arch", "mlp", f"One of {', '.join(config_lib.ARCHS)}.")
flags.DEFINE_integer("latent_dim", 2, "Dimension of the latent code.")
flags.DEFINE_integer("batch_size", 128, "Global batch size.")
flags.DEFINE_integer("train_examples", 60_000, "Images per epoch.")
flags.DEFINE_integer("epochs", 3, "Timed epochs, after one untimed warm-up epoch.")
flags.DEFINE_integer("num_devices", None, "Use only the first N devices (default all).")
FLAGS = flags.FLAGS


def measure(config: Config, epochs: int) -> dict:
  """Compiles the epoch, runs one warm-up epoch, then times `epochs` whole epochs.

  The images are random uint8 and the labels random (speed does not depend on their
  values), so no dataset is needed; they live on the device like real training data.
  """
  import jax
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

  start = time.perf_counter()
  epoch = fns.train_epoch.lower(state, *data).compile()
  compile_seconds = time.perf_counter() - start
  state, terms = epoch(state, *data)
  jax.block_until_ready(terms)  # warm-up: first-run allocations stay out of the timing

  seconds = []
  for _ in range(epochs):
    start = time.perf_counter()
    state, terms = epoch(state, *data)
    jax.block_until_ready(terms)
    seconds.append(time.perf_counter() - start)
  images_per_epoch = (config.num_train // config.batch_size) * config.batch_size
  return {
      "framework": "jax", "model": config.model, "arch": config.arch,
      "batch_size": config.batch_size, "latent_dim": config.latent_dim,
      "images_per_sec": round(images_per_epoch * epochs / sum(seconds), 1),
      "compile_seconds": round(compile_seconds, 3),
      "epoch_seconds": [round(s, 3) for s in seconds],
      "timed_images": images_per_epoch * epochs,
      "backend": jax.default_backend(), "devices": mesh.size,
      "device_kind": jax.devices()[0].device_kind,
      "versions": versions(), "machine": platform.machine(),
  }


def versions() -> dict:
  import flax
  import jax
  import jaxlib
  import optax
  return {"python": platform.python_version(), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "flax": flax.__version__, "optax": optax.__version__}


def benchmark_from_flags() -> None:
  config = Config(model=FLAGS.model, arch=FLAGS.arch, latent_dim=FLAGS.latent_dim,
                  batch_size=FLAGS.batch_size, train_examples=FLAGS.train_examples,
                  num_devices=FLAGS.num_devices, epochs=FLAGS.epochs, milestones=(FLAGS.epochs,))
  config_lib.validate(config)
  print(json.dumps(measure(config, FLAGS.epochs)))


def main(argv: list[str]) -> None:
  cli.main_with(argv, benchmark_from_flags)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
