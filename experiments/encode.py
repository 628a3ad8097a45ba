r"""Fills the frozen-encoder vector cache for a split, once, before the runs that read it.

  python -m experiments.encode --data_dir=../shared/data/nbcorpus --split=train \
      --encoder=minilm-l6 [--max_tokens=64] [--workspace=W]

The cell-level ranker and the diffusion ranker on encoder features
(`features.kind="encoder"`) read every cell's mean-pooled vector from
`W/data/encoder_cache/<encoder>/L<max_tokens>/` and encode only what is missing
(`jaxrank.features.encoder`). On 2 CPU cores MiniLM-L6 encodes ~170
cells/s (nbcorpus's 70k cells: 7 min); doing it once in its own job (a GPU job,
or before a sweep) spares every training job that time. The cache is
append-only and written shard by shard, atomically, so this job can be killed
and rerun: it continues where it stopped. `--max_tokens`/`--max_chars` must
match the runs' `features.*`. Each distinct cell text is encoded once, however
many notebooks share it; batches hold cells of similar token length (little
padding) and the next chunk is tokenized while the current one encodes
(`jaxrank.features.encoder`). Speed against the loop before and against
PyTorch: `python -m benchmarks.bench_encoder [--quick]`.
"""

from __future__ import annotations

import time
from typing import Sequence

from absl import flags, logging

from experiments import common  # defines --workspace
from jaxrank.data import notebooks
from jaxrank.features import encoder as encoder_features

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Competition-format folder D, or several: D1,D2.",
                                required=True)
_SPLIT = flags.DEFINE_string("split", "train", "Split (folder under D) to encode.")
_ENCODER = flags.DEFINE_string("encoder", "minilm-l6", "Store model to encode with.")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 64, "Tokens per cell (features.max_tokens).")
_MAX_CHARS = flags.DEFINE_integer("max_chars", 2000, "Characters per cell (features.max_chars).")
_BATCH_ROWS = flags.DEFINE_integer(
    "batch_rows", 32, "Cells of 64 tokens per encoder call: each call holds about "
    "batch_rows x 64 tokens, whatever --max_tokens (shorter cells go more to a call).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "Encoder compute dtype (features.encode_dtype); bfloat16 vectors "
                           "go to their own cache folder (L<max_tokens>-bfloat16).")
_READABLE = flags.DEFINE_bool("readable_markdown", False,
                              "Encode markdown cells without their HTML, CSS and URLs "
                              "(features.readable_markdown: the members must read them so).")


def main(argv: Sequence[str]) -> None:
  del argv
  common.setup_jax()
  ws = common.workspace_root()
  t0 = time.time()
  nbs = notebooks.load_split(_DATA_DIR.value, _SPLIT.value,
                             cache_dir=common.notebook_cache_dir())
  n_cells = sum(nb.n_cells for nb in nbs)
  cfg = {"kind": "encoder", "workspace": str(ws), "encoder": _ENCODER.value,
         "max_tokens": _MAX_TOKENS.value, "max_chars": _MAX_CHARS.value,
         "batch_rows": _BATCH_ROWS.value, "encode_dtype": _DTYPE.value,
         "readable_markdown": _READABLE.value}
  cached = encoder_features.encode_notebooks(cfg, nbs)
  logging.info("%s/%s: %d notebooks, %d cells; the cache holds %d vectors (%.0fs)",
               _DATA_DIR.value, _SPLIT.value, len(nbs), n_cells, cached, time.time() - t0)
  print(f"cached vectors: {cached} ({n_cells} cells in {len(nbs)} notebooks, "
        f"{time.time() - t0:.0f}s)")


if __name__ == "__main__":
  common.run(main)
