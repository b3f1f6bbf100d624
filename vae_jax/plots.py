"""One function per figure: each takes arrays and a path, and writes a PNG."""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # Files only; never needs a display.
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 110
# A manifold axis: cells of equal prior mass, so its scale is stretched near the mean.
QUANTILE_AXIS = "{} (quantile scale)"


def tile(images: np.ndarray, gap: int = 0) -> np.ndarray:
  """[R, C, H, W] -> one [R*(H+gap)-gap, C*(W+gap)-gap] image, gaps filled with 1 (white)."""
  rows, cols, h, w = images.shape
  canvas = np.ones((rows * (h + gap) - gap, cols * (w + gap) - gap), images.dtype)
  for r in range(rows):
    for c in range(cols):
      canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = images[r, c]
  return canvas


def _save(fig, path: str) -> None:
  fig.savefig(path, dpi=DPI, bbox_inches="tight")
  plt.close(fig)


def image_grid(images: np.ndarray, path: str, title: str,
               row_labels: Optional[Sequence[str]] = None) -> None:
  """images: [R, C, 28, 28] pixel intensities in [0, 1]; row_labels name each row."""
  rows, cols, h, _ = images.shape
  fig, ax = plt.subplots(figsize=(cols * 0.6, rows * 0.6 + 0.4))
  ax.imshow(tile(images, gap=2), cmap="gray", vmin=0.0, vmax=1.0)
  ax.set_title(title, fontsize=9)
  if row_labels is None:
    ax.axis("off")
  else:
    ax.set_xticks([])
    ax.set_yticks([r * (h + 2) + h / 2 for r in range(rows)], list(row_labels), fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
      spine.set_visible(False)
  _save(fig, path)


def reconstructions(originals: np.ndarray, recons: np.ndarray, path: str, title: str) -> None:
  """originals, recons: [R, C, 28, 28]; row pairs show each digit above its reconstruction."""
  rows, cols = originals.shape[:2]
  fig, axes = plt.subplots(2 * rows, 1, figsize=(cols * 0.6, rows * 1.3 + 0.4))
  for r in range(rows):
    for ax, imgs, name in ((axes[2 * r], originals[r], "input"),
                           (axes[2 * r + 1], recons[r], "reconstruction")):
      ax.imshow(tile(imgs[None], gap=2), cmap="gray", vmin=0.0, vmax=1.0)
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
  axes[0].set_title(title, fontsize=9)
  _save(fig, path)


def latent_scatter(coords: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                   axis_labels: tuple[str, str], path: str, title: str,
                   manifold_extent: Optional[tuple[float, float, float, float]] = None) -> None:
  """coords: [N, 2] points coloured by labels [N]; a dashed box marks the manifold's range."""
  fig, ax = plt.subplots(figsize=(7.5, 6))
  cmap = plt.get_cmap("tab10")
  order = np.random.default_rng(0).permutation(len(labels))  # no class painted over the rest
  ax.scatter(coords[order, 0], coords[order, 1], c=cmap(labels[order] % 10), s=2, alpha=0.6,
             linewidths=0, rasterized=True)
  handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(i), label=name)
             for i, name in enumerate(class_names)]
  if manifold_extent is not None:
    x0, x1, y0, y1 = manifold_extent
    ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ls="--", color="k", lw=1))
    handles.append(plt.Line2D([], [], ls="--", color="k", label="manifold range"))
  ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8,
            markerscale=1.5, frameon=False)
  ax.set_xlabel(axis_labels[0])
  ax.set_ylabel(axis_labels[1])
  ax.set_title(title, fontsize=10)
  _save(fig, path)


class Ticks(NamedTuple):
  """Labelled ticks of an axis: values shown at positions in the axis's own units."""
  positions: np.ndarray
  values: np.ndarray


