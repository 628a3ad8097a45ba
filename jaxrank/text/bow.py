"""N-gram bag-of-words and TF-IDF cell features (scikit-learn vectorizers).

A fitted `BowFeaturizer` turns each cell's text into a *bag*: the `max_terms`
highest-weighted (term id, weight) pairs of its TF-IDF (or count) vector, padded
with id 0. Bags feed an embedding-bag layer (`jaxrank.models.bow_mlp`), which is
the dense, jit-friendly form of a sparse matmul.

Word and character n-grams share one id space: word terms first, then char
terms. Code and markdown share the vocabulary on purpose, so that "plot" in a
markdown cell and `plt.plot` in a code cell map to the same id.

The vectorizers are fitted on the training split only and saved beside the run
as JSON + .npy (no pickle), so prediction reuses exactly the same features.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

from jaxrank import io_utils

# Identifiers, numbers and single punctuation marks: code-aware word tokens.
TOKEN_PATTERN = r"(?u)[A-Za-z_][A-Za-z_0-9]*|\d+|[^\w\s]"


@dataclasses.dataclass(frozen=True)
class BowConfig:
  word_ngrams: tuple[int, int] = (1, 2)
  word_vocab: int = 30_000
  char_ngrams: tuple[int, int] | None = None  # e.g. (3, 5); None = no char n-grams
  char_vocab: int = 20_000
  use_idf: bool = True
  sublinear_tf: bool = True
  lowercase: bool = True
  min_df: int = 2
  max_chars: int = 5_000  # cells are truncated to this many chars before featurizing
  max_terms: int = 48  # K: terms kept per cell (highest weight first)


def _truncate(texts: Sequence[str], max_chars: int) -> list[str]:
  return [t[:max_chars] for t in texts]


class BowFeaturizer:
  """Fitted TF-IDF vectorizers plus the bag (top-K) conversion."""

  def __init__(self, config: BowConfig, vectorizers: dict[str, TfidfVectorizer]):
    self.config = config
    self.vectorizers = vectorizers  # "word" and optionally "char"

  @property
  def vocab_size(self) -> int:
    """Number of ids including the padding id 0."""
    return 1 + sum(len(v.vocabulary_) for v in self.vectorizers.values())

  @classmethod
  def fit(cls, texts: Sequence[str], config: BowConfig) -> "BowFeaturizer":
    return cls.fit_transform(texts, config)[0]

  @classmethod
  def fit_transform(cls, texts: Sequence[str], config: BowConfig
                    ) -> tuple["BowFeaturizer", sp.csr_matrix]:
    """Fits on `texts` and returns their matrix too (tokenizes them once)."""
    texts = _truncate(texts, config.max_chars)
    common = dict(use_idf=config.use_idf, sublinear_tf=config.sublinear_tf,
                  lowercase=config.lowercase, min_df=config.min_df,
                  dtype=np.float32)
    vecs = {"word": TfidfVectorizer(
        analyzer="word", token_pattern=TOKEN_PATTERN,
        ngram_range=tuple(config.word_ngrams), max_features=config.word_vocab,
        **common)}
    if config.char_ngrams:
      vecs["char"] = TfidfVectorizer(
          analyzer="char_wb", ngram_range=tuple(config.char_ngrams),
          max_features=config.char_vocab, **common)
    blocks = [sp.csr_matrix((len(texts), 1), dtype=np.float32)]
    blocks += [v.fit_transform(texts) for v in vecs.values()]
    return cls(config, vecs), sp.hstack(blocks, format="csr", dtype=np.float32)

  def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
    """Sparse [N, vocab_size] matrix; column 0 (padding) is always empty."""
    texts = _truncate(texts, self.config.max_chars)
    blocks = [sp.csr_matrix((len(texts), 1), dtype=np.float32)]
    blocks += [v.transform(texts) for v in self.vectorizers.values()]
    return sp.hstack(blocks, format="csr", dtype=np.float32)

  def bags(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Top-K terms per text: (ids int32 [N, K], weights float32 [N, K])."""
    return csr_to_bags(self.transform(texts), self.config.max_terms)

  # -- persistence (JSON + npy, no pickle) ------------------------------------
  def save(self, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"config": dataclasses.asdict(self.config), "vectorizers": {}}
    for name, v in self.vectorizers.items():
      vocab = {term: int(i) for term, i in v.vocabulary_.items()}
      meta["vectorizers"][name] = {"params": _jsonable_params(v), "vocabulary": vocab}
      if self.config.use_idf:
        buf = _npy_bytes(np.asarray(v.idf_))  # native dtype: a resumed run must match bitwise
        io_utils.atomic_write_bytes(folder / f"idf_{name}.npy", buf)
    io_utils.atomic_write_text(folder / "featurizer.json", json.dumps(meta))
    return folder

  @classmethod
  def load(cls, folder: str | Path) -> "BowFeaturizer":
    folder = Path(folder)
    path = folder / "featurizer.json"
    if not path.exists():
      raise FileNotFoundError(f"no featurizer at {path}")
    meta = json.loads(path.read_text())
    cfg = meta["config"]
    cfg = BowConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
    vecs = {}
    for name, m in meta["vectorizers"].items():
      params = dict(m["params"])
      params["ngram_range"] = tuple(params["ngram_range"])
      params["dtype"] = np.float32
      v = TfidfVectorizer(vocabulary=m["vocabulary"], **params)
      v.fit(["x"])  # sets the fixed vocabulary's internals; idf replaced below
      if cfg.use_idf:
        v.idf_ = np.load(folder / f"idf_{name}.npy")
      vecs[name] = v
    return cls(cfg, vecs)


