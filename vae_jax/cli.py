"""What every entry point shares: one-line errors with exit status 2, and absl flag parsing."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable, NoReturn

from absl import flags
from absl import logging as absl_logging

from vae_jax.config import INTERRUPTED_STATUS, ConfigError

USAGE_ERROR = 2

# Flags every entry point has; defined once here so the entry points can share a process.
flags.DEFINE_string("workdir", None, "The run folder (holds config.json, checkpoints/, plots/; "
                    "main: default runs/<dataset>_<model>_<arch>_z<latent_dim>); classifier: "
                    "the classifier's folder (default runs/classifier_<dataset>).")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data dir (default ~/tensorflow_datasets).")
flags.DEFINE_integer("epoch", None, "A saved milestone epoch (plot: default every one; "
                     "evaluate and generate: default the newest).")
flags.DEFINE_string("manual_dir", None,
                    "Folder with the four official *-idx?-ubyte.gz files (for machines offline).")
flags.DEFINE_string("out", None, "Where to write. plot: a folder for the figures, which go "
                    "into OUT/epoch_EEE without --epoch (default W/plots/epoch_EEE); generate: a "
                    ".png file (default "
                    "W/generated_[digit_D_]epoch_EEE.png).")
flags.DEFINE_string("classifier_workdir", None, "The in-project classifier that judges samples "
                    "(default runs/classifier_<dataset>).")
# From here on, flags this module defines for an entry point (define_shared) or names as
# key flags (key_flags) belong to that entry point: its --helpshort lists them.
flags.disclaim_key_flags()


def key_flags(*names: str) -> None:
  """Lists these shared flags in the calling entry point's --helpshort."""
  for name in names:
    flags.declare_key_flag(name)


def default_classifier_workdir(dataset: str) -> str:
  return f"runs/classifier_{dataset}"


def define_shared(define: Callable, name: str, default: Any, help_text: str) -> None:
  """Defines --name unless another entry point imported into this process already has.

  absl allows one definition per name in a process, and several entry points share
  names (--model, --epochs, ...) with their own defaults. allow_override lets an entry
  point imported later replace this definition by its own; an entry point that defines
  its flags this way reads them through shared_value, which applies its own default
  whichever definition is live.
  """
  if name not in flags.FLAGS:
    define(name, default, help_text, allow_override=True)


def shared_value(name: str, default: Any) -> Any:
  """The flag's value if given on the command line, else the caller's default."""
  flag = flags.FLAGS[name]
  return flag.value if flag.present else default


def refuse_unused(names: tuple[str, ...], program: str) -> None:
  """A ConfigError if any of these shared flags, which this program ignores, was given
  (--epoch to vae_jax.main is most likely a typo of --epochs)."""
  for name in names:
    if flags.FLAGS[name].present:
      hint = f" (did you mean --{name}s?)" if f"{name}s" in flags.FLAGS else ""
      raise ConfigError(f"--{name} is not a flag of {program}{hint}")


def fail(message: str) -> NoReturn:
  """The one-line error, then exit status 2."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(USAGE_ERROR)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, but a bad flag value is one line and exit status 2 (absl exits 1).

  Also quiets the libraries' INFO logs (Orbax logs every file it writes) unless
  --verbosity is given.
  """
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"{e} (see --helpshort)")
  expand_paths(flags.FLAGS)
  if not flags.FLAGS["verbosity"].present:
    flags.FLAGS.verbosity = absl_logging.WARNING
  return remaining


# The flags that name a file or folder (those of every entry point, defined above).
PATH_FLAGS = ("workdir", "data_dir", "manual_dir", "out", "classifier_workdir")


def expand_paths(values) -> None:
  """~ in a path flag means the home folder, as the shell would have made it had the flag
  not been written --name=~/...; a path flag given empty (an unset shell variable) is an
  error, rather than the flag's default."""
  for name in PATH_FLAGS:
    if values[name].present:
      if not values[name].value:
        fail(f"--{name} is empty: give a path, or leave the flag out for its default")
      setattr(values, name, os.path.expanduser(values[name].value))


def run_reporting(fn: Callable[[], None], expected: tuple[type[Exception], ...]) -> None:
  """Runs fn; an expected error becomes one line on stderr and exit status 2, no traceback."""
  try:
    fn()
  except expected as e:
    fail(str(e))


def redeliver_lost_ctrl_c() -> None:
  """A Ctrl-C that lands in a garbage-collection callback (JAX has one) or a __del__ is
  'ignored' there, printed as an unraisable KeyboardInterrupt, and the program went on as
  if it had not been pressed; it is sent again instead, a moment later (from a thread:
  sent from here, it would be raised inside this hook and ignored again)."""
  previous = sys.unraisablehook
  if getattr(previous, "redelivers_ctrl_c", False):
    return

  def hook(unraisable):
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
      threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
    else:
      previous(unraisable)

  hook.redelivers_ctrl_c = True
  sys.unraisablehook = hook


def main_with(argv: list[str], fn: Callable[[], None],
              interrupted: str = "interrupted; nothing was written") -> None:
  """The body of every entry point's main(argv): no positional arguments, then fn, whose
  invalid settings (ConfigError) become one-line errors. A Ctrl-C that reaches here
  prints `interrupted` (what it left) and exits as Ctrl-C does, without a traceback."""
  if len(argv) > 1:
    fail(f"unexpected arguments {argv[1:]} (flags are written --name=value)")
  redeliver_lost_ctrl_c()
  try:
    run_reporting(fn, (ConfigError,))
  except KeyboardInterrupt:
    print(interrupted, file=sys.stderr, flush=True)
    sys.exit(INTERRUPTED_STATUS)
