"""Encoders, decoders, and the VAE and AE models (pure-functional Flax linen)."""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax.layers import PatchConv, SubPixelConvTranspose

IMAGE_SHAPE = (28, 28, 1)

# exp(20) ~ 5e8 and exp(-30) ~ 1e-13 are finite in float32, so the KL term and
# the sample's standard deviation can neither overflow nor underflow to NaN.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def reparameterize(key: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """z = mean + sigma * eps with eps ~ N(0, I) from key: differentiable in mean, logvar."""
  eps = jax.random.normal(key, mean.shape, mean.dtype)
  return mean + jnp.exp(0.5 * logvar) * eps


class MLPTrunk(nn.Module):
  """784 -> 512 -> 256, ReLU."""

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = images.reshape((images.shape[0], -1))
    x = nn.relu(nn.Dense(512)(x))
    return nn.relu(nn.Dense(256)(x))


def on_cpu() -> bool:
  return jax.default_backend() == "cpu"


def conv_class() -> type[nn.Module]:
  """The strided convolution for this backend. Both classes compute the same function
  with the same parameters, so checkpoints move freely between backends; on CPU the
  matrix-product form trains 10x faster inside the scanned epoch (see layers.py)."""
  return PatchConv if on_cpu() else nn.Conv


def upsampling_conv_class() -> type[nn.Module]:
  """The stride-2 transposed convolution for this backend; as conv_class()."""
  return SubPixelConvTranspose if on_cpu() else nn.ConvTranspose


class ConvTrunk(nn.Module):
  """Conv 32 (3x3, stride 2) -> Conv 64 (3x3, stride 2) -> Dense 16, ReLU."""

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    conv = conv_class()
    # Explicit names: the parameter tree must not depend on which class computes a layer.
    x = nn.relu(conv(32, (3, 3), strides=(2, 2), padding="SAME", name="Conv_0")(images))
    x = nn.relu(conv(64, (3, 3), strides=(2, 2), padding="SAME", name="Conv_1")(x))
    x = x.reshape((x.shape[0], -1))
    return nn.relu(nn.Dense(16, name="Dense_0")(x))


class MLPDecoder(nn.Module):
  """latent -> 256 -> 512 -> 784 logits, ReLU."""

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    x = nn.relu(nn.Dense(256)(z))
    x = nn.relu(nn.Dense(512)(x))
    return nn.Dense(784)(x).reshape((z.shape[0],) + IMAGE_SHAPE)


class ConvDecoder(nn.Module):
  """Dense 7*7*64 -> ConvT 64 (stride 2) -> ConvT 32 (stride 2) -> ConvT 1 logits."""

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    upsample = upsampling_conv_class()
    x = nn.relu(nn.Dense(7 * 7 * 64, name="Dense_0")(z)).reshape((z.shape[0], 7, 7, 64))
    # Explicit names: the parameter tree must not depend on which class computes a layer.
    x = nn.relu(upsample(64, (3, 3), strides=(2, 2), padding="SAME", name="ConvTranspose_0")(x))
    x = nn.relu(upsample(32, (3, 3), strides=(2, 2), padding="SAME", name="ConvTranspose_1")(x))
    return nn.ConvTranspose(1, (3, 3), strides=(1, 1), padding="SAME", name="ConvTranspose_2")(x)


TRUNKS = {"mlp": MLPTrunk, "conv": ConvTrunk}
DECODERS = {"mlp": MLPDecoder, "conv": ConvDecoder}


class Encoder(nn.Module):
  """Images [B, 28, 28, 1] in [0, 1] -> (mean, logvar) [B, D]; logvar is None if not variational."""

  arch: str
  latent_dim: int
  variational: bool = True

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, Optional[jax.Array]]:
    h = TRUNKS[self.arch](name="trunk")(images)
    mean = nn.Dense(self.latent_dim, name="mean")(h)
    if not self.variational:
      return mean, None
    logvar = nn.Dense(self.latent_dim, name="logvar")(h)
    return mean, jnp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX)


class Decoder(nn.Module):
  """Codes [B, D] -> Bernoulli logits [B, 28, 28, 1]."""

  arch: str

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    return DECODERS[self.arch](name="net")(z)


class Autoencoder(nn.Module):
  """Encoder + decoder; subclasses say whether the code is sampled (variational)."""

  arch: str
  latent_dim: int
  variational = True

  def setup(self):
    self.encoder = Encoder(self.arch, self.latent_dim, variational=self.variational)
    self.decoder = Decoder(self.arch)

  def encode(self, images: jax.Array):
    """-> (mean or code [B, D], logvar [B, D] or None)."""
    return self.encoder(images)

  def decode(self, z: jax.Array) -> jax.Array:
    """-> Bernoulli logits [B, 28, 28, 1]."""
    return self.decoder(z)


class VAE(Autoencoder):
  """Variational autoencoder: q(z|x) = N(mean, exp(logvar)), p(z) = N(0, I)."""

  variational = True

  def __call__(self, images: jax.Array, key: jax.Array):
    """-> (logits, mean, logvar); z is sampled with the reparameterization from key."""
    mean, logvar = self.encoder(images)
    return self.decoder(reparameterize(key, mean, logvar)), mean, logvar


class AE(Autoencoder):
  """Deterministic autoencoder: one code per image, no KL term."""

  variational = False

  def __call__(self, images: jax.Array, key: Optional[jax.Array] = None):
    """-> (logits, code, None); key is unused, kept for the VAE's signature."""
    del key
    code, _ = self.encoder(images)
    return self.decoder(code), code, None


MODELS = {"vae": VAE, "ae": AE}


def make_model(model: str, arch: str, latent_dim: int) -> nn.Module:
  return MODELS[model](arch=arch, latent_dim=latent_dim)


def init_params(model: nn.Module, key: jax.Array):
  images = jnp.zeros((1,) + IMAGE_SHAPE, jnp.float32)
  return model.init(key, images, jax.random.PRNGKey(0))["params"]
