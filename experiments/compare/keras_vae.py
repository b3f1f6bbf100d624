"""Keras 3 MNIST VAE training benchmark matching the vae_jax networks.

The backend is TensorFlow unless KERAS_BACKEND=jax is set (on a GPU machine without
TensorFlow, say); each backend has its own custom train step.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
from keras import layers, ops  # noqa: E402
import numpy as np  # noqa: E402

BACKEND = keras.backend.backend()
if BACKEND == "tensorflow":
  import tensorflow as tf
elif BACKEND == "jax":
  import jax
  import jax.numpy as jnp
else:
  sys.exit(f"KERAS_BACKEND={BACKEND}: only tensorflow and jax have a train step here")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist_files import load_mnist, run_parser  # noqa: E402


def parse_args():
  p = run_parser(__doc__)
  # Default false: on CPU the conv model ran faster without XLA (see README).
  p.add_argument("--jit_compile", choices=["true", "false"], default="false",
                 help="XLA-compile the train step (it is a tf.function either way)")
  p.add_argument("--steps_per_execution", type=int, default=1,
                 help="train steps per compiled call (Keras's compile() option)")
  return p.parse_args()


class Sampling(layers.Layer):
  """z = mean + exp(0.5 * logvar) * eps."""

  def __init__(self, seed, **kwargs):
    super().__init__(**kwargs)
    self.seed_generator = keras.random.SeedGenerator(seed)

  def call(self, inputs):
    mean, logvar = inputs
    eps = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
    return mean + ops.exp(0.5 * logvar) * eps


def make_encoder(arch, latent_dim, seed):
  x = inputs = keras.Input(shape=(28, 28, 1))
  if arch == "mlp":
    x = layers.Flatten()(x)
    x = layers.Dense(512, activation="relu")(x)
    x = layers.Dense(256, activation="relu")(x)
  else:
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(16, activation="relu")(x)
  mean = layers.Dense(latent_dim, name="mean")(x)
  logvar = layers.Dense(latent_dim, name="logvar")(x)
  z = Sampling(seed)([mean, logvar])
  return keras.Model(inputs, [mean, logvar, z], name="encoder")


def make_decoder(arch, latent_dim):
  x = inputs = keras.Input(shape=(latent_dim,))
  if arch == "mlp":
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dense(512, activation="relu")(x)
    x = layers.Dense(784)(x)
    x = layers.Reshape((28, 28, 1))(x)
  else:
    x = layers.Dense(7 * 7 * 64, activation="relu")(x)
    x = layers.Reshape((7, 7, 64))(x)
    x = layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2DTranspose(1, 3, padding="same")(x)
  return keras.Model(inputs, x, name="decoder")  # logits


class VAE(keras.Model):

  def __init__(self, encoder, decoder, **kwargs):
    super().__init__(**kwargs)
    self.encoder = encoder
    self.decoder = decoder
    self.loss_tracker = keras.metrics.Mean(name="loss")

  @property
  def metrics(self):
    return [self.loss_tracker]  # reset by fit() at each epoch start

  def train_step(self, data):
    with tf.GradientTape() as tape:
      mean, logvar, z = self.encoder(data, training=True)
      logits = self.decoder(z, training=True)
      bce = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=data, logits=logits), axis=(1, 2, 3))
      kl = 0.5 * tf.reduce_sum(tf.exp(logvar) + tf.square(mean) - 1.0 - logvar, axis=1)
      loss = tf.reduce_mean(bce + kl)
    grads = tape.gradient(loss, self.trainable_weights)
    self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
    self.loss_tracker.update_state(loss)
    return {"loss": self.loss_tracker.result()}


class JaxVAE(VAE):
  """The same VAE for Keras's JAX backend, whose train step is a pure function of the
  model's variables (as in Keras's guide to customizing fit() with JAX)."""

  def call(self, x, training=False):
    mean, logvar, z = self.encoder(x, training=training)
    return mean, logvar, self.decoder(z, training=training)

  def loss_and_updates(self, trainable, non_trainable, x):
    (mean, logvar, logits), non_trainable = self.stateless_call(
        trainable, non_trainable, x, training=True)  # non_trainable: the sampler's seed
    bce = jnp.sum(jnp.maximum(logits, 0) - logits * x + jnp.log1p(jnp.exp(-jnp.abs(logits))),
                  axis=(1, 2, 3))
    kl = 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar, axis=1)
    return jnp.mean(bce + kl), non_trainable

  def train_step(self, state, data):
    trainable, non_trainable, optimizer_vars, metric_vars = state
    x = keras.utils.unpack_x_y_sample_weight(data)[0]
    (loss, non_trainable), grads = jax.value_and_grad(self.loss_and_updates, has_aux=True)(
        trainable, non_trainable, x)
    trainable, optimizer_vars = self.optimizer.stateless_apply(optimizer_vars, grads, trainable)
    metric_vars = self.loss_tracker.stateless_update_state(metric_vars, loss)
    logs = {"loss": self.loss_tracker.stateless_result(metric_vars)}
    return logs, (trainable, non_trainable, optimizer_vars, metric_vars)


class EpochTimer(keras.callbacks.Callback):

  def __init__(self):
    super().__init__()
    self.seconds, self.losses = [], []

  def on_epoch_begin(self, epoch, logs=None):
    self.start = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    self.seconds.append(time.perf_counter() - self.start)
    self.losses.append(float(logs["loss"]))
    print(f"epoch {epoch + 1}: loss {self.losses[-1]:.2f} ({self.seconds[-1]:.2f}s)", file=sys.stderr)


def training_inputs(images, batch_size):
  """uint8 images [N, 28, 28] -> float32 [N', 28, 28, 1] in [0, 1], whole batches only
  (fit() keeps a final partial batch, so it is dropped up front)."""
  whole = len(images) // batch_size * batch_size
  return (images[:whole].astype(np.float32) / 255.0)[..., None]


def make_vae(arch, latent_dim, seed, jit_compile, steps_per_execution=1):
  """The VAE, compiled with Adam (learning rate 1e-3)."""
  vae_class = JaxVAE if BACKEND == "jax" else VAE
  model = vae_class(make_encoder(arch, latent_dim, seed), make_decoder(arch, latent_dim))
  model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), jit_compile=jit_compile,
                steps_per_execution=steps_per_execution)
  return model


def device():
  if BACKEND == "jax":
    return jax.devices()[0].device_kind
  return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def backend_version():
  return (jax if BACKEND == "jax" else tf).__version__


def main():
  args = parse_args()
  keras.utils.set_random_seed(args.seed)
  images, _ = load_mnist(args.manual_dir)
  x = training_inputs(images[:args.train_examples], args.batch_size)
  steps = len(x) // args.batch_size
  model = make_vae(args.arch, args.latent_dim, args.seed, args.jit_compile == "true",
                   args.steps_per_execution)
  timer = EpochTimer()
  model.fit(x, batch_size=args.batch_size, epochs=args.epochs, shuffle=True, verbose=0, callbacks=[timer])
  timed = timer.seconds[1:] or timer.seconds  # epoch 1 is warm-up (tracing + XLA compile)
  print(json.dumps({
      "framework": "keras", "arch": args.arch, "batch_size": args.batch_size,
      "latent_dim": args.latent_dim,
      "images_per_sec": steps * args.batch_size * len(timed) / sum(timed),
      "epoch_seconds": timer.seconds, "epoch_losses": timer.losses, "final_loss": timer.losses[-1],
      "backend": f"{BACKEND} {device()}, jit_compile={model.jit_compile}",
      "steps_per_execution": args.steps_per_execution,
      "versions": {"keras": keras.__version__, BACKEND: backend_version(),
                   "numpy": np.__version__, "python": platform.python_version()},
  }))


if __name__ == "__main__":
  main()
