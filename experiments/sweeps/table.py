"""Prints the markdown results table of a sweep: python experiments/sweeps/table.py DIR [DIR ...].

Each DIR holds a run's config.json, metrics.csv and eval_epoch_EEE[_firstN].json (copied there by
experiments/sweeps/run.sh).
"""

from __future__ import annotations

import csv
import glob
import json
import os
import sys


def last_row(folder: str) -> dict:
  with open(os.path.join(folder, "metrics.csv")) as f:
    rows = list(csv.DictReader(f))
  return {**rows[-1], "train_seconds": sum(float(r["seconds"]) for r in rows)}


def evaluation(folder: str) -> dict:
  with open(sorted(glob.glob(os.path.join(folder, "eval_epoch_*.json")))[-1]) as f:
    return json.load(f)


def fmt(value, digits: int = 2) -> str:
  return "–" if value is None else f"{value:,.{digits}f}"


def row(folder: str) -> str:
  with open(os.path.join(folder, "config.json")) as f:
    config = json.load(f)
  metrics, ev = last_row(folder), evaluation(folder)
  loglik = ev.get("test_log_likelihood")
  cells = [
      os.path.basename(folder.rstrip("/")), config["dataset"], config["model"],
      str(config["latent_dim"]), str(config["beta"]), config["binarize"], metrics["epoch"],
      f"{metrics['train_seconds']:,.0f} s",
      fmt(float(metrics["val_recon"])), fmt(float(metrics["val_kl"])),
      fmt(-ev["test_elbo"]) if "test_elbo" in ev else "–",
      f"{fmt(-loglik)} (K={ev['num_importance_samples']})" if loglik is not None else "–",
      f"{ev['active_units']} / {config['latent_dim']}" if "active_units" in ev else "–",
      fmt(ev.get("frechet_distance"), 1),
      fmt(100 * ev["label_accuracy"], 1) + " %" if "label_accuracy" in ev else "–",
  ]
  return "| " + " | ".join(cells) + " |"


HEADER = ("| run | dataset | model | z | beta | binarize | epochs | train time | val recon | "
          "val KL | test −ELBO | test −log p(x) | active units | Fréchet distance | "
          "requested-label accuracy |")


def main(folders: list[str]) -> None:
  print(HEADER)
  columns = HEADER.count("|") - 1
  print("|" + "|".join(["---"] * 3 + ["---:"] * (columns - 3)) + "|")
  for folder in folders:
    print(row(folder))


if __name__ == "__main__":
  main(sys.argv[1:])
