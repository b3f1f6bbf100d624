"""The CPU layers must equal flax's: MatmulConvTranspose = nn.ConvTranspose, PatchConv = nn.Conv."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import layers
from vae_jax.layers import MatmulConvTranspose, PatchConv

# (input shape, features, kernel, stride): the decoder's three transposed convolutions,
# an odd size, and other kernel/stride pairs (k < s, k = s, k > s: negative crops too).
CASES = [
    ((4, 7, 7, 64), 64, 3, 2),
    ((4, 14, 14, 64), 32, 3, 2),
    ((4, 28, 28, 32), 1, 3, 1),
    ((4, 5, 5, 3), 8, 3, 2),
    ((2, 5, 6, 3), 8, 3, 1),
    ((2, 5, 4, 3), 8, 4, 2),
    ((2, 4, 5, 3), 8, 5, 3),
    ((2, 5, 7, 3), 8, 2, 3),
    ((2, 4, 3, 2), 3, 1, 2),
    # Kernels wider than the input: taps that reach past both edges.
    ((2, 2, 1, 4), 3, 4, 1),
    ((2, 1, 2, 3), 2, 5, 2),
    # Different kernel sizes and strides along the two axes: phases (rh, rw) in order.
    ((2, 5, 6, 3), 4, (3, 2), (2, 3)),
    ((2, 6, 4, 2), 3, (2, 4), (3, 1)),
]


def _pair(features: int, k, s, **kw) -> tuple[nn.Module, nn.Module]:
  """flax's ConvTranspose and ours; k and s are ints (square) or (height, width)."""
  k, s = layers._pair(k), layers._pair(s)
  ref = nn.ConvTranspose(features, k, strides=s, padding="SAME", **kw)
  return ref, MatmulConvTranspose(features, k, s, **kw)


def _inputs(ref: nn.Module, shape, seed: int):
  """Random input and params from numpy (jax.random would compile per shape: slow)."""
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  shapes = jax.eval_shape(ref.init, jax.random.key(0), x)
  # Kernel ~ 1/sqrt(fan_in) keeps outputs O(1) so sin() is far from linear;
  # non-zero bias and an unstructured kernel, so every tap and the bias show.
  return x, jax.tree.map(lambda a: jnp.asarray(
      rng.standard_normal(a.shape) / np.sqrt(np.prod(a.shape[:-1])), jnp.float32), shapes)


def _assert_close(actual: jax.Array, expected: jax.Array, name: str) -> None:
  # float32 sums of up to a few thousand products: tolerance relative to the scale.
  expected = np.asarray(expected)
  scale = float(np.abs(expected).max())
  assert scale > 0, f"{name}: degenerate all-zero reference"
  np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-5, atol=1e-5 * scale,
                             err_msg=name)


def _value_and_grads(module: nn.Module, params, x: jax.Array):
  def loss(p, x):
    y = module.apply(p, x)
    return jnp.sum(jnp.sin(y)), y

  # jit: one compile per case instead of op-by-op dispatch (keeps the suite fast).
  (_, y), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x)
  return y, grads


def _assert_same_function(ref: nn.Module, new: nn.Module, shape, seed: int) -> None:
  """new computes ref's output and gradients (input, kernel, bias) with ref's params."""
  x, params = _inputs(ref, shape, seed=seed)
  y_ref, (gp_ref, gx_ref) = _value_and_grads(ref, params, x)
  y_new, (gp_new, gx_new) = _value_and_grads(new, params, x)
  assert y_new.shape == y_ref.shape
  _assert_close(y_new, y_ref, "output")
  _assert_close(gx_new, gx_ref, "d/dx")
  _assert_close(gp_new["params"]["kernel"], gp_ref["params"]["kernel"], "d/dkernel")
  _assert_close(gp_new["params"]["bias"], gp_ref["params"]["bias"], "d/dbias")


@pytest.mark.parametrize("backward", ["gather", "narrow"])
@pytest.mark.parametrize("shape,features,k,s", CASES)
def test_output_and_gradients_match_conv_transpose(shape, features, k, s, backward, monkeypatch):
  # Both backward passes on every shape, whichever the layer would pick for it.
  monkeypatch.setattr(layers, "NARROW_TAP_COLUMNS", 0 if backward == "gather" else 10**6)
  ref, new = _pair(features, k, s)
  _assert_same_function(ref, new, shape, seed=1)


def test_only_the_last_decoder_layer_is_narrow():
  # 3x3 taps: 1 feature (the logits layer) is narrow; 32 and 64 features are not.
  assert 9 * 1 <= layers.NARROW_TAP_COLUMNS < 9 * 32


@pytest.mark.parametrize("k,n", [(3, 5), (5, 3)])
def test_matmul_gradients_match_autodiff_of_dot(k, n):
  # Both branches of the weight gradient (x transposed when k <= n, g otherwise).
  rng = np.random.default_rng(4)
  x, w = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in ((2, 7, k), (k, n)))
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
  got = jax.jit(jax.grad(loss(layers.matmul), (0, 1)))(x, w)
  want = jax.grad(loss(jnp.dot), (0, 1))(x, w)
  for a, b, name in zip(got, want, ("d/dx", "d/dw")):
    _assert_close(a, b, name)


@pytest.mark.parametrize("shape,s", [((2, 5, 4, 3, 3, 2), 2), ((1, 4, 4, 3, 3, 1), 1),
                                     ((1, 3, 4, 2, 2, 2), 3)])
