"""evaluate_run's numbers against an independent float64 computation on the same checkpoint
(a short run on the real MNIST files)."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from scipy import special, stats

from vae_jax import checkpoints, evaluate, restore, software, train
from vae_jax.config import Config, ConfigError

NUM_IMAGES, EVAL_BATCH = 384, 40  # nine batches of 40 and a partial one of 24
NUM_SAMPLES = 64
QUIET_UNIT_VARIANCE = 0.03  # Var over the images of the edited unit's posterior mean


def log_p_x_given_z(decode, z, x):
  """log p(x | z) [S, N] for codes z [S, N, D] and images x [N, 784], in float64."""
  logits = np.asarray(decode(z.reshape(-1, z.shape[-1]).astype(np.float32)), np.float64)
  logits = logits.reshape(z.shape[:2] + (-1,))
  return -(np.logaddexp(0.0, logits) - x * logits).sum(axis=-1)


def quiet_second_unit(params, mean, logvar):
  """params whose latent unit 1 has a posterior mean of variance QUIET_UNIT_VARIANCE over
  the images (mean and logvar [N, D] are theirs under params) and a constant log-variance,
  its average: active by Burda et al.'s statistic, Var_x(E_q[z]), though its KL barely
  varies from image to image."""
  params = jax.tree.map(np.array, params)
  mean_head, logvar_head = params["encoder"]["mean"], params["encoder"]["logvar"]
  scale = np.sqrt(QUIET_UNIT_VARIANCE / mean[:, 1].var())
  mean_head["kernel"][:, 1] *= scale
  mean_head["bias"][1] *= scale
  logvar_head["kernel"][:, 1] = 0.0
  logvar_head["bias"][1] = logvar[:, 1].mean()
  return jax.tree.map(jax.numpy.asarray, params)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, mnist_dir, tfds_dir):
  """A short real-MNIST run (one latent unit edited, see quiet_second_unit), its
  evaluate_run result, and what the reference needs."""
  tmp = tmp_path_factory.mktemp("eval")
  workdir = str(tmp / "run")
  config = Config(epochs=2, milestones=(2,), train_examples=6_400, data_dir=tfds_dir,
                  manual_dir=mnist_dir)
  train.train_and_evaluate(config, workdir, log=lambda line: None)
  with restore.open_run(workdir) as run:
    state = restore.restore(run, 2)
  images = train.load_data(run.config).val.images[:NUM_IMAGES]
  mean, logvar = (np.asarray(a) for a in run.model.apply(
      {"params": state.params}, images.astype(np.float32) / 255.0, None, method="encode"))
  state = state.replace(params=quiet_second_unit(state.params, mean, logvar))
  shutil.rmtree(os.path.join(workdir, checkpoints.MILESTONE_DIR, "2"))
  saver = checkpoints.RunCheckpoints(workdir)
  saver.save_milestone(2, state)
  saver.close()
  result = evaluate.evaluate_run(workdir, num_importance_samples=NUM_SAMPLES, chunk_size=10,
                                 eval_batch_size=EVAL_BATCH, num_test_examples=NUM_IMAGES,
                                 classifier_workdir=str(tmp / "no_classifier"))
  apply = lambda method: jax.jit(
      lambda a: run.model.apply({"params": state.params}, a, None, method=method))
  x = images.reshape(len(images), -1).astype(np.float64) / 255.0
  mean, logvar = (np.asarray(a, np.float64)
                  for a in apply("encode")(images.astype(np.float32) / 255.0))
  return result, x, mean, logvar, apply("decode")


def test_evaluate_reports_the_mean_over_every_test_image(evaluated):
  result, x, mean, logvar, _ = evaluated
  assert result["num_test_images"] == len(x) == NUM_IMAGES
  assert result["evaluated_with"] == software.versions()  # what computed the numbers
  # A subset's numbers have their own file, beside (never over) the whole test set's.
  with open(os.path.join(result["workdir"], f"eval_epoch_002_first{NUM_IMAGES}.json")) as f:
    assert json.load(f)["test_elbo"] == result["test_elbo"]
  assert not os.path.exists(os.path.join(result["workdir"], "eval_epoch_002.json"))
  kl = 0.5 * (np.exp(logvar) + mean ** 2 - 1.0 - logvar)  # closed form, per image and unit
  np.testing.assert_allclose(result["kl_per_dim"], kl.mean(axis=0), atol=1e-4)
  # Burda et al.'s statistic is the variance of the means; the KL's would miss unit 1.
  np.testing.assert_allclose(mean[:, 1].var(), QUIET_UNIT_VARIANCE, rtol=1e-3)
  assert kl[:, 1].var() < 1e-2 < mean.var(axis=0).min()
  assert result["active_units"] == 2


def iwae_bounds(decode, x, mean, logvar, num_samples, draws, rng):
  """Independent num_samples-sample importance bounds on log p(x): [draws, N], float64."""
  sd = np.exp(0.5 * logvar)
  bounds = []
  for _ in range(draws):
    z = mean + sd * rng.standard_normal((num_samples,) + mean.shape)
    log_w = (log_p_x_given_z(decode, z, x) + stats.norm.logpdf(z).sum(-1)
             - stats.norm.logpdf(z, mean, sd).sum(-1))
    bounds.append(special.logsumexp(log_w, axis=0) - np.log(num_samples))
  return np.array(bounds)


def elbo_draws(decode, x, mean, logvar, draws, rng):
  """Independent one-sample ELBOs with the closed-form KL, averaged over the images:
  [draws], float64."""
  z = mean + np.exp(0.5 * logvar) * rng.standard_normal((draws,) + mean.shape)
  kl = 0.5 * (np.exp(logvar) + mean ** 2 - 1.0 - logvar).sum(axis=1)
  return (log_p_x_given_z(decode, z, x) - kl).mean(axis=1)


def test_evaluate_elbo_and_log_likelihood_match_monte_carlo_in_float64(evaluated):
  result, x, mean, logvar, decode = evaluated
  rng = np.random.default_rng(0)
  # evaluate_run draws one ELBO sample and one K-sample bound per image. Each is checked
  # against the mean of many such draws, to within 4 standard deviations of one draw's
  # mean over the images, measured on the draws themselves.
  elbos = elbo_draws(decode, x, mean, logvar, 100, rng)
  assert abs(result["test_elbo"] - elbos.mean()) < 4 * elbos.std(ddof=1)
  bound_draws = iwae_bounds(decode, x, mean, logvar, NUM_SAMPLES, 16, rng).mean(axis=1)
  tolerance = 4 * bound_draws.std(ddof=1)
  assert abs(result["test_log_likelihood"] - bound_draws.mean()) < tolerance
  # The check tells K samples from fewer: the bound with K/6 lies further below.
  fewer = iwae_bounds(decode, x, mean, logvar, NUM_SAMPLES // 6, 16, rng).mean()
  assert bound_draws.mean() - fewer > tolerance
  assert result["test_elbo"] < result["test_log_likelihood"] < 0


def test_a_cvae_is_evaluated_given_each_image_its_own_label(tmp_path, mnist_dir, tfds_dir):
  """log p(x | y), y each test image's label: the same float64 check as above, with the
  label given to the encoder and the decoder; a label off by one is told apart."""
  workdir = str(tmp_path / "cvae")
  config = Config(model="cvae", epochs=1, milestones=(1,), train_examples=6_400,
                  data_dir=tfds_dir, manual_dir=mnist_dir)
  train.train_and_evaluate(config, workdir, log=lambda line: None)
  result = evaluate.evaluate_run(workdir, num_importance_samples=NUM_SAMPLES, chunk_size=10,
                                 eval_batch_size=EVAL_BATCH, num_test_examples=NUM_IMAGES,
                                 classifier_workdir=str(tmp_path / "no_classifier"))
  with restore.open_run(workdir) as run:
    state = restore.restore(run, 1)
  val = train.load_val(run.config)
  images, x = val.images[:NUM_IMAGES], val.images[:NUM_IMAGES].reshape(NUM_IMAGES, -1) / 255.0

  def reference(labels: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """ELBO draws and 64-sample bound draws (means over the images), given these labels."""
    model = lambda method, a, y: run.model.apply({"params": state.params}, a, y, method=method)
    mean, logvar = (np.asarray(a, np.float64) for a in
                    model("encode", images.astype(np.float32) / 255.0, labels))
    decode = jax.jit(lambda z: model("decode", z, np.tile(labels, len(z) // len(labels))))
    return (elbo_draws(decode, x, mean, logvar, 100, rng),
            iwae_bounds(decode, x, mean, logvar, NUM_SAMPLES, 16, rng).mean(axis=1))

  rng = np.random.default_rng(0)
  elbos, bounds = reference(val.labels[:NUM_IMAGES], rng)
  assert abs(result["test_elbo"] - elbos.mean()) < 4 * elbos.std(ddof=1)
  assert abs(result["test_log_likelihood"] - bounds.mean()) < 4 * bounds.std(ddof=1)
  assert result["test_elbo"] < result["test_log_likelihood"] < 0
  # Conditioned on the next image's label, the same check fails.
  wrong_elbos, wrong_bounds = reference(np.roll(val.labels[:NUM_IMAGES], 1), rng)
  assert abs(result["test_elbo"] - wrong_elbos.mean()) > 4 * wrong_elbos.std(ddof=1)
  assert abs(result["test_log_likelihood"] - wrong_bounds.mean()) > 4 * wrong_bounds.std(ddof=1)


def test_a_result_that_cannot_be_written_is_kept_in_the_error_line(evaluated, tmp_path):
  result = evaluated[0]
  blocked = os.path.join(result["workdir"], "eval_epoch_002_first30.json")
  os.makedirs(blocked)  # where the file should go: open() fails after the estimates
  with pytest.raises(ConfigError) as error:
    evaluate.evaluate_run(result["workdir"], num_importance_samples=2, num_test_examples=30,
                          classifier_workdir=str(tmp_path / "no_classifier"))
  message = str(error.value)
  prefix = f"{blocked} cannot be written (Is a directory); the result: "
  assert message.startswith(prefix) and "\n" not in message
  kept = json.loads(message[len(prefix):])
  assert kept["num_test_images"] == 30 and kept["test_elbo"] < 0


def test_frechet_codes_share_no_key_with_a_test_batch():
  # Batch size 1 over the whole test set gives 10,000 batches, the most there can be; each
  # batch splits its key into an ELBO key and an importance-sampling key.
  batch_keys = jax.vmap(evaluate.estimates_key)(np.arange(10_000))
  used = np.concatenate([jax.random.key_data(batch_keys)] + [
      jax.random.key_data(k) for k in jax.vmap(jax.random.split, out_axes=1)(batch_keys)])

  def used_by_a_batch(key):
    return bool(np.any(np.all(used == np.asarray(jax.random.key_data(key)), axis=-1)))

  assert not used_by_a_batch(evaluate.frechet_key())
  # The key the Fréchet codes had before: test batch 1's.
  assert used_by_a_batch(evaluate.estimates_key(1))


def test_a_classifier_of_another_dataset_stops_evaluate_before_the_estimates(
    evaluated, tmp_path, monkeypatch):
  from vae_jax import classifier

  classifier.save_classifier(classifier.new_classifier(dataset="fashion_mnist"), str(tmp_path))

  def estimates_ran(*args, **kwargs):
    raise AssertionError("the estimates ran before the classifier was checked")

  monkeypatch.setattr(evaluate, "batch_estimates", estimates_ran)
  with pytest.raises(classifier.MissingClassifierError, match="of fashion_mnist, not mnist"):
    evaluate.evaluate_run(evaluated[0]["workdir"], num_importance_samples=2,
                          num_test_examples=8, classifier_workdir=str(tmp_path))


def test_a_vae_is_evaluated_and_redrawn_without_reading_the_training_images(
    evaluated, tmp_path, monkeypatch):
  """Only an AE's prior needs them (it is fitted to their codes); a VAE's is N(0, I)."""
  from vae_jax import classifier, plot, train

  classifier.save_classifier(classifier.new_classifier(), str(tmp_path / "classifier"))

  load_split = train.load_split

  def test_images_only(dataset, split, *args, **kwargs):
    assert not split.startswith("train"), "the training images of a VAE were read"
    return load_split(dataset, split, *args, **kwargs)

  monkeypatch.setattr(train, "load_split", test_images_only)
  workdir = evaluated[0]["workdir"]
  result = evaluate.evaluate_run(workdir, num_importance_samples=2, num_test_examples=8,
                                 classifier_workdir=str(tmp_path / "classifier"))
  assert result["frechet_distance"] > 0 and result["num_test_images"] == 8
  plot.redraw(workdir, epoch=2, out=str(tmp_path / "redrawn"))
  assert (tmp_path / "redrawn" / "latent_manifold.png").stat().st_size > 0
