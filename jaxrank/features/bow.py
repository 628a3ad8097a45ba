"""features.kind "bow": n-gram TF-IDF bags (`jaxrank.text.bow`) plus the cell-cell TF-IDF cosine."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import threadpoolctl

from jaxrank import features
from jaxrank.data import batching
from jaxrank.data.types import Notebook
from jaxrank.text import bow


def _bow_config(cfg: Mapping[str, Any]) -> bow.BowConfig:
  char = tuple(cfg.get("char_ngrams", (0, 0)))
  return bow.BowConfig(
      word_ngrams=tuple(cfg["word_ngrams"]), word_vocab=cfg["word_vocab"],
      char_ngrams=char if char[0] > 0 else None, char_vocab=cfg.get("char_vocab", 20_000),
      use_idf=cfg.get("use_idf", True), sublinear_tf=cfg.get("sublinear_tf", True),
      lowercase=cfg.get("lowercase", True), min_df=cfg.get("min_df", 2),
      max_chars=cfg["max_chars"], max_terms=cfg["max_terms"])


def fit(cfg: Mapping[str, Any], notebooks: Sequence[Notebook]) -> bow.BowFeaturizer:
  return fit_items(cfg, notebooks)[0]


def fit_items(cfg: Mapping[str, Any], notebooks: Sequence[Notebook]
              ) -> tuple[bow.BowFeaturizer, list[batching.Arrays]]:
  """Fits the featurizer on `notebooks` and featurizes them in the same pass."""
  featurizer, x = bow.BowFeaturizer.fit_transform(features.cell_texts(notebooks),
                                                  _bow_config(cfg))
  return featurizer, _items_from_matrix(featurizer, notebooks, x)


def save(featurizer: bow.BowFeaturizer, workdir: str | Path) -> Path:
  return featurizer.save(Path(workdir) / features.FOLDER)


def load(workdir: str | Path) -> bow.BowFeaturizer:
  return bow.BowFeaturizer.load(Path(workdir) / features.FOLDER)


def items(featurizer: bow.BowFeaturizer, notebooks: Sequence[Notebook]) -> list[batching.Arrays]:
  """Per-notebook arrays (code-first layout) for a list of notebooks."""
  texts = features.cell_texts(notebooks)
  if not texts:
    return []
  return _items_from_matrix(featurizer, notebooks, featurizer.transform(texts))


def _items_from_matrix(featurizer, notebooks, x) -> list[batching.Arrays]:
  """x: CSR [all cells, vocab], rows L2-normalised TF-IDF, notebook after notebook."""
  ids, weights = bow.csr_to_bags(x, featurizer.config.max_terms)

  def sim(nb, rows, perm):
    # Cosine similarity of every pair of cells, in the code-first layout: a
    # parameter-free "this markdown describes that code" signal that transfers
    # to unseen repositories far better than learned embeddings alone.
    gram = _block_gram(x, rows.start, rows.stop)
    return {"sim": gram[np.ix_(perm, perm)].astype(np.float16)}

  # One BLAS thread: these grams are small, and threads only wait on each other
  # (7x slower on a loaded 2-core machine).
  with threadpoolctl.threadpool_limits(1, user_api="blas"):
    return features.per_notebook(notebooks, {"ids": ids, "weights": weights}, sim)


def _block_gram(x, a: int, b: int) -> np.ndarray:
  """Dense x[a:b] @ x[a:b].T via the rows' own small vocabulary (no scipy calls)."""
  lo, hi = x.indptr[a], x.indptr[b]
  cols, vals = x.indices[lo:hi], x.data[lo:hi]
  rows = np.repeat(np.arange(b - a), np.diff(x.indptr[a:b + 1]))
  uniq, inv = np.unique(cols, return_inverse=True)
  dense = np.zeros((b - a, len(uniq)), np.float32)
  dense[rows, inv] = vals
  return dense @ dense.T
