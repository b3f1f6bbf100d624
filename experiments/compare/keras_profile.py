"""Where a Keras training step's time goes: milliseconds per step of each TensorFlow op.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python experiments/compare/keras_profile.py --arch=conv

The counterpart of experiments/profile_ops.py for keras_vae.py's model (Keras's default:
oneDNN, no XLA): trains one untimed epoch of `steps` batches of real MNIST images, then
traces one more with the TensorFlow profiler and prints, per op, its time per step summed
over the threads that ran it, slowest first. TensorFlow runs independent ops at the same
time on its two compute threads, so the sum can exceed the step's wall time, as in
profile_ops.py. Used for the Keras column of the session-10 table in benchmark.md.
"""

import argparse
import collections
import glob
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras_vae  # noqa: E402  (sets KERAS_BACKEND before keras is imported)
from mnist_files import DEFAULT_MANUAL_DIR, load_mnist  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

# Scheduling and bookkeeping events that enclose the ops rather than being ops.
_ENCLOSING = ("ExecutorState::Process", "EagerExecute", "EagerKernelExecute",
              "KernelAndDeviceFunc::Run", "TFE_", "EagerLocalExecute", "multi_step_on_iterator")


def op_milliseconds(xspace_path: str, steps: int) -> collections.Counter:
  """{op name: ms per step} from a profiler XSpace, summed over the compute threads."""
  space = xplane_pb2.XSpace()
  with open(xspace_path, "rb") as f:
    space.ParseFromString(f.read())
  total = collections.Counter()
  for plane in space.planes:
    for line in plane.lines:
      if not line.name.startswith("tf_Compute"):
        continue
      for event in line.events:
        name = plane.event_metadata[event.metadata_id].name
        if not name.startswith(_ENCLOSING):
          total[name.removeprefix("StatefulPartitionedCall/")] += event.duration_ps / 1e9 / steps
  return total


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--arch", choices=["mlp", "conv"], default="conv")
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--min_ms", type=float, default=0.25)
  parser.add_argument("--manual_dir", default=DEFAULT_MANUAL_DIR)
  args = parser.parse_args()

  keras.utils.set_random_seed(0)
  images, _ = load_mnist(args.manual_dir)
  x = keras_vae.training_inputs(images[:args.steps * 128], 128)
  model = keras_vae.make_vae(args.arch, latent_dim=2, seed=0, jit_compile=False)
  model.fit(x, batch_size=128, epochs=1, shuffle=True, verbose=0)  # traces the step
  with tempfile.TemporaryDirectory() as logdir:
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    model.fit(x, batch_size=128, epochs=1, shuffle=True, verbose=0)
    seconds = time.perf_counter() - start
    tf.profiler.experimental.stop()
    path = sorted(glob.glob(f"{logdir}/plugins/profile/*/*.xplane.pb"))[-1]
    total = op_milliseconds(path, args.steps)
  print(f"keras {args.arch}: {seconds / args.steps * 1000:.1f} ms per step of 128 (traced)")
  for name, ms in total.most_common():
    if ms >= args.min_ms:
      print(f"{ms:7.2f} ms  {name}")
  print(f"{sum(total.values()):7.2f} ms  in all ops, per step")


if __name__ == "__main__":
  main()
