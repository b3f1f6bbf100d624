"""Library warnings kept off the console while a known-harmless call runs."""

from __future__ import annotations

import contextlib

from absl import logging as absl_logging


@contextlib.contextmanager
def absl_warnings_off(off: bool = True):
  """While active (and off), absl logging, which Orbax and tfds write through, shows
  errors only; the verbosity before is restored after, also on an exception."""
  verbosity = absl_logging.get_verbosity()
  if off:
    absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    yield
  finally:
    absl_logging.set_verbosity(verbosity)
