#!/usr/bin/env bash
# Sets up .venv (created if missing, reinstalled when requirements.txt changes), then
#   ./run.sh [flags]              trains: python -m vae_jax.main [flags]
#   ./run.sh test [pytest args]   runs the test suite
# Training runs in the caller's directory, so relative paths in flags (--workdir,
# --manual_dir) mean what they say wherever run.sh is called from; the tests run in the
# repository.
set -euo pipefail
repo="$(cd -- "$(dirname -- "$0")" >/dev/null && pwd)"

venv="${VAE_JAX_VENV:-$repo/.venv}"
[[ "$venv" = /* ]] || venv="$PWD/$venv"  # the tests run in the repository
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
want="$(sha256sum "$repo/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r "$repo/requirements.txt"
  echo "$want" > "$venv/.requirements.sha256"
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"  # TensorFlow is only tfds's engine: quiet it

if [ "${1:-}" = "test" ]; then
  shift
  cd "$repo"
  exec "$venv/bin/python" -m pytest tests "$@"
fi
exec "$venv/bin/python" -m vae_jax.main "$@"
