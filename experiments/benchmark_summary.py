"""The table of a benchmark.sh run: images/s per framework and JAX's ratio to each.

    .venv/bin/python experiments/benchmark_summary.py experiments/benchmark_results.jsonl

Reads the JSON lines that benchmark.sh collects (one per framework, arch and round) and
prints, per arch and framework, two speeds:
- mean: the runs' own images_per_sec (timed epochs only), averaged over rounds;
- best epoch: the fastest single timed epoch of any round. On a shared VM, noise only
  ever slows an epoch down, so the best epoch is the least disturbed measurement.
The first epoch of Keras and PyTorch (tracing, warm-up) is listed in epoch_seconds but not
timed; vae_jax.benchmark lists only its timed epochs.
"""

from __future__ import annotations

import collections
import json
import sys


FRAMEWORKS = ("jax", "keras", "keras+xla", "keras/jax", "pytorch", "pytorch+compile")


def framework_name(line: dict) -> str:
  """One of FRAMEWORKS: Keras by backend (TensorFlow with or without XLA, or JAX), PyTorch
  eager or compiled."""
  if line["framework"] == "pytorch":
    return "pytorch+compile" if line.get("compiled") else "pytorch"
  if line["framework"] != "keras":
    return line["framework"]
  if line["backend"].startswith("jax"):
    return "keras/jax"
  return "keras+xla" if "jit_compile=True" in line["backend"] else "keras"


def timed_epochs(line: dict) -> list[float]:
  return line["epoch_seconds"] if line["framework"] == "jax" else line["epoch_seconds"][1:]


def speeds(lines: list[dict]) -> dict[tuple[str, str], tuple[int, float, float]]:
  """(arch, framework) -> (runs, mean images/s over them, images/s of the best timed epoch)."""
  runs = collections.defaultdict(list)
  for line in lines:
    runs[(line["arch"], framework_name(line))].append(line)
  result = {}
  for key, group in runs.items():
    mean = sum(line["images_per_sec"] for line in group) / len(group)
    best = max(line["images_per_sec"] * sum(timed_epochs(line)) / len(timed_epochs(line))
               / min(timed_epochs(line)) for line in group)
    result[key] = (len(group), mean, best)
  return result


def table(lines: list[dict]) -> str:
  """Markdown: per arch and opponent, both speeds and JAX's ratio to them."""
  found = speeds(lines)
  rows = ["| arch | framework | runs | mean img/s | best-epoch img/s | JAX / it (mean) | JAX / it (best epoch) |",
          "|---|---|---:|---:|---:|---:|---:|"]
  for arch in ("mlp", "conv"):
    if (arch, "jax") not in found:
      continue
    _, jax_mean, jax_best = found[(arch, "jax")]
    for name in FRAMEWORKS:
      if (arch, name) in found:
        runs, mean, best = found[(arch, name)]
        rows.append(f"| {arch} | {name} | {runs} | {mean:,.0f} | {best:,.0f} | "
                    f"{jax_mean / mean:.2f}× | {jax_best / best:.2f}× |")
  return "\n".join(rows)


def main() -> None:
  if len(sys.argv) != 2:
    sys.exit("usage: benchmark_summary.py RESULTS.jsonl")
  with open(sys.argv[1]) as f:
    print(table([json.loads(line) for line in f if line.strip()]))


if __name__ == "__main__":
  main()
