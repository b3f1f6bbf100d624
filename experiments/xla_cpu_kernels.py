"""How fast XLA's kernels run the conv model's layers, inside a loop like the scanned epoch.

    .venv/bin/python experiments/xla_cpu_kernels.py [--batch=128] [--repeats=10]

For each layer of the conv model (batch 128), times the forward pass, the input gradient
and the weight gradient of the layer written as a native convolution
(lax.conv_general_dilated / lax.conv_transpose, as flax's nn.Conv and nn.ConvTranspose
lower), and the matrix products that vae_jax.layers uses instead. Each is compiled as a
lax.scan of `repeats` iterations (so it runs inside a loop body, like the train step)
and timed after one warm-up call. Prints milliseconds per call and GFLOP/s (counting
the layer's multiply-adds, 2 FLOPs each). Used for experiments/benchmark.md.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

NHWC = ("NHWC", "HWIO", "NHWC")
# name, input height/width, in features, out features, stride, transposed
LAYERS = [("Conv 32", 28, 1, 32, 2, False), ("Conv 64", 14, 32, 64, 2, False),
          ("ConvTranspose 64", 7, 64, 64, 2, True), ("ConvTranspose 32", 14, 64, 32, 2, True),
          ("ConvTranspose 1", 28, 32, 1, 1, True)]


def ms_per_call(fn: Callable[..., jax.Array], args: tuple, repeats: int) -> float:
  """Milliseconds per call of fn(*args), run `repeats` times in one compiled lax.scan.

  The operands are arguments of the compiled loop and are carried through it, each
  nudged in one element by the previous call's result: as in a train step, no operand
  is a constant (XLA could fold it, or pack a constant matrix once for all calls) or
  loop-invariant, and each call depends on the last.
  """
  def body(carry, _):
    nudge, operands = carry
    operands = tuple(a.at[(0,) * a.ndim].add(nudge) for a in operands)
    return (1e-12 * jnp.sum(fn(*operands)), operands), None

  def loop(*operands):
    return lax.scan(body, (jnp.float32(0), operands), None, length=repeats)[0][0]

  compiled = jax.jit(loop).lower(*args).compile()
  compiled(*args).block_until_ready()
  start = time.perf_counter()
  compiled(*args).block_until_ready()
  return (time.perf_counter() - start) / repeats * 1000


def layer_timings(batch: int, size: int, cin: int, cout: int, stride: int, transposed: bool,
                  repeats: int) -> list[tuple[str, float, float]]:
  """(what, ms per call, GFLOP/s) for one layer's native and product forms."""
  key_x, key_w = jax.random.split(jax.random.PRNGKey(0))
  x = jax.random.normal(key_x, (batch, size, size, cin))
  w = 0.05 * jax.random.normal(key_w, (3, 3, cin, cout))
  if transposed:
    def conv(x, w):
      return lax.conv_transpose(x, w, (stride, stride), "SAME", dimension_numbers=NHWC)
  else:
    def conv(x, w):
      return lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=NHWC)
  y = conv(x, w)
  flops = 2 * 9 * cin * cout * (x.size // cin if transposed else y.size // cout)
  # The product forms of vae_jax.layers: rows of input pixels (or patches) times a matrix.
  rows = (x.size // cin) if transposed else (y.size // cout)
  k, n = (cin, 9 * cout) if transposed else (9 * cin, cout)
  a, b, g = jnp.ones((rows, k)), jnp.ones((k, n)), jnp.ones((rows, n))
  cases = [
      ("native forward", conv, (x, w)),
      ("native input gradient", lambda y, x, w: jax.vjp(conv, x, w)[1](y)[0], (y, x, w)),
      ("native weight gradient", lambda y, x, w: jax.vjp(conv, x, w)[1](y)[1], (y, x, w)),
      (f"product [{rows},{k}]x[{k},{n}]", jnp.dot, (a, b)),
      (f"product [{rows},{n}]x[{n},{k}]", jnp.dot, (g, b.T)),
      (f"product [{k},{rows}]x[{rows},{n}]", jnp.dot, (a.T, g)),
  ]
  return [(what, ms, flops / ms / 1e6) for what, fn, args in cases
          for ms in [ms_per_call(fn, args, repeats)]]


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()
  print(f"{jax.devices()[0].device_kind}, batch {args.batch}, {args.repeats} calls in a scan")
  for name, size, cin, cout, stride, transposed in LAYERS:
    for what, ms, gflops in layer_timings(args.batch, size, cin, cout, stride, transposed,
                                          args.repeats):
      print(f"{name:17s} {what:34s} {ms:9.2f} ms {gflops:7.1f} GFLOP/s")


if __name__ == "__main__":
  main()
