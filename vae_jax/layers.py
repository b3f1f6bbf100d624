"""Fast CPU replacements for flax's strided ConvTranspose and Conv: same params, same function."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.linear import default_kernel_init

_DN = ("NHWC", "HWIO", "NHWC")


def _pair(x: int | Sequence[int]) -> tuple[int, int]:
    t = (x, x) if isinstance(x, int) else tuple(x)
    if len(t) != 2:
        raise ValueError(f"only 2-D (NHWC) convolutions are supported, got {x!r}")
    return t  # type: ignore[return-value]


def _check(padding: str, kernel_size: tuple[int, int], strides: tuple[int, int]) -> None:
    if padding != "SAME":
        raise ValueError(f"only padding='SAME' is supported, got {padding!r}")
    if min(kernel_size) < 1 or min(strides) < 1:
        raise ValueError(f"invalid kernel_size {kernel_size} / strides {strides}")


def _transpose_taps(k: int, s: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Per-axis phase table for lax.conv_transpose(..., "SAME"), transpose_kernel=False.

    conv_transpose = correlation of the s-dilated input, padded (pad_a, .), with K
    (no flip): y[o] = sum_t K[t] x[(o + t - pad_a) / s] where that is an integer.
    With o = s*m + r this is y[s*m + r] = sum_t K[t] x[m + q], q = (r + t - pad_a) / s,
    i.e. a stride-1 correlation over the undilated input. Returns idx[j, r] = tap t
    used by output phase r at window offset j (k = "no tap", reads a zero) and the
    (low, high) padding of x.
    """
    # Same as jax's _conv_transpose_padding(k, s, "SAME"); the tests pin it to flax.
    pad_a = k - 1 if s > k - 1 else -(-(k + s - 2) // 2)
    taps = {(r, t): (r + t - pad_a) // s
            for r in range(s) for t in range(k) if (r + t - pad_a) % s == 0}
    # Keep offset 0 in range so both paddings are >= 0 (extra rows are all-zero taps).
    lo, hi = min(min(taps.values()), 0), max(max(taps.values()), 0)
    idx = np.full((hi - lo + 1, s), k)
    for (r, t), q in taps.items():
        idx[q - lo, r] = t
    return idx, (-lo, hi)


def _conv_taps(n: int, k: int, s: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Per-axis phase table for a stride-s "SAME" correlation over length n.

    y[o] = sum_t K[t] x[s*o + t - pad_lo]; writing t - pad_lo = s*q + r gives
    y[o] = sum_t K[t] xs[o + q, r] with xs[p, r] = x[s*p + r] (space-to-depth), a
    stride-1 correlation. Returns idx[j, r] = tap t (k = none) and the (low, high)
    padding of x that aligns it to the phases (high may be negative: a crop).
    """
    out = -(-n // s)
    pad_lo = max((out - 1) * s + k - n, 0) // 2  # XLA/lax "SAME" convention
    qr = {t: divmod(t - pad_lo, s) for t in range(k)}
    lo, hi = min(q for q, _ in qr.values()), max(q for q, _ in qr.values())
    idx = np.full((hi - lo + 1, s), k)
    for t, (q, r) in qr.items():
        idx[q - lo, r] = t
    low = -lo * s
    # Zeros outside [0, n) are exactly what "SAME" padding reads, so any extra is harmless.
    return idx, (low, s * (out + hi - lo) - n - low)


def _gather_taps(kernel: jax.Array, idx_h: np.ndarray, idx_w: np.ndarray) -> jax.Array:
    """(kh, kw, I, O) -> (Jh, sh, Jw, sw, I, O) with zeros where idx == k.

    A gather (not a one-hot einsum) so the copy is exact at any matmul precision,
    and its gradient scatters straight back into the original "kernel" param.
    """
    kp = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
    return kp[idx_h[:, :, None, None], idx_w[None, None, :, :]]


def _flatten_batch(x: jax.Array) -> tuple[jax.Array, tuple[int, ...]]:
    # Like flax: any number of leading batch dims (incl. none) around one NHWC conv.
    return x.reshape((-1,) + x.shape[-3:]), x.shape[:-3]


class SubPixelConvTranspose(nn.Module):
    """Same function and params as nn.ConvTranspose(features, kernel_size, strides, "SAME").

    A stride-s transposed conv is a stride-1 conv of the *undilated* input with
    s_h*s_w*features output channels (one group per output phase (r_h, r_w), taps
    picked from "kernel" by _transpose_taps), followed by depth-to-space. XLA:CPU
    runs the lhs-dilated conv that nn.ConvTranspose lowers to (and its gradients)
    very slowly; this form does ~s*s fewer MACs and only stride-1 convs forward
    and backward. Params: "kernel" (kh, kw, in, features), "bias" (features,),
    same initialisers, so params/checkpoints are interchangeable.
    """

    features: int
    kernel_size: Sequence[int] = (3, 3)
    strides: int | Sequence[int] = (2, 2)
    padding: str = "SAME"
    use_bias: bool = True
    kernel_init: nn.initializers.Initializer = default_kernel_init
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        (kh, kw), (sh, sw) = _pair(self.kernel_size), _pair(self.strides)
        _check(self.padding, (kh, kw), (sh, sw))
        x, batch = _flatten_batch(x)
        # Same creation order, names, shapes and initialisers as nn.ConvTranspose.
        cin, f = x.shape[-1], self.features
        kernel = self.param("kernel", self.kernel_init, (kh, kw, cin, f), jnp.float32)
        (idx_h, pad_h), (idx_w, pad_w) = _transpose_taps(kh, sh), _transpose_taps(kw, sw)
        w = _gather_taps(kernel, idx_h, idx_w)  # (Jh, sh, Jw, sw, I, O)
        w = w.transpose(0, 2, 4, 1, 3, 5).reshape(len(idx_h), len(idx_w), cin, sh * sw * f)
        z = jax.lax.conv_general_dilated(x, w, (1, 1), (pad_h, pad_w), dimension_numbers=_DN)
        n, h, wd = z.shape[:3]
        y = z.reshape(n, h, wd, sh, sw, f).transpose(0, 1, 3, 2, 4, 5)
        y = y.reshape(n, h * sh, wd * sw, f)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32)
        return y.reshape(batch + y.shape[1:])


class SpaceToDepthConv(nn.Module):
    """Same function and params as nn.Conv(features, kernel_size, strides, "SAME").

    A stride-s correlation equals space-to-depth of the (re-padded) input into
    s_h*s_w*in channels, then a stride-1 VALID conv whose kernel holds each tap t
    at window offset (t - pad_lo) // s and phase (t - pad_lo) % s (_conv_taps). The
    point is the backward pass: the input-gradient of a strided conv is an
    lhs-dilated (transposed) conv, slow on XLA:CPU, whereas here it is a stride-1
    conv plus a reshape. Params: "kernel" (kh, kw, in, features), "bias".
    """

    features: int
    kernel_size: Sequence[int] = (3, 3)
    strides: int | Sequence[int] = (2, 2)
    padding: str = "SAME"
    use_bias: bool = True
    kernel_init: nn.initializers.Initializer = default_kernel_init
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        (kh, kw), (sh, sw) = _pair(self.kernel_size), _pair(self.strides)
        _check(self.padding, (kh, kw), (sh, sw))
        x, batch = _flatten_batch(x)
        n, h, wd, cin = x.shape
        kernel = self.param("kernel", self.kernel_init, (kh, kw, cin, self.features), jnp.float32)
        (idx_h, pad_h), (idx_w, pad_w) = _conv_taps(h, kh, sh), _conv_taps(wd, kw, sw)
        w = _gather_taps(kernel, idx_h, idx_w)  # (Jh, sh, Jw, sw, I, O)
        w = w.transpose(0, 2, 1, 3, 4, 5).reshape(len(idx_h), len(idx_w), sh * sw * cin, -1)
        # lax.pad accepts a negative high pad (crop of never-read trailing input).
        x = jax.lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pad_h, 0), (*pad_w, 0), (0, 0, 0)))
        hp, wp = x.shape[1] // sh, x.shape[2] // sw
        x = x.reshape(n, hp, sh, wp, sw, cin).transpose(0, 1, 3, 2, 4, 5)
        x = x.reshape(n, hp, wp, sh * sw * cin)
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=_DN)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32)
        return y.reshape(batch + y.shape[1:])
