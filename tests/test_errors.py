"""Bad input on the real command line: one line on stderr, exit status 2, nothing touched."""

import os
import subprocess
import sys

import pytest

from conftest import REPO


def run(module, *args, cwd=None):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                        env=env, cwd=cwd or REPO, timeout=300)


@pytest.mark.parametrize("args,flag", [
    (["--latent_dim=0"], "--latent_dim"),
    (["--epochs=0"], "--epochs"),
    (["--milestones=10,abc"], "--milestones"),
    (["--milestones=0,5"], "--milestones"),
    (["--model=gan"], "--model"),
    (["--arch=resnet"], "--arch"),
    (["--dataset=cifar"], "--dataset"),
    (["--batch_size=0"], "--batch_size"),
    (["--batch_size=70000"], "--batch_size"),
    (["--learning_rate=abc"], "learning_rate"),
    (["--learning_rate=-0.1"], "--learning_rate"),
    (["--manual_dir=/no/such/dir"], "--manual_dir"),
    (["--train_examples=70000"], "--train_examples"),
    (["--seed=9223372036854775808"], "--seed"),
    (["--distributed"], "--distributed"),
    (["--no_such_flag=1"], "no_such_flag"),
])
def test_bad_flag_is_one_line_exit_2_and_workdir_untouched(tmp_path, args, flag):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "keep.txt").write_text("mine")
  result = run("vae_jax.main", f"--workdir={workdir}", *args)
  assert result.returncode == 2, result.stderr
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0], result.stderr
  assert "Traceback" not in result.stderr
  assert sorted(os.listdir(workdir)) == ["keep.txt"]


def test_plot_without_checkpoints_says_so(tmp_path):
  result = run("vae_jax.plot", f"--workdir={tmp_path}")
  assert result.returncode == 2
  assert result.stderr.strip().startswith("error:") and "config.json" in result.stderr
