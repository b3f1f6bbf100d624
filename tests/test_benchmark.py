"""The benchmark command line prints one JSON line with the fields experiments/ relies on;
and every entry point can share one process with the others."""

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import REPO
from test_errors import run


def run_python(code):
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"), cwd=REPO,
                        timeout=300)


@pytest.mark.parametrize("model", ["vae", "cvae"])
def test_benchmark_prints_one_json_line(model):
  result = run("vae_jax.benchmark", f"--model={model}", "--train_examples=512", "--epochs=2")
  assert result.returncode == 0, result.stderr
  line = json.loads(result.stdout.strip().splitlines()[-1])
  assert (line["model"], line["arch"], line["batch_size"]) == (model, "mlp", 128)
  assert line["timed_images"] == 2 * 512 and len(line["epoch_seconds"]) == 2
  assert line["images_per_sec"] == pytest.approx(1024 / sum(line["epoch_seconds"]), rel=0.05)  # epoch_seconds are rounded to ms
  assert line["compile_seconds"] > 0 and line["backend"] == "cpu" and line["devices"] >= 1
  assert {"jax", "jaxlib", "flax", "optax"} <= set(line["versions"])


def test_benchmark_times_only_the_images_it_trains_on():
  # 200 images make one step of 128; the other 72 are never trained on.
  result = run("vae_jax.benchmark", "--train_examples=200", "--epochs=1")
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout.strip().splitlines()[-1])["timed_images"] == 128


def test_benchmark_refuses_bad_settings_in_one_line():
  result = run("vae_jax.benchmark", "--batch_size=0")
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
  assert result.stderr.startswith("error: --batch_size=0")


def test_every_entry_point_imports_into_one_process():
  """Entry points share flag names (--out, --model, --epochs, ...); absl refuses a name
  defined twice, so a process (a test run, a notebook) must be able to hold them all."""
  modules = ["main", "plot", "evaluate", "generate", "classifier", "benchmark"]
  for order in (modules, modules[::-1]):
    code = "; ".join(f"import vae_jax.{m}" for m in order)
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]


def test_benchmark_defaults_apply_whichever_definition_is_live():
  code = ("import vae_jax.main, vae_jax.benchmark as b; from vae_jax import cli; "
          "cli.parse_flags(['prog', '--arch=conv']); "
          "print(b.flag_value('train_examples'), b.flag_value('epochs'), b.flag_value('arch'))")
  result = run_python(code)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split() == ["60000", "3", "conv"]  # not main's None and 150


@pytest.mark.parametrize("transposed", [False, True])
def test_kernel_timing_script_times_every_form_of_a_layer(transposed):
  """experiments/xla_cpu_kernels.py (a table in experiments/benchmark.md) still runs."""
  sys.path.insert(0, os.path.join(REPO, "experiments"))
  from xla_cpu_kernels import layer_timings
  rows = layer_timings(batch=2, size=8, cin=3, cout=4, stride=2, transposed=transposed, repeats=2)
  assert [what.split(" [")[0] for what, _, _ in rows] == [
      "native forward", "native input gradient", "native weight gradient",
      "product", "product", "product"]
  assert all(ms > 0 and gflops > 0 for _, ms, gflops in rows)


def test_backward_products_native_input_gradient_is_the_transposed_convolutions():
  """experiments/backward_products.py times the input gradient of ConvTranspose 32 as one
  strided convolution; it must be the gradient jax.vjp gives (ConvTranspose 32's shapes)."""
  sys.path.insert(0, os.path.join(REPO, "experiments"))
  from backward_products import check_native_input_gradient
  assert check_native_input_gradient() < 1e-4


def test_benchmark_summary_ratios_use_timed_epochs_only():
  """experiments/benchmark_summary.py: Keras and PyTorch list an untimed first epoch."""
  sys.path.insert(0, os.path.join(REPO, "experiments"))
  from benchmark_summary import speeds
  lines = [  # 2,000 images an epoch in every run
      {"framework": "jax", "arch": "mlp", "images_per_sec": 800.0, "epoch_seconds": [2.0, 3.0]},
      {"framework": "jax", "arch": "mlp", "images_per_sec": 2000.0, "epoch_seconds": [1.0, 1.0]},
      {"framework": "keras", "backend": "tensorflow cpu, jit_compile=True", "arch": "mlp",
       "images_per_sec": 500.0, "epoch_seconds": [60.0, 4.0, 4.0]},
      {"framework": "pytorch", "arch": "mlp", "images_per_sec": 200.0,
       "epoch_seconds": [1.0, 5.0, 15.0]},
      {"framework": "keras", "backend": "jax NVIDIA H100 80GB HBM3, jit_compile=True",
       "arch": "mlp", "images_per_sec": 1000.0, "epoch_seconds": [9.0, 2.0, 2.0]},
      {"framework": "pytorch", "compiled": True, "arch": "mlp", "images_per_sec": 250.0,
       "epoch_seconds": [30.0, 8.0, 8.0]},
  ]
  found = speeds(lines)
  assert found[("mlp", "jax")] == pytest.approx((2, 1400.0, 2000.0))
  assert found[("mlp", "keras+xla")] == pytest.approx((1, 500.0, 500.0))
  assert found[("mlp", "pytorch")] == pytest.approx((1, 200.0, 400.0))  # not the untimed 1 s
  assert found[("mlp", "keras/jax")] == pytest.approx((1, 1000.0, 1000.0))
  assert found[("mlp", "pytorch+compile")] == pytest.approx((1, 250.0, 250.0))


def test_keras_script_trains_on_the_jax_backend(tmp_path, mnist_dir):
  """experiments/compare/keras_vae.py with KERAS_BACKEND=jax (its GPU opponent in
  experiments/benchmark.md): its JAX train step lowers the loss."""
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "experiments", "compare", "keras_vae.py"),
       "--epochs=3", "--train_examples=1024", "--jit_compile=true", "--steps_per_execution=2",
       f"--manual_dir={mnist_dir}"],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu"))
  assert result.returncode == 0, result.stderr[-2000:]
  line = json.loads(result.stdout.strip().splitlines()[-1])
  assert line["backend"] == "jax cpu, jit_compile=True" and "tensorflow" not in line["versions"]
  losses = line["epoch_losses"]
  assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0] - 20
