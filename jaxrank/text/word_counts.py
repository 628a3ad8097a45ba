"""Word n-gram counts equal to scikit-learn's `CountVectorizer`, without its per-n-gram Python.

scikit-learn's word analyzer builds every n-gram as a string (`" ".join`) and
looks it up in a dict, cell by cell: ~2/3 of the TF-IDF featurizer's time. Here
each text is tokenized once with the vectorizer's own preprocessor and tokenizer
(so tokens are exactly scikit-learn's), tokens become integer ids, and n-grams
become integer codes built and matched with numpy over the whole list at once.

The result is the same count matrix `CountVectorizer._count_vocab` builds
(float32 counts, canonical CSR) and, for fitting, the same vocabulary as
`CountVectorizer.fit` (document-frequency bounds, then `max_features` by total
count with scikit-learn's own tie-breaking: the same `argsort` of the same
alphabetically ordered array). `tests/test_bow.py` checks both against
scikit-learn on the embedded sample. TF-IDF weighting stays scikit-learn's
`TfidfTransformer`.

`parallel_counts` counts a large list of texts in worker processes (one per
CPU), chunk by chunk, into the same matrix; with a vocabulary chosen on a
sample (`BowConfig.fit_cells`) that is how the featurizer scales to Kaggle's
6.4M cells.

Valid for the word analyzer when tokens cannot contain a space (so that the
n-gram "a b" is exactly the token pair (a, b)), no stop words and no custom
analyzer: `supported(vectorizer)`. Anything else takes scikit-learn's path.
"""

from __future__ import annotations

from concurrent import futures
import itertools
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from collections import defaultdict
from numbers import Integral
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

# Tokens that may not contain whitespace: bow.TOKEN_PATTERN (identifiers, numbers,
# single punctuation marks) is the one the featurizer uses.
_SAFE_PATTERNS = {r"(?u)[A-Za-z_][A-Za-z_0-9]*|\d+|[^\w\s]", r"(?u)\b\w\w+\b"}


def supported(v) -> bool:
  """Whether `counts`/`fit_vocabulary` reproduce vectorizer `v` exactly."""
  p = v.get_params()
  return (p["analyzer"] == "word" and p["token_pattern"] in _SAFE_PATTERNS
          and p["tokenizer"] is None and p["preprocessor"] is None
          and p["stop_words"] is None and p["input"] == "content" and not p["binary"]
          and p["ngram_range"][0] >= 1)


class _Tokens:
  """Token ids of many texts, flat, with each token's text index (`doc`)."""

  def __init__(self, v, texts: Sequence[str], table: dict[str, int] | None):
    """table None: ids in a new table grown in first-occurrence order (`self.table`);
    else the given table's ids, -1 for tokens not in it."""
    preprocess, tokenize = v.build_preprocessor(), v.build_tokenizer()
    toks = [tokenize(preprocess(v.decode(t))) for t in texts]
    self.lengths = np.fromiter(map(len, toks), np.int64, len(toks))
    n = int(self.lengths.sum())
    flat = itertools.chain.from_iterable(toks)
    if table is None:
      table = defaultdict()
      table.default_factory = table.__len__
      self.ids = np.fromiter(map(table.__getitem__, flat), np.int64, n)
      table.default_factory = None
    else:
      self.ids = np.fromiter(map(table.get, flat, itertools.repeat(-1)), np.int64, n)
    self.table = table
    self.n_texts = len(texts)
    self.doc = np.repeat(np.arange(len(texts), dtype=np.int64), self.lengths)
    starts = np.cumsum(self.lengths) - self.lengths
    self.left = self.lengths[self.doc] - (np.arange(n) - starts[self.doc])  # tokens from here on

  def grams(self, n: int, codes: np.ndarray, base: int) -> np.ndarray:
    """Codes of the n-grams starting at each position (-1 where none), given the
    (n-1)-gram `codes` and `base` > every token id: code * base + next token id."""
    out = np.full(len(self.ids), -1, np.int64)
    ok = np.flatnonzero(self.left >= n)
    nxt = self.ids[ok + n - 1]
    prev = codes[ok]
    good = (prev >= 0) & (nxt >= 0)
    out[ok[good]] = prev[good] * base + nxt[good]
    return out