def _jsonable_params(v: TfidfVectorizer) -> dict:
  keys = ("analyzer", "token_pattern", "ngram_range", "lowercase", "use_idf",
          "sublinear_tf", "norm")
  return {k: v.get_params()[k] for k in keys}


def _npy_bytes(a: np.ndarray) -> bytes:
  buf = io.BytesIO()
  np.save(buf, a, allow_pickle=False)
  return buf.getvalue()


def csr_to_bags(m: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Keeps the k largest entries of each row of a CSR matrix, as padded bags."""
  # Canonical entry order first: fit_transform and transform can list a row's
  # entries differently, and ties in weight must break the same way for both
  # (a resumed run recomputes features with transform and must match bitwise).
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


# ----------------------------------------------------------------------------------------
# Per-notebook lexical similarity (stateless: no fitted vocabulary).
# ----------------------------------------------------------------------------------------
# Words, with identifiers split at "_", digits and camelCase ("trainLoss_2" ->
# "train", "loss"), so prose in markdown meets the names used in code.
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")


def words(text: str, max_chars: int = 5_000) -> list[str]:
  return [w for w in (m.lower() for m in _WORD.findall(text[:max_chars]))
          if len(w) > 1 and w not in ENGLISH_STOP_WORDS]


def lexical_sim(texts: Sequence[str], max_chars: int = 5_000) -> np.ndarray:
  """Cosine of per-notebook TF-IDF word vectors of `texts` (one notebook's cells): [n, n].

  The IDF is the notebook's own (a word in every cell weighs little), so no
  vocabulary is fitted and nothing is tied to the training repositories: it is
  the same "which code cell shares this markdown's words" evidence everywhere.
  """
  n = len(texts)
  rows, cols, vocab = _word_entries(texts, max_chars)
  if not vocab:
    return np.zeros((n, n), np.float32)
  counts = np.zeros((n, len(vocab)), np.float32)
  np.add.at(counts, (np.asarray(rows), np.asarray(cols)), 1.0)
  df = (counts > 0).sum(0)
  tf = np.where(counts > 0, 1.0 + np.log(np.maximum(counts, 1.0)), 0.0)
  x = tf * (np.log((1.0 + n) / (1.0 + df)) + 1.0)
  x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  return (x @ x.T).astype(np.float32)


def _word_entries(texts: Sequence[str], max_chars: int) -> tuple[list[int], list[int], dict]:
  """(row, word id) of every word occurrence, and the notebook's own vocabulary."""
  vocab: dict[str, int] = {}
  rows, cols = [], []
  for r, t in enumerate(texts):
    for w in words(t, max_chars):
      rows.append(r)
      cols.append(vocab.setdefault(w, len(vocab)))
  return rows, cols, vocab


def lexical_vectors(texts: Sequence[str], max_chars: int = 5_000) -> sp.csr_matrix:
  """The per-notebook word TF-IDF of `lexical_sim`, L2-normalised rows, sparse
  [n, notebook vocabulary]: memory linear in the text, for notebooks of any size."""
  n = len(texts)
  rows, cols, vocab = _word_entries(texts, max_chars)
  counts = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                         shape=(n, max(len(vocab), 1)), dtype=np.float32)
  counts.sum_duplicates()
  df = np.bincount(counts.indices, minlength=counts.shape[1])
  x = counts.copy()
  x.data = (1.0 + np.log(x.data)) * (np.log((1.0 + n) / (1.0 + df[x.indices])) + 1.0)
  norms = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel())
  return sp.diags(1.0 / np.maximum(norms, 1e-12)).astype(np.float32) @ x
