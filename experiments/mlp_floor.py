"""How close the mlp's train step is to what this machine's matrix products allow.

    .venv/bin/python experiments/mlp_floor.py [--rounds=5] [--steps=100]

Prints each product's time alone, then three times per train step of batch 128:
- the floor: the step's multiply-adds (counted from the dense kernels' shapes: every
  layer's forward product, its weight gradient, and its input gradient except the
  first encoder layer's) at the best rate of one large product (2048 x 2048 x 2048);
- those products timed alone, each in a loop like the scanned epoch
  (xla_cpu_kernels.ms_per_call), summed;
- the whole step: the best and the median of `rounds` epochs of `steps` steps, compiled
  as vae_jax.benchmark compiles them.
Used for the mlp figures in experiments/benchmark.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

BATCH = 128
DATA_LAYER = "encoder/trunk/Dense_0"  # its input is the images: no input gradient


def kernel_shapes(params) -> dict[str, tuple[int, int]]:
  """Layer name ('encoder/trunk/Dense_0') -> (inputs, outputs) of its dense kernel."""
  import jax
  return {"/".join(key.key for key in path[:-1]): leaf.shape
          for path, leaf in jax.tree_util.tree_leaves_with_path(params)
          if path[-1].key == "kernel"}


def step_products(shapes: dict[str, tuple[int, int]]) -> list[tuple[str, tuple, tuple]]:
  """(what, left operand shape, right operand shape) of each product in a train step."""
  products = []
  for layer, (k, n) in shapes.items():
    products.append((f"{layer} forward", (BATCH, k), (k, n)))
    if layer != DATA_LAYER:
      products.append((f"{layer} input gradient", (BATCH, n), (n, k)))
    products.append((f"{layer} weight gradient", (k, BATCH), (BATCH, n)))
  return products


def gemm_gflops(size: int = 2048, repeats: int = 20) -> float:
  """The best rate of one size^3 product, in GFLOP/s."""
  import jax
  import jax.numpy as jnp
  a = jnp.ones((size, size))
  product = jax.jit(lambda a: a @ a)
  product(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    product(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size ** 3 / best / 1e9


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=100)
  args = parser.parse_args()

  import jax
  import jax.numpy as jnp
  from vae_jax.benchmark import CompiledEpoch, timing_config
  from xla_cpu_kernels import ms_per_call

  epoch = CompiledEpoch(timing_config("mlp", args.steps * BATCH))
  products = step_products(kernel_shapes(epoch.state.params))
  flops = sum(2 * a[0] * a[1] * b[1] for _, a, b in products)
  rate = gemm_gflops()
  alone = {what: [] for what, _, _ in products}
  step_ms = []
  for _ in range(args.rounds):
    step_ms.append(epoch() / args.steps * 1000)
    for what, a, b in products:
      alone[what].append(ms_per_call(jnp.dot, (jnp.ones(a), jnp.ones(b)), 20))
  products_ms = sum(min(ms) for ms in alone.values())
  for what, _, _ in products:
    print(f"{what:40s} {min(alone[what]):6.3f} ms")
  print(f"{jax.devices()[0].device_kind}: {flops / 1e6:.0f} MFLOP of products per step")
  print(f"floor at {rate:.0f} GFLOP/s (2048^3 product): {flops / rate / 1e6:.2f} ms")
  print(f"the products timed alone, summed:        {products_ms:.2f} ms "
        f"({flops / products_ms / 1e6:.0f} GFLOP/s)")
  print(f"the train step, best / median of {args.rounds}:    "
        f"{min(step_ms):.2f} / {statistics.median(step_ms):.2f} ms")


if __name__ == "__main__":
  main()
