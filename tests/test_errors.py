"""Bad input on the real command line: one line on stderr, exit status 2, nothing touched."""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO


def python(*args, cwd=None):
  """This Python on args, with the repository importable, on the CPU."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                        env=env, cwd=cwd or REPO, timeout=300)


def run(module, *args, cwd=None):
  return python("-m", module, *args, cwd=cwd)


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
    (["--checkpoint_every=0"], "--checkpoint_every"),
    (["--num_devices=0"], "--num_devices"),
    (["--beta=inf"], "--beta"),
    (["--manual_dir=/no/such/dir", "epochs=5"], "unexpected arguments ['epochs=5']"),
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


@pytest.mark.parametrize("module,flag", [
    ("vae_jax.main", "--workdir"), ("vae_jax.main", "--manual_dir"), ("vae_jax.plot", "--out"),
    ("vae_jax.evaluate", "--classifier_workdir"), ("vae_jax.classifier", "--workdir")])
def test_an_empty_path_flag_is_an_error_not_its_default(tmp_path, module, flag):
  # --workdir=$RUN with RUN unset would have trained into runs/mnist_vae_mlp_z2.
  result = run(module, f"{flag}=", cwd=str(tmp_path))
  assert result.returncode == 2 and result.stderr == (
      f"error: {flag} is empty: give a path, or leave the flag out for its default\n")
  assert os.listdir(tmp_path) == []


def test_a_tilde_in_a_path_flag_is_the_home_folder(tmp_path):
  # The shell leaves --workdir=~/x as it is; a folder named ~ must not appear.
  env_home = tmp_path / "home"
  result = subprocess.run(
      [sys.executable, "-m", "vae_jax.plot", "--workdir=~/gone"], capture_output=True,
      text=True, cwd=str(tmp_path), timeout=300,
      env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", HOME=str(env_home)))
  assert result.returncode == 2
  assert result.stderr == f"error: --workdir={env_home}/gone does not exist\n"
  assert not (tmp_path / "~").exists()


def test_plot_without_checkpoints_says_so(tmp_path):
  result = run("vae_jax.plot", f"--workdir={tmp_path}")
  assert result.returncode == 2
  assert result.stderr.strip().startswith("error:") and "config.json" in result.stderr


def test_plot_with_a_bad_workdir_creates_no_out_folder(tmp_path):
  out = tmp_path / "figures"
  line = one_error_line(run("vae_jax.plot", f"--workdir={tmp_path / 'missing'}", f"--out={out}"))
  assert "missing" in line
  assert not out.exists()


def test_a_flag_without_a_near_name_gets_no_hint(tmp_path):
  # --epoch has --epochs beside it; --out has no --outs, so its error ends at the program.
  assert one_error_line(run("vae_jax.main", f"--workdir={tmp_path / 'run'}", "--out=x")) == (
      "error: --out is not a flag of vae_jax.main")
  assert not (tmp_path / "run").exists()


def test_a_failed_distributed_start_is_a_config_error_naming_the_flag(monkeypatch):
  import jax
  from vae_jax import main
  from vae_jax.config import ConfigError

  def no_coordinator():  # what jax raises where no cluster is found depends on the machine
    raise RuntimeError("no coordinator address found\nsecond line")

  monkeypatch.setattr(jax.distributed, "initialize", no_coordinator)
  with pytest.raises(ConfigError, match=r"^--distributed: .*\(no coordinator address found\); "):
    main.initialize_distributed()


def test_a_diverging_run_is_one_line_through_the_command_line(tmp_path, capsys):
  import tensorflow_datasets as tfds
  from test_cli import run_entry_point
  from vae_jax import main
  with tfds.testing.mock_data(num_examples=96), pytest.raises(SystemExit) as exit_info:
    run_entry_point(main.main, [f"--workdir={tmp_path / 'run'}", "--epochs=2", "--milestones=2",
                                "--batch_size=16", "--learning_rate=1e30",
                                f"--data_dir={tmp_path / 'tfds'}"])
  assert exit_info.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: epoch 1: the loss became non-finite")


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


def test_a_missing_or_file_workdir_and_a_file_data_dir_are_one_line(tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("mine")
  for module in ("vae_jax.plot", "vae_jax.evaluate", "vae_jax.generate"):
    assert "is a file, not a folder" in one_error_line(run(module, f"--workdir={a_file}"))
    assert "does not exist" in one_error_line(run(module, f"--workdir={tmp_path / 'gone'}"))
  line = one_error_line(run("vae_jax.main", f"--workdir={tmp_path / 'run'}", "--epochs=1",
                            f"--data_dir={a_file}"))
  assert f"--data_dir={a_file} is a file, not a folder" in line
  assert not (tmp_path / "run").exists()
  from vae_jax import config as config_lib
  config_lib.save(config_lib.Config(data_dir=str(a_file)), str(tmp_path / "old_run"))
  line = one_error_line(run("vae_jax.plot", f"--workdir={tmp_path / 'old_run'}"))
  assert f"data_dir {a_file} (in its config.json) is now a file, not a folder; pass --data_dir" in line
  assert a_file.read_text() == "mine"


def test_a_run_whose_manual_dir_is_gone_is_one_line_unless_the_data_is_built(
    tmp_path, tfds_dir, mnist_dir):
  """Else tfds would try to download MNIST, for minutes on a machine offline."""
  from vae_jax import config as config_lib, input_pipeline
  gone = str(tmp_path / "mnist_moved_away")
  config_lib.save(config_lib.Config(data_dir=str(tmp_path / "tfds_empty"), manual_dir=gone),
                  str(tmp_path / "unbuilt"))
  for module in ("vae_jax.plot", "vae_jax.evaluate", "vae_jax.generate"):
    line = one_error_line(run(module, f"--workdir={tmp_path / 'unbuilt'}"))
    assert line == (f"error: the run's manual_dir {gone} (in its config.json) no longer holds "
                    "the official mnist files, and tfds has not built mnist in the data_dir "
                    "yet; pass --manual_dir=FOLDER holding the four *-idx?-ubyte.gz files")
  # Where tfds has built it, the files are not needed: the next check speaks.
  input_pipeline.load_split("mnist", "test", tfds_dir, mnist_dir)
  config_lib.save(config_lib.Config(data_dir=tfds_dir, manual_dir=gone), str(tmp_path / "built"))
  line = one_error_line(run("vae_jax.plot", f"--workdir={tmp_path / 'built'}"))
  assert line.endswith("holds no milestone checkpoint yet")


def test_a_run_of_a_model_this_code_lacks_is_one_line(tmp_path):
  """A run made by someone's extended code (here --arch=wide), opened by code without it."""
  from vae_jax import config as config_lib
  config_lib.save(config_lib.Config(arch="wide"), str(tmp_path))
  for module in ("vae_jax.plot", "vae_jax.evaluate", "vae_jax.generate"):
    line = one_error_line(run(module, f"--workdir={tmp_path}"))
    assert "names --arch=wide, which this code does not have (only mlp, conv)" in line
  # Training names the differing setting, and --overwrite may replace such a run.
  from vae_jax import workdir
  with pytest.raises(config_lib.ConfigError, match="arch: 'wide' -> 'mlp'"):
    workdir.check(str(tmp_path), config_lib.Config(), overwrite=False)
  workdir.check(str(tmp_path), config_lib.Config(), overwrite=True)


