"""Compiled computations: the train state, the train step and epoch, batched evaluation."""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vae_jax import losses, models, parallel
from vae_jax.config import Config
from vae_jax.input_pipeline import to_float

# Independent random streams, so that each is a pure function of (seed, step or epoch)
# and a resumed run draws the same numbers. All but one are folded out of the run's base
# key (state.rng); FIGURE_STREAM is folded out of PRNGKey(seed) itself
# (report.prior_samples), which differs from state.rng (PRNGKey(seed) folded with 1).
SAMPLE_STREAM, SHUFFLE_STREAM, EVAL_STREAM, FIGURE_STREAM, BINARIZE_STREAM = 0, 1, 2, 3, 4


@flax.struct.dataclass
class TrainState:
  step: jax.Array       # int32 [], optimizer steps taken
  epoch: jax.Array      # int32 [], epochs completed
  params: Any
  opt_state: Any
  rng: jax.Array        # uint32 [2], the run's base key; never advanced, only folded


def make_optimizer(config: Config) -> optax.GradientTransformation:
  return optax.adam(config.learning_rate)


def init_state(model: nn.Module, tx: optax.GradientTransformation, seed: int) -> TrainState:
  init_key, rng = jax.random.split(jax.random.PRNGKey(seed))
  params = models.init_params(model, init_key)
  zero = jnp.zeros((), jnp.int32)
  return TrainState(step=zero, epoch=zero, params=params, opt_state=tx.init(params), rng=rng)


def per_image_terms(model: nn.Module, params, images_u8: jax.Array, key: jax.Array,
                    beta: float, labels: Optional[jax.Array] = None) -> dict[str, jax.Array]:
  """loss, recon and kl per image [B] for a batch of uint8 images (and their labels [B],
  which only a conditional model reads)."""
  images = to_float(images_u8)
  logits, mean, logvar = model.apply({"params": params}, images, key, labels)
  return losses.loss_terms(logits, images, mean, logvar, beta)


def dynamic_binarize(key: jax.Array, images_u8: jax.Array) -> jax.Array:
  """A fresh Bernoulli draw per pixel with p = intensity (Burda et al. 2015): uint8 {0, 255}."""
  return jax.random.bernoulli(key, to_float(images_u8)).astype(jnp.uint8) * 255


def train_step(state: TrainState, images_u8: jax.Array, labels: Optional[jax.Array] = None, *,
               model: nn.Module, tx: optax.GradientTransformation, beta: float,
               binarize: bool = False):
  """One Adam step on the batch mean of the loss -> (state, per-batch sums of the terms).

  With binarize, the batch is binarized afresh from (seed, step): each image gets a
  new draw every epoch.
  """
  key = jax.random.fold_in(jax.random.fold_in(state.rng, SAMPLE_STREAM), state.step)
  if binarize:
    images_u8 = dynamic_binarize(
        jax.random.fold_in(jax.random.fold_in(state.rng, BINARIZE_STREAM), state.step), images_u8)

  def batch_loss(params):
    terms = per_image_terms(model, params, images_u8, key, beta, labels)
    return terms["loss"].mean(), terms

  grads, terms = jax.grad(batch_loss, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                        opt_state=opt_state)
  return state, jax.tree.map(jnp.sum, terms)


def epoch_batches(state: TrainState, num_examples: int, batch_size: int) -> jax.Array:
  """Indices [steps, batch_size] of this epoch's shuffled batches; the remainder is dropped."""
  key = jax.random.fold_in(jax.random.fold_in(state.rng, SHUFFLE_STREAM), state.epoch)
  steps = num_examples // batch_size
  return jax.random.permutation(key, num_examples)[: steps * batch_size].reshape(steps, batch_size)


def train_epoch(state: TrainState, images_u8: jax.Array, labels: Optional[jax.Array] = None, *,
                model: nn.Module, tx: optax.GradientTransformation, beta: float,
                batch_size: int, batch_sharding=None, binarize: bool = False):
  """A whole epoch as one scan over train_step -> (state, mean terms per image)."""
  batches = epoch_batches(state, images_u8.shape[0], batch_size)

  def step(state, idx):
    batch = jax.tree.map(lambda a: a[idx], (images_u8, labels))
    if batch_sharding is not None:
      batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    return train_step(state, *batch, model=model, tx=tx, beta=beta, binarize=binarize)

  state, sums = jax.lax.scan(step, state, batches)
  num_images = batches.size
  return state.replace(epoch=state.epoch + 1), jax.tree.map(lambda s: s.sum() / num_images, sums)


def map_batches(fn: Callable, data, batch_size: int, batch_sharding=None):
  """fn(batch, batch_index) -> pytree of [B, ...], applied to all of data.

  data is an array [N, ...] or a pytree of them (e.g. images and labels); each batch has
  its structure. Pads the last batch and trims the result, so every item is used once.
  """
  n = jax.tree.leaves(data)[0].shape[0]

  def split(a):
    padded = jnp.pad(a, [(0, (-n) % batch_size)] + [(0, 0)] * (a.ndim - 1))
    return padded.reshape((-1, batch_size) + a.shape[1:])

  batches = jax.tree.map(split, data)

  def body(carry, xs):
    batch, i = xs
    if batch_sharding is not None:
      batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    return carry, fn(batch, i)

  num_batches = -(-n // batch_size)
  _, out = jax.lax.scan(body, None, (batches, jnp.arange(num_batches)))
  return jax.tree.map(lambda o: o.reshape((-1,) + o.shape[2:])[:n], out)


def evaluate(state: TrainState, images_u8: jax.Array, labels: Optional[jax.Array] = None, *,
             model: nn.Module, beta: float, batch_size: int,
             batch_sharding=None) -> dict[str, jax.Array]:
  """Mean terms per image over a whole split; the sample key is fixed across epochs."""
  key = jax.random.fold_in(state.rng, EVAL_STREAM)

  def terms(batch, i):
    images, batch_labels = batch
    return per_image_terms(model, state.params, images, jax.random.fold_in(key, i), beta,
                           batch_labels)

  return jax.tree.map(jnp.mean, map_batches(terms, (images_u8, labels), batch_size,
                                            batch_sharding))


def epoch_compiler_options() -> Optional[dict[str, Any]]:
  """XLA options for a scanned training epoch (the VAE's here, and the classifier's).

  On CPU: copy insertion with the region-based live-range analysis (which XLA:GPU offers
  too) finds that about a third of the copies XLA:CPU puts in the loop body are not
  needed, e.g. of weights updated in place; the mlp trains about 4% faster
  (experiments/benchmark.md). The arithmetic is unchanged."""
  if jax.default_backend() != "cpu":
    return None
  return {"xla_cpu_copy_insertion_use_region_analysis": True}


class Compiled(NamedTuple):
  train_epoch: Callable   # (state, images_u8, labels) -> (state, terms); donates state
  evaluate: Callable      # (state, images_u8, labels) -> terms


def compile_fns(model: nn.Module, tx: optax.GradientTransformation, config: Config,
                mesh=None) -> Compiled:
  sharding = None if mesh is None else parallel.batch_sharded(mesh)
  common = dict(model=model, beta=config.beta, batch_size=config.batch_size,
                batch_sharding=sharding)
  return Compiled(
      train_epoch=jax.jit(functools.partial(train_epoch, tx=tx, binarize=config.binarize == "dynamic",
                                            **common), donate_argnums=0,
                          compiler_options=epoch_compiler_options()),
      evaluate=jax.jit(functools.partial(evaluate, **common)),
  )
