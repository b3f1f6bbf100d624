"""The Fréchet distance between Gaussians fitted to two sets of features (FID's formula)."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

# Added to both covariances' diagonals when their product has no finite square root:
# what the reference FID code does for near-singular covariances.
EPS = 1e-6
# The imaginary part sqrtm may return is rounding noise when it is this small relative
# to the real part; anything larger means the covariances are broken (not PSD).
IMAG_TOLERANCE = 1e-3
# Largest accepted ||X X - S_a S_b||_F / ||S_a S_b||_F of the computed root X.
RESIDUAL_TOLERANCE = 1e-6


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean [F] and unbiased covariance [F, F] of features [N, F], in float64."""
  feats = np.asarray(feats, np.float64)
  if feats.ndim != 2 or feats.shape[0] < 2:
    raise ValueError(f"features must be [N, F] with N >= 2, got shape {feats.shape}")
  if not np.isfinite(feats).all():
    raise ValueError("features contain NaN or Inf")
  return feats.mean(axis=0), np.cov(feats, rowvar=False).reshape(feats.shape[1], feats.shape[1])


def _sqrtm_product(sigma_a: np.ndarray, sigma_b: np.ndarray) -> np.ndarray | None:
  """(S_a S_b)^{1/2}, real; None if it is not finite, not real up to rounding, or inexact."""
  product = sigma_a @ sigma_b
  with warnings.catch_warnings():
    # sqrtm warns on any singular product (fewer samples than features, dead units), yet
    # its root is usually exact: the residual below decides instead.
    warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
    covmean = scipy.linalg.sqrtm(product)
  if not np.isfinite(covmean).all():
    return None
  if np.iscomplexobj(covmean):
    # S_a S_b is similar to the PSD S_a^{1/2} S_b S_a^{1/2}, so its eigenvalues are real
    # and >= 0: an imaginary part comes from rounding on (near-)zero eigenvalues.
    if np.abs(covmean.imag).max() > IMAG_TOLERANCE * max(np.abs(covmean.real).max(), 1.0):
      return None
    covmean = covmean.real
  scale = max(np.linalg.norm(product), np.finfo(np.float64).tiny)
  if np.linalg.norm(covmean @ covmean - product) > RESIDUAL_TOLERANCE * scale:
    return None
  return covmean


def frechet_distance_from_stats(mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray,
                                sigma_b: np.ndarray, eps: float = EPS) -> float:
  """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}), in float64."""
  mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
  sigma_a, sigma_b = np.asarray(sigma_a, np.float64), np.asarray(sigma_b, np.float64)
  if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape:
    raise ValueError(f"the two sets have different feature sizes: {mu_a.shape} vs {mu_b.shape}")
  covmean = _sqrtm_product(sigma_a, sigma_b)
  if covmean is None:
    offset = eps * np.eye(sigma_a.shape[0])
    covmean = _sqrtm_product(sigma_a + offset, sigma_b + offset)
    if covmean is None:
      raise ValueError("the covariances' product has no real square root even with "
                       f"{eps} added to their diagonals (they are not covariances)")
  diff = mu_a - mu_b
  distance = diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * np.trace(covmean)
  # The true value is >= 0; two equal sets can give -1e-12 from rounding alone.
  return max(float(distance), 0.0)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, eps: float = EPS) -> float:
  """The Fréchet distance between Gaussians fitted to features [N, F] and [M, F]."""
  return frechet_distance_from_stats(*gaussian_stats(feats_a), *gaussian_stats(feats_b), eps=eps)
