"""The milestone report: arrays computed from a trained state, drawn by plots.py."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from typing import NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from vae_jax import hosts, parallel, plots, steps, workdir as workdir_lib
from vae_jax.config import Config
from vae_jax.input_pipeline import CLASS_NAMES, Split, binarize_fixed, to_float

SAMPLES_SIDE = 10          # samples.png is a SAMPLES_SIDE x SAMPLES_SIDE grid
RECON_ROWS, RECON_COLS = 2, 10
MANIFOLD_SIDE = 20
MANIFOLD_PANEL_SIDE = 12   # a conditional model's manifold: one smaller grid per class
INTERPOLATION_PAIRS, INTERPOLATION_STEPS = 5, 10
# Every file a milestone writes (latent_manifold.png only for latent_dim = 2).
MILESTONE_FILES = ("samples.png", "reconstructions.png", "interpolation.png",
                   "latent_manifold.png", "latent_scatter.png", "loss_curves.png", "latents.npz")


class LatentPrior(NamedTuple):
  """The Gaussian that samples.png draws codes from: z = mean + chol @ eps."""
  mean: np.ndarray       # [D]
  chol: np.ndarray       # [D, D]
  description: str


def sigmoid(logits) -> np.ndarray:
  return np.asarray(jax.nn.sigmoid(logits))


def encode_means(state, model: nn.Module, images_u8, labels, batch_size: int,
                 mesh=None) -> np.ndarray:
  """Posterior means (VAE) or codes (AE) [N, D] of all images, one compiled call.

  labels [N] are read by a conditional model only (its means code the style).
  """
  sharding = None if mesh is None else parallel.batch_sharded(mesh)
  return np.asarray(_encode_all(state.params, images_u8, labels, model, batch_size, sharding))


# Compiled once per model and shapes, and reused at every milestone of a run (a function
# jitted inside encode_means or decode_probs would be compiled anew at each call).
@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _encode_all(params, images_u8, labels, model: nn.Module, batch_size: int, sharding):
  def encode(batch, _):
    images, batch_labels = batch
    return model.apply({"params": params}, to_float(images), batch_labels, method="encode")[0]
  return steps.map_batches(encode, (images_u8, labels), batch_size, sharding)


@functools.partial(jax.jit, static_argnums=3)
def _decode_logits(params, z, labels, model: nn.Module):
  return model.apply({"params": params}, z, labels, method="decode")


def decode_probs(params, model: nn.Module, z, labels=None) -> np.ndarray:
  """Bernoulli means [N, 28, 28] of codes z [N, D] (and labels [N] or [N, C] for a
  conditional model), in one compiled call."""
  return sigmoid(_decode_logits(params, z, labels, model))[..., 0]


def class_rows(num_classes: int, num_columns: int) -> np.ndarray:
  """Labels [num_classes * num_columns]: row c of a grid is all class c."""
  return np.repeat(np.arange(num_classes), num_columns)


def latent_prior(model: nn.Module, train_codes: Optional[np.ndarray], latent_dim: int) -> LatentPrior:
  if model.variational:
    return LatentPrior(np.zeros(latent_dim), np.eye(latent_dim), "z ~ N(0, I)")
  codes = np.asarray(train_codes, np.float64)
  cov = np.atleast_2d(np.cov(codes, rowvar=False)) + 1e-6 * np.eye(latent_dim)
  return LatentPrior(codes.mean(axis=0), np.linalg.cholesky(cov),
                     "z ~ Gaussian fitted to the training codes")


def model_prior(state, model: nn.Module, config: Config, train: Optional[Split],
                mesh=None) -> LatentPrior:
  """The prior that samples come from; only an AE reads train (its codes define it).

  A dynamically binarized AE only ever encoded binary images, so its prior is fitted
  to the codes of the training images binarized once (grey images' codes lie elsewhere).
  """
  if model.variational:
    return latent_prior(model, None, config.latent_dim)
  if config.binarize == "dynamic":
    train = binarize_fixed(train, seed=config.seed)
  codes = encode_means(state, model, train.images, train.labels, config.batch_size, mesh)
  return latent_prior(model, codes, config.latent_dim)


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


def manifold_quantiles(side: int = MANIFOLD_SIDE) -> np.ndarray:
  """The centres of side equal-probability bins of a Gaussian marginal: for side = 20,
  quantiles 1/40 .. 39/40, i.e. +-1.96 standard deviations."""
  return (np.arange(side) + 0.5) / side


def marginal_sd(prior: LatentPrior) -> np.ndarray:
  """[D] standard deviations of the prior's marginals: the row norms of chol."""
  return np.sqrt(np.sum(prior.chol ** 2, axis=1))


def manifold_axes(prior: LatentPrior, side: int = MANIFOLD_SIDE) -> tuple[np.ndarray, np.ndarray]:
  """Grid values along z[0] and z[1] at the prior's marginal quantiles."""
  q = stats.norm.ppf(manifold_quantiles(side))
  sd = marginal_sd(prior)
  return prior.mean[0] + sd[0] * q, prior.mean[1] + sd[1] * q


def quantile_positions(z: np.ndarray, mean: float, sd: float, side: int) -> np.ndarray:
  """Where values z fall on a manifold axis measured in cells, cell k (centred at k)
  decoding the quantile (k + 1/2) / side: side * Phi((z - mean) / sd) - 1/2."""
  return side * stats.norm.cdf((np.asarray(z) - mean) / sd) - 0.5


def manifold_ticks(prior: LatentPrior, side: int = MANIFOLD_SIDE,
                   most: int = 9) -> tuple[plots.Ticks, plots.Ticks]:
  """Up to `most` round latent values on each of the z[0] and z[1] axes of the manifold, at
  their positions in cells: the cells are equal in prior mass, not in z, so the ticks are
  unevenly spaced."""
  sd = marginal_sd(prior)
  ticks = []
  for axis, values in enumerate(manifold_axes(prior, side)):
    round_values = plots.round_values_within(values[0], values[-1], most)
    ticks.append(plots.Ticks(quantile_positions(round_values, prior.mean[axis], sd[axis], side),
                             round_values))
  return ticks[0], ticks[1]


def draw_codes(prior: LatentPrior, key: jax.Array, num: int) -> np.ndarray:
  """num codes [num, D] from the prior: mean + chol @ eps, eps ~ N(0, I) from key."""
  eps = np.asarray(jax.random.normal(key, (num, prior.mean.shape[0])))
  return (prior.mean + eps @ prior.chol.T).astype(np.float32)


def prior_samples(prior: LatentPrior, num: int, seed: int) -> np.ndarray:
  """num codes [num, D] from the prior, drawn from the run's figure stream."""
  return draw_codes(prior, jax.random.fold_in(jax.random.PRNGKey(seed), steps.FIGURE_STREAM), num)


def draw_samples(state, model, config: Config, prior: LatentPrior, out: str, run: str) -> None:
  path = os.path.join(out, "samples.png")
  if not model.conditional:
    z = prior_samples(prior, SAMPLES_SIDE ** 2, config.seed)
    samples = decode_probs(state.params, model, z)
    plots.image_grid(samples.reshape(SAMPLES_SIDE, SAMPLES_SIDE, 28, 28), path,
                     f"{run}\nsamples, {prior.description}")
    return
  # One row per class; column j decodes the same z_j with every label: the style is shared.
  names = CLASS_NAMES[config.dataset]
  z = np.tile(prior_samples(prior, SAMPLES_SIDE, config.seed), (len(names), 1))
  samples = decode_probs(state.params, model, z, class_rows(len(names), SAMPLES_SIDE))
  plots.image_grid(samples.reshape(len(names), SAMPLES_SIDE, 28, 28), path,
                   f"{run}\nsamples: row = label, column = one {prior.description} (style)",
                   row_labels=names)


def draw_interpolation(state, model, config: Config, val_means, data, out: str, run: str) -> None:
  pairs = interpolation_pairs(data.val.labels)
  if len(np.unique(data.val.labels[pairs.ravel()])) < 2:  # tiny mock splits may hold one class
    return
  line = interpolate(val_means[pairs[:, 0]], val_means[pairs[:, 1]]).astype(np.float32)
  # A conditional model's label moves along with the code, from one one-hot to the other.
  onehots = np.eye(len(CLASS_NAMES[config.dataset]), dtype=np.float32)[data.val.labels[pairs]]
  label_line = interpolate(onehots[:, 0], onehots[:, 1]).astype(np.float32)
  decoded = decode_probs(state.params, model, line.reshape(-1, config.latent_dim),
                         label_line.reshape(-1, label_line.shape[-1]))
  ends = to_float(data.val.images[pairs])[..., 0]            # [P, 2, 28, 28]
  rows = np.concatenate([ends[:, :1], decoded.reshape(len(pairs), -1, 28, 28), ends[:, 1:]], 1)
  what = "code and label" if model.conditional else "code"
  plots.image_grid(rows, os.path.join(out, "interpolation.png"),
                   f"{run}\neach row: a validation image, {INTERPOLATION_STEPS} decodings along "
                   f"the straight line between its {what} and the {what} of the last image")


def draw_manifold(state, model, config: Config, prior: LatentPrior, out: str, run: str):
  """The decoded latent grid (z = 2 only); returns the range (x0, x1, y0, y1) of its cell
  centres, for the scatter's box."""
  if config.latent_dim != 2:
    return None
  side = MANIFOLD_PANEL_SIDE if model.conditional else MANIFOLD_SIDE
  gx, gy = manifold_axes(prior, side)
  zz = np.stack(np.meshgrid(gx, gy[::-1]), axis=-1).reshape(-1, 2).astype(np.float32)
  ticks = manifold_ticks(prior, side, most=5 if model.conditional else 9)  # panels are small
  path = os.path.join(out, "latent_manifold.png")
  title = f"{run}: decoded latent grid at Gaussian quantiles ({prior.description})"
  if not model.conditional:
    grid = decode_probs(state.params, model, zz).reshape(side, side, 28, 28)
    plots.latent_manifold(grid, ticks, path, title)
  else:
    names = CLASS_NAMES[config.dataset]
    grids = decode_probs(state.params, model, np.tile(zz, (len(names), 1)),
                         class_rows(len(names), len(zz)))
    plots.latent_manifold_panels(grids.reshape(len(names), side, side, 28, 28), ticks, names,
                                 path, f"{title}, one panel per label")
  return (gx[0], gx[-1], gy[0], gy[-1])


def write_milestone(state, model: nn.Module, config: Config, data, history: Sequence[dict],
                    workdir: str, epoch: int, mesh=None, out: Optional[str] = None) -> str:
  """Draws every figure of this epoch and writes latents.npz; returns the folder.

  Into out if given; else into W/plots/epoch_EEE, which appears only once every figure
  is drawn (they are drawn in a .partial folder first), so a run stopped while drawing
  leaves no half-drawn folder behind, and a resume knows to draw it again. In a multi-host
  run the other processes draw the same figures (their computations run on every host)
  into a scratch folder that they then discard.
  """
  if out is None and not hosts.is_writer():
    with tempfile.TemporaryDirectory() as scratch:
      draw_figures(state, model, config, data, history, epoch, scratch, mesh)
    return workdir_lib.plots_dir(workdir, epoch)
  if out is not None:
    os.makedirs(out, exist_ok=True)
    draw_figures(state, model, config, data, history, epoch, out, mesh)
    return out
  final = workdir_lib.plots_dir(workdir, epoch)
  partial = final + ".partial"
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  draw_figures(state, model, config, data, history, epoch, partial, mesh)
  if os.path.isdir(final):
    shutil.rmtree(final)
  os.replace(partial, final)
  return final


def draw_figures(state, model: nn.Module, config: Config, data, history: Sequence[dict],
                 epoch: int, out: str, mesh=None) -> None:
  """Every figure of this epoch, and latents.npz, into the folder out."""
  run = f"{config.dataset} {config.model}/{config.arch}, z={config.latent_dim}, epoch {epoch}"
  val_means = encode_means(state, model, data.val.images, data.val.labels, config.batch_size, mesh)
  prior = model_prior(state, model, config, data.train, mesh)
  coords, axis_labels = scatter_coords(val_means)
  np.savez(os.path.join(out, "latents.npz"), means=val_means, labels=data.val.labels,
           coords=coords)

  draw_samples(state, model, config, prior, out, run)
  num = RECON_ROWS * RECON_COLS
  originals = to_float(data.val.images[:num])[..., 0]
  recons = decode_probs(state.params, model, val_means[:num], data.val.labels[:num])
  plots.reconstructions(originals.reshape(RECON_ROWS, RECON_COLS, 28, 28),
                        recons.reshape(RECON_ROWS, RECON_COLS, 28, 28),
                        os.path.join(out, "reconstructions.png"),
                        f"{run}: validation images and their reconstructions from the "
                        f"{'posterior mean' if model.variational else 'code'}"
                        f"{' and the label' if model.conditional else ''}")
  draw_interpolation(state, model, config, val_means, data, out, run)
  extent = draw_manifold(state, model, config, prior, out, run)
  what = "posterior means" if model.variational else "codes"
  plots.latent_scatter(coords, data.val.labels, CLASS_NAMES[config.dataset], axis_labels,
                       os.path.join(out, "latent_scatter.png"),
                       f"{run}: validation set, {what}"
                       + (" given the label: a style space" if model.conditional else ""),
                       manifold_extent=extent)
  plots.loss_curves([r for r in history if r["epoch"] <= epoch],
                    os.path.join(out, "loss_curves.png"), f"{run}: loss per image",
                    with_kl=model.variational)
