"""The milestone report: arrays computed from a trained state, drawn by plots.py."""

from __future__ import annotations

import os
from typing import NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from vae_jax import parallel, plots, steps, workdir as workdir_lib
from vae_jax.config import Config
from vae_jax.input_pipeline import CLASS_NAMES, to_float

SAMPLES_SIDE = 10          # samples.png is a SAMPLES_SIDE x SAMPLES_SIDE grid
RECON_ROWS, RECON_COLS = 2, 10
MANIFOLD_SIDE = 20
INTERPOLATION_PAIRS, INTERPOLATION_STEPS = 5, 10
# Manifold cells sit at the centres of MANIFOLD_SIDE equal-probability bins of the
# prior's marginal: quantiles 1/40 .. 39/40, i.e. +-1.96 standard deviations.
MANIFOLD_QUANTILES = (np.arange(MANIFOLD_SIDE) + 0.5) / MANIFOLD_SIDE


class LatentPrior(NamedTuple):
  """The Gaussian that samples.png draws codes from: z = mean + chol @ eps."""
  mean: np.ndarray       # [D]
  chol: np.ndarray       # [D, D]
  description: str


def sigmoid(logits) -> np.ndarray:
  return np.asarray(jax.nn.sigmoid(logits))


def encode_means(state, model: nn.Module, images_u8, batch_size: int, mesh=None) -> np.ndarray:
  """Posterior means (VAE) or codes (AE) [N, D] of all images, one compiled call."""
  sharding = None if mesh is None else parallel.batch_sharded(mesh)

  @jax.jit
  def encode_all(params, images_u8):
    def encode(batch, _):
      return model.apply({"params": params}, to_float(batch), method="encode")[0]
    return steps.map_batches(encode, images_u8, batch_size, sharding)

  return np.asarray(encode_all(state.params, images_u8))


def decode_probs(params, model: nn.Module, z) -> np.ndarray:
  """Bernoulli means [N, 28, 28] of codes z [N, D], in one compiled call."""
  logits = jax.jit(lambda p, z: model.apply({"params": p}, z, method="decode"))(params, z)
  return sigmoid(logits)[..., 0]


def latent_prior(model: nn.Module, train_codes: Optional[np.ndarray], latent_dim: int) -> LatentPrior:
  if model.variational:
    return LatentPrior(np.zeros(latent_dim), np.eye(latent_dim), "z ~ N(0, I)")
  codes = np.asarray(train_codes, np.float64)
  cov = np.atleast_2d(np.cov(codes, rowvar=False)) + 1e-6 * np.eye(latent_dim)
  return LatentPrior(codes.mean(axis=0), np.linalg.cholesky(cov),
                     "z ~ Gaussian fitted to the training codes")


def scatter_coords(means: np.ndarray) -> tuple[np.ndarray, tuple[str, str]]:
  """The 2-D coordinates of the scatter: the means themselves, or their top 2 principal components."""
  d = means.shape[1]
  if d == 2:
    return means, ("z[0]", "z[1]")
  if d == 1:
    return np.stack([means[:, 0], np.zeros(len(means))], axis=1), ("z[0]", "(none: latent_dim = 1)")
  centred = means - means.mean(axis=0)
  _, s, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
  share = s ** 2 / np.sum(s ** 2)
  return (centred @ vt[:2].T).astype(np.float32), (
      f"principal component 1 ({share[0]:.0%} of variance)",
      f"principal component 2 ({share[1]:.0%} of variance)")


def interpolation_pairs(labels: np.ndarray, num_pairs: int = INTERPOLATION_PAIRS) -> np.ndarray:
  """[num_pairs, 2] indices: the first validation image of class 2i and of class 2i + 1
  (the first images of two other classes where one is missing)."""
  firsts = {c: int(np.argmax(labels == c)) for c in np.unique(labels)}
  classes = sorted(firsts)
  return np.array([(firsts[classes[(2 * i) % len(classes)]],
                    firsts[classes[(2 * i + 1) % len(classes)]]) for i in range(num_pairs)])


def interpolate(codes_a: np.ndarray, codes_b: np.ndarray, steps: int = INTERPOLATION_STEPS) -> np.ndarray:
  """Points on the straight lines from codes_a [P, D] to codes_b [P, D]: [P, steps, D]."""
  alpha = np.linspace(0.0, 1.0, steps)[None, :, None]
  return (1.0 - alpha) * codes_a[:, None] + alpha * codes_b[:, None]


