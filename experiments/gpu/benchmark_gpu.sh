#!/usr/bin/env bash
# The GPU figures of experiments/benchmark.md, in one go on a machine with a CUDA GPU whose
# python3 holds jax[cuda], flax, optax, orbax-checkpoint, matplotlib, scipy and torch (the
# lent machine's image) but no TensorFlow:
#   1. python -m vae_jax.benchmark, mlp and conv (random images, whole compiled epochs);
#   2. the default command, python -m vae_jax.main --latent_dim=2 --epochs=150, timed whole,
#      on MNIST as tfds built it elsewhere (experiments/gpu/saved_splits.py);
#   3. experiments/compare/torch_vae.py on the GPU, eager and with torch.compile;
#   4. the tests that need no dataset, on the GPU (the conv layers are nn.Conv there).
#
# Usage: experiments/gpu/benchmark_gpu.sh OUT DATA
#   DATA holds mnist.npz (saved_splits.py save) and mnist/ (the four official files).
set -u
out=$1
data=$2
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
cd "$(dirname "$0")/../.."

section() { echo "== $* ($(date +%T))"; }

section machine
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $py -c 'import jax, jaxlib, flax, optax, orbax.checkpoint as ocp, torch, platform
print("python", platform.python_version(), "jax", jax.__version__, "jaxlib", jaxlib.__version__,
      "flax", flax.__version__, "optax", optax.__version__, "orbax", ocp.__version__,
      "torch", torch.__version__, jax.devices())'; } 2>&1 | tee "$out/machine.txt"

section "1. vae_jax.benchmark"
for arch in mlp conv; do
  $py -m vae_jax.benchmark --arch=$arch --epochs=10 | tee -a "$out/benchmark.jsonl"
done

section "2. the default command, 150 epochs"
start=$(date +%s.%N)  # the whole command: start-up, loading, compiling, figures, checkpoints
$py experiments/gpu/saved_splits.py train "$data/mnist.npz" --latent_dim=2 --epochs=150 \
  --workdir=/tmp/default_run --overwrite > "$out/default_run.log" 2>&1
status=$?
end=$(date +%s.%N)
echo "exit $status, wall $($py -c "print(round($end - $start, 1))") s" | tee -a "$out/default_run.log"
grep -E "^training|epoch +(1|2|20|50|100|150)/|milestone" "$out/default_run.log"
cp /tmp/default_run/metrics.csv "$out/" 2>/dev/null
cp /tmp/default_run/plots/epoch_150/{samples,latent_scatter,latent_manifold}.png "$out/" 2>/dev/null

section "3. PyTorch on the GPU"
for arch in mlp conv; do
  for mode in "" --compile; do
    $py experiments/compare/torch_vae.py --arch=$arch --device=cuda --epochs=5 \
      --manual_dir="$data/mnist" $mode 2>/dev/null | tee -a "$out/benchmark.jsonl"
  done
done

section "4. tests on the GPU"
timeout 240 $py -m pytest -q -p no:cacheprovider tests/test_layers.py tests/test_steps.py \
  tests/test_losses.py tests/test_models.py 2>&1 | tail -25 | tee "$out/tests.txt"
section done
