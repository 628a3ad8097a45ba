"""Cell features for models, fitted on train and saved beside the run.

`kind` picks the featurizer: "bow" = n-gram TF-IDF bags (`jaxrank.text.bow`).
Each featurizer turns notebooks into the per-cell arrays that
`jaxrank.data.batching.notebook_arrays` lays out, all cells of a split at once
(scikit-learn's vectorizers are much faster on one big list than many small).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from jaxrank.data import batching
from jaxrank.data.types import Notebook
from jaxrank.text import bow

FOLDER = "featurizer"


def _bow_config(cfg: Mapping[str, Any]) -> bow.BowConfig:
  char = tuple(cfg.get("char_ngrams", (0, 0)))
  return bow.BowConfig(
      word_ngrams=tuple(cfg["word_ngrams"]), word_vocab=cfg["word_vocab"],
      char_ngrams=char if char[0] > 0 else None, char_vocab=cfg.get("char_vocab", 20_000),
      use_idf=cfg.get("use_idf", True), sublinear_tf=cfg.get("sublinear_tf", True),
      lowercase=cfg.get("lowercase", True), min_df=cfg.get("min_df", 2),
      max_chars=cfg["max_chars"], max_terms=cfg["max_terms"])


def fit(cfg: Mapping[str, Any], notebooks: Sequence[Notebook]) -> bow.BowFeaturizer:
  if cfg["kind"] != "bow":
    raise ValueError(f"unknown features.kind {cfg['kind']!r}; known: 'bow'")
  texts = [s for nb in notebooks for s in nb.sources]
  return bow.BowFeaturizer.fit(texts, _bow_config(cfg))


def save(featurizer: bow.BowFeaturizer, workdir: str | Path) -> Path:
  return featurizer.save(Path(workdir) / FOLDER)


def load(workdir: str | Path) -> bow.BowFeaturizer:
  return bow.BowFeaturizer.load(Path(workdir) / FOLDER)


def items(featurizer: bow.BowFeaturizer, notebooks: Sequence[Notebook]) -> list[batching.Arrays]:
  """Per-notebook arrays (code-first layout) for a list of notebooks."""
  texts = [s for nb in notebooks for s in nb.sources]
  if not texts:
    return []
  ids, weights = featurizer.bags(texts)
  bounds = np.cumsum([0] + [nb.n_cells for nb in notebooks])
  return [batching.notebook_arrays(nb, {"ids": ids[a:b], "weights": weights[a:b]})
          for nb, a, b in zip(notebooks, bounds[:-1], bounds[1:])]
