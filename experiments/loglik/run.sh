#!/usr/bin/env bash
# Test log-likelihood of the mlp VAE on dynamically binarized MNIST, latent_dim 2, 10, 50.
# Usage: experiments/loglik/run.sh [EPOCHS] [TEST_IMAGES]   (from the repository root)
# Writes runs/loglik_z*/ and prints one JSON line per model (also in eval_epoch_EEE.json, or
# eval_epoch_EEE_firstN.json when TEST_IMAGES is below 10,000).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p runs  # gitignored: absent on a fresh clone
epochs="${1:-100}"
test_images="${2:-10000}"
manual_dir="${MANUAL_DIR:-../shared/data/mnist}"
for z in 2 10 50; do
  workdir="runs/loglik_z${z}"
  start=$(date +%s)
  ./run.sh --workdir="$workdir" --binarize=dynamic --latent_dim="$z" --epochs="$epochs" \
    --milestones="$epochs" --manual_dir="$manual_dir" > "$workdir.train.log" 2>&1 || {
      tail -5 "$workdir.train.log"; exit 1; }
  echo "z=$z trained $epochs epochs in $(( $(date +%s) - start )) s" >&2
  .venv/bin/python -m vae_jax.evaluate --workdir="$workdir" --num_importance_samples=5000 \
    --num_test_examples="$test_images" --manual_dir="$manual_dir" 2>/dev/null | tail -1
done
