"""Cell features for models, fitted on train and saved beside the run.

`config.features.kind` picks the featurizer module in KINDS. "bow" (here) =
n-gram TF-IDF bags (`jaxrank.text.bow`) plus the cell-cell TF-IDF cosine.
A featurizer module provides

    fit_items(cfg, notebooks) -> (featurizer, items)   # fit on train, featurize it
    items(featurizer, notebooks) -> items
    save(featurizer, workdir) / load(workdir) -> featurizer

where `featurizer.vocab_size` sizes the model's input and `items` are the
per-notebook arrays of `jaxrank.data.batching.notebook_arrays`. Whole splits are
featurized at once (scikit-learn's vectorizers are much faster on one big list).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from jaxrank.data import batching
from jaxrank.data.types import Notebook
from jaxrank.text import bow

FOLDER = "featurizer"
# kind -> module implementing the interface above ("bow" is this module).
KINDS = {"bow": __name__}
KINDS.update(subword="jaxrank.text.encoder_features", encoder="jaxrank.text.encoder_features")


def module_for(kind: str):
  if kind not in KINDS:
    raise ValueError(f"unknown features.kind {kind!r}; known: {sorted(KINDS)}")
  return importlib.import_module(KINDS[kind])


def _bow_config(cfg: Mapping[str, Any]) -> bow.BowConfig:
  char = tuple(cfg.get("char_ngrams", (0, 0)))
  return bow.BowConfig(
      word_ngrams=tuple(cfg["word_ngrams"]), word_vocab=cfg["word_vocab"],
      char_ngrams=char if char[0] > 0 else None, char_vocab=cfg.get("char_vocab", 20_000),
      use_idf=cfg.get("use_idf", True), sublinear_tf=cfg.get("sublinear_tf", True),
      lowercase=cfg.get("lowercase", True), min_df=cfg.get("min_df", 2),
      max_chars=cfg["max_chars"], max_terms=cfg["max_terms"])


def fit_any(cfg: Mapping[str, Any], notebooks: Sequence[Notebook]):
  """Dispatches on cfg["kind"]; records the kind beside the run for `load_any`."""
  return module_for(cfg["kind"]).fit_items(cfg, notebooks)


def save_any(kind: str, featurizer, workdir: str | Path) -> None:
  module_for(kind).save(featurizer, workdir)
  from jaxrank import io_utils
  io_utils.atomic_write_json(Path(workdir) / FOLDER / "kind.json", {"kind": kind})


def load_any(workdir: str | Path):
  """(kind, featurizer) saved in a run folder; FileNotFoundError if none."""
  path = Path(workdir) / FOLDER / "kind.json"
  kind = json.loads(path.read_text())["kind"] if path.exists() else "bow"
  return kind, module_for(kind).load(workdir)


def items_any(kind: str, featurizer, notebooks: Sequence[Notebook]) -> list[batching.Arrays]:
  return module_for(kind).items(featurizer, notebooks)


def fit(cfg: Mapping[str, Any], notebooks: Sequence[Notebook]) -> bow.BowFeaturizer:
  return fit_items(cfg, notebooks)[0]


def fit_items(cfg: Mapping[str, Any], notebooks: Sequence[Notebook]
              ) -> tuple[bow.BowFeaturizer, list[batching.Arrays]]:
  """Fits the featurizer on `notebooks` and featurizes them in the same pass."""
  texts = [s for nb in notebooks for s in nb.sources]
  featurizer, x = bow.BowFeaturizer.fit_transform(texts, _bow_config(cfg))
  return featurizer, _items_from_matrix(featurizer, notebooks, x)


def save(featurizer: bow.BowFeaturizer, workdir: str | Path) -> Path:
  return featurizer.save(Path(workdir) / FOLDER)


def load(workdir: str | Path) -> bow.BowFeaturizer:
  return bow.BowFeaturizer.load(Path(workdir) / FOLDER)


def items(featurizer: bow.BowFeaturizer, notebooks: Sequence[Notebook]) -> list[batching.Arrays]:
  """Per-notebook arrays (code-first layout) for a list of notebooks."""
  texts = [s for nb in notebooks for s in nb.sources]
  if not texts:
    return []
  return _items_from_matrix(featurizer, notebooks, featurizer.transform(texts))


def _items_from_matrix(featurizer, notebooks, x) -> list[batching.Arrays]:
  """x: CSR [all cells, vocab], rows L2-normalised TF-IDF, notebook after notebook."""
  ids, weights = bow.csr_to_bags(x, featurizer.config.max_terms)
  bounds = np.cumsum([0] + [nb.n_cells for nb in notebooks])
  out = []
  for nb, a, b in zip(notebooks, bounds[:-1], bounds[1:]):
    it = batching.notebook_arrays(nb, {"ids": ids[a:b], "weights": weights[a:b]})
    # Cosine similarity of every pair of cells, in the code-first layout: a
    # parameter-free "this markdown describes that code" signal that transfers
    # to unseen repositories far better than learned embeddings alone.
    perm = it["cell_index"]
    it["sim"] = _block_gram(x, a, b)[np.ix_(perm, perm)].astype(np.float16)
    out.append(it)
  return out


def _block_gram(x, a: int, b: int) -> np.ndarray:
  """Dense x[a:b] @ x[a:b].T via the rows' own small vocabulary (no scipy calls)."""
  lo, hi = x.indptr[a], x.indptr[b]
  cols, vals = x.indices[lo:hi], x.data[lo:hi]
  rows = np.repeat(np.arange(b - a), np.diff(x.indptr[a:b + 1]))
  uniq, inv = np.unique(cols, return_inverse=True)
  dense = np.zeros((b - a, len(uniq)), np.float32)
  dense[rows, inv] = vals
  return dense @ dense.T
