"""The benchmark command line prints one JSON line with the fields experiments/ relies on."""

import json

import pytest

from test_errors import run


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
