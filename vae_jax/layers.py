"""nn.Conv and nn.ConvTranspose ("SAME") as matrix products: same params, fast to train on CPU.

XLA:CPU runs a convolution 5-60x slower inside a loop body (our whole-epoch
lax.scan) than at the top level of a program, while matrix products run at full
speed in both. So on CPU every strided or transposed convolution here is computed
as im2col (k*k shifted views, concatenated) followed by one matrix product.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype
from flax.linen.linear import default_kernel_init


def _pair(x: int | Sequence[int]) -> tuple[int, int]:
  t = (x, x) if isinstance(x, int) else tuple(x)
  if len(t) != 2:
    raise ValueError(f"only 2-D (NHWC) transposed convolutions are supported, got {x!r}")
  return t  # type: ignore[return-value]


def _phase_taps(k: int, s: int) -> tuple[np.ndarray, tuple[int, int]]:
  """Per-axis phase table of lax.conv_transpose(..., "SAME", transpose_kernel=False).

  That op correlates (no flip) the s-dilated input, padded by pad_a in front, with
  K: y[o] = sum_t K[t] x[(o + t - pad_a) / s], over the t making that an integer.
  For o = s*m + r: y[s*m + r] = sum_t K[t] x[m + q], q = (r + t - pad_a) / s, i.e. a
  stride-1 correlation of the undilated x for each output phase r. (k=3, s=2:
  y[2m] = K0 x[m-1] + K2 x[m], y[2m+1] = K1 x[m].) Returns idx[j, r] = the tap t
  phase r uses at window offset j (k where none: reads a zero) and x's (low, high) pad.
  """
  # jax's _conv_transpose_padding(k, s, "SAME"); the tests pin the result to flax.
  pad_a = k - 1 if s > k - 1 else -(-(k + s - 2) // 2)
  taps = {(r, t): (r + t - pad_a) // s
          for r in range(s) for t in range(k) if (r + t - pad_a) % s == 0}
  # Keep offset 0 in range so both pads are >= 0 (any extra rows are all-zero taps).
  lo, hi = min(min(taps.values()), 0), max(max(taps.values()), 0)
  idx = np.full((hi - lo + 1, s), k)
  for (r, t), q in taps.items():
    idx[q - lo, r] = t
  return idx, (-lo, hi)


def conv_as_matmul(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                   pads: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """lax.conv_general_dilated(x, kernel, strides, pads) for NHWC x and HWIO kernel,
  computed as im2col + one matrix product (the same sum, in another order)."""
  kh, kw, cin, cout = kernel.shape
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  oh = (xp.shape[1] - kh) // strides[0] + 1
  ow = (xp.shape[2] - kw) // strides[1] + 1
  taps = [xp[:, i:i + (oh - 1) * strides[0] + 1:strides[0], j:j + (ow - 1) * strides[1] + 1:strides[1]]
          for i in range(kh) for j in range(kw)]
  patches = jnp.concatenate(taps, axis=-1)  # [B, oh, ow, kh*kw*cin], tap-major like the kernel
  return jnp.einsum("bhwk,kd->bhwd", patches, kernel.reshape(kh * kw * cin, cout))


def same_pads(size: int, k: int, s: int) -> tuple[int, int]:
  """The (low, high) padding of lax's "SAME" for one axis of a forward convolution."""
  total = max((-(-size // s) - 1) * s + k - size, 0)
  return total // 2, total - total // 2


class _SameConv(nn.Module):
  """The fields and parameters that flax's Conv and ConvTranspose share ("SAME" only).

  Params ("kernel" (kh, kw, in, features), "bias" (features,)), their names, creation
  order and initialisers are flax's, so the layers below are interchangeable with
  flax's in init, params and checkpoints.
  """

  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: int | Sequence[int] = (1, 1)
  padding: str = "SAME"
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = default_kernel_init
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

  def _params(self, x: jax.Array):
    """Creates the params for input x [B, H, W, in] -> (x, kernel, bias) in one dtype, as flax."""
    kh, kw = _pair(self.kernel_size)
    if self.padding != "SAME":
      raise ValueError(f"only padding='SAME' is supported, got {self.padding!r}")
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32) if self.use_bias else None
    return promote_dtype(x, kernel, bias)


class PatchConv(_SameConv):
  """Computes nn.Conv(features, kernel_size, strides, padding="SAME") as conv_as_matmul."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    (kh, kw), (sh, sw) = _pair(self.kernel_size), _pair(self.strides)
    x, kernel, bias = self._params(x)
    pads = (same_pads(x.shape[1], kh, sh), same_pads(x.shape[2], kw, sw))
    y = conv_as_matmul(x, kernel, (sh, sw), pads)
    return y if bias is None else y + bias


class SubPixelConvTranspose(_SameConv):
  """Computes nn.ConvTranspose(features, kernel_size, strides, padding="SAME") exactly.

  Equivalence: a stride-s transposed conv is, per output phase (r_h, r_w), a stride-1
  conv of the undilated input. All s_h*s_w phases are one stride-1 conv with
  s_h*s_w*features output channels, whose kernel is gathered from the same "kernel"
  param (zeros where a phase has no tap; _phase_taps), then depth-to-space.

  Why: on XLA:CPU the kernel gradient of the lhs-dilated conv that nn.ConvTranspose
  lowers to is tens of times slower than its arithmetic; every conv here is stride-1,
  undilated, forward and backward. Params ("kernel" (kh, kw, in, features), "bias"
  (features,)), their names, creation order and initialisers are nn.ConvTranspose's,
  so init, params and checkpoints are interchangeable. Like nn.ConvTranspose, any
  number of leading batch dims is accepted. Only padding="SAME" and 2-D are supported.
  """

  strides: int | Sequence[int] = (2, 2)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    (kh, kw), (sh, sw) = _pair(self.kernel_size), _pair(self.strides)
    if min(kh, kw, sh, sw) < 1:
      raise ValueError(f"invalid kernel_size {self.kernel_size} / strides {self.strides}")
    batch, x = x.shape[:-3], x.reshape((-1,) + x.shape[-3:])
    cin, f = x.shape[-1], self.features
    x, kernel, bias = self._params(x)
    (idx_h, pad_h), (idx_w, pad_w) = _phase_taps(kh, sh), _phase_taps(kw, sw)
    # A gather (not a one-hot matmul): exact at any matmul precision, and its
    # gradient scatter-adds straight back into "kernel".
    w = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
    w = w[idx_h[:, :, None, None], idx_w[None, None, :, :]]  # (Jh, sh, Jw, sw, in, f)
    w = w.transpose(0, 2, 4, 1, 3, 5).reshape(len(idx_h), len(idx_w), cin, sh * sw * f)
    z = conv_as_matmul(x, w, (1, 1), (pad_h, pad_w))
    n, h, wd = z.shape[:3]
    y = z.reshape(n, h, wd, sh, sw, f).transpose(0, 1, 3, 2, 4, 5)
    y = y.reshape(n, h * sh, wd * sw, f)
    if bias is not None:
      y = y + bias
    return y.reshape(batch + y.shape[1:])
