"""A real multi-host run: two processes on this machine, launched as SLURM would launch
them (`srun ./run.sh --distributed`), training one run into one workdir, then resuming it."""

import os
import signal
import socket
import subprocess
import sys
import time

from conftest import REPO
from test_cli import FIGURES
from vae_jax import checkpoints, train, workdir as workdir_lib
from vae_jax import config as config_lib

PROCESSES = 2
FLAGS = ["--milestones=1,2", "--train_examples=256", "--batch_size=32"]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def start(argv: list[str], **popen_kwargs) -> list[subprocess.Popen]:
  """`python -m vae_jax.main --distributed ARGV` as SLURM task 0 and task 1 of one job step."""
  port = free_port()
  tasks = []
  for rank in range(PROCESSES):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
               JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
               JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",  # CPU collectives across processes
               SLURM_JOB_ID="1", SLURM_STEP_NODELIST="localhost", SLURM_NTASKS=str(PROCESSES),
               SLURM_PROCID=str(rank), SLURM_LOCALID="0")
    env.pop("XLA_FLAGS", None)
    tasks.append(subprocess.Popen([sys.executable, "-m", "vae_jax.main", "--distributed"] + argv,
                                  env=env, text=True, **popen_kwargs))
  return tasks


def launch(argv: list[str]) -> list[subprocess.CompletedProcess]:
  """start(argv), run to the end: each task's exit status and output."""
  tasks = start(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  results = []
  for task in tasks:
    try:
      out, err = task.communicate(timeout=180)  # about 30 s each on our 2-core VM
    finally:
      task.kill()
    results.append(subprocess.CompletedProcess(task.args, task.returncode, out, err))
  return results


def test_two_processes_train_and_resume_one_run(tmp_path, tfds_dir, mnist_dir):
  workdir = str(tmp_path / "run")
  common = [f"--workdir={workdir}", f"--data_dir={tfds_dir}", f"--manual_dir={mnist_dir}"] + FLAGS
  first = launch(common + ["--epochs=2"])
  for rank, result in enumerate(first):
    assert result.returncode == 0, (rank, result.stderr[-3000:])
  # Process 0 writes the files and logs; process 1 computes alike and writes nothing.
  assert "milestone 2: checkpoint saved" in first[0].stdout
  assert [line for line in first[1].stdout.splitlines() if not line.startswith("[Gloo]")] == []
  for epoch in (1, 2):
    folder = workdir_lib.plots_dir(workdir, epoch)
    assert set(FIGURES) <= set(os.listdir(folder))
  assert not [name for name in os.listdir(os.path.join(workdir, "plots")) if "partial" in name]

  # The same training in one process (one device) gives the same losses.
  with_one = str(tmp_path / "one")
  config = config_lib.Config(epochs=2, milestones=(1, 2), train_examples=256, batch_size=32,
                             data_dir=tfds_dir, manual_dir=mnist_dir)
  train.train_and_evaluate(config, with_one, log=lambda line: None)
  for two, one in zip(workdir_lib.read_metrics(workdir), workdir_lib.read_metrics(with_one),
                      strict=True):
    for key in ("train_loss", "train_kl", "val_loss", "val_kl"):
      assert abs(two[key] - one[key]) <= 1e-4 * abs(one[key]) + 1e-5, (key, two, one)

  # Both processes resume it, and agree on where: one more epoch, its milestone, the record.
  resumed = launch(common + ["--epochs=3"])
  for rank, result in enumerate(resumed):
    assert result.returncode == 0, (rank, result.stderr[-3000:])
  assert "resuming from the checkpoint of epoch 2" in resumed[0].stdout
  assert [row["epoch"] for row in workdir_lib.read_metrics(workdir)] == [1, 2, 3]
  assert set(FIGURES) <= set(os.listdir(workdir_lib.plots_dir(workdir, 3)))
  assert config_lib.load(workdir).epochs == 3


def test_ctrl_c_on_one_process_stops_both_after_the_same_epoch(tmp_path, tfds_dir, mnist_dir):
  workdir = str(tmp_path / "run")
  process_0, process_1 = start(
      [f"--workdir={workdir}", f"--data_dir={tfds_dir}", f"--manual_dir={mnist_dir}",
       "--epochs=500", "--milestones=500", "--train_examples=256", "--batch_size=32"],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  try:
    lines, deadline = [], time.time() + 180
    while time.time() < deadline and not any(l.startswith("epoch    2/500") for l in lines):
      lines.append(process_0.stdout.readline())
    process_1.send_signal(signal.SIGINT)  # only the process that writes nothing
    output = "".join(lines) + process_0.communicate(timeout=120)[0]
    process_1.wait(timeout=120)
  finally:
    process_0.kill()
    process_1.kill()
  assert (process_0.returncode, process_1.returncode) == (train.INTERRUPTED_STATUS,) * 2, output
  last = workdir_lib.read_metrics(workdir)[-1]["epoch"]
  assert 2 <= last < 500 and f"interrupted after epoch {last}, which is saved" in output
  assert max(checkpoints.saved_epochs(workdir)) == last
