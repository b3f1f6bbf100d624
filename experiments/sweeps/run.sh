#!/usr/bin/env bash
# The science sweeps of experiments/README.md: each trains its runs, evaluates them, and
# collects the figures (side by side) and a results table under experiments/sweeps/TOPIC/.
#
# Usage, from anywhere:  experiments/sweeps/run.sh TOPIC [EPOCHS]     (EPOCHS default 50)
#   beta        mlp VAE, z=2, grey MNIST, beta in {0.5, 1, 4}
#   latent_dim  mlp VAE, dynamically binarized MNIST, z in {2, 8, 32}; IWAE K=5000
#   fashion     mlp VAE, grey Fashion-MNIST, z in {2, 8, 32}
#   cvae        mlp CVAE, z=2, grey MNIST and Fashion-MNIST
# Runs live in runs/sweep_TOPIC_NAME and resume if interrupted; the data are read from
# $SHARED_DATA (default ../shared/data). A missing classifier (for the Fréchet distance and
# the CVAE's digit accuracy) is trained first, in runs/classifier_DATASET.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p runs  # gitignored: absent on a fresh clone
topic="${1:?usage: experiments/sweeps/run.sh beta|latent_dim|fashion|cvae [EPOCHS]}"
epochs="${2:-50}"
data="${SHARED_DATA:-../shared/data}"
out="experiments/sweeps/$topic"
python=.venv/bin/python
./run.sh test --version > /dev/null  # creates .venv if needed

classifier() {  # DATASET: trains the in-project classifier once (again if cut short)
  [ -f "runs/classifier_$1/classifier.json" ] || "$python" -m vae_jax.classifier --dataset="$1" \
    --workdir="runs/classifier_$1" --manual_dir="$data/$1" --overwrite \
    > "runs/classifier_$1.log" 2>&1 || { tail -5 "runs/classifier_$1.log"; exit 1; }
}

run() {  # NAME DATASET EVAL_SAMPLES EVAL_IMAGES TRAIN_FLAGS...: train, evaluate, collect
  local name="$1" dataset="$2" k="$3" n="$4"
  shift 4
  local workdir="runs/sweep_${topic}_${name}"
  classifier "$dataset"
  ./run.sh --workdir="$workdir" --dataset="$dataset" --epochs="$epochs" --milestones=20,"$epochs" \
    --manual_dir="$data/$dataset" "$@" > "$workdir.log" 2>&1 || { tail -5 "$workdir.log"; exit 1; }
  local subset=""  # evaluate names a file of fewer than the 10,000 test images after them
  [ "$n" -lt 10000 ] && subset="_first$n"
  local evaluation="$workdir/eval_epoch_$(printf %03d "$epochs")$subset.json"
  [ -f "$evaluation" ] || "$python" -m vae_jax.evaluate --workdir="$workdir" \
    --num_importance_samples="$k" --num_test_examples="$n" \
    --classifier_workdir="runs/classifier_$dataset" > /dev/null
  mkdir -p "$out/$name"
  cp "$workdir"/plots/epoch_$(printf %03d "$epochs")/*.png "$workdir/metrics.csv" \
    "$workdir/config.json" "$evaluation" "$out/$name/"
  echo "$topic/$name done" >&2
}

case "$topic" in
  beta)
    for b in 0.5 1 4; do run "beta$b" mnist 1000 1000 --beta="$b"; done
    names=(beta0.5 beta1 beta4) ;;
  latent_dim)
    for z in 2 8 32; do run "z$z" mnist 5000 1000 --binarize=dynamic --latent_dim="$z"; done
    names=(z2 z8 z32) ;;
  fashion)
    for z in 2 8 32; do run "z$z" fashion_mnist 1000 1000 --latent_dim="$z"; done
    names=(z2 z8 z32) ;;
  cvae)
    run mnist mnist 1000 1000 --model=cvae
    run fashion fashion_mnist 1000 1000 --model=cvae
    "$python" -m vae_jax.generate --workdir=runs/sweep_cvae_mnist --digit=7 --num=64 --overwrite \
      --out="$out/seven.png"
    names=(mnist fashion) ;;
  *) echo "unknown topic '$topic': beta, latent_dim, fashion or cvae" >&2; exit 2 ;;
esac

for figure in samples latent_scatter latent_manifold reconstructions interpolation loss_curves; do
  missing=0
  for name in "${names[@]}"; do [ -f "$out/$name/$figure.png" ] || missing=1; done
  [ "$missing" = 0 ] || continue  # e.g. latent_manifold exists only for z = 2
  "$python" experiments/sweeps/side_by_side.py --figure="$figure.png" \
    --out="$out/${figure}_side_by_side.png" "${names[@]/#/$out/}"
done
"$python" experiments/sweeps/table.py "${names[@]/#/$out/}" > "$out/results.md"
cat "$out/results.md"
