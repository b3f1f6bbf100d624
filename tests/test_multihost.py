"""A real multi-host run: two processes on this machine, launched as SLURM would launch
them (`srun ./run.sh --distributed`), training one run into one workdir, then resuming it."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
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


def start(argv: list[str], outputs, rank_argv=((), ())) -> list[subprocess.Popen]:
  """`python -m vae_jax.main --distributed ARGV` as SLURM task 0 and task 1 of one job step:
  task i writes to outputs[i] (stdout, stderr) and has rank_argv[i] added (what differs
  between hosts)."""
  port = free_port()
  tasks = []
  for rank in range(PROCESSES):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
               JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
               JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",  # CPU collectives across processes
               SLURM_JOB_ID="1", SLURM_STEP_NODELIST="localhost", SLURM_NTASKS=str(PROCESSES),
               SLURM_PROCID=str(rank), SLURM_LOCALID="0")
    env.pop("XLA_FLAGS", None)
    stdout, stderr = outputs[rank]
    tasks.append(subprocess.Popen(
        [sys.executable, "-m", "vae_jax.main", "--distributed"] + argv + list(rank_argv[rank]),
        env=env, text=True, stdout=stdout, stderr=stderr))
  return tasks


def launch(argv: list[str], rank_argv=((), ())) -> list[subprocess.CompletedProcess]:
  """start(), run to the end: each task's exit status and output, through files (a pipe
  that nobody reads could fill up and block its task)."""
  with tempfile.TemporaryDirectory() as logs:
    outputs = [tuple(open(os.path.join(logs, f"{rank}.{kind}"), "w+") for kind in ("out", "err"))
               for rank in range(PROCESSES)]
    tasks = start(argv, outputs, rank_argv)
    results = []
    for task, files in zip(tasks, outputs):
      try:
        task.wait(timeout=180)  # about 30 s each on our 2-core VM
      finally:
        task.kill()
      text = []
      for f in files:
        f.seek(0)
        text.append(f.read())
        f.close()
      results.append(subprocess.CompletedProcess(task.args, task.returncode, *text))
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
      [(subprocess.PIPE, subprocess.STDOUT), (subprocess.DEVNULL, subprocess.DEVNULL)])
  try:
    lines, deadline = [], time.time() + 180
    while time.time() < deadline and not any(l.startswith("epoch    2/500") for l in lines):
      lines.append(process_0.stdout.readline())
      if not lines[-1]:  # process 0 has ended: the assertions below say how
        break
    process_1.send_signal(signal.SIGINT)  # only the process that writes nothing
    output = "".join(lines) + process_0.communicate(timeout=120)[0]
    try:
      process_1.wait(timeout=120)
    except subprocess.TimeoutExpired:  # e.g. waiting in a collective for a dead process 0
      pass  # its return code (None) fails the assertion below, with process 0's output
  finally:
    process_0.kill()
    process_1.kill()
  interrupted = config_lib.INTERRUPTED_STATUS
  assert (process_0.returncode, process_1.returncode) == (interrupted, interrupted), output
  last = workdir_lib.read_metrics(workdir)[-1]["epoch"]
  assert 2 <= last < 500 and f"interrupted after epoch {last}, which is saved" in output
  assert max(checkpoints.saved_epochs(workdir)) == last


def test_a_data_error_on_one_process_stops_both_before_the_workdir_changes(
    tmp_path, tfds_dir, mnist_dir):
  workdir = str(tmp_path / "run")
  config = config_lib.Config(epochs=1, milestones=(1,), train_examples=256, batch_size=32,
                             data_dir=tfds_dir, manual_dir=mnist_dir)
  train.train_and_evaluate(config, workdir, log=lambda line: None)
  before = sorted(os.listdir(workdir)), workdir_lib.read_metrics(workdir)
  # Host 1 has no built dataset, and damaged files where the official ones should be.
  damaged = tmp_path / "damaged"
  damaged.mkdir()
  for name in config_lib.MANUAL_FILES:
    (damaged / name).write_bytes(b"not the official file")
  results = launch(
      [f"--workdir={workdir}", "--overwrite", "--epochs=2"] + FLAGS,
      rank_argv=([f"--data_dir={tfds_dir}", f"--manual_dir={mnist_dir}"],
                 [f"--data_dir={tmp_path / 'empty'}", f"--manual_dir={damaged}"]))
  errors = [[line for line in r.stderr.splitlines() if line.startswith("error:")] for r in results]
  assert [r.returncode for r in results] == [2, 2], [r.stderr[-2000:] for r in results]
  assert "failed tfds's checksum check" in errors[1][0]
  assert errors[0] == ["error: another process of this run could not load the data; its error "
                       "says why"]
  assert (sorted(os.listdir(workdir)), workdir_lib.read_metrics(workdir)) == before
