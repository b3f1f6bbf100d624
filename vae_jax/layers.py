"""nn.Conv and nn.ConvTranspose ("SAME") as matrix products: same params, fast to train on CPU.

XLA:CPU runs a convolution 5-60x slower inside a loop body (our whole-epoch
lax.scan) than at the top level of a program, while matrix products run at full
speed in both (in YNNPACK). So on CPU every convolution of the conv model is a
matrix product:
- a strided convolution (PatchConv) is im2col (k*k shifted views, concatenated)
  followed by one product;
- a transposed convolution (MatmulConvTranspose) is one product giving every input
  pixel's contribution through every tap, then those contributions added into the
  output, one output phase at a time; its backward pass gathers the output gradient
  back to the taps in one fused loop (a custom VJP: autodiff of the adds would pad
  and sum 9 planes, which took 5x as long). A layer with few output features (the
  last, 1 feature) computes its input gradient elementwise instead.
Every product goes through `matmul`, whose weight gradient takes the form YNNPACK
computes fastest.
"""

from __future__ import annotations

import functools
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
    raise ValueError(f"only 2-D (NHWC) convolutions are supported, got {x!r}")
  return t  # type: ignore[return-value]


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """x [..., K] @ w [K, N], with a weight gradient YNNPACK can compute.

  The weight gradient contracts over every row of x and of the output gradient g.
  Left to itself, XLA:CPU hands that product, with a transposed operand, to a slower
  Eigen kernel; here the smaller of x and g is transposed explicitly (the barrier
  keeps XLA from folding the transpose back into the product) and the product is a
  plain one.
  """
  return jnp.dot(x, w)


def _matmul_fwd(x, w):
  return jnp.dot(x, w), (x, w)


def _matmul_bwd(residuals, g):
  x, w = residuals
  k, n = w.shape
  rows_x, rows_g = x.reshape(-1, k), g.reshape(-1, n)
  barrier = jax.lax.optimization_barrier
  if k <= n:
    dw = jnp.dot(barrier(rows_x.T), rows_g)
  else:
    dw = barrier(jnp.dot(barrier(rows_g.T), rows_x)).T
  return jnp.dot(g, w.T), dw


matmul.defvjp(_matmul_fwd, _matmul_bwd)


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
  return matmul(patches, kernel.reshape(kh * kw * cin, cout))


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

  def _kernel_and_strides(self) -> tuple[tuple[int, int], tuple[int, int]]:
    """(kh, kw), (sh, sw); a ValueError for a size below 1, as flax's own layers give."""
    kernel, strides = _pair(self.kernel_size), _pair(self.strides)
    if min(*kernel, *strides) < 1:
      raise ValueError(f"invalid kernel_size {self.kernel_size} / strides {self.strides}")
    return kernel, strides

  def _params(self, x: jax.Array, kernel_hw: tuple[int, int]):
    """Creates the params for input x [B, H, W, in] and kernel_hw (from _kernel_and_strides)
    -> (x, kernel, bias) in one dtype, as flax."""
    kh, kw = kernel_hw
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
    (kh, kw), (sh, sw) = self._kernel_and_strides()
    x, kernel, bias = self._params(x, (kh, kw))
    pads = (same_pads(x.shape[1], kh, sh), same_pads(x.shape[2], kw, sw))
    y = conv_as_matmul(x, kernel, (sh, sw), pads)
    return y if bias is None else y + bias


