"""Library warnings silenced around a call, and the verbosity given back after."""

import pytest
from absl import logging as absl_logging

from vae_jax import quiet


def test_absl_warnings_are_off_inside_and_the_verbosity_restored_after():
  before = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.INFO)
  try:
    with quiet.absl_warnings_off():
      assert absl_logging.get_verbosity() == absl_logging.ERROR
    assert absl_logging.get_verbosity() == absl_logging.INFO
    with quiet.absl_warnings_off(off=False):  # the same call, left as it is
      assert absl_logging.get_verbosity() == absl_logging.INFO
    with pytest.raises(RuntimeError):
      with quiet.absl_warnings_off():
        raise RuntimeError("the call failed")
    assert absl_logging.get_verbosity() == absl_logging.INFO
  finally:
    absl_logging.set_verbosity(before)
