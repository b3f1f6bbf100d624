"""The arrays behind the figures: priors, scatter coordinates, manifold grid, interpolation."""

import dataclasses
import os

import jax
import numpy as np
import optax
from scipy import stats

from vae_jax import models, report, steps
from vae_jax.config import Config
from vae_jax.input_pipeline import Split


def test_interpolation_pairs_join_two_classes_and_lines_end_at_the_codes():
  labels = np.array([3, 1, 0, 2, 5, 4, 1, 7, 6, 9, 8, 0])
  pairs = report.interpolation_pairs(labels)
  assert pairs.shape == (5, 2)
  np.testing.assert_array_equal(labels[pairs], [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]])
  a, b = np.random.default_rng(0).normal(size=(2, 5, 3))
  line = report.interpolate(a, b, steps=4)
  assert line.shape == (5, 4, 3)
  np.testing.assert_allclose(line[:, 0], a)
  np.testing.assert_allclose(line[:, -1], b)
  np.testing.assert_allclose(line[:, 1], a + (b - a) / 3)


def test_ae_prior_is_the_gaussian_of_the_codes():
  codes = np.random.default_rng(1).multivariate_normal([1.0, -2.0], [[2.0, 0.6], [0.6, 0.5]], 200_000)
  prior = report.latent_prior(models.make_model("ae", "mlp", 2), codes, 2)
  np.testing.assert_allclose(prior.mean, [1.0, -2.0], atol=0.02)
  np.testing.assert_allclose(prior.chol @ prior.chol.T, [[2.0, 0.6], [0.6, 0.5]], atol=0.03)
  vae_prior = report.latent_prior(models.make_model("vae", "mlp", 2), None, 2)
  np.testing.assert_array_equal(vae_prior.chol, np.eye(2))


def test_manifold_axes_are_the_central_gaussian_quantiles():
  prior = report.LatentPrior(np.zeros(2), np.eye(2), "N(0, I)")
  gx, gy = report.manifold_axes(prior)
  np.testing.assert_allclose(gx, stats.norm.ppf((np.arange(20) + 0.5) / 20))
  assert abs(gx[0] + 1.96) < 0.01 and abs(gx[-1] - 1.96) < 0.01
  np.testing.assert_allclose(gx, gy)


