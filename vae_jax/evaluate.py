"""Entry point that evaluates a checkpoint on the test set: ELBO, importance-sampled log p(x), KL per dimension."""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Optional

from absl import app, flags

from vae_jax import cli, software
from vae_jax.config import ConfigError

flags.DEFINE_integer("num_importance_samples", 5000, "K of the IWAE bound on log p(x).")
flags.DEFINE_integer("chunk_size", 100, "Importance samples decoded at once (memory, not result).")
flags.DEFINE_integer("eval_batch_size", 100, "Test images per compiled call.")
flags.DEFINE_integer("num_test_examples", None, "Evaluate the first N test images (default all).")
cli.key_flags("workdir", "epoch", "classifier_workdir", "data_dir", "manual_dir")
FLAGS = flags.FLAGS

# Fixed keys, so that two checkpoints see the same noise: test batch i's estimates draw
# from fold_in(PRNGKey(EVAL_SEED), i), and the Fréchet samples' prior codes from a root
# key of their own, which no test batch uses.
EVAL_SEED = 0
FRECHET_SEED = 1
NUM_FRECHET_SAMPLES = 10_000


def estimates_key(batch_index: int):
  """The key of test batch batch_index's ELBO and importance samples."""
  import jax

  return jax.random.fold_in(jax.random.PRNGKey(EVAL_SEED), batch_index)


def frechet_key():
  """The key of the Fréchet samples' prior codes: no test batch's key."""
  import jax

  return jax.random.PRNGKey(FRECHET_SEED)


def batch_estimates(params, images_u8, labels, key, *, model, num_samples: int, chunk_size: int):
  """Per-image estimates [B] (and KL per dimension [B, D], means [B, D]) for one batch.

  For a conditional model every term is conditioned on the true label: log p(x | y).
  """
  import jax

  from vae_jax import likelihood, losses
  from vae_jax.input_pipeline import to_float

  x = to_float(images_u8)
  def encode(x):
    return model.apply({"params": params}, x, labels, method="encode")

  def decode(z):
    return model.apply({"params": params}, z, labels, method="decode")

  mean, logvar = encode(x)
  if not model.variational:
    return {"recon": losses.bernoulli_nll(decode(mean), x), "means": mean}

  def log_likelihood(x, z):
    return -losses.bernoulli_nll(decode(z), x)

  elbo_key, iwae_key = jax.random.split(key)
  return {
      "elbo": likelihood.elbo_analytic_kl(elbo_key, x, encode, log_likelihood),
      "log_px": likelihood.iwae_bound(iwae_key, x, encode, log_likelihood, num_samples, chunk_size),
      "kl_per_dim": likelihood.kl_per_dimension(mean, logvar),
      "means": mean,
  }


def sample_quality(run, state, val, clf, classifier_workdir: str,
                   num_samples: int = NUM_FRECHET_SAMPLES) -> dict:
  """Fréchet distance between classifier features of prior samples and of the test images;
  for a conditional model also the classifier's accuracy on the labels the samples asked for.

  Samples are Bernoulli means decoded from the prior (an AE: a Gaussian fitted to its
  training codes), compared with the grey test images; a conditional model's samples ask
  for each label equally often. The features are those of the in-project classifier, so
  the number is not comparable to Inception-based FIDs. val is the run's validation split
  (load_val); clf is the classifier loaded from classifier_workdir, or None where none was
  trained there.
  """
  import jax
  import numpy as np

  from vae_jax import classifier as classifier_lib, frechet, input_pipeline, models, report, train

  if clf is None:
    return {"frechet_distance": None, "frechet_note": (
        f"no classifier in {classifier_workdir}; train one with: "
        f"{classifier_lib.train_command(classifier_workdir, run.config.dataset)}")}
  prior = report.model_prior(state, run.model, run.config,
                             train.load_prior_fit(run.config, run.model), run.mesh)
  z = report.draw_codes(prior, frechet_key(), num_samples)
  asked = np.arange(num_samples) % models.NUM_CLASSES
  samples = report.decode_probs(state.params, run.model, z, asked)[..., None]
  # val is the grey test split unless training binarized it; only then load it again.
  test = val.images if run.config.binarize == "none" else input_pipeline.load_split(
      run.config.dataset, "test", run.config.data_dir, run.config.manual_dir).images
  result = {"frechet_distance": round(frechet.frechet_distance(
                classifier_lib.features(clf, samples), classifier_lib.features(clf, test)), 3),
            "frechet_samples": num_samples, "classifier": classifier_workdir}
  if run.model.conditional:
    recognised = classifier_lib.predict(clf, samples) == asked
    result["label_accuracy"] = round(float(recognised.mean()), 4)
    result["label_accuracy_per_class"] = [
        round(float(recognised[asked == c].mean()), 4) for c in range(models.NUM_CLASSES)]
  return result


