"""The benchmark command line prints one JSON line with the fields experiments/ relies on;
and every entry point can share one process with the others."""

import json
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