def _csr_counts(doc: np.ndarray, col: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
  """float32 count matrix of (row, column) occurrences, canonical (as scikit-learn's):
  one sort of row * n_cols + col (numpy's SIMD sort), runs of equal keys counted."""
  n_rows, n_cols = shape
  width = max(n_cols, 1)
  key = doc.astype(np.int64) * width + col
  key.sort()
  if not len(key):
    return sp.csr_matrix(shape, dtype=np.float32)
  first = np.empty(len(key), bool)
  first[0] = True
  np.not_equal(key[1:], key[:-1], out=first[1:])
  starts = np.flatnonzero(first)
  uniq = key[starts]
  data = np.diff(np.append(starts, len(key))).astype(np.float32)
  indptr = np.zeros(n_rows + 1, np.int64)
  np.cumsum(np.bincount(uniq // width, minlength=n_rows), out=indptr[1:])
  idx_dtype = np.int32 if max(len(uniq), n_cols) < 2 ** 31 else np.int64
  m = sp.csr_matrix((data, (uniq % width).astype(idx_dtype), indptr.astype(idx_dtype)),
                    shape=shape)
  m.has_sorted_indices = True
  return m


class Lookup:
  """A fitted vocabulary as integer codes: term -> column for n-grams of token ids."""

  def __init__(self, vocabulary: dict[str, int], ngram_range: tuple[int, int]):
    self.ngram_range = tuple(ngram_range)
    self.n_cols = len(vocabulary)
    table: dict[str, int] = {}
    parts = [(term.split(" "), col) for term, col in vocabulary.items()]
    for words, _ in parts:
      for w in words:
        table.setdefault(w, len(table))
    self.table, self.base = table, max(len(table), 1)
    lo, hi = self.ngram_range
    if self.base ** hi >= 2 ** 62:
      raise OverflowError("vocabulary too large for int64 n-gram codes")
    self.keys, self.cols = {}, {}
    for n in range(lo, hi + 1):
      code = np.array([_code([table[w] for w in words], self.base)
                       for words, _ in parts if len(words) == n], np.int64)
      col = np.array([c for words, c in parts if len(words) == n], np.int64)
      order = np.argsort(code)
      self.keys[n], self.cols[n] = code[order], col[order]

  def counts(self, tokens: _Tokens) -> sp.csr_matrix:
    """The [texts, vocabulary] count matrix of `tokens` (ids of `self.table`)."""
    docs, cols = [], []
    lo, hi = self.ngram_range
    codes = tokens.ids
    for n in range(1, hi + 1):
      if n > 1:
        codes = tokens.grams(n, codes, self.base)
      if n >= lo and len(self.keys[n]):
        pos = np.flatnonzero(codes >= 0)
        at = np.searchsorted(self.keys[n], codes[pos])
        at = np.minimum(at, len(self.keys[n]) - 1)
        hit = self.keys[n][at] == codes[pos]
        docs.append(tokens.doc[pos[hit]])
        cols.append(self.cols[n][at[hit]])
    doc = np.concatenate(docs) if docs else np.zeros(0, np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    return _csr_counts(doc, col, (tokens.n_texts, self.n_cols))


def _code(ids: Sequence[int], base: int) -> int:
  c = 0
  for i in ids:
    c = c * base + i
  return c


def counts(v, texts: Sequence[str], lookup: Lookup | None = None) -> sp.csr_matrix:
  """`v.transform`'s count matrix (before TF-IDF) for a fitted vectorizer `v`."""
  lookup = lookup or Lookup(v.vocabulary_, v.ngram_range)
  return lookup.counts(_Tokens(v, texts, lookup.table))


def available_cpus() -> int:
  """CPUs this process may run on (a SLURM job's share, not the node's count)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def parallel_counts(v, texts: Sequence[str], lookup: Lookup, *, workers: int = 0,
                    chunk: int = 4096, min_texts: int = 100_000) -> sp.csr_matrix:
  """`counts(v, texts, lookup)`, the same matrix, counted by `workers` worker
  processes (default: every available CPU) in chunks of `chunk` texts.

  Workers are plain subprocesses (`python -m jaxrank.text.word_counts`, pickles
  over their stdin/stdout), not multiprocessing: nothing of a multithreaded
  parent (jax) is forked and no caller's `__main__` is imported again. Fewer than
  `min_texts` texts (or one CPU) count here, as starting workers costs about a
  second. A worker that fails is logged and its chunks are counted here.
  """
  workers = min(workers or available_cpus(), -(-len(texts) // chunk))
  if workers <= 1 or len(texts) < min_texts:
    return counts(v, texts, lookup)
  parts = [texts[s:s + chunk] for s in range(0, len(texts), chunk)]
  blocks: list = [None] * len(parts)
  root = str(Path(__file__).resolve().parents[2])  # the jaxrank this process runs
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
  setup = pickle.dumps((v, lookup), pickle.HIGHEST_PROTOCOL)

  todo = iter(range(len(parts)))  # chunks go to whichever worker is free
  lock = threading.Lock()

  def run(_) -> None:
    proc, errf = None, tempfile.TemporaryFile()  # stderr: a file never fills like a pipe
    try:
      proc = subprocess.Popen([sys.executable, "-m", "jaxrank.text.word_counts"], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf)
      proc.stdin.write(setup)
      while True:  # one chunk in flight: the worker reads it whole, then answers
        with lock:
          i = next(todo, None)
        if i is None:
          break
        pickle.dump(parts[i], proc.stdin, pickle.HIGHEST_PROTOCOL)
        proc.stdin.flush()
        blocks[i] = pickle.load(proc.stdout)
      proc.stdin.close()
      proc.wait(timeout=60)
    except (OSError, EOFError, pickle.UnpicklingError, subprocess.TimeoutExpired) as e:
      err = []
      if proc is not None:
        proc.kill()  # reaped below
        errf.seek(0)
        err = errf.read().decode(errors="replace").strip().splitlines()[-3:]
      log.warning("word count worker failed (%r; %s): counting its chunks here", e,
                  " | ".join(err) or "no stderr")
    finally:
      if proc is not None:
        for f in (proc.stdin, proc.stdout):
          try:
            f.close()
          except OSError:
            pass
        proc.wait()
      errf.close()

  with futures.ThreadPoolExecutor(workers) as pool:
    list(pool.map(run, range(workers)))
  for i, block in enumerate(blocks):
    if block is None:
      blocks[i] = counts(v, parts[i], lookup)
  return sp.vstack(blocks, format="csr")


def _worker_main() -> None:
  """`parallel_counts`'s worker: (vectorizer, lookup), then text chunks, on stdin;
  each chunk's count matrix on stdout."""
  inp, out = sys.stdin.buffer, sys.stdout.buffer
  try:
    v, lookup = pickle.load(inp)
  except EOFError:  # nothing sent
    return
  while True:
    try:
      texts = pickle.load(inp)
    except EOFError:
      return
    pickle.dump(counts(v, texts, lookup), out, pickle.HIGHEST_PROTOCOL)
    out.flush()


def fit_counts(v, texts: Sequence[str]) -> tuple[dict[str, int], sp.csr_matrix]:
  """(vocabulary, counts) as an unfitted `v.fit_transform` learns and counts them."""
  tok = _Tokens(v, texts, None)
  names = list(tok.table)  # token id -> token
  base = max(len(names), 1)
  lo, hi = v.ngram_range
  # Every n-gram that occurs gets a compact id (np.unique of its code); its
  # string is rebuilt from (prefix id, last token) only for candidate terms.
  codes, prefix, last, ids_n = tok.ids, {}, {}, {}
  for n in range(1, hi + 1):
    if n > 1:
      raw = tok.grams(n, codes, base)
      ok = raw >= 0
      uniq, inv = np.unique(raw[ok], return_inverse=True)
      codes = np.full(len(raw), -1, np.int64)
      codes[ok] = inv
      prefix[n], last[n] = uniq // base, uniq % base
    ids_n[n] = codes
  # The full count matrix over every occurring n-gram (n in range), column blocks by n.
  docs, cols, offsets, width = [], [], {}, 0
  for n in range(lo, hi + 1):
    pos = np.flatnonzero(ids_n[n] >= 0)
    offsets[n] = width
    width += len(names) if n == 1 else len(prefix[n])
    docs.append(tok.doc[pos])
    cols.append(ids_n[n][pos] + offsets[n])
  full = _csr_counts(np.concatenate(docs), np.concatenate(cols), (len(texts), width))

  # CountVectorizer.fit_transform: document-frequency bounds, then max_features.
  n_doc = len(texts)
  max_df = v.max_df if isinstance(v.max_df, Integral) else v.max_df * n_doc
  min_df = v.min_df if isinstance(v.min_df, Integral) else v.min_df * n_doc
  if max_df < min_df:
    raise ValueError("max_df corresponds to < documents than min_df")
  dfs = np.bincount(full.indices, minlength=width)
  cand = np.flatnonzero((dfs <= max_df) & (dfs >= min_df))

  def term(n: int, i: int) -> str:
    return names[i] if n == 1 else term(n - 1, int(prefix[n][i])) + " " + names[int(last[n][i])]

  bounds = [offsets[n] for n in range(lo, hi + 1)] + [width]
  block = np.searchsorted(bounds, cand, side="right") - 1
  strings = [term(lo + int(b), int(c - bounds[b])) for b, c in zip(block, cand)]
  order = sorted(range(len(cand)), key=strings.__getitem__)
  cand = cand[order]
  strings = [strings[i] for i in order]
  if v.max_features is not None and len(cand) > v.max_features:
    # scikit-learn's tfs: float32 column sums of the alphabetically sorted matrix.
    tfs = np.asarray(full[:, cand].sum(axis=0)).ravel()
    keep = np.zeros(len(cand), bool)
    keep[(-tfs).argsort()[: v.max_features]] = True
    cand = cand[keep]
    strings = [s for s, k in zip(strings, keep) if k]
  if not len(cand):
    raise ValueError("After pruning, no terms remain. Try a lower min_df or a higher max_df.")
  new_col = np.full(width, -1, np.int64)
  new_col[cand] = np.arange(len(cand))
  mapped = new_col[full.indices]
  rows = np.repeat(np.arange(n_doc), np.diff(full.indptr))
  keep = mapped >= 0
  x = sp.csr_matrix((full.data[keep], (rows[keep], mapped[keep])), shape=(n_doc, len(cand)),
                    dtype=np.float32)
  x.sort_indices()
  return {s: i for i, s in enumerate(strings)}, x


if __name__ == "__main__":
  _worker_main()
