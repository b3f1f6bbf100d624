"""Where a training step's time goes: milliseconds per step of each compiled XLA op.

    XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true \
        .venv/bin/python experiments/profile_ops.py --arch=conv [--steps=50] [--min_ms=0.25]

Traces one whole (scanned) epoch of `steps` train steps with jax.profiler and prints, per
op, its time per step, its output shape and the layer it comes from (from the HLO
metadata). On CPU the flag makes XLA record every op; without it only the epoch shows.
Ops that run at the same time on different threads both count, so the sum can exceed
the step's wall time. Used for the tables in experiments/benchmark.md.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def op_table(trace_dir: str, hlo_text: str, steps: int, min_ms: float) -> list[str]:
  """One line per HLO op of at least min_ms per step, slowest first."""
  path = sorted(glob.glob(f"{trace_dir}/plugins/profile/*/*.trace.json.gz"))[-1]
  events = json.load(gzip.open(path))["traceEvents"]
  total_us = collections.Counter()
  for event in events:
    if event.get("ph") == "X":
      total_us[event["name"]] += event["dur"]
  ops = {}
  for line in hlo_text.splitlines():
    match = re.match(r"\s*(?:ROOT )?%(\S+) = (\S+) ", line)
    if match:
      source = re.search(r'op_name="([^"]*)"', line)
      ops[match.group(1)] = (match.group(2), source.group(1).split("/")[-3:] if source else [])
  lines, summed = [], 0.0
  for name, micros in total_us.most_common():
    if name in ops:
      ms = micros / steps / 1000
      summed += ms
      if ms >= min_ms:
        shape, source = ops[name]
        lines.append(f"{ms:7.2f} ms  {name:32s} {shape:34s} {'/'.join(source)}")
  return lines + [f"{summed:7.2f} ms  in all ops, per step"]


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--arch", default="conv")
  parser.add_argument("--model", default="vae")
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--min_ms", type=float, default=0.25)
  args = parser.parse_args()

  import jax

  from vae_jax.benchmark import CompiledEpoch, timing_config

  batch = 128
  config = timing_config(args.arch, train_examples=args.steps * batch, model=args.model,
                         batch_size=batch)
  epoch = CompiledEpoch(config)
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    seconds = epoch()
    jax.profiler.stop_trace()
    print(f"{args.arch}: {seconds / args.steps * 1000:.1f} ms per step of {batch} (traced)")
    print("\n".join(op_table(trace_dir, epoch.compiled.as_text(), args.steps, args.min_ms)))


if __name__ == "__main__":
  main()
