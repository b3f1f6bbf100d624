#!/usr/bin/env bash
# Training speed of the same VAE in JAX (vae_jax.benchmark), Keras 3 and PyTorch, one run.
# Usage: experiments/benchmark.sh [OUT.jsonl]   (from the repository root; needs ./run.sh once)
# Keras comes with tensorflow-cpu in requirements.txt; PyTorch is installed here if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-experiments/benchmark_results.jsonl}"
py=.venv/bin/python
manual_dir="${MANUAL_DIR:-../shared/data/mnist}"
$py -c "import torch" 2>/dev/null || $py -m pip install --quiet "torch==2.13.0"
export PYTHONPATH="$PWD" TF_CPP_MIN_LOG_LEVEL=2
: > "$out"
for arch in mlp conv; do
  # Each framework: batch 128, latent 2, 60,000 images an epoch, first epoch untimed.
  $py -m vae_jax.benchmark --arch=$arch --epochs=2 2>/dev/null | tail -1 | tee -a "$out"
  $py experiments/compare/keras_vae.py --arch=$arch --epochs=3 --manual_dir="$manual_dir" 2>/dev/null | tail -1 | tee -a "$out"
  # Keras with XLA too: slower for conv here, but the stronger opponent for mlp.
  $py experiments/compare/keras_vae.py --arch=$arch --epochs=3 --jit_compile=true \
    --manual_dir="$manual_dir" 2>/dev/null | tail -1 | tee -a "$out"
  $py experiments/compare/torch_vae.py --arch=$arch --epochs=3 --manual_dir="$manual_dir" 2>/dev/null | tail -1 | tee -a "$out"
done
