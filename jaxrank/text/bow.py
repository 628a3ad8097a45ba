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
from sklearn.feature_extraction.text import (ENGLISH_STOP_WORDS, TfidfTransformer,
                                             TfidfVectorizer)

from jaxrank import io_utils
from jaxrank.text import word_counts

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
  # The vocabulary is chosen from at most this many cells (a seeded sample when
  # there are more; the idf is always every cell's); 0 = every cell.
  fit_cells: int = 250_000


def _truncate(texts: Sequence[str], max_chars: int) -> list[str]:
  return [t[:max_chars] for t in texts]


def unfitted_vectorizers(config: BowConfig) -> dict[str, TfidfVectorizer]:
  """The vectorizers `BowFeaturizer.fit_transform` fits: "word", and "char" with
  `char_ngrams`."""
  common = dict(use_idf=config.use_idf, sublinear_tf=config.sublinear_tf,
                lowercase=config.lowercase, min_df=config.min_df, dtype=np.float32)
  vecs = {"word": TfidfVectorizer(
      analyzer="word", token_pattern=TOKEN_PATTERN,
      ngram_range=tuple(config.word_ngrams), max_features=config.word_vocab, **common)}
  if config.char_ngrams:
    vecs["char"] = TfidfVectorizer(
        analyzer="char_wb", ngram_range=tuple(config.char_ngrams),
        max_features=config.char_vocab, **common)
  return vecs


class BowFeaturizer:
  """Fitted TF-IDF vectorizers plus the bag (top-K) conversion."""

  def __init__(self, config: BowConfig, vectorizers: dict[str, TfidfVectorizer]):
    self.config = config
    self.vectorizers = vectorizers  # "word" and optionally "char"
    self._fast = {}  # name -> (word_counts.Lookup, TfidfTransformer), built on first use

  @property
  def vocab_size(self) -> int:
    """Number of ids including the padding id 0."""
    return 1 + sum(len(v.vocabulary_) for v in self.vectorizers.values())

  @classmethod
  def fit(cls, texts: Sequence[str], config: BowConfig) -> "BowFeaturizer":
    return cls.fit_transform(texts, config)[0]

  @classmethod
  def fit_transform(cls, texts: Sequence[str], config: BowConfig, *, fast: bool = True
                    ) -> tuple["BowFeaturizer", sp.csr_matrix]:
    """Fits on `texts` and returns their matrix too (tokenizes them once).

    fast: word n-grams are counted by `word_counts` (the same vocabulary, idf and
    matrix as scikit-learn's own `fit_transform`, several times faster); False runs
    scikit-learn's analyzer (the reference the tests compare with).
    """
    texts = _truncate(texts, config.max_chars)
    vecs = unfitted_vectorizers(config)
    sample = None
    if config.fit_cells and len(texts) > config.fit_cells:
      pick = np.random.default_rng(0).choice(len(texts), config.fit_cells, replace=False)
      sample = [texts[i] for i in np.sort(pick)]
    blocks = []
    for name, v in vecs.items():
      if fast and word_counts.supported(v):
        if sample is None:  # exactly scikit-learn's fit_transform
          vocabulary, counts = word_counts.fit_counts(v, texts)
        else:  # the vocabulary of the sample, counted on every cell in parallel
          vocabulary, _ = word_counts.fit_counts(v, sample)
          counts = word_counts.parallel_counts(
              v, texts, word_counts.Lookup(vocabulary, v.ngram_range))
        tfidf = _transformer(v).fit(counts)
        vecs[name] = _fixed_vectorizer(_jsonable_params(v), vocabulary,
                                       tfidf.idf_ if v.use_idf else None)
        blocks.append(tfidf.transform(counts, copy=False))
      else:
        if sample is not None:  # the sample's vocabulary, every cell's idf
          vecs[name] = v = TfidfVectorizer(**{**v.get_params(),
                                              "vocabulary": v.fit(sample).vocabulary_})
        blocks.append(v.fit_transform(texts))
    return cls(config, vecs), _with_padding_column(blocks)

  def transform(self, texts: Sequence[str], *, fast: bool = True) -> sp.csr_matrix:
    """Sparse [N, vocab_size] matrix; column 0 (padding) is always empty."""
    texts = _truncate(texts, self.config.max_chars)
    blocks = []
    for name, v in self.vectorizers.items():
      if fast and word_counts.supported(v):
        if name not in self._fast:
          self._fast[name] = (word_counts.Lookup(v.vocabulary_, v.ngram_range), _transformer(v))
        lookup, tfidf = self._fast[name]
        blocks.append(tfidf.transform(word_counts.parallel_counts(v, texts, lookup), copy=False))
      else:
        blocks.append(v.transform(texts))
    return _with_padding_column(blocks)

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
    vecs = {name: _fixed_vectorizer(m["params"], m["vocabulary"],
                                    np.load(folder / f"idf_{name}.npy") if cfg.use_idf else None)
            for name, m in meta["vectorizers"].items()}
    return cls(cfg, vecs)


def _fixed_vectorizer(params: dict, vocabulary: dict[str, int], idf: np.ndarray | None
                      ) -> TfidfVectorizer:
  """A fitted TfidfVectorizer from saved parts (`_jsonable_params`, vocabulary, idf)."""
  params = dict(params)
  params["ngram_range"] = tuple(params["ngram_range"])
  params["dtype"] = np.float32
  v = TfidfVectorizer(vocabulary=vocabulary, **params)
  v.fit(["x"])  # sets the fixed vocabulary's internals; idf replaced below
  if idf is not None:
    v.idf_ = idf
  return v


def _transformer(v: TfidfVectorizer) -> TfidfTransformer:
  """scikit-learn's TF-IDF weighting of `v` as a transformer of count matrices:
  unfitted for an unfitted `v`, else carrying `v.idf_`."""
  t = TfidfTransformer(norm=v.norm, use_idf=v.use_idf, smooth_idf=v.smooth_idf,
                       sublinear_tf=v.sublinear_tf)
  if hasattr(v, "vocabulary_"):
    t.fit(sp.csr_matrix((1, len(v.vocabulary_)), dtype=np.float32))
    if v.use_idf:
      t.idf_ = v.idf_
  return t


def _with_padding_column(blocks: list) -> sp.csr_matrix:
  """[empty padding column | blocks...] as one float32 CSR matrix."""
  if len(blocks) == 1:  # the common case: shift the column ids instead of copying rows
    b = sp.csr_matrix(blocks[0])
    return sp.csr_matrix((b.data, b.indices + 1, b.indptr), shape=(b.shape[0], b.shape[1] + 1))
  first = sp.csr_matrix((blocks[0].shape[0], 1), dtype=np.float32)
  return sp.hstack([first, *blocks], format="csr", dtype=np.float32)


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
  nnz = np.diff(indptr)
  # Rows with at most k entries are copied whole, all at once.
  short = np.flatnonzero(nnz <= k)
  rows = np.repeat(short, nnz[short])
  src = np.arange(len(rows)) - np.repeat(np.cumsum(nnz[short]) - nnz[short], nnz[short])
  at = indptr[rows] + src
  ids[rows, src] = indices[at]
  weights[rows, src] = data[at]
  for r in np.flatnonzero(nnz > k):  # the k largest of the rest, kept in column order
    lo, hi = indptr[r], indptr[r + 1]
    top = lo + np.argpartition(-data[lo:hi], k - 1)[:k]
    top.sort()
    ids[r] = indices[top]
    weights[r] = data[top]
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
