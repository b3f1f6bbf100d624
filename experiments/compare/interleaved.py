"""vae_jax, Keras 3 and PyTorch trained in one process, epoch by epoch in turn.

    .venv/bin/python experiments/compare/interleaved.py --arch=conv --rounds=5
    .venv/bin/python experiments/compare/interleaved.py --arch=mlp --rounds=10 \
        --opponents=keras,pytorch --jit_compile=true
    KERAS_BACKEND=jax .venv/bin/python experiments/compare/interleaved.py --arch=mlp \
        --jit_compile=true      # Keras on its JAX backend rather than TensorFlow

On a shared VM the speed of the same program varies by 10-20% from minute to minute
(and single epochs sometimes take twice as long), so frameworks timed one after the
other, as in benchmark.sh, can meet different machines. Here each round times one whole
epoch of each (60,000 images, batch 128, the networks of keras_vae.py, torch_vae.py and
vae_jax), the order rotating between rounds, after one untimed epoch each. All see the
same disturbances, so their ratios are steadier than their speeds. Prints one JSON line:
each framework's epoch times, and the ratio of JAX's images/s to each opponent's by the
median and by the best epoch.
"""

import argparse
import json
import os
import statistics
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(_HERE)))

import keras_vae  # noqa: E402  (KERAS_BACKEND is tensorflow unless set)
from mnist_files import DEFAULT_MANUAL_DIR  # noqa: E402


def parse_args():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--arch", choices=["mlp", "conv"], default="conv")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--train_examples", type=int, default=60000)
  p.add_argument("--opponents", default="keras", help="comma-separated: keras, pytorch")
  p.add_argument("--jit_compile", choices=["true", "false"], default="false",
                 help="Keras's jit_compile")
  p.add_argument("--manual_dir", default=DEFAULT_MANUAL_DIR)
  return p.parse_args()


def jax_epoch(arch: str, images: int):
  """vae_jax's compiled epoch (vae_jax.benchmark.CompiledEpoch): each call trains one
  epoch of `images` and returns its seconds; warmed up."""
  from vae_jax.benchmark import CompiledEpoch, timing_config

  return CompiledEpoch(timing_config(arch, train_examples=images))  # latent_dim 2, the default


def keras_epoch(arch: str, images: int, manual_dir: str, jit_compile: bool):
  """A function that trains one Keras epoch (model.fit, epochs=1) of the first `images`
  and returns its seconds, as keras_vae.py's timer measures it (inside fit, after its
  set-up); traced and warmed up."""
  import keras

  keras.utils.set_random_seed(0)
  x = keras_vae.training_inputs(keras_vae.load_mnist(manual_dir)[0][:images], 128)
  model = keras_vae.make_vae(arch, 2, 0, jit_compile)

  def run() -> float:
    timer = keras_vae.EpochTimer()
    model.fit(x, batch_size=128, epochs=1, shuffle=True, verbose=0, callbacks=[timer])
    return timer.seconds[0]

  run()
  return run


def torch_epoch(arch: str, images: int, manual_dir: str):
  """A function that trains one PyTorch epoch (torch_vae.train_epoch) of the first
  `images` and returns its seconds; warmed up."""
  import torch

  import torch_vae

  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  data = torch_vae.training_inputs(torch_vae.load_mnist(manual_dir)[0][:images])
  model, opt = torch_vae.make_vae(arch, 2)
  run = lambda: torch_vae.train_epoch(model, opt, data, 128)[0]
  run()
  return run


def main():
  args = parse_args()
  opponents = args.opponents.split(",")
  if not set(opponents) <= {"keras", "pytorch"}:
    sys.exit(f"--opponents: keras and/or pytorch, got {args.opponents!r}")
  images = min(args.train_examples, 60000) // 128 * 128  # whole batches, as every framework trains
  runs = {"jax": jax_epoch(args.arch, images)}
  if "keras" in opponents:
    runs["keras"] = keras_epoch(args.arch, images, args.manual_dir, args.jit_compile == "true")
  if "pytorch" in opponents:
    runs["pytorch"] = torch_epoch(args.arch, images, args.manual_dir)
  names = list(runs)
  seconds = {name: [] for name in names}
  for round_ in range(args.rounds):
    shift = round_ % len(names)
    for name in names[shift:] + names[:shift]:
      seconds[name].append(runs[name]())
      print(f"round {round_ + 1} {name}: {images / seconds[name][-1]:,.0f} images/s",
            file=sys.stderr)
  result = {"arch": args.arch, "images_per_epoch": images, "keras_jit_compile": args.jit_compile,
            "keras_backend": keras_vae.BACKEND}
  result.update({f"{name}_epoch_seconds": [round(s, 3) for s in seconds[name]] for name in names})
  for name in opponents:
    result[f"jax_over_{name}_median"] = round(
        statistics.median(seconds[name]) / statistics.median(seconds["jax"]), 3)
    result[f"jax_over_{name}_best"] = round(min(seconds[name]) / min(seconds["jax"]), 3)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
