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
    (["--epoch=3"], "did you mean --epochs?"),
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


def test_plot_with_a_bad_workdir_creates_no_out_folder(tmp_path):
  out = tmp_path / "figures"
  line = one_error_line(run("vae_jax.plot", f"--workdir={tmp_path / 'missing'}", f"--out={out}"))
  assert "missing" in line
  assert not out.exists()


def test_benchmark_refuses_the_run_folder_flags(tmp_path):
  # It times random images and writes nothing; a --workdir would be silently ignored.
  line = one_error_line(run("vae_jax.benchmark", f"--workdir={tmp_path}"))
  assert "--workdir is not a flag of vae_jax.benchmark" in line


def one_error_line(result) -> str:
  assert result.returncode == 2, result.stderr
  assert result.stderr.startswith("error:") and "Traceback" not in result.stderr, result.stderr
  return result.stderr.splitlines()[0]


def test_a_file_as_workdir_or_out_is_one_line(tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("mine")
  assert "is a file" in one_error_line(run("vae_jax.main", f"--workdir={a_file}", "--epochs=1",
                                           "--milestones=1"))
  assert "is a file" in one_error_line(run("vae_jax.plot", f"--workdir={tmp_path}",
                                           f"--out={a_file}"))
  assert a_file.read_text() == "mine"


def test_a_run_and_a_classifier_never_take_each_other_s_folder(tmp_path):
  from vae_jax import config as config_lib
  run_dir, classifier_dir = tmp_path / "run", tmp_path / "classifier"
  config_lib.save(config_lib.Config(), str(run_dir))
  (run_dir / "checkpoints").mkdir()
  (run_dir / "checkpoints" / "keep").write_text("mine")
  classifier_dir.mkdir()
  (classifier_dir / "classifier.json").write_text("{}")
  line = one_error_line(run("vae_jax.classifier", f"--workdir={run_dir}", "--epochs=1"))
  assert "holds a VAE run" in line
  assert (run_dir / "checkpoints" / "keep").read_text() == "mine"
  line = one_error_line(run("vae_jax.main", f"--workdir={classifier_dir}", "--epochs=1",
                            "--milestones=1",
                            "--overwrite"))
  assert "holds a classifier" in line
  assert sorted(os.listdir(classifier_dir)) == ["classifier.json"]