def manifold_axes(prior: LatentPrior) -> tuple[np.ndarray, np.ndarray]:
  """Grid values along z[0] and z[1] at the prior's marginal quantiles."""
  q = stats.norm.ppf(MANIFOLD_QUANTILES)
  sd = np.sqrt(np.sum(prior.chol ** 2, axis=1))
  return prior.mean[0] + sd[0] * q, prior.mean[1] + sd[1] * q


def write_milestone(state, model: nn.Module, config: Config, data, history: Sequence[dict],
                    workdir: str, epoch: int, mesh=None, out: Optional[str] = None) -> str:
  """Draws every figure of this epoch and writes latents.npz; returns the folder."""
  out = out or workdir_lib.plots_dir(workdir, epoch)
  os.makedirs(out, exist_ok=True)
  run = f"{config.dataset} {config.model}/{config.arch}, z={config.latent_dim}, epoch {epoch}"
  val_means = encode_means(state, model, data.val.images, config.batch_size, mesh)
  train_codes = (None if model.variational else
                 encode_means(state, model, data.train.images, config.batch_size, mesh))
  prior = latent_prior(model, train_codes, config.latent_dim)
  coords, axis_labels = scatter_coords(val_means)
  np.savez(os.path.join(out, "latents.npz"), means=val_means, labels=data.val.labels,
           coords=coords)

  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), steps.FIGURE_STREAM)
  eps = np.asarray(jax.random.normal(key, (SAMPLES_SIDE ** 2, config.latent_dim)))
  z = (prior.mean + eps @ prior.chol.T).astype(np.float32)
  samples = decode_probs(state.params, model, z)
  plots.image_grid(samples.reshape(SAMPLES_SIDE, SAMPLES_SIDE, 28, 28),
                   os.path.join(out, "samples.png"), f"{run}\nsamples, {prior.description}")

  num = RECON_ROWS * RECON_COLS
  originals = to_float(data.val.images[:num])[..., 0]
  recons = decode_probs(state.params, model, val_means[:num])
  plots.reconstructions(originals.reshape(RECON_ROWS, RECON_COLS, 28, 28),
                        recons.reshape(RECON_ROWS, RECON_COLS, 28, 28),
                        os.path.join(out, "reconstructions.png"),
                        f"{run}: validation images and their reconstructions from the "
                        f"{'posterior mean' if model.variational else 'code'}")

  pairs = interpolation_pairs(data.val.labels)
  if len(np.unique(data.val.labels[pairs.ravel()])) > 1:  # tiny mock splits may hold one class
    line = interpolate(val_means[pairs[:, 0]], val_means[pairs[:, 1]]).astype(np.float32)
    decoded = decode_probs(state.params, model, line.reshape(-1, config.latent_dim))
    ends = to_float(data.val.images[pairs])[..., 0]            # [P, 2, 28, 28]
    rows = np.concatenate([ends[:, :1], decoded.reshape(len(pairs), -1, 28, 28), ends[:, 1:]], 1)
    plots.image_grid(rows, os.path.join(out, "interpolation.png"),
                     f"{run}\neach row: a validation image, {INTERPOLATION_STEPS} decodings "
                     "along the straight line between its code and the code of the last image")

  extent = None
  if config.latent_dim == 2:
    gx, gy = manifold_axes(prior)
    zz = np.stack(np.meshgrid(gx, gy[::-1]), axis=-1).reshape(-1, 2).astype(np.float32)
    grid = decode_probs(state.params, model, zz).reshape(MANIFOLD_SIDE, MANIFOLD_SIDE, 28, 28)
    extent = (gx[0], gx[-1], gy[0], gy[-1])
    plots.latent_manifold(grid, extent, os.path.join(out, "latent_manifold.png"),
                          f"{run}: decoded latent grid at Gaussian quantiles ({prior.description})")

  plots.latent_scatter(coords, data.val.labels, CLASS_NAMES[config.dataset], axis_labels,
                       os.path.join(out, "latent_scatter.png"),
                       f"{run}: validation set, {'posterior means' if model.variational else 'codes'}",
                       manifold_extent=extent)
  plots.loss_curves([r for r in history if r["epoch"] <= epoch],
                    os.path.join(out, "loss_curves.png"), f"{run}: loss per image",
                    with_kl=model.variational)
  return out