def transpose_pad_low(k: int, s: int) -> int:
  """The low padding pad_a of lax.conv_transpose(..., "SAME") along one axis.

  That op (flax's nn.ConvTranspose, transpose_kernel=False) correlates, without a
  flip, the s-dilated input padded by pad_a in front with the kernel K:
  y[o] = sum_t K[t] x_dilated[o + t - pad_a]. So input pixel m reaches, through tap t,
  the output o = s*m - t + pad_a. This is jax's _conv_transpose_padding(k, s, "SAME");
  the tests pin the result to flax.
  """
  return k - 1 if s > k - 1 else -(-(k + s - 2) // 2)


def tap_sources(k: int, s: int) -> list[tuple[int, int]]:
  """Along one axis, for each tap t: the output phase r and input offset q with
  y[s*m + r] += K[t] x[m + q] (from o = s*m' - t + pad_a, m' = m + q)."""
  pad_a = transpose_pad_low(k, s)
  return [((pad_a - t) % s, ((pad_a - t) % s + t - pad_a) // s) for t in range(k)]


def _shifted(plane: jax.Array, qh: int, qw: int) -> jax.Array:
  """plane[:, m + qh, c + qw] for every (m, c), zero outside; plane [N, H, W, f]."""
  _, h, w, _ = plane.shape
  # A shift past the edge (a kernel wider than the input) leaves only zeros.
  qh, qw = max(-h, min(qh, h)), max(-w, min(qw, w))
  plane = plane[:, max(qh, 0):h + min(qh, 0), max(qw, 0):w + min(qw, 0)]
  return jnp.pad(plane, ((0, 0), (max(-qh, 0), max(qh, 0)), (max(-qw, 0), max(qw, 0)), (0, 0)))


def _add_taps(taps: jax.Array, bias: jax.Array, strides: tuple[int, int]) -> jax.Array:
  """taps [N, H, W, kh, kw, f] (input pixel m's contribution through tap t) added into
  the output [N, sH, sW, f], plus bias.

  Output phase (rh, rw) (the pixels s*m + r) is the bias plus the taps of that phase,
  each shifted by its offset. The phases are stacked straight into the output's order,
  [N, H, sh, W, sw, f] (a reshape away from [N, sH, sW, f]), so XLA computes and
  interleaves them (depth-to-space) in one fused loop. Stacked as [N, H, W, sh*sw, f]
  and then transposed, the interleave landed in whatever read the output next: the
  next layer's weight-gradient transpose took 3x as long.
  """
  n, h, w, kh, kw, f = taps.shape
  (sh, sw), src_h, src_w = strides, tap_sources(kh, strides[0]), tap_sources(kw, strides[1])
  phases = []
  for rh in range(sh):
    for rw in range(sw):
      phases.append(bias + sum((_shifted(taps[:, :, :, th, tw], qh, qw)
                                for th, (phase_h, qh) in enumerate(src_h) if phase_h == rh
                                for tw, (phase_w, qw) in enumerate(src_w) if phase_w == rw),
                               jnp.zeros((n, h, w, f), taps.dtype)))
  rows = [jnp.stack(phases[rh * sw:(rh + 1) * sw], axis=3) for rh in range(sh)]  # [N, H, W, sw, f]
  return jnp.stack(rows, axis=2).reshape(n, h * sh, w * sw, f)


def _gather_index(taps_shape: tuple[int, ...], strides: tuple[int, int]) -> np.ndarray:
  """For each (input pixel, tap), the output pixel it reaches, o = s*m - t + pad_a per
  axis, as a row of the flattened output; sH*sW (a zero row) where o falls outside."""
  _, h, w, kh, kw, _ = taps_shape
  (sh, sw), pad_h, pad_w = strides, transpose_pad_low(kh, strides[0]), transpose_pad_low(kw, strides[1])
  oh = sh * np.arange(h)[:, None] - np.arange(kh)[None, :] + pad_h  # [H, kh]
  ow = sw * np.arange(w)[:, None] - np.arange(kw)[None, :] + pad_w  # [W, kw]
  oh, ow = oh[:, None, :, None], ow[None, :, None, :]  # [H, W, kh, kw] by broadcasting
  inside = (oh >= 0) & (oh < sh * h) & (ow >= 0) & (ow < sw * w)
  return np.where(inside, oh * (sw * w) + ow, sh * h * sw * w).astype(np.int32).reshape(-1)


def _gather_taps(g: jax.Array, taps_shape: tuple[int, ...], strides: tuple[int, int]) -> jax.Array:
  """The adjoint of adding taps into the output: each tap's gradient is the output
  gradient g [N, sH, sW, f] at the pixel it reached. One gather, one fused loop."""
  n, f = g.shape[0], g.shape[-1]
  rows = jnp.pad(g.reshape(n, -1, f), ((0, 0), (0, 1), (0, 0)))  # + the zero row
  return jnp.take(rows, _gather_index(taps_shape, strides), axis=1, mode="clip").reshape(taps_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def add_taps(taps: jax.Array, bias: jax.Array, strides: tuple[int, int]) -> jax.Array:
  """_add_taps, whose backward pass is one gather (_gather_taps)."""
  return _add_taps(taps, bias, strides)


def _add_taps_fwd(taps, bias, strides):
  # The residual is a zero-size array: only its shape (the taps' shape) is needed.
  return _add_taps(taps, bias, strides), jnp.zeros((0,) + taps.shape[1:], taps.dtype)


def _add_taps_bwd(strides, empty, g):
  taps_shape = (g.shape[0],) + empty.shape[1:]
  return _gather_taps(g, taps_shape, strides), g.sum(axis=(0, 1, 2))


add_taps.defvjp(_add_taps_fwd, _add_taps_bwd)


def conv_transpose_as_matmul(x: jax.Array, kernel: jax.Array, bias: jax.Array,
                             strides: tuple[int, int]) -> jax.Array:
  """lax.conv_transpose(x, kernel, strides, "SAME") + bias for NHWC x and HWIO kernel:
  one product gives every input pixel's contribution through every tap,
  [N, H, W, kh*kw*f] (exactly the multiply-adds the convolution needs), then add_taps
  puts them in place. x [N, H, W, in] -> [N, sH, sW, f]."""
  kh, kw, cin, f = kernel.shape
  n, h, w = x.shape[:3]
  taps = matmul(x, kernel.transpose(2, 0, 1, 3).reshape(cin, kh * kw * f))
  return add_taps(taps.reshape(n, h, w, kh, kw, f), bias, strides)


# A layer whose taps give at most this many output columns (kh*kw*features) is "narrow":
# the decoder's last layer (3x3, 1 feature: 9). Its backward pass by products would be a
# gather plus products only 9 wide, which YNNPACK runs at a fraction of its speed.
NARROW_TAP_COLUMNS = 16


def _tap_gradients(g: jax.Array, kernel_hw: tuple[int, int],
                   strides: tuple[int, int]) -> list[jax.Array]:
  """_gather_taps as one plane [N, H, W, f] per tap (row-major over kh, kw).

  Tap t, with phase r and offset q (tap_sources), adds input pixel m + q into output
  pixel s*m + r, so its gradient at input pixel m' is g[s*(m' - q) + r]: phase r of
  g, shifted by -q."""
  (kh, kw), (sh, sw) = kernel_hw, strides
  return [_shifted(g[:, rh::sh, rw::sw], -qh, -qw)
          for rh, qh in tap_sources(kh, sh) for rw, qw in tap_sources(kw, sw)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def narrow_conv_transpose(x: jax.Array, kernel: jax.Array, bias: jax.Array,
                          strides: tuple[int, int]) -> jax.Array:
  """conv_transpose_as_matmul, with a backward pass for few output columns: the input
  gradient is kh*kw*f broadcast multiply-adds of shifted gradient planes, which XLA
  fuses into one loop (with the previous layer's ReLU mask), and the weight gradient
  one plain product of the stacked planes with x. No gather, no transposes."""
  return conv_transpose_as_matmul(x, kernel, bias, strides)


def _narrow_fwd(x, kernel, bias, strides):
  return conv_transpose_as_matmul(x, kernel, bias, strides), (x, kernel)


def _narrow_bwd(strides, residuals, g):
  x, kernel = residuals
  kh, kw, cin, f = kernel.shape
  planes = _tap_gradients(g, (kh, kw), strides)
  tap_kernels = kernel.reshape(kh * kw, cin, f)  # (taps elsewhere are contributions)
  dx = sum(planes[t][..., j:j + 1] * tap_kernels[t, :, j]
           for t in range(kh * kw) for j in range(f))
  # [kh*kw, N, H, W, f] -> rows (t, j), columns the pixels: a plain [K, M] x [M, in] product.
  stacked = jnp.moveaxis(jnp.stack(planes), -1, 1).reshape(kh * kw * f, -1)
  dkernel = jnp.dot(stacked, x.reshape(-1, cin)).reshape(kh, kw, f, cin).transpose(0, 1, 3, 2)
  return dx, dkernel, g.sum(axis=(0, 1, 2))


narrow_conv_transpose.defvjp(_narrow_fwd, _narrow_bwd)


class MatmulConvTranspose(_SameConv):
  """Computes nn.ConvTranspose(features, kernel_size, strides, padding="SAME") exactly,
  as conv_transpose_as_matmul (narrow_conv_transpose for a narrow layer: its backward
  pass differs).

  Why: on XLA:CPU the lhs-dilated convolution that nn.ConvTranspose lowers to runs
  tens of times slower than its arithmetic inside a loop body; matrix products, pads
  and gathers run at full speed. Params ("kernel" (kh, kw, in, features), "bias"
  (features,)), their names, creation order and initialisers are nn.ConvTranspose's,
  so init, params and checkpoints are interchangeable. Like nn.ConvTranspose, any
  number of leading batch dims is accepted. Only padding="SAME" and 2-D are supported.
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    (kh, kw), strides = self._kernel_and_strides()
    batch, x = x.shape[:-3], x.reshape((-1,) + x.shape[-3:])
    x, kernel, bias = self._params(x, (kh, kw))
    if bias is None:
      bias = jnp.zeros((self.features,), kernel.dtype)
    narrow = kh * kw * self.features <= NARROW_TAP_COLUMNS
    y = (narrow_conv_transpose if narrow else conv_transpose_as_matmul)(x, kernel, bias, strides)
    return y.reshape(batch + y.shape[1:])
