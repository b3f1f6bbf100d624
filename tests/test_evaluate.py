"""evaluate_run's numbers against an independent float64 computation on the same checkpoint
(a short run on the real MNIST files)."""

import json
import os

import jax
import numpy as np
import pytest
from scipy import special, stats

from vae_jax import evaluate, restore, train
from vae_jax.config import Config

NUM_IMAGES, EVAL_BATCH = 96, 40  # batches of 40, 40 and a partial 16
NUM_SAMPLES = 64


def log_p_x_given_z(decode, z, x):
  """log p(x | z) [S, N] for codes z [S, N, D] and images x [N, 784], in float64."""
  logits = np.asarray(decode(z.reshape(-1, z.shape[-1]).astype(np.float32)), np.float64)
  logits = logits.reshape(z.shape[:2] + (-1,))
  return -(np.logaddexp(0.0, logits) - x * logits).sum(axis=-1)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, mnist_dir, tfds_dir):
  """A short real-MNIST run, its evaluate_run result, and what the reference needs."""
  tmp = tmp_path_factory.mktemp("eval")
  workdir = str(tmp / "run")
  config = Config(epochs=2, milestones=(2,), train_examples=6_400, data_dir=tfds_dir,
                  manual_dir=mnist_dir)
  train.train_and_evaluate(config, workdir, log=lambda line: None)
  result = evaluate.evaluate_run(workdir, num_importance_samples=NUM_SAMPLES, chunk_size=10,
                                 eval_batch_size=EVAL_BATCH, num_test_examples=NUM_IMAGES,
                                 classifier_workdir=str(tmp / "no_classifier"))
  run = restore.open_run(workdir)
  state = restore.restore(run, 2)
  images = train.load_data(run.config).val.images[:NUM_IMAGES]
  apply = lambda method: jax.jit(
      lambda a: run.model.apply({"params": state.params}, a, None, method=method))
  x = images.reshape(len(images), -1).astype(np.float64) / 255.0
  mean, logvar = (np.asarray(a, np.float64)
                  for a in apply("encode")(images.astype(np.float32) / 255.0))
  return result, x, mean, logvar, apply("decode")


def test_evaluate_reports_the_mean_over_every_test_image(evaluated):
  result, x, mean, logvar, _ = evaluated
  assert result["num_test_images"] == len(x) == NUM_IMAGES
  # A subset's numbers have their own file, beside (never over) the whole test set's.
  with open(os.path.join(result["workdir"], f"eval_epoch_002_first{NUM_IMAGES}.json")) as f:
    assert json.load(f)["test_elbo"] == result["test_elbo"]
  assert not os.path.exists(os.path.join(result["workdir"], "eval_epoch_002.json"))
  kl = 0.5 * (np.exp(logvar) + mean ** 2 - 1.0 - logvar)  # closed form, per image and unit
  np.testing.assert_allclose(result["kl_per_dim"], kl.mean(axis=0), atol=1e-4)
  active = int((mean.var(axis=0) > 1e-2).sum())  # Burda et al.'s threshold
  assert result["active_units"] == active >= 1


def test_evaluate_elbo_and_log_likelihood_match_monte_carlo_in_float64(evaluated):
  result, x, mean, logvar, decode = evaluated
  rng = np.random.default_rng(0)
  sd = np.exp(0.5 * logvar)
  # ELBO = E_q[log p(x|z)] - KL, with 200 samples per image.
  z = mean + sd * rng.standard_normal((200,) + mean.shape)
  kl = 0.5 * (np.exp(logvar) + mean ** 2 - 1.0 - logvar).sum(axis=1)
  elbo = log_p_x_given_z(decode, z, x).mean(axis=0) - kl
  # The K-sample importance bound, averaged over 8 independent draws per image.
  bounds = []
  for _ in range(8):
    z = mean + sd * rng.standard_normal((NUM_SAMPLES,) + mean.shape)
    log_w = (log_p_x_given_z(decode, z, x) + stats.norm.logpdf(z).sum(-1)
             - stats.norm.logpdf(z, mean, sd).sum(-1))
    bounds.append(special.logsumexp(log_w, axis=0) - np.log(NUM_SAMPLES))
  log_px = np.mean(bounds, axis=0)
  # evaluate_run draws one ELBO sample and one K-sample bound per image: the Monte Carlo
  # noise of its mean over 96 images is under a nat, while the images' values spread
  # over tens of nats (so a max, or a subset, would be far off).
  assert abs(result["test_elbo"] - elbo.mean()) < 2.0
  assert abs(result["test_log_likelihood"] - log_px.mean()) < 2.0
  assert result["test_elbo"] < result["test_log_likelihood"] < 0


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
