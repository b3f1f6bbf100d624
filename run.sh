#!/usr/bin/env bash
# Sets up .venv (created if missing, reinstalled when requirements.txt changes), then
#   ./run.sh [flags]              trains: python -m vae_jax.main [flags]
#   ./run.sh test [pytest args]   runs the test suite
set -euo pipefail
cd "$(dirname "$0")"

venv="${VAE_JAX_VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r requirements.txt
  echo "$want" > "$venv/.requirements.sha256"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"  # TensorFlow is only tfds's engine: quiet it

if [ "${1:-}" = "test" ]; then
  shift
  exec "$venv/bin/python" -m pytest tests "$@"
fi
exec "$venv/bin/python" -m vae_jax.main "$@"