def test_ctrl_c_while_starting_is_one_line_and_writes_nothing(tmp_path):
  # A finder that fails the import of vae_jax.train as a Ctrl-C would, deterministically.
  script = (
      "import sys\n"
      "class CtrlC:\n"
      "  def find_spec(self, name, path=None, target=None):\n"
      "    if name == 'vae_jax.train': raise KeyboardInterrupt\n"
      "sys.meta_path.insert(0, CtrlC())\n"
      "from absl import app\n"
      "from vae_jax import cli, main\n"
      "app.run(main.main, flags_parser=cli.parse_flags)\n")
  result = python("-c", script, f"--workdir={tmp_path / 'run'}", "--epochs=1")
  assert result.returncode == 130, result.stderr
  assert result.stderr.splitlines() == [
      "interrupted while starting, before anything was written; the same command starts again"]
  assert not (tmp_path / "run").exists()
  # A run to resume: the same command resumes it (with --overwrite it would start again).
  from vae_jax import config as config_lib
  config_lib.save(config_lib.Config(epochs=1), str(tmp_path / "run"))
  result = python("-c", script, f"--workdir={tmp_path / 'run'}", "--epochs=1")
  assert result.stderr.splitlines() == [
      "interrupted while starting, before anything was written; the same command resumes "
      "the run"]


@pytest.mark.parametrize("module,line", [
    ("vae_jax.plot", "interrupted; the figures drawn before it are kept: run plot again for the "
                     "rest (with --out, add --overwrite)"),
    ("vae_jax.evaluate", "interrupted; nothing was written"),
    ("vae_jax.generate", "interrupted; nothing was written"),
    ("vae_jax.classifier", "interrupted; the same command trains the classifier again (with "
                           "--overwrite if it was being saved)")])