def test_manifold_ticks_label_each_cell_with_the_value_it_decodes():
  """Cell k of the grid, centred at k on its axis, decodes gx[k]; a tick of value v sits
  where v falls among the cells, i.e. at side * Phi(v) - 1/2 for the standard prior."""
  side = report.MANIFOLD_SIDE
  prior = report.LatentPrior(np.zeros(2), np.eye(2), "N(0, I)")
  xticks, yticks = report.manifold_ticks(prior)
  np.testing.assert_array_equal(xticks.values, [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
  phi_1 = 0.8413447460685429  # the standard normal CDF at 1
  expected = {0.0: (side - 1) / 2, 1.0: side * phi_1 - 0.5, -1.0: side * (1 - phi_1) - 0.5}
  for v, position in expected.items():
    np.testing.assert_allclose(xticks.positions[xticks.values == v], [position], rtol=1e-12)
  np.testing.assert_array_equal(yticks.positions, xticks.positions)

  # A fitted prior, correlated and off centre: each axis at its own marginal.
  prior = report.LatentPrior(np.array([1.0, -2.0]), np.array([[2.0, 0.0], [1.5, 0.5]]), "fit")
  gx, gy = report.manifold_axes(prior)
  sd = report.marginal_sd(prior)
  np.testing.assert_allclose(sd, [2.0, np.sqrt(2.5)])
  for axis, (values, ticks) in enumerate(zip((gx, gy), report.manifold_ticks(prior))):
    centres = report.quantile_positions(values, prior.mean[axis], sd[axis], side)
    np.testing.assert_allclose(centres, np.arange(side), atol=1e-9)
    assert len(ticks.values) >= 5 and np.all(np.diff(ticks.positions) > 0)
    cell = np.floor(ticks.positions).astype(int)  # each tick lies between the two cells
    assert np.all(values[cell] <= ticks.values) and np.all(ticks.values <= values[cell + 1])


def test_scatter_uses_principal_components_above_two_dimensions():
  rng = np.random.default_rng(2)
  means = rng.normal(size=(1000, 5)) * np.array([5.0, 0.1, 3.0, 0.1, 0.1])
  coords, labels = report.scatter_coords(means)
  assert coords.shape == (1000, 2) and "principal component 1" in labels[0]
  # The first component carries the largest variance, the second the next.
  assert coords[:, 0].var() > coords[:, 1].var() > 5.0
  same, names = report.scatter_coords(means[:, :2])
  np.testing.assert_array_equal(same, means[:, :2])
  assert names == ("z[0]", "z[1]")
  line, names = report.scatter_coords(means[:, :1])  # latent_dim = 1: the codes on a line
  np.testing.assert_array_equal(line, np.stack([means[:, 0], np.zeros(1000)], axis=1))
  assert names == ("z[0]", "(none: latent_dim = 1)")


def test_dynamically_binarized_ae_prior_fits_the_codes_of_binary_images():
  model = models.make_model("ae", "mlp", 2)
  state = steps.init_state(model, optax.adam(1e-3), seed=0)
  grey = np.random.default_rng(3).integers(60, 200, (64, 28, 28, 1)).astype(np.uint8)
  train = Split(images=grey, labels=np.zeros(64, np.int32))
  config = Config(model="ae", latent_dim=2, batch_size=16, binarize="dynamic", seed=5)
  # The images binarized once with the run's seed, as binarize_fixed draws them.
  binary = np.random.default_rng(5).random(grey.shape, dtype=np.float32) < grey / 255.0
  encode = jax.jit(lambda x: model.apply({"params": state.params}, x, None, method="encode")[0])
  codes = np.asarray(encode(binary.astype(np.float32)))
  prior = report.model_prior(state, model, config, train)
  np.testing.assert_allclose(prior.mean, codes.mean(axis=0), rtol=1e-5, atol=1e-6)
  grey_prior = report.model_prior(state, model, dataclasses.replace(config, binarize="none"), train)
  assert np.abs(grey_prior.mean - prior.mean).max() > 1e-3


def test_interpolation_pairs_take_the_first_image_of_each_class():
  labels = np.array([1, 0, 1, 0, 3, 2, 3, 2, 5, 4, 5, 4, 7, 6, 7, 6, 9, 8, 9, 8])
  first = [int(np.flatnonzero(labels == c)[0]) for c in range(10)]
  np.testing.assert_array_equal(report.interpolation_pairs(labels),
                                [[first[2 * i], first[2 * i + 1]] for i in range(5)])


def test_scatter_components_are_of_the_centred_means():
  rng = np.random.default_rng(4)
  means = rng.normal(size=(2000, 4)) * np.array([3.0, 1.0, 0.5, 0.2]) + 100.0
  coords, _ = report.scatter_coords(means)
  _, vectors = np.linalg.eigh(np.cov(means.T))  # ascending eigenvalues
  expected = (means - means.mean(axis=0)) @ vectors[:, ::-1][:, :2]
  signs = np.sign(np.sum(coords * expected, axis=0))  # a component's sign is arbitrary
  np.testing.assert_allclose(coords * signs, expected, rtol=1e-4, atol=1e-3)


def test_codes_and_manifold_axes_follow_a_correlated_prior():
  cov = np.array([[4.0, 1.2], [1.2, 1.0]])
  prior = report.LatentPrior(np.array([1.0, -1.0]), np.linalg.cholesky(cov), "fitted")
  codes = report.draw_codes(prior, jax.random.PRNGKey(0), 200_000)
  np.testing.assert_allclose(codes.mean(axis=0), prior.mean, atol=0.02)
  np.testing.assert_allclose(np.cov(codes.T), cov, atol=0.04)
  gx, gy = report.manifold_axes(prior)
  q = stats.norm.ppf(report.manifold_quantiles())
  np.testing.assert_allclose(gx, 1.0 + 2.0 * q, rtol=1e-6)  # marginal sd sqrt(4)
  np.testing.assert_allclose(gy, -1.0 + 1.0 * q, rtol=1e-6)  # marginal sd sqrt(1)


# ---- draw_figures: each figure shows the arrays it names ---------------------------------

def figure_data(num: int = 48) -> "train.Data":
  """Random uint8 images, labels in no sorted order, every class present."""
  from vae_jax import train
  rng = np.random.default_rng(7)
  splits = []
  for _ in range(2):
    labels = rng.permutation(np.arange(num) % 10).astype(np.int32)
    images = rng.integers(0, 256, (num, 28, 28, 1)).astype(np.uint8)
    splits.append(Split(images=images, labels=labels))
  return train.Data(train=splits[0], val=splits[1])


def capture_figures(monkeypatch) -> dict:
  """Replaces every plots function report calls: each records its arguments, draws nothing."""
  from vae_jax import plots
  drawn = {}
  for name in ("image_grid", "reconstructions", "latent_scatter", "latent_manifold",
               "latent_manifold_panels", "loss_curves"):
    def record(*args, _name=name, **kwargs):  # image_grid draws several: keyed by file
      key = os.path.basename(args[1]) if _name == "image_grid" else _name
      drawn[key] = args + tuple(kwargs.values())  # keyword arguments after the positional
    monkeypatch.setattr(plots, name, record)
  return drawn


def history_rows(epochs: int) -> list[dict]:
  return [dict(epoch=e, train_loss=9.0 - e, train_recon=8.0 - e, train_kl=1.0, val_loss=9.5 - e,
               val_recon=8.5 - e, val_kl=1.0, seconds=1.0) for e in range(1, epochs + 1)]


def encoded_means(state, model, split, batch: int = 16) -> np.ndarray:
  """The posterior means image by image, apart from report's batched call."""
  encode = jax.jit(lambda x, y: model.apply({"params": state.params}, x, y, method="encode")[0])
  return np.concatenate([np.asarray(encode(split.images[i:i + batch] / np.float32(255),
                                           split.labels[i:i + batch]))
                         for i in range(0, len(split.labels), batch)])


def decoded(state, model, z, labels=None) -> np.ndarray:
  decode = jax.jit(lambda z, y: model.apply({"params": state.params}, z, y, method="decode"))
  return np.asarray(jax.nn.sigmoid(decode(np.asarray(z, np.float32), labels)))[..., 0]


def test_figures_show_the_images_codes_labels_and_epochs_they_name(tmp_path, monkeypatch):
  model = models.make_model("vae", "mlp", 2)
  state = steps.init_state(model, optax.adam(1e-3), seed=3)
  config = Config(model="vae", latent_dim=2, batch_size=16)
  data = figure_data()
  drawn = capture_figures(monkeypatch)
  report.draw_figures(state, model, config, data, history_rows(3), epoch=2, out=str(tmp_path))
  means = encoded_means(state, model, data.val)

  # latents.npz: each validation image's mean beside its own label, in the split's order.
  saved = np.load(tmp_path / "latents.npz")
  np.testing.assert_array_equal(saved["labels"], data.val.labels)
  np.testing.assert_allclose(saved["means"], means, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(saved["coords"], saved["means"])  # z = 2: the means themselves

  # Reconstructions: validation image k above the decoding of its own mean.
  originals, recons = drawn["reconstructions"][:2]
  num = report.RECON_ROWS * report.RECON_COLS
  np.testing.assert_array_equal(originals.reshape(num, 28, 28), data.val.images[:num, ..., 0] / np.float32(255))
  np.testing.assert_allclose(recons.reshape(num, 28, 28), decoded(state, model, means[:num]),
                             atol=1e-6)

  # The manifold: column j at gx[j], row i at gy[side - 1 - i] (row 0 is the highest z[1]).
  grid, ticks = drawn["latent_manifold"][:2]
  prior = report.latent_prior(model, None, 2)
  gx, gy = report.manifold_axes(prior)
  for drawn_axis, axis in zip(ticks, report.manifold_ticks(prior)):
    np.testing.assert_array_equal(drawn_axis.positions, axis.positions)
    np.testing.assert_array_equal(drawn_axis.values, axis.values)
  side = report.MANIFOLD_SIDE
  for i, j in ((0, 0), (0, side - 1), (side - 1, 3), (5, 11)):
    np.testing.assert_allclose(grid[i, j], decoded(state, model, [[gx[j], gy[side - 1 - i]]])[0],
                               atol=1e-6)

  # samples.png: the 100 codes of the seed's figure stream (the same at every milestone).
  z = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(config.seed), steps.FIGURE_STREAM),
                        (report.SAMPLES_SIDE ** 2, 2))
  np.testing.assert_allclose(drawn["samples.png"][0].reshape(-1, 28, 28),
                             decoded(state, model, z), atol=1e-6)

  # The scatter: the means coloured by their own labels, the box at the grid's outer cells;
  # the loss curves: epochs 1..2.
  coords, labels = drawn["latent_scatter"][:2]
  assert drawn["latent_scatter"][-1] == (gx[0], gx[-1], gy[0], gy[-1])
  np.testing.assert_array_equal(labels, data.val.labels)
  np.testing.assert_allclose(coords, means, rtol=1e-5, atol=1e-6)
  assert [row["epoch"] for row in drawn["loss_curves"][0]] == [1, 2]


def test_a_conditional_manifold_decodes_panel_c_with_label_c(tmp_path, monkeypatch):
  model = models.make_model("cvae", "mlp", 2)
  state = steps.init_state(model, optax.adam(1e-3), seed=5)
  config = Config(model="cvae", latent_dim=2, batch_size=16)
  drawn = capture_figures(monkeypatch)
  prior = report.latent_prior(model, None, 2)
  report.draw_manifold(state, model, config, prior, str(tmp_path), "run")
  grids, ticks, names = drawn["latent_manifold_panels"][:3]
  side = report.MANIFOLD_PANEL_SIDE
  assert grids.shape == (10, side, side, 28, 28) and list(names) == [str(d) for d in range(10)]
  gx, gy = report.manifold_axes(prior, side)
  onehot = np.eye(10, dtype=np.float32)
  for c in (0, 3, 9):  # panel c, row i, column j: label c at (gx[j], gy[side - 1 - i])
    for i, j in ((0, 0), (side - 1, 2), (4, 7)):
      np.testing.assert_allclose(
          grids[c, i, j], decoded(state, model, [[gx[j], gy[side - 1 - i]]], onehot[c:c + 1])[0],
          atol=1e-6)
  assert not np.allclose(grids[0], grids[3])  # the label reaches the decoder
  np.testing.assert_array_equal(ticks[0].values, [-1.0, 0.0, 1.0])  # +-1.73 at most


def test_a_conditional_interpolation_moves_code_and_label_between_its_two_images(
    tmp_path, monkeypatch):
  model = models.make_model("cvae", "mlp", 2)
  state = steps.init_state(model, optax.adam(1e-3), seed=4)
  config = Config(model="cvae", latent_dim=2, batch_size=16)
  data = figure_data()
  drawn = capture_figures(monkeypatch)
  means = encoded_means(state, model, data.val)
  report.draw_interpolation(state, model, config, means, data, str(tmp_path), "run")
  rows = drawn["interpolation.png"][0]
  assert rows.shape == (report.INTERPOLATION_PAIRS, report.INTERPOLATION_STEPS + 2, 28, 28)
  onehot = np.eye(10, dtype=np.float32)
  for p, (a, b) in enumerate(report.interpolation_pairs(data.val.labels)):
    la, lb = data.val.labels[a], data.val.labels[b]
    np.testing.assert_array_equal(rows[p, 0], data.val.images[a, ..., 0] / np.float32(255))
    np.testing.assert_array_equal(rows[p, -1], data.val.images[b, ..., 0] / np.float32(255))
    ends = [(means[a], onehot[la]), (means[b], onehot[lb])]
    for column, (z, y) in ((1, ends[0]), (report.INTERPOLATION_STEPS, ends[1])):
      np.testing.assert_allclose(rows[p, column], decoded(state, model, [z], y[None])[0],
                                 atol=1e-5)
    assert la != lb and not np.allclose(rows[p, 1], rows[p, report.INTERPOLATION_STEPS])


def test_the_scatter_paints_each_point_in_its_own_labels_colour(tmp_path, monkeypatch):
  import matplotlib.axes
  import matplotlib.pyplot as plt
  from vae_jax import plots
  labels = np.random.default_rng(5).permutation(np.arange(300) % 10)
  coords = np.stack([np.arange(300.0), -np.arange(300.0)], axis=1)  # x names the point
  painted = {}
  original = matplotlib.axes.Axes.scatter

  def scatter(ax, x, y, *args, c=None, **kwargs):
    painted.update(x=np.asarray(x), c=np.asarray(c))
    return original(ax, x, y, *args, c=c, **kwargs)

  monkeypatch.setattr(matplotlib.axes.Axes, "scatter", scatter)
  plots.latent_scatter(coords, labels, [str(d) for d in range(10)], ("z[0]", "z[1]"),
                       str(tmp_path / "scatter.png"), "title")
  index = painted["x"].astype(int)
  assert sorted(index) == list(range(300)) and list(index) != list(range(300))  # shuffled
  np.testing.assert_array_equal(painted["c"], plt.get_cmap("tab10")(labels[index]))
  assert (tmp_path / "scatter.png").stat().st_size > 0


def test_the_report_compiles_its_encoder_and_decoder_once_per_model_and_shape():
  """Each milestone of a run encodes and decodes the same shapes with new parameters: the
  compiled functions are reused (as at every milestone after the first), and are right
  for the new parameters."""
  model = models.make_model("vae", "mlp", 2)
  split = figure_data(48).val
  z = np.linspace(-1, 1, 20, dtype=np.float32).reshape(10, 2)
  sizes = []
  for seed in (3, 4):  # two milestones: the same shapes, other parameters
    state = steps.init_state(model, optax.adam(1e-3), seed=seed)
    means = report.encode_means(state, model, split.images, split.labels, batch_size=16)
    probs = report.decode_probs(state.params, model, z)
    np.testing.assert_allclose(means, encoded_means(state, model, split), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs, decoded(state, model, z), rtol=1e-5, atol=1e-6)
    sizes.append((report._encode_all._cache_size(), report._decode_logits._cache_size()))
  assert sizes[1] == sizes[0]