def test_gathering_taps_is_the_adjoint_of_adding_them(shape, s):
  # <add_taps(t) - bias, g> = <t, gather(g)> for random t and g: the custom backward
  # pass is the transpose of the forward map, checked without autodiff.
  rng = np.random.default_rng(5)
  taps = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  bias = jnp.asarray(rng.standard_normal(shape[-1]), jnp.float32)
  y = layers.add_taps(taps, bias, (s, s)) - bias
  g = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
  lhs = float(jnp.vdot(y, g))
  rhs = float(jnp.vdot(taps, layers._gather_taps(g, taps.shape, (s, s))))
  np.testing.assert_allclose(lhs, rhs, rtol=1e-5)
  assert abs(lhs) > 1e-3  # not vacuous


def test_tap_sources_for_the_decoder_layers():
  # k=3, s=2 (pad_a=2): y[2m] = K0 x[m-1] + K2 x[m], y[2m+1] = K1 x[m].
  assert layers.tap_sources(3, 2) == [(0, -1), (1, 0), (0, 0)]
  # k=3, s=1 (pad_a=1): y[m] = K0 x[m-1] + K1 x[m] + K2 x[m+1].
  assert layers.tap_sources(3, 1) == [(0, -1), (0, 0), (0, 1)]


@pytest.mark.parametrize("use_bias", [True, False])
def test_init_gives_identical_params(use_bias):
  x = jnp.ones((2, 7, 7, 16))
  ref, new = _pair(24, 3, 2, use_bias=use_bias)
  p_ref, p_new = ref.init(jax.random.key(7), x), new.init(jax.random.key(7), x)
  assert jax.tree.structure(p_new) == jax.tree.structure(p_ref)
  for a, b in zip(jax.tree.leaves(p_new), jax.tree.leaves(p_ref)):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
  if not use_bias:
    _assert_close(new.apply(p_ref, x), ref.apply(p_ref, x), "output")


@pytest.mark.parametrize("shape", [(5, 5, 3), (2, 3, 5, 5, 3)])
def test_batch_dims_like_flax(shape):
  # Unbatched and multi-batch-dim inputs are flattened/restored as flax does.
  ref, new = _pair(4, 3, 2)
  x, params = _inputs(ref, shape, seed=3)
  _assert_close(new.apply(params, x), ref.apply(params, x), "output")


def test_comparison_catches_a_flipped_kernel():
  # The checks above are not vacuous: flax with a spatially flipped kernel differs.
  ref, new = _pair(8, 3, 2)
  x, params = _inputs(ref, (2, 5, 5, 3), seed=6)
  flipped = jax.tree.map(lambda a: a[::-1, ::-1] if a.ndim == 4 else a, params)
  with pytest.raises(AssertionError):
    _assert_close(new.apply(flipped, x), ref.apply(params, x), "output")


@pytest.mark.parametrize("kwargs", [
    {"padding": "VALID"},
    {"padding": "CIRCULAR"},
    {"padding": ((1, 1), (1, 1))},
    {"kernel_size": (3,)},
    {"kernel_size": (3, 3, 3)},
    {"strides": (2, 2, 2)},
    {"strides": 0},
    {"kernel_size": (0, 3)},
])
@pytest.mark.parametrize("layer", [MatmulConvTranspose, PatchConv])
def test_unsupported_configs_raise(kwargs, layer):
  with pytest.raises(ValueError):
    layer(8, **kwargs).init(jax.random.key(0), jnp.ones((1, 6, 6, 3)))


# (input shape, features, kernel, stride) for PatchConv: the encoder's two strided
# convolutions, the decoder's stride-1 output layer, and odd sizes.
CONV_CASES = [
    ((4, 28, 28, 1), 32, 3, 2),
    ((4, 14, 14, 32), 64, 3, 2),
    ((2, 28, 28, 32), 1, 3, 1),
    ((2, 5, 7, 3), 8, 3, 2),
    ((2, 6, 5, 3), 4, 4, 3),
    ((2, 5, 5, 2), 3, 1, 1),
]


@pytest.mark.parametrize("shape,features,k,s", CONV_CASES)
def test_patch_conv_output_and_gradients_match_conv(shape, features, k, s):
  ref = nn.Conv(features, (k, k), strides=(s, s), padding="SAME")
  new = PatchConv(features, (k, k), strides=(s, s))
  _assert_same_function(ref, new, shape, seed=2)


@pytest.mark.parametrize("shape,features,k,s", [((2, 5, 6, 3), 4, (3, 2), (2, 3)),
                                                ((2, 6, 4, 2), 3, (2, 4), (3, 1))])
def test_patch_conv_matches_conv_for_other_kernels_and_strides_per_axis(shape, features, k, s):
  _assert_same_function(nn.Conv(features, k, strides=s, padding="SAME"),
                        PatchConv(features, k, strides=s), shape, seed=2)


def test_patch_conv_init_gives_identical_params():
  x = jnp.ones((1, 14, 14, 32))
  ref = nn.Conv(64, (3, 3), strides=(2, 2), padding="SAME").init(jax.random.key(3), x)
  new = PatchConv(64, (3, 3), strides=(2, 2)).init(jax.random.key(3), x)
  assert jax.tree.structure(ref) == jax.tree.structure(new)
  for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(new)):
    np.testing.assert_array_equal(a, b)
