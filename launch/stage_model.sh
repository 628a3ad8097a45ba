#!/usr/bin/env bash
# Stage a Hugging Face model into the shared offline store. Run on a LOGIN node
# (it needs internet); compute nodes then load it by name with no network:
#
#   JAXRANK_HOME=/shared/jaxrank launch/stage_model.sh microsoft/codebert-base codebert
#   JAXRANK_HOME=/shared/jaxrank REVISION=v1.0 launch/stage_model.sh org/model name
#
# Downloads only config.json, safetensors weights and tokenizer files (never
# pytorch_model.bin pickles) into a temp folder, then runs
# `python -m experiments.store import` on it, recording "hf:HUB_ID@COMMIT" as
# the source. Env: JAXRANK_HOME (required: the shared workspace), PYTHON
# (default: the repo's .venv, else python3), REVISION (default: main).
#
# Testing: only the import half is exercised by tests (tests/test_store.py runs
# the same `experiments.store import` on local folders); the download half
# needs the hub and cannot run in CI.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: JAXRANK_HOME=WORKSPACE $0 HUB_ID NAME" >&2
  exit 2
fi
HUB_ID="$1"
NAME="$2"
: "${JAXRANK_HOME:?set JAXRANK_HOME to the shared workspace root}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi

STAGE="$(mktemp -d "${TMPDIR:-/tmp}/jaxrank_stage.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT

# Download half (network). Pins the commit so the manifest names what was fetched.
COMMIT="$(HF_HUB_OFFLINE=0 "$PYTHON" - "$HUB_ID" "${REVISION:-main}" "$STAGE/model" <<'PY'
import sys
from huggingface_hub import HfApi, snapshot_download
hub_id, revision, dest = sys.argv[1:]
sha = HfApi().model_info(hub_id, revision=revision).sha
snapshot_download(
    repo_id=hub_id, revision=sha, local_dir=dest,
    allow_patterns=["config.json", "model.safetensors", "model.safetensors.index.json",
                    "model-*.safetensors", "tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json",
                    "merges.txt", "spiece.model", "sentencepiece.bpe.model"])
print(sha)
PY
)"
if [[ ! -f "$STAGE/model/model.safetensors" && ! -f "$STAGE/model/model.safetensors.index.json" ]]; then
  echo "error: $HUB_ID has no safetensors weights; convert it elsewhere (or import a" \
       "pytorch_model.bin yourself with --allow_pickle)" >&2
  exit 1
fi

# Import half (offline): the same command users run on local folders.
cd "$REPO"
HF_HUB_OFFLINE=1 "$PYTHON" -m experiments.store import \
  --workspace="$JAXRANK_HOME" --src="$STAGE/model" --name="$NAME" \
  --source_label="hf:$HUB_ID@$COMMIT"
HF_HUB_OFFLINE=1 "$PYTHON" -m experiments.store verify "$NAME" --workspace="$JAXRANK_HOME"