def test_ctrl_c_in_the_other_entry_points_is_one_line(tmp_path, module, line):
  from test_restore import saved_run
  saved_run(str(tmp_path / "run"))
  # A Ctrl-C where each does its work (restoring a checkpoint, loading data), every time.
  script = ("import runpy, sys\n"
            "from vae_jax import input_pipeline, restore\n"
            "def ctrl_c(*args, **kwargs): raise KeyboardInterrupt\n"
            "restore.restore = input_pipeline.load_split = ctrl_c\n"
            f"runpy.run_module('{module}', run_name='__main__')\n")
  workdir = tmp_path / ("classifier" if module == "vae_jax.classifier" else "run")
  result = python("-c", script, f"--workdir={workdir}", f"--data_dir={tmp_path / 'tfds'}")
  assert (result.returncode, result.stderr.splitlines()) == (130, [line]), result.stderr[-3000:]


def test_a_ctrl_c_lost_in_a_finalizer_still_stops_the_command(tmp_path):
  from test_restore import saved_run
  saved_run(str(tmp_path / "run"))
  # As when Ctrl-C lands in JAX's garbage-collection callback: Python only prints an
  # unraisable KeyboardInterrupt there, and the command went on.
  script = ("import runpy, signal, time\n"
            # a job started in the background by a script inherits SIGINT ignored
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "from vae_jax import restore\n"
            "from vae_jax.config import ConfigError\n"
            "class Finalizer:\n"
            "  def __del__(self): raise KeyboardInterrupt\n"
            "def restoring(*args, **kwargs):\n"
            "  Finalizer()\n"
            "  time.sleep(30)\n"
            "  raise ConfigError('the Ctrl-C was lost')\n"
            "restore.restore = restoring\n"
            "runpy.run_module('vae_jax.evaluate', run_name='__main__')\n")
  result = python("-c", script, f"--workdir={tmp_path / 'run'}")
  assert (result.returncode, result.stderr.splitlines()) == (
      130, ["interrupted; nothing was written"]), result.stderr[-3000:]


def test_dropped_milestones_get_a_note_only_when_given(tmp_path):
  classifier_dir = tmp_path / "classifier"  # a folder main refuses, after the note
  classifier_dir.mkdir()
  (classifier_dir / "classifier.json").write_text("{}")
  given = run("vae_jax.main", f"--workdir={classifier_dir}", "--epochs=2", "--milestones=1,5,7")
  lines = given.stderr.splitlines()
  assert lines[0] == "note: --milestones after --epochs=2 are dropped: 5,7", given.stderr
  assert len(lines) == 2 and "holds a classifier" in lines[1]
  default = run("vae_jax.main", f"--workdir={classifier_dir}", "--epochs=2")  # 20..150 dropped
  assert "holds a classifier" in one_error_line(default) and len(default.stderr.splitlines()) == 1


@pytest.mark.parametrize("module,flags", [
    ("vae_jax.main", ("workdir", "data_dir", "manual_dir", "epochs", "milestones")),
    ("vae_jax.plot", ("workdir", "epoch", "out", "data_dir", "manual_dir", "overwrite")),
    ("vae_jax.evaluate", ("workdir", "epoch", "classifier_workdir", "num_importance_samples")),
    ("vae_jax.generate", ("workdir", "epoch", "out", "classifier_workdir", "digit",
                          "sample_seed", "overwrite")),
    ("vae_jax.classifier", ("workdir", "dataset", "epochs", "manual_dir")),
    ("vae_jax.benchmark", ("arch", "batch_size", "latent_dim", "num_devices")),
])
def test_helpshort_lists_the_flags_each_entry_point_reads(module, flags):
  """Every flag error says "see --helpshort": it must show the shared flags too."""
  result = run(module, "--helpshort")
  listed = {m.group(1) for m in re.finditer(r"^  --(?:\[no\])?(\w+):", result.stdout, re.M)}
  assert set(flags) <= listed, (module, sorted(listed))


def test_the_training_library_imports_without_defining_flags():
  """A script with flags of its own (--workdir, say) may import vae_jax.train."""
  script = ("from absl import flags\n"
            "flags.DEFINE_string('workdir', None, 'the script\\'s own')\n"
            "from vae_jax import models, report, restore, steps, train\n")
  result = python("-c", script)
  assert result.returncode == 0, result.stderr[-2000:]
