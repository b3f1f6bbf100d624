"""Seconds of one compiled training epoch and of one validation pass, apart.

vae_jax.main times the two together per epoch; vae_jax.benchmark times training alone.
This says how an epoch's time in the training log divides between them:

  python experiments/gpu/epoch_parts.py --arch=conv
"""

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

VAL_IMAGES = 10_000  # the size of MNIST's test split, the validation data of a run


def seconds(fn, *args, repeats: int) -> list[float]:
  import jax

  jax.block_until_ready(fn(*args))  # compiled and run once, untimed
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(round(time.perf_counter() - start, 4))
  return times


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--arch", choices=["mlp", "conv"], default="conv")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--eval_batch_sizes", default="128,1000")
  args = parser.parse_args()

  import jax
  import numpy as np

  from vae_jax import benchmark, models, parallel, steps

  config = benchmark.timing_config(args.arch, 60_000)
  epoch = benchmark.CompiledEpoch(config)  # compiled, and one epoch run untimed
  result = {"arch": args.arch, "device": jax.devices()[0].device_kind,
            # Each call trains on from the state the last one left.
            "train_epoch_s": [round(epoch(), 4) for _ in range(args.repeats)],
            "evaluate_s": {}}
  rng = np.random.default_rng(1)
  val = parallel.put_replicated(
      (rng.integers(0, 256, (VAL_IMAGES, 28, 28, 1), np.uint8),
       rng.integers(0, models.NUM_CLASSES, (VAL_IMAGES,), np.int32)), epoch.mesh)
  model = models.make_model(config.model, config.arch, config.latent_dim)
  for batch_size in map(int, args.eval_batch_sizes.split(",")):
    fns = steps.compile_fns(model, steps.make_optimizer(config),
                            dataclasses.replace(config, batch_size=batch_size), epoch.mesh)
    result["evaluate_s"][batch_size] = seconds(fns.evaluate, epoch.state, *val,
                                               repeats=args.repeats)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
