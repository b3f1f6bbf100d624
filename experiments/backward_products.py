"""The forward and backward products of one transposed convolution, in several forms.

    .venv/bin/python experiments/backward_products.py [--rounds=3]
    taskset -c 0 .venv/bin/python experiments/backward_products.py   # on one core

For ConvTranspose 32 of the conv decoder (batch 128: 14x14x64 -> 28x28x32, 3x3, stride 2)
as vae_jax.layers computes it on CPU: the forward product x W ([25088, 64] x [64, 288]),
the input gradient G Wᵀ and the weight gradient xᵀ G, where G [25088, 288] is the output
gradient gathered to the taps. Also other forms of the weight gradient, and the input
gradient as one native strided convolution of the output gradient (checked against
jax.vjp of lax.conv_transpose). Each is timed with xla_cpu_kernels.ms_per_call (inside a
compiled scan, every operand loop-carried), the best of `rounds` calls, and printed in
ms and GFLOP/s (all forms have the layer's 925 MFLOP). Used for session 14's section of
experiments/benchmark.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
from jax import lax

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.dirname(_HERE))

from vae_jax import layers  # noqa: E402
from xla_cpu_kernels import NHWC, ms_per_call  # noqa: E402

BATCH, SIZE, CIN, FEATURES, K, STRIDE = 128, 14, 64, 32, 3, 2


def native_input_gradient(g: jax.Array, kernel: jax.Array) -> jax.Array:
  """dL/dx of lax.conv_transpose(x, kernel, stride, "SAME") for output gradient g: a
  strided correlation of g with the flipped kernel, in and out swapped."""
  low = K - 1 - layers.transpose_pad_low(K, STRIDE)
  high = (SIZE - 1) * STRIDE + K - low - STRIDE * SIZE
  return lax.conv_general_dilated(g, kernel[::-1, ::-1].transpose(0, 1, 3, 2),
                                  (STRIDE, STRIDE), ((low, high), (low, high)),
                                  dimension_numbers=NHWC)


def gathered(g: jax.Array) -> jax.Array:
  taps_shape = (BATCH, SIZE, SIZE, K, K, FEATURES)
  return layers._gather_taps(g, taps_shape, (STRIDE, STRIDE)).reshape(-1, K * K * FEATURES)


def cases() -> list[tuple[str, object, tuple]]:
  rows, cols = BATCH * SIZE * SIZE, K * K * FEATURES
  barrier, dot_general = lax.optimization_barrier, lax.dot_general
  x, w, G = jnp.ones((rows, CIN)), jnp.ones((CIN, cols)), jnp.ones((rows, cols))
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  g = jax.random.normal(keys[0], (BATCH, STRIDE * SIZE, STRIDE * SIZE, FEATURES))
  kernel = 0.05 * jax.random.normal(keys[1], (K, K, CIN, FEATURES))
  kernel_matrix = kernel.transpose(2, 0, 1, 3).reshape(CIN, cols)

  def blocks(x, G, n):
    return sum(jnp.dot(barrier(x[i * rows // n:(i + 1) * rows // n].T),
                       G[i * rows // n:(i + 1) * rows // n]) for i in range(n))

  return [
      ("forward x W", jnp.dot, (x, w)),
      ("input gradient G Wᵀ", lambda G, w: jnp.dot(G, w.T), (G, w)),
      ("weight gradient xᵀ G (vae_jax)", lambda x, G: jnp.dot(barrier(x.T), G), (x, G)),
      ("weight gradient, Eigen dot_general", lambda x, G: dot_general(x, G, (((0,), (0,)), ((), ()))), (x, G)),
      ("weight gradient (Gᵀ x)ᵀ, G on the left", lambda x, G: dot_general(G, x, (((0,), (0,)), ((), ()))).T, (x, G)),
      ("weight gradient, 2 row blocks", lambda x, G: blocks(x, G, 2), (x, G)),
      ("weight gradient, 7 row blocks", lambda x, G: blocks(x, G, 7), (x, G)),
      ("weight gradient, 49 row blocks", lambda x, G: blocks(x, G, 49), (x, G)),
      ("weight gradient, 4 blocks batched", lambda x, G: jnp.einsum(
          "bkr,brn->kn", barrier(x.T).reshape(CIN, 4, rows // 4).transpose(1, 0, 2),
          G.reshape(4, rows // 4, cols)), (x, G)),
      ("weight gradient Gᵀ x, Gᵀ given", jnp.dot, (G.T + 0, x)),
      ("weight gradient Gᵀ x, with the transpose", lambda x, G: jnp.dot(barrier(G.T), x).T, (x, G)),
      ("input gradient: gather + product", lambda g, wm: jnp.dot(gathered(g), wm.T).reshape(
          BATCH, SIZE, SIZE, CIN), (g, kernel_matrix)),
      ("input gradient: native convolution", native_input_gradient, (g, kernel)),
  ]


def check_native_input_gradient() -> float:
  """The largest difference between native_input_gradient and jax.vjp's."""
  keys = jax.random.split(jax.random.PRNGKey(1), 3)
  x = jax.random.normal(keys[0], (2, SIZE, SIZE, CIN))
  kernel = jax.random.normal(keys[1], (K, K, CIN, FEATURES))
  g = jax.random.normal(keys[2], (2, STRIDE * SIZE, STRIDE * SIZE, FEATURES))
  conv = lambda x: lax.conv_transpose(x, kernel, (STRIDE, STRIDE), "SAME",  # noqa: E731
                                      dimension_numbers=NHWC)
  want = jax.vjp(conv, x)[1](g)[0]
  return float(jnp.max(jnp.abs(native_input_gradient(g, kernel) - want)))


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()
  print(f"native input gradient against jax.vjp: max difference {check_native_input_gradient():.2e}")
  flops = 2 * BATCH * SIZE * SIZE * CIN * K * K * FEATURES
  for what, fn, operands in cases():
    ms = min(ms_per_call(fn, operands, args.repeats) for _ in range(args.rounds))
    print(f"{what:42s} {ms:7.2f} ms {flops / ms / 1e6:6.1f} GFLOP/s", flush=True)


if __name__ == "__main__":
  main()
