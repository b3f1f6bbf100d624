"""nn.Conv and nn.ConvTranspose ("SAME") as matrix products: same params, fast to train on CPU.

XLA:CPU runs a convolution 5-60x slower inside a loop body (our whole-epoch
lax.scan) than at the top level of a program, while matrix products run at full
speed in both. So on CPU every convolution of the conv model is computed as a
matrix product: a strided one as im2col (k*k shifted views, concatenated) followed
by one product (PatchConv); a transposed one (MatmulConvTranspose) either as one
stride-1 im2col convolution producing every output phase (sub-pixel), or as one
product followed by col2im, whichever materialises less.
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


def transpose_pad_low(k: int, s: int) -> int:
  """The low padding pad_a of lax.conv_transpose(..., "SAME") along one axis.

  That op (flax's nn.ConvTranspose, transpose_kernel=False) correlates, without a
  flip, the s-dilated input padded by pad_a in front with the kernel K:
  y[o] = sum_t K[t] x_dilated[o + t - pad_a]. So input pixel m reaches, through tap t,
  the output o = s*m - t + pad_a. This is jax's _conv_transpose_padding(k, s, "SAME");
  the tests pin the result to flax.
  """
  return k - 1 if s > k - 1 else -(-(k + s - 2) // 2)


def _phase_taps(k: int, s: int) -> tuple[np.ndarray, tuple[int, int]]:
  """Per-axis phase table of the transposed convolution, for the sub-pixel form.

  With o = s*m + r, y[s*m + r] = sum_t K[t] x[m + q], q = (r + t - pad_a) / s over the
  t making that an integer: a stride-1 correlation of the undilated x for each output
  phase r. (k=3, s=2: y[2m] = K0 x[m-1] + K2 x[m], y[2m+1] = K1 x[m].) Returns
  idx[j, r] = the tap t phase r uses at window offset j (k where none: reads a zero)
  and x's (low, high) pad.
  """
  pad_a = transpose_pad_low(k, s)
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


def subpixel_conv_transpose(x: jax.Array, kernel: jax.Array, strides: tuple[int, int]) -> jax.Array:
  """The transposed convolution as one stride-1 im2col convolution with s_h*s_w*features
  output channels (every output phase at once; the kernel gathered from the same taps,
  zeros where a phase has none), then depth-to-space. x [N, H, W, in] -> [N, sH, sW, f]."""
  kh, kw, cin, f = kernel.shape
  sh, sw = strides
  (idx_h, pad_h), (idx_w, pad_w) = _phase_taps(kh, sh), _phase_taps(kw, sw)
  # A gather (not a one-hot matmul): exact at any matmul precision, and its
  # gradient scatter-adds straight back into the kernel.
  w = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
  w = w[idx_h[:, :, None, None], idx_w[None, None, :, :]]  # (Jh, sh, Jw, sw, in, f)
  w = w.transpose(0, 2, 4, 1, 3, 5).reshape(len(idx_h), len(idx_w), cin, sh * sw * f)
  z = conv_as_matmul(x, w, (1, 1), (pad_h, pad_w))
  n, h, wd = z.shape[:3]
  y = z.reshape(n, h, wd, sh, sw, f).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(n, h * sh, wd * sw, f)


def col2im_conv_transpose(x: jax.Array, kernel: jax.Array, strides: tuple[int, int]) -> jax.Array:
  """The transposed convolution as one matrix product, giving every input pixel's
  contribution through every tap, taps [N, H, W, kh, kw, f], then col2im: input pixel
  m reaches output s*m - t + pad_a through tap t, so each tap's plane is dilated by s
  (lax.pad, interior s - 1), shifted, cropped and summed. x [N, H, W, in] -> [N, sH, sW, f]."""
  kh, kw, cin, f = kernel.shape
  (sh, sw), (n, h, w) = strides, x.shape[:3]
  taps = jnp.einsum("bhwc,cq->bhwq", x, kernel.transpose(2, 0, 1, 3).reshape(cin, kh * kw * f))
  taps = taps.reshape(n, h, w, kh, kw, f)
  pad_h, pad_w = transpose_pad_low(kh, sh), transpose_pad_low(kw, sw)
  zero = jnp.zeros((), taps.dtype)
  y = None
  for i in range(kh):
    for j in range(kw):
      lo_h, lo_w = pad_h - i, pad_w - j  # may be negative: a crop
      plane = jax.lax.pad(taps[:, :, :, i, j, :], zero, [
          (0, 0, 0),
          (lo_h, h * sh - lo_h - (h - 1) * sh - 1, sh - 1),
          (lo_w, w * sw - lo_w - (w - 1) * sw - 1, sw - 1),
          (0, 0, 0)])
      y = plane if y is None else y + plane
  return y


def cheaper_form(kernel_shape: tuple[int, int, int, int], strides: tuple[int, int]) -> str:
  """The form that materialises fewer values per input pixel.

  sub-pixel: its patches, (window taps) x in; col2im: its taps, kh x kw x features.
  (The conv decoder: "subpixel" for its stride-2 layers, 256 against 576 and 288
  values; "col2im" for the last, 1-feature layer, 9 against 288. Measured in the
  scanned epoch: the choice that is faster for each layer.)
  """
  kh, kw, cin, f = kernel_shape
  window = len(_phase_taps(kh, strides[0])[0]) * len(_phase_taps(kw, strides[1])[0])
  return "subpixel" if window * cin <= kh * kw * f else "col2im"


FORMS = {"subpixel": subpixel_conv_transpose, "col2im": col2im_conv_transpose}


class MatmulConvTranspose(_SameConv):
  """Computes nn.ConvTranspose(features, kernel_size, strides, padding="SAME") exactly,
  with matrix products: the sub-pixel or the col2im form (form="auto": cheaper_form).

  Why: on XLA:CPU the lhs-dilated convolution that nn.ConvTranspose lowers to runs
  tens of times slower than its arithmetic inside a loop body; matrix products, pads
  and gathers run at full speed. Params ("kernel" (kh, kw, in, features), "bias"
  (features,)), their names, creation order and initialisers are nn.ConvTranspose's,
  so init, params and checkpoints are interchangeable. Like nn.ConvTranspose, any
  number of leading batch dims is accepted. Only padding="SAME" and 2-D are supported.
  """

  form: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    (kh, kw), strides = _pair(self.kernel_size), _pair(self.strides)
    if min(kh, kw, *strides) < 1:
      raise ValueError(f"invalid kernel_size {self.kernel_size} / strides {self.strides}")
    if self.form not in ("auto", *FORMS):
      raise ValueError(f"form must be auto, subpixel or col2im, got {self.form!r}")
    batch, x = x.shape[:-3], x.reshape((-1,) + x.shape[-3:])
    x, kernel, bias = self._params(x)
    form = cheaper_form(kernel.shape, strides) if self.form == "auto" else self.form
    y = FORMS[form](x, kernel, strides)
    if bias is not None:
      y = y + bias
    return y.reshape(batch + y.shape[1:])
