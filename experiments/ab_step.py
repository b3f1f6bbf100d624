"""Two or more versions of the train step, timed side by side in one process.

    .venv/bin/python experiments/ab_step.py --arch=conv 'layers.NARROW_TAP_COLUMNS=0' ''

Each argument is one variant: comma-separated overrides `module.NAME=value` of
`vae_jax` module constants (value a Python literal), set while that variant's epoch is
traced and compiled; '' is the code as it stands. The compiled epochs (`--steps` train
steps of batch 128, as `vae_jax.benchmark` builds them) then run in turn for
`--rounds` rounds, the order reversed every other round, and the script prints each
variant's minimum and median milliseconds per step.

On this shared 2-core VM, separate benchmark runs of the same code differ by 10-20%
from minute to minute; variants interleaved within one process meet the same
disturbances, so a few per cent show. Used for the A/B figures in benchmark.md.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_overrides(variant: str) -> list[tuple[str, str, object]]:
  """'layers.X=0,models.Y=True' -> [('layers', 'X', 0), ('models', 'Y', True)]."""
  overrides = []
  for item in filter(None, variant.split(",")):
    target, _, value = item.partition("=")
    module, _, name = target.strip().rpartition(".")
    overrides.append((module, name, ast.literal_eval(value.strip())))
  return overrides


def compile_variant(config, variant: str):
  """The variant's epoch (vae_jax.benchmark.CompiledEpoch), compiled with its overrides set."""
  from vae_jax.benchmark import CompiledEpoch

  saved = []
  try:
    for module_name, name, value in parse_overrides(variant):
      module = importlib.import_module(f"vae_jax.{module_name}")
      saved.append((module, name, getattr(module, name)))  # AttributeError: a typo
      setattr(module, name, value)
    return CompiledEpoch(config)
  finally:
    for module, name, value in reversed(saved):
      setattr(module, name, value)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("variants", nargs="+")
  parser.add_argument("--arch", default="conv")
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--rounds", type=int, default=30)
  args = parser.parse_args()

  from vae_jax.benchmark import timing_config

  config = timing_config(args.arch, train_examples=args.steps * 128)
  epochs = {v: compile_variant(config, v) for v in args.variants}
  ms = {v: [] for v in args.variants}
  for round_ in range(args.rounds):
    for v in (args.variants if round_ % 2 == 0 else reversed(args.variants)):
      ms[v].append(1000 * epochs[v]() / args.steps)
  for v in args.variants:
    low, mid = min(ms[v]), statistics.median(ms[v])
    print(f"{v or '(as it stands)':40s} min {low:6.2f}  median {mid:6.2f} ms/step"
          f"  ({128_000 / low:,.0f} / {128_000 / mid:,.0f} images/s)")


if __name__ == "__main__":
  main()
