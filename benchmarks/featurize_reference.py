"""The BOW featurizing path as it was before the speed work (the baseline).

Flag-free, so tests can import it: `benchmarks.bench_data` times it beside the
current path in the same run, and tests/test_bow.py checks the current path
gives the same matrices and bags.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from jaxrank import features
from jaxrank.data.types import Notebook
from jaxrank.features import bow as features_bow
from jaxrank.text import bow


def csr_to_bags(m: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
  """The row-by-row top-k loop `bow.csr_to_bags` replaced (same bags, same tie-breaks)."""
  m.sum_duplicates()
  m.sort_indices()
  n = m.shape[0]
  ids = np.zeros((n, k), np.int32)
  weights = np.zeros((n, k), np.float32)
  indptr, indices, data = m.indptr, m.indices, m.data
  for r in range(n):
    lo, hi = indptr[r], indptr[r + 1]
    if hi - lo > k:
      top = lo + np.argpartition(-data[lo:hi], k - 1)[:k]
      top.sort()
    else:
      top = np.arange(lo, hi)
    ids[r, : len(top)] = indices[top]
    weights[r, : len(top)] = data[top]
  return ids, weights


def items_from_matrix(featurizer: bow.BowFeaturizer, notebooks: Sequence[Notebook], x):
  """Per-notebook arrays as before: the old bags loop and the grams on every BLAS thread."""
  ids, weights = csr_to_bags(x, featurizer.config.max_terms)

  def sim(nb, rows, perm):
    gram = features_bow._block_gram(x, rows.start, rows.stop)  # pylint: disable=protected-access
    return {"sim": gram[np.ix_(perm, perm)].astype(np.float16)}

  return features.per_notebook(notebooks, {"ids": ids, "weights": weights}, sim)


def fit_items(cfg: Mapping[str, Any], notebooks: Sequence[Notebook]):
  """`features.bow.fit_items` before the speed work: scikit-learn's own analyzer."""
  featurizer, x = bow.BowFeaturizer.fit_transform(
      features.cell_texts(notebooks), features_bow._bow_config(cfg), fast=False)  # pylint: disable=protected-access
  return featurizer, items_from_matrix(featurizer, notebooks, x)


def items(featurizer: bow.BowFeaturizer, notebooks: Sequence[Notebook]):
  """`features.bow.items` before the speed work."""
  x = featurizer.transform(features.cell_texts(notebooks), fast=False)
  return items_from_matrix(featurizer, notebooks, x)