def split_estimates(params, model, images_u8, labels, num_samples: int, chunk_size: int,
                    batch_size: int) -> dict:
  """batch_estimates over a whole split, batch_size images at a time -> per-image arrays."""
  import jax
  import numpy as np

  estimate = jax.jit(functools.partial(batch_estimates, model=model, num_samples=num_samples,
                                       chunk_size=chunk_size))
  parts = [estimate(params, images_u8[i:i + batch_size], labels[i:i + batch_size],
                    estimates_key(i // batch_size))
           for i in range(0, len(images_u8), batch_size)]
  return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def likelihood_summary(estimates: dict, model, config, num_samples: int) -> dict:
  """The test split's means of split_estimates, and what they are of."""
  from vae_jax import likelihood

  if model.variational:
    summary = {
        "num_importance_samples": num_samples,
        "test_elbo": float(estimates["elbo"].mean()),
        "test_log_likelihood": float(estimates["log_px"].mean()),
        "kl_per_dim": [round(float(v), 4) for v in estimates["kl_per_dim"].mean(axis=0)],
        "active_units": int(likelihood.active_units(estimates["means"])),
    }
  else:
    summary = {"test_recon": float(estimates["recon"].mean())}
  if config.binarize == "none":
    summary["note"] = ("pixels in [0, 1], not binarized: Bernoulli cross-entropies, not "
                       "log-likelihoods comparable with the literature (use --binarize=dynamic)")
  if model.conditional:
    summary["conditioning"] = ("the ELBO and log-likelihood are of p(x | label): the true "
                               "label is given, as in training")
  return summary


def evaluate_run(workdir: str, epoch: Optional[int] = None, num_importance_samples: int = 5000,
                 chunk_size: int = 100, eval_batch_size: int = 100,
                 num_test_examples: Optional[int] = None, data_dir: Optional[str] = None,
                 manual_dir: Optional[str] = None, classifier_workdir: Optional[str] = None) -> dict:
  """Restores a milestone and evaluates it on the test split (binarized as in training)."""
  from vae_jax import classifier as classifier_lib, restore, train, workdir as workdir_lib

  if min(num_importance_samples, chunk_size, eval_batch_size) < 1:
    raise ConfigError("--num_importance_samples, --chunk_size and --eval_batch_size must be >= 1")
  if num_test_examples is not None and num_test_examples < 1:
    raise ConfigError(f"--num_test_examples={num_test_examples} must be >= 1 (or left out: all)")
  # The checkpoints are closed once the state is read, or on an error before.
  with restore.open_run(workdir, data_dir, manual_dir) as run:
    epoch = restore.milestone_epochs(run, epoch)[-1]
    workdir_lib.check_writable(workdir, "workdir")  # before the long estimates, not after
    # Loaded first: a classifier of another dataset, or a damaged one, is an error before
    # the long estimates rather than after them. None where none was trained.
    classifier_workdir = classifier_workdir or cli.default_classifier_workdir(run.config.dataset)
    clf = (classifier_lib.load_classifier(classifier_workdir, run.config.dataset)
           if classifier_lib.has_classifier(classifier_workdir) else None)
    state = restore.restore(run, epoch)
  val = train.load_val(run.config)
  images = val.images[:num_test_examples]
  start = time.time()
  estimates = split_estimates(state.params, run.model, images, val.labels[:num_test_examples],
                              num_importance_samples, chunk_size, eval_batch_size)
  result = {"workdir": workdir, "epoch": epoch, "model": run.config.model,
            "arch": run.config.arch, "latent_dim": run.config.latent_dim,
            "dataset": run.config.dataset, "binarize": run.config.binarize,
            "num_test_images": len(images)}
  result.update(likelihood_summary(estimates, run.model, run.config, num_importance_samples))
  result.update(sample_quality(run, state, val, clf, classifier_workdir))
  result["seconds"] = round(time.time() - start, 1)
  result["evaluated_with"] = software.versions()
  # A subset's numbers get their own file, so they never replace the whole test set's.
  subset = f"_first{len(images)}" if len(images) < len(val.images) else ""
  path = os.path.join(workdir, f"eval_epoch_{epoch:03d}{subset}.json")
  try:
    with open(path, "w") as f:
      json.dump(result, f, indent=2)
      f.write("\n")
  except OSError as e:  # the numbers took long to compute: the error line keeps them
    raise ConfigError(f"{path} cannot be written ({e.strerror or e}); the result: "
                      f"{json.dumps(result)}") from None
  return result


def evaluate_from_flags() -> None:
  if not FLAGS.workdir:
    raise ConfigError("--workdir is required: the run folder to evaluate")
  cli.refuse_unused(("out",), "vae_jax.evaluate")
  from vae_jax import input_pipeline

  cli.run_reporting(
      lambda: print(json.dumps(evaluate_run(
          FLAGS.workdir, FLAGS.epoch, FLAGS.num_importance_samples, FLAGS.chunk_size,
          FLAGS.eval_batch_size, FLAGS.num_test_examples, FLAGS.data_dir, FLAGS.manual_dir,
          FLAGS.classifier_workdir))),
      (ConfigError, input_pipeline.DataError))


def main(argv: list[str]) -> None:
  cli.main_with(argv, evaluate_from_flags)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
