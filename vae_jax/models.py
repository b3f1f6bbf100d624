"""Encoders, decoders, and the VAE, CVAE and AE models (pure-functional Flax linen)."""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax.layers import MatmulConvTranspose, PatchConv

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10

# exp(20) ~ 5e8 and exp(-30) ~ 1e-13 are finite in float32, so the KL term and
# the sample's standard deviation can neither overflow nor underflow to NaN.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def reparameterize(key: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """z = mean + sigma * eps with eps ~ N(0, I) from key: differentiable in mean, logvar."""
  eps = jax.random.normal(key, mean.shape, mean.dtype)
  return mean + jnp.exp(0.5 * logvar) * eps


def label_condition(labels: jax.Array, num_classes: int = NUM_CLASSES) -> jax.Array:
  """Integer labels [B] -> one-hot [B, C]; a float [B, C] (e.g. a blend of two labels) passes."""
  labels = jnp.asarray(labels)
  if labels.ndim == 1:
    return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  return labels.astype(jnp.float32)


def label_channels(images: jax.Array, condition: jax.Array) -> jax.Array:
  """Appends the condition [B, C] to images [B, H, W, c] as C constant channels."""
  planes = jnp.broadcast_to(condition[:, None, None, :],
                            images.shape[:3] + (condition.shape[-1],))
  return jnp.concatenate([images, planes], axis=-1)


def with_condition(x: jax.Array, condition: Optional[jax.Array]) -> jax.Array:
  """[B, F] features, with the condition [B, C] appended when there is one."""
  return x if condition is None else jnp.concatenate([x, condition], axis=-1)


class MLPTrunk(nn.Module):
  """784 (+ the one-hot label) -> 512 -> 256, ReLU."""

  @nn.compact
  def __call__(self, images: jax.Array, condition: Optional[jax.Array] = None) -> jax.Array:
    x = with_condition(images.reshape((images.shape[0], -1)), condition)
    x = nn.relu(nn.Dense(512)(x))
    return nn.relu(nn.Dense(256)(x))


def on_cpu() -> bool:
  return jax.default_backend() == "cpu"


def conv_class() -> type[nn.Module]:
  """The strided convolution for this backend. Both classes compute the same function
  with the same parameters, so checkpoints move freely between backends; on CPU the
  matrix-product form trains 10x faster inside the scanned epoch (see layers.py)."""
  return PatchConv if on_cpu() else nn.Conv


def transposed_conv_class() -> type[nn.Module]:
  """The transposed convolution for this backend; as conv_class()."""
  return MatmulConvTranspose if on_cpu() else nn.ConvTranspose


class ConvTrunk(nn.Module):
  """Conv 32 (3x3, stride 2) -> Conv 64 (3x3, stride 2) -> Dense 16, ReLU.

  A conditional model sees the one-hot label as extra constant input channels.
  """

  @nn.compact
  def __call__(self, images: jax.Array, condition: Optional[jax.Array] = None) -> jax.Array:
    conv = conv_class()
    if condition is not None:
      images = label_channels(images, condition)
    # Explicit names: the parameter tree must not depend on which class computes a layer.
    x = nn.relu(conv(32, (3, 3), strides=(2, 2), padding="SAME", name="Conv_0")(images))
    x = nn.relu(conv(64, (3, 3), strides=(2, 2), padding="SAME", name="Conv_1")(x))
    x = x.reshape((x.shape[0], -1))
    return nn.relu(nn.Dense(16, name="Dense_0")(x))


class MLPDecoder(nn.Module):
  """latent (+ the one-hot label) -> 256 -> 512 -> 784 logits, ReLU."""

  @nn.compact
  def __call__(self, z: jax.Array, condition: Optional[jax.Array] = None) -> jax.Array:
    x = nn.relu(nn.Dense(256)(with_condition(z, condition)))
    x = nn.relu(nn.Dense(512)(x))
    return nn.Dense(784)(x).reshape((z.shape[0],) + IMAGE_SHAPE)


class ConvDecoder(nn.Module):
  """latent (+ the one-hot label) -> Dense 7*7*64 -> ConvT 64 (stride 2) -> ConvT 32
  (stride 2) -> ConvT 1 logits."""

  @nn.compact
  def __call__(self, z: jax.Array, condition: Optional[jax.Array] = None) -> jax.Array:
    upsample = transposed_conv_class()
    x = nn.relu(nn.Dense(7 * 7 * 64, name="Dense_0")(with_condition(z, condition)))
    x = x.reshape((z.shape[0], 7, 7, 64))
    # Explicit names: the parameter tree must not depend on which class computes a layer.
    x = nn.relu(upsample(64, (3, 3), strides=(2, 2), padding="SAME", name="ConvTranspose_0")(x))
    x = nn.relu(upsample(32, (3, 3), strides=(2, 2), padding="SAME", name="ConvTranspose_1")(x))
    return upsample(1, (3, 3), strides=(1, 1), padding="SAME", name="ConvTranspose_2")(x)


