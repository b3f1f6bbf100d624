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
  mesh, fns, state, data = benchmark.epoch_inputs(config)
  train_epoch = fns.train_epoch
  result = {"arch": args.arch, "device": jax.devices()[0].device_kind,
            # The state is donated, so each call trains on from the last one's state.
            "train_epoch_s": [], "evaluate_s": {}}
  for _ in range(args.repeats + 1):
    start = time.perf_counter()
    state, terms = train_epoch(state, *data)
    jax.block_until_ready(terms)
    result["train_epoch_s"].append(round(time.perf_counter() - start, 4))
  result["train_epoch_s"] = result["train_epoch_s"][1:]  # the first compiles
  rng = np.random.default_rng(1)
  val = parallel.put_replicated(
      (rng.integers(0, 256, (VAL_IMAGES, 28, 28, 1), np.uint8),
       rng.integers(0, models.NUM_CLASSES, (VAL_IMAGES,), np.int32)), mesh)
  model = models.make_model(config.model, config.arch, config.latent_dim)
  for batch_size in map(int, args.eval_batch_sizes.split(",")):
    fns_b = steps.compile_fns(model, steps.make_optimizer(config),
                              dataclasses.replace(config, batch_size=batch_size), mesh)
    result["evaluate_s"][batch_size] = seconds(fns_b.evaluate, state, *val, repeats=args.repeats)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
