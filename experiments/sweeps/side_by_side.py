"""Puts one figure of several runs side by side, each captioned with what sets it apart.

python experiments/sweeps/side_by_side.py --figure=samples.png --out=OUT.png DIR [DIR ...]

Each DIR holds the figure and the run's config.json; the caption names the settings in
which the runs differ (e.g. "beta = 4").
"""

from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402  (matplotlib's own dependency)

CAPTIONED = ("dataset", "model", "arch", "latent_dim", "beta", "binarize")


def load_config(folder: str) -> dict:
  with open(os.path.join(folder, "config.json")) as f:
    return json.load(f)


def captions(configs: list[dict]) -> list[str]:
  """For each run, 'name = value' of the settings that differ between the runs."""
  varying = [k for k in CAPTIONED if len({json.dumps(c.get(k)) for c in configs}) > 1]
  return [", ".join(f"{k} = {c.get(k)}" for k in varying) or "(same settings)" for c in configs]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--figure", required=True, help="file name of the figure in each folder")
  parser.add_argument("--out", required=True, help="the PNG to write")
  parser.add_argument("folders", nargs="+")
  args = parser.parse_args()
  images = [plt.imread(os.path.join(d, args.figure)) for d in args.folders]
  labels = captions([load_config(d) for d in args.folders])
  height = max(im.shape[0] for im in images)
  widths = [im.shape[1] * height / im.shape[0] for im in images]
  scale = 6.0 / height
  fig, axes = plt.subplots(1, len(images), figsize=(sum(widths) * scale, height * scale + 0.5),
                           gridspec_kw={"width_ratios": widths}, squeeze=False)
  for ax, image, label in zip(axes[0], images, labels):
    ax.imshow(image)
    ax.set_title(label, fontsize=12, fontweight="bold")
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(args.out, dpi=100)
  # A 256-colour palette: the panels are grey images and a few line colours, and the
  # file is several times smaller than matplotlib's RGBA.
  with Image.open(args.out) as image:
    image.convert("RGB").quantize(colors=256).save(args.out, optimize=True)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