TRUNKS = {"mlp": MLPTrunk, "conv": ConvTrunk}
DECODERS = {"mlp": MLPDecoder, "conv": ConvDecoder}


class Encoder(nn.Module):
  """Images [B, 28, 28, 1] in [0, 1] (and a condition [B, C] or None) -> (mean, logvar)
  [B, D]; logvar is None if not variational."""

  arch: str
  latent_dim: int
  variational: bool = True

  @nn.compact
  def __call__(self, images: jax.Array, condition: Optional[jax.Array] = None
               ) -> tuple[jax.Array, Optional[jax.Array]]:
    h = TRUNKS[self.arch](name="trunk")(images, condition)
    mean = nn.Dense(self.latent_dim, name="mean")(h)
    if not self.variational:
      return mean, None
    logvar = nn.Dense(self.latent_dim, name="logvar")(h)
    return mean, jnp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX)


class Decoder(nn.Module):
  """Codes [B, D] (and a condition [B, C] or None) -> Bernoulli logits [B, 28, 28, 1]."""

  arch: str

  @nn.compact
  def __call__(self, z: jax.Array, condition: Optional[jax.Array] = None) -> jax.Array:
    return DECODERS[self.arch](name="net")(z, condition)


class Autoencoder(nn.Module):
  """Encoder + decoder; subclasses say whether the code is sampled (variational) and
  whether encoder and decoder see the label (conditional).

  Every method takes labels: integer [B] or one-hot-like float [B, C]. Unconditional
  models ignore them (so callers need not know which kind they hold); conditional ones
  require them.
  """

  arch: str
  latent_dim: int
  variational = True
  conditional = False

  def setup(self):
    self.encoder = Encoder(self.arch, self.latent_dim, variational=self.variational)
    self.decoder = Decoder(self.arch)

  def condition(self, labels: Optional[jax.Array]) -> Optional[jax.Array]:
    if not self.conditional:
      return None
    if labels is None:
      raise ValueError(f"a conditional model ({type(self).__name__}) needs the labels")
    return label_condition(labels)

  def encode(self, images: jax.Array, labels: Optional[jax.Array] = None):
    """-> (mean or code [B, D], logvar [B, D] or None)."""
    return self.encoder(images, self.condition(labels))

  def decode(self, z: jax.Array, labels: Optional[jax.Array] = None) -> jax.Array:
    """-> Bernoulli logits [B, 28, 28, 1]."""
    return self.decoder(z, self.condition(labels))


class VAE(Autoencoder):
  """Variational autoencoder: q(z|x) = N(mean, exp(logvar)), p(z) = N(0, I)."""

  variational = True

  def __call__(self, images: jax.Array, key: jax.Array, labels: Optional[jax.Array] = None):
    """-> (logits, mean, logvar); z is sampled with the reparameterization from key."""
    mean, logvar = self.encode(images, labels)
    return self.decode(reparameterize(key, mean, logvar), labels), mean, logvar


class CVAE(VAE):
  """Conditional VAE: q(z|x, y) and p(x|z, y) see the one-hot label y, p(z) = N(0, I).

  The label carries the class, so z is free to code the style: generate a chosen digit by
  decoding z ~ N(0, I) with its label.
  """

  conditional = True


class AE(Autoencoder):
  """Deterministic autoencoder: one code per image, no KL term."""

  variational = False

  def __call__(self, images: jax.Array, key: Optional[jax.Array] = None,
               labels: Optional[jax.Array] = None):
    """-> (logits, code, None); key is unused, kept for the VAE's signature."""
    del key
    code, _ = self.encode(images, labels)
    return self.decode(code, labels), code, None


MODELS = {"vae": VAE, "cvae": CVAE, "ae": AE}


def make_model(model: str, arch: str, latent_dim: int) -> nn.Module:
  return MODELS[model](arch=arch, latent_dim=latent_dim)


def init_params(model: nn.Module, key: jax.Array):
  images = jnp.zeros((1,) + IMAGE_SHAPE, jnp.float32)
  return model.init(key, images, jax.random.PRNGKey(0), jnp.zeros((1,), jnp.int32))["params"]
