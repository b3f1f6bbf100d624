"""The figures as drawn by matplotlib: what an axis says matches what its cells show."""

import matplotlib.image
import numpy as np

from vae_jax import plots, report


def test_manifold_axes_label_the_cells_with_the_latent_values_they_decode(tmp_path, monkeypatch):
  side = report.MANIFOLD_SIDE
  prior = report.LatentPrior(np.zeros(2), np.eye(2), "N(0, I)")
  ticks = report.manifold_ticks(prior)
  images = np.random.default_rng(0).uniform(size=(side, side, 28, 28)).astype(np.float32)
  figures = []
  save = plots._save
  monkeypatch.setattr(plots, "_save", lambda fig, path: (figures.append(fig), save(fig, path)))
  path = tmp_path / "latent_manifold.png"
  plots.latent_manifold(images, ticks, str(path), "title")

  ax = figures[0].axes[0]
  # One unit per cell: column j spans [j - 1/2, j + 1/2], row 0 at the top (highest z[1]).
  assert ax.images[0].get_extent() == [-0.5, side - 0.5, -0.5, side - 0.5]
  np.testing.assert_allclose(ax.images[0].get_array(), plots.tile(images))
  for axis, expected in ((ax.xaxis, ticks[0]), (ax.yaxis, ticks[1])):
    np.testing.assert_allclose(axis.get_ticklocs(), expected.positions)
    assert [label.get_text() for label in axis.get_ticklabels()] == [
        "-1.5", "-1", "-0.5", "0", "0.5", "1", "1.5"]
  assert "quantile scale" in ax.get_xlabel()
  assert matplotlib.image.imread(path).shape[2] == 4  # a real RGBA PNG was written
