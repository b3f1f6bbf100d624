"""Data parallelism on 4 (forced) CPU devices: same losses as 1 device, clear errors."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO
from vae_jax import parallel, report, restore, train, workdir as workdir_lib
from vae_jax.config import ConfigError

FOUR_DEVICES = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
                    XLA_FLAGS="--xla_force_host_platform_device_count=4")

COMPARE = r"""
import json, math, re, sys, dataclasses, tempfile
import jax
from vae_jax import train, workdir
from vae_jax.config import Config
assert len(jax.devices()) == 4, jax.devices()
base = Config(epochs=2, milestones=(2,), train_examples=1024, data_dir=sys.argv[1],
              manual_dir=sys.argv[2], arch=sys.argv[3])
rows = {}
for n in (1, 4):
  with tempfile.TemporaryDirectory() as w:
    train.train_and_evaluate(dataclasses.replace(base, num_devices=n), w, log=lambda _: None)
    rows[n] = workdir.read_metrics(w)
# The compiled 4-device epoch: each device takes a quarter of each batch of 128, and
# the gradients are summed across devices.
from vae_jax import benchmark
_, fns, state, data = benchmark.epoch_inputs(dataclasses.replace(base, num_devices=4))
hlo = fns.train_epoch.lower(state, *data).compile().as_text()
rows["per_device_batch"] = [b for b in (32, 128) if f"f32[{b},28,28,1]" in hlo]
# Elements the all-reduces return: the gradients (in whatever layout) plus a few metric sums.
results = [line.split(" all-reduce(")[0] for line in hlo.splitlines() if " all-reduce(" in line]
rows["reduced_elements"] = sum(math.prod(int(d) for d in dims.split(",") if d)
                               for r in results for dims in re.findall(r"f32\[([\d,]*)\]", r))
rows["num_params"] = sum(p.size for p in jax.tree.leaves(state.params))
print(json.dumps(rows))
"""


def test_four_devices_give_the_losses_of_one(tfds_dir, mnist_dir):
  for arch in ("mlp", "conv"):
    result = subprocess.run([sys.executable, "-c", COMPARE, tfds_dir, mnist_dir, arch],
                            env=FOUR_DEVICES, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(rows["1"]) == len(rows["4"]) == 2
    # Equal losses alone would not show a batch replicated on every device.
    assert rows["per_device_batch"] == [32], (arch, rows)
    assert rows["num_params"] <= rows["reduced_elements"] < rows["num_params"] + 10, (arch, rows)
    for one, four in zip(rows["1"], rows["4"]):
      for key in ("train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl"):
        # Measured: at most 1e-7 (mlp) and 9e-6 (conv) relative, from the summation
        # order of the gradient's all-reduce; a lost or doubled shard is off by far more.
        assert abs(one[key] - four[key]) <= 1e-4 * abs(one[key]) + 1e-5, (arch, key, one, four)


def test_batch_size_not_divisible_by_the_devices_is_a_clear_error(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "vae_jax.main", f"--workdir={tmp_path / 'run'}", "--batch_size=126"],
      env=FOUR_DEVICES, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "--batch_size=126 is not divisible by the 4 devices" in errors[0]
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "run").exists()


def test_more_devices_than_are_visible_is_a_clear_error():
  visible = len(jax.devices())
  with pytest.raises(ConfigError, match=rf"^--num_devices={visible + 1} but only {visible} "
                     rf"{jax.default_backend()} device\(s\) are visible$"):
    parallel.make_mesh(visible + 1)
  assert parallel.make_mesh(visible).size == visible


@pytest.mark.parametrize("trained_on,visible,batch_size,expected", [
    (4, 4, 128, 4), (None, 4, 128, 4), (4, 8, 128, 4),  # as trained
    (4, 1, 128, 1), (None, 1, 128, 1), (8, 3, 128, 2), (None, 3, 126, 3), (8, 6, 100, 5),
])
def test_a_run_is_redrawn_on_the_devices_at_hand(trained_on, visible, batch_size, expected):
  assert parallel.restored_device_count(trained_on, visible, batch_size) == expected


TRAIN_ON_FOUR = r"""
import sys
from vae_jax import train
from vae_jax.config import Config
train.train_and_evaluate(Config(epochs=1, milestones=(1,), train_examples=256, batch_size=32,
                                num_devices=4, data_dir=sys.argv[1], manual_dir=sys.argv[2]),
                         sys.argv[3], log=lambda _: None)
"""


def test_a_run_trained_on_four_devices_redraws_on_the_devices_at_hand(tfds_dir, mnist_dir,
                                                                     tmp_path):
  workdir = str(tmp_path / "run")
  result = subprocess.run([sys.executable, "-c", TRAIN_ON_FOUR, tfds_dir, mnist_dir, workdir],
                          env=FOUR_DEVICES, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  run = restore.open_run(workdir)  # this process sees its own devices: on a CPU, one
  visible = len(jax.devices())
  assert run.config.num_devices == 4
  assert run.mesh.size == parallel.restored_device_count(4, visible, 32)
  state = restore.restore(run, 1)
  assert int(state.step) == 256 // 32
  out = tmp_path / "redrawn"
  report.write_milestone(state, run.model, run.config, train.load_data(run.config),
                         workdir_lib.read_metrics(workdir), workdir, 1, run.mesh, out=str(out))
  assert (out / "samples.png").stat().st_size > 0
  # The same posterior means as the four devices computed at the milestone.
  trained = np.load(os.path.join(workdir_lib.plots_dir(workdir, 1), "latents.npz"))
  redrawn = np.load(out / "latents.npz")
  np.testing.assert_array_equal(redrawn["labels"], trained["labels"])
  np.testing.assert_allclose(redrawn["means"], trained["means"], rtol=1e-5, atol=1e-6)
  run.manager.close()