def round_values_within(lo: float, hi: float, most: int = 9) -> np.ndarray:
  """Up to `most` round numbers (steps of 1, 2, 2.5 or 5 times a power of 10) in [lo, hi]."""
  values = matplotlib.ticker.MaxNLocator(nbins=most - 1, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
  values = np.round(values, 12) + 0.0  # no -0 and no 1e-17 for zero
  return values[(values >= lo) & (values <= hi)]


def _show_grid(ax, images: np.ndarray, xticks: Ticks, yticks: Ticks) -> None:
  """Tiles images [rows, cols, 28, 28] on ax, one unit per cell (column j centred at x = j,
  row i at y = rows - 1 - i), with the ticks' values at their positions in cells."""
  rows, cols = images.shape[:2]
  ax.imshow(tile(images), cmap="gray", vmin=0.0, vmax=1.0, aspect="auto",
            extent=(-0.5, cols - 0.5, -0.5, rows - 0.5))
  ax.set_xticks(xticks.positions, [f"{v:g}" for v in xticks.values])
  ax.set_yticks(yticks.positions, [f"{v:g}" for v in yticks.values])


def latent_manifold(images: np.ndarray, ticks: tuple[Ticks, Ticks], path: str, title: str) -> None:
  """images: [rows, cols, 28, 28] decoded on a grid; row 0 is the highest z[1], as on the axes.

  ticks: the z[0] and z[1] values to label, at their positions in cells.
  """
  fig, ax = plt.subplots(figsize=(8, 8))
  _show_grid(ax, images, *ticks)
  ax.set_xlabel(QUANTILE_AXIS.format("z[0]"))
  ax.set_ylabel(QUANTILE_AXIS.format("z[1]"))
  ax.set_title(title, fontsize=10)
  _save(fig, path)


def latent_manifold_panels(grids: np.ndarray, ticks: tuple[Ticks, Ticks],
                           names: Sequence[str], path: str, title: str, columns: int = 5) -> None:
  """grids: [K, rows, cols, 28, 28], one decoded latent grid per label (named by names).

  The panels share the axes: the same z gives the same style under every label.
  """
  panels = len(grids)
  panel_rows = -(-panels // columns)
  fig, axes = plt.subplots(panel_rows, columns, figsize=(3.2 * columns, 3.4 * panel_rows + 0.5),
                           sharex=True, sharey=True, squeeze=False)
  for k, ax in enumerate(axes.ravel()):
    if k >= panels:
      ax.axis("off")
      continue
    _show_grid(ax, grids[k], *ticks)
    ax.set_title(f"label: {names[k]}", fontsize=9)
  for ax in axes[-1]:
    ax.set_xlabel(QUANTILE_AXIS.format("z[0]"))
  for ax in axes[:, 0]:
    ax.set_ylabel(QUANTILE_AXIS.format("z[1]"))
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  _save(fig, path)


def loss_curves(history: Sequence[dict[str, float]], path: str, title: str,
                with_kl: bool = True) -> None:
  """Train and validation loss per epoch, with its reconstruction (and KL) parts."""
  epochs = [row["epoch"] for row in history]
  if with_kl:
    parts = [("loss", "loss = recon + beta * KL"), ("recon", "reconstruction (-log p(x|z))"),
             ("kl", "KL(q(z|x) || p(z))")]
  else:
    parts = [("loss", "loss = reconstruction (an AE has no KL)")]
  marker = "o" if len(epochs) <= 10 else None  # a single epoch has no line to show
  fig, axes = plt.subplots(1, len(parts), figsize=(4.2 * len(parts) + 0.8, 3.6), squeeze=False)
  for ax, (key, name) in zip(axes[0], parts):
    for split, style in (("train", "-"), ("val", "--")):
      ax.plot(epochs, [row[f"{split}_{key}"] for row in history], style, marker=marker,
              markersize=3, label=split)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if len(set(epochs)) == 1:  # else matplotlib spans +-5% of one epoch, in fractions
      ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    ax.set_ylabel("nats per image")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  _save(fig, path)
