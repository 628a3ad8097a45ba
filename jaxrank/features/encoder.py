"""features.kind "encoder": cached vectors of a frozen stored encoder, and their similarities.

Per cell `vec` [n_cells, D] (float16), mean-pooled over at most `max_tokens`
tokens, plus the cell-cell cosine `sim` [n, n] and, with `lexical_sim`,
`sim_lex` [n, n], the cosine of per-notebook word TF-IDF vectors
(`jaxrank.text.bow.lexical_sim`). Vectors are **cached on disk** under
`cache_dir/<model>/L<max_tokens>/` (`L<max_tokens>-bfloat16/` for bfloat16
compute, `encode_dtype`) keyed by sha1(model, max_tokens, text), in
append-only shards (each written atomically), so the ~76k cells of the corpus
are encoded once and reused by every later run, fold and process; a killed
encoding job keeps the shards it finished. The encoder is read from the store
named in the config (workspace passed in, never read from the environment).
"""

from __future__ import annotations

from concurrent import futures
import dataclasses
import hashlib
import io
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrank import features, hf, io_utils, progress, store
from jaxrank.data import batching
from jaxrank.data.types import Notebook
from jaxrank.features.subword import clean_text, load_settings, save_settings, tokenize, workspace_of
from jaxrank.models import roberta
from jaxrank.text import cell_shape, markup, sections

log = logging.getLogger(__name__)


def text_key(model: str, max_tokens: int, text: str) -> bytes:
  return hashlib.sha1(f"{model}\x00{max_tokens}\x00{text}".encode("utf-8", "surrogatepass")
                      ).digest()[:16]


class VectorCache:
  """Append-only on-disk map text-hash -> float16 vector (one folder per model + length)."""

  def __init__(self, folder: str | Path):
    self.folder = Path(folder)
    self.folder.mkdir(parents=True, exist_ok=True)
    self._map: dict[bytes, np.ndarray] = {}
    self._seen: set[str] = set()
    self.refresh()

  def refresh(self) -> None:
    """Reads shards written since the last look (possibly by other processes)."""
    for p in sorted(self.folder.glob("shard-*.npz")):
      if p.name in self._seen:
        continue
      with np.load(p) as z:
        keys, vecs = z["keys"], z["vecs"]
      for k, v in zip(keys, vecs):
        self._map[k.tobytes()] = v
      self._seen.add(p.name)

  def __len__(self) -> int:
    return len(self._map)

  def get(self, key: bytes) -> np.ndarray | None:
    return self._map.get(key)

  def add(self, keys: Sequence[bytes], vecs: np.ndarray) -> None:
    if not len(keys):
      return
    buf = io.BytesIO()
    karr = np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), 16)
    np.savez(buf, keys=karr, vecs=vecs.astype(np.float16))
    name = f"shard-{time.time_ns():020d}-{hashlib.sha1(karr.tobytes()).hexdigest()[:8]}.npz"
    io_utils.atomic_write_bytes(self.folder / name, buf.getvalue())
    self._seen.add(name)
    for k, v in zip(keys, vecs.astype(np.float16)):
      self._map[k] = v


COMPUTE_DTYPES = ("float32", "bfloat16")
# `batch_rows` counts cells of this many tokens: an encoder call holds about
# batch_rows x TOKENS_PER_ROW tokens, whatever the width or `max_tokens`.
TOKENS_PER_ROW = 64


def bucket_width(n_tokens: int, max_tokens: int) -> int:
  """The padded length of a batch whose longest row has `n_tokens` tokens: a
  multiple of 8 (at least 8, at most `max_tokens`), so XLA compiles at most
  max_tokens / 8 shapes."""
  return min(max_tokens, max(8, -(-n_tokens // 8) * 8))


def make_encode_fn(cfg_enc, params, batch_tokens: int = 2048, *,
                   fixed_rows: int = 0) -> Callable[[np.ndarray], np.ndarray]:
  """Jitted ids [B, L] -> mean-pooled vectors [B, H] float32 (any B).

  Rows go through the encoder `batch_tokens // L` at a time (the last call
  padded, so one compiled shape per length L): every call holds about the same
  number of tokens, whatever the width. On 2 CPU cores ~2k tokens a call is
  1.4x faster than 4k at every width (the [tokens, 1536] activations then stay
  in cache); a GPU wants more (`batch_rows` of the featurizer scales it).
  Every batch is dispatched before the first result is read, so the host
  prepares the next batch while XLA runs the current one. With `cfg_enc.dtype`
  bfloat16 the weight matrices are cast once here, not on every call.
  `fixed_rows` > 0 sends that many rows a call at every width instead (the loop
  before the token budget, for the benchmarks' baseline).
  """
  model = roberta.Encoder(cfg_enc)
  pad = cfg_enc.pad_token_id
  if jnp.dtype(cfg_enc.dtype) != jnp.float32:
    params = jax.tree_util.tree_map_with_path(  # the dense kernels; embeddings stay float32
        lambda path, x: x.astype(cfg_enc.dtype) if path[-1].key == "kernel" else x, params)
  params = jax.device_put(params)

  @jax.jit
  def fwd(p, ids_BxL):
    mask = ids_BxL != pad
    return roberta.mean_pool(model.apply({"params": p}, ids_BxL, mask.astype(jnp.int32)), mask)

  def encode(ids: np.ndarray) -> np.ndarray:
    rows = fixed_rows or max(1, batch_tokens // max(1, ids.shape[1]))
    out = []
    for s in range(0, len(ids), rows):
      chunk = ids[s:s + rows]
      n = len(chunk)
      if n < rows:  # one compiled shape per length
        chunk = np.concatenate([chunk, np.full((rows - n, chunk.shape[1]), pad, chunk.dtype)])
      out.append((fwd(params, chunk), n))
    if not out:
      return np.zeros((0, cfg_enc.hidden_size), np.float32)
    return np.concatenate([np.asarray(v)[:n] for v, n in out])

  return encode


def encode_bucketed(encode: Callable[[np.ndarray], np.ndarray], ids: np.ndarray,
                    pad_id: int) -> np.ndarray:
  """Vectors [n, H] of token ids [n, max_tokens] in their given order: rows of the
  same `bucket_width` go to `encode` together, cut to that width, so short cells
  are not padded to the longest."""
  n_tok = (ids != pad_id).sum(1)
  widths = np.array([bucket_width(int(k), ids.shape[1]) for k in range(ids.shape[1] + 1)])[n_tok]
  out = None
  for w in np.unique(widths):
    rows = np.flatnonzero(widths == w)
    vecs = encode(ids[rows, :w])
    if out is None:
      out = np.empty((len(ids), vecs.shape[1]), np.float32)
    out[rows] = vecs
  return np.empty((len(ids), 0), np.float32) if out is None else out


@dataclasses.dataclass
class EncoderFeaturizer:
  """Frozen store encoder -> cached mean-pooled cell vectors."""

  workspace: str
  encoder: str
  cache_dir: str
  max_tokens: int = 64
  max_chars: int = 2000
  # Cells of 64 tokens per encoder call: each call holds about batch_rows x 64
  # tokens (`TOKENS_PER_ROW`, `make_encode_fn`), so 16 cells of 128 or 256 of 8.
  batch_rows: int = 32
  dim: int = 0
  lexical_sim: bool = False  # also `sim_lex`, the per-notebook word TF-IDF cosine
  cell_shape: bool = False  # also `shape`, each cell's form (`jaxrank.text.cell_shape`)
  # Markdown cells read as `markup.readable` text (HTML, CSS, URLs out) by the
  # encoder and the lexical similarity; code cells and the cell form read the source.
  readable_markdown: bool = False
  # also `section`, each markdown heading's section number ranked in its notebook
  # (`jaxrank.text.sections`)
  section_numbers: bool = False
  # Compute dtype of the encoder ("float32", or "bfloat16": its own cache folder).
  dtype: str = "float32"
  _state: Any = dataclasses.field(default=None, repr=False, compare=False)
  _cache: Any = dataclasses.field(default=None, repr=False, compare=False)

  def __post_init__(self):
    if self.dtype not in COMPUTE_DTYPES:
      raise ValueError(f"encoder features: dtype must be one of {COMPUTE_DTYPES}, "
                       f"got {self.dtype!r}")

  @property
  def vocab_size(self) -> int:
    return self.dim

  @property
  def cache_folder(self) -> Path:
    suffix = "" if self.dtype == "float32" else f"-{self.dtype}"  # float32: the original folder
    return Path(self.cache_dir) / self.encoder / f"L{self.max_tokens}{suffix}"

  def to_json(self) -> dict[str, Any]:
    return {"workspace": self.workspace, "encoder": self.encoder, "cache_dir": self.cache_dir,
            "max_tokens": self.max_tokens, "max_chars": self.max_chars,
            "batch_rows": self.batch_rows, "dim": self.dim, "lexical_sim": self.lexical_sim,
            "dtype": self.dtype, "cell_shape": self.cell_shape,
            "readable_markdown": self.readable_markdown, "section_numbers": self.section_numbers}

  def _model(self):
    if self._state is None:
      cfg, params, tok = hf.load_encoder(store.Workspace(self.workspace), self.encoder,
                                         check_hashes=False)
      cfg = cfg.replace(hidden_dropout=0.0, attention_dropout=0.0, dtype=self.dtype)
      self._state = (cfg, tok, make_encode_fn(cfg, params, self.batch_rows * TOKENS_PER_ROW))
    return self._state

  def cache(self) -> VectorCache:
    """The on-disk vector cache, read once per featurizer; later calls only read the
    shards written since (e.g. by another process)."""
    if self._cache is None:
      self._cache = VectorCache(self.cache_folder)
    else:
      self._cache.refresh()
    return self._cache

  def vectors(self, texts: Sequence[str], *, save_every: int = 2048) -> np.ndarray:
    """[len(texts), D] float16 vectors; encodes (and caches) only texts not cached yet.

    Each distinct missing text is encoded once, in chunks of ~`save_every`
    (each chunk one cache shard): texts sorted by characters, each chunk's
    token ids made by a second thread while the previous chunk encodes, and
    batched by token length (`encode_bucketed`)."""
    cache = self.cache()
    keys = [text_key(self.encoder, self.max_tokens, clean_text(t, self.max_chars)) for t in texts]
    missing: dict[bytes, str] = {}
    for k, t in zip(keys, texts):
      if cache.get(k) is None and k not in missing:
        missing[k] = t
    if missing:
      cfg, tok, encode = self._model()
      if not self.dim:
        self.dim = cfg.hidden_size
      mk, mt = list(missing), list(missing.values())
      order = np.argsort([len(t) for t in mt], kind="stable")
      step = -(-save_every // self.batch_rows) * self.batch_rows  # cells per chunk (a shard)
      chunks = [order[s:s + step] for s in range(0, len(order), step)]

      def token_ids(idx):
        return tokenize(tok, [mt[i] for i in idx], self.max_tokens, self.max_chars)

      prog = progress.Progress(len(order), f"encoded with {self.encoder}", "cells", logger=log)
      with futures.ThreadPoolExecutor(1, thread_name_prefix="tokenize") as pool:
        pending = pool.submit(token_ids, chunks[0])
        for c, idx in enumerate(chunks):
          ids = pending.result()
          if c + 1 < len(chunks):
            pending = pool.submit(token_ids, chunks[c + 1])
          cache.add([mk[i] for i in idx],
                    encode_bucketed(encode, ids, tok.pad_token_id))
          prog.update(len(idx))
    out = np.stack([cache.get(k) for k in keys]) if keys else np.zeros((0, self.dim), np.float16)
    if not self.dim and len(out):
      self.dim = out.shape[1]
    return out


def from_config(cfg: Mapping[str, Any]) -> EncoderFeaturizer:
  ws = workspace_of(cfg)
  if not cfg.get("encoder"):
    raise ValueError("features.encoder must name a store model (e.g. minilm-l6)")
  cache_dir = cfg.get("cache_dir") or str(ws.encoder_cache_dir)
  return EncoderFeaturizer(str(ws.root), cfg["encoder"], cache_dir, int(cfg.get("max_tokens", 64)),
                           int(cfg.get("max_chars", 2000)), int(cfg.get("batch_rows", 32)),
                           lexical_sim=bool(cfg.get("lexical_sim", False)),
                           cell_shape=bool(cfg.get("cell_shape", False)),
                           dtype=str(cfg.get("encode_dtype", "float32")),
                           readable_markdown=bool(cfg.get("readable_markdown", False)),
                           section_numbers=bool(cfg.get("section_numbers", False)))


def encoder_texts(f: EncoderFeaturizer, notebooks: Sequence[Notebook]) -> list[str]:
  """Every cell's text as `f`'s encoder reads it (`features.cell_texts` order)."""
  texts = features.cell_texts(notebooks)
  if f.readable_markdown:
    texts = markup.markdown_readable(texts, [t for nb in notebooks for t in nb.cell_types])
  return texts


def items(f: EncoderFeaturizer, notebooks: Sequence[Notebook]) -> list[batching.Arrays]:
  texts = features.cell_texts(notebooks)
  if not texts:
    return []
  read = encoder_texts(f, notebooks)
  vecs = f.vectors(read).astype(np.float32)
  unit = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-6)

  def sims(nb, rows, perm):
    u = unit[rows][perm]
    out = {"sim": (u @ u.T).astype(np.float16)}
    if f.lexical_sim:
      from jaxrank.text import bow  # pylint: disable=g-import-not-at-top  # scikit-learn: only here
      nb_read = read[rows]  # this notebook's texts, sliced once
      out["sim_lex"] = bow.lexical_sim([nb_read[i] for i in perm]).astype(np.float16)
    return out

  per_cell = {"vec": vecs.astype(np.float16)}
  if f.cell_shape:
    per_cell["shape"] = cell_shape.shapes(
        texts, [t for nb in notebooks for t in nb.cell_types]).astype(np.float16)
  if f.section_numbers:
    per_cell["section"] = np.concatenate(
        [sections.section_features(nb.sources, nb.cell_types) for nb in notebooks]
    ).astype(np.float16)
  return features.per_notebook(notebooks, per_cell, sims)


def fit_items(cfg: Mapping[str, Any], notebooks: Sequence[Notebook]):
  f = from_config(cfg)
  return f, items(f, notebooks)


def save(featurizer: EncoderFeaturizer, workdir: str | Path) -> Path:
  return save_settings("encoder", featurizer, workdir)


def load(workdir: str | Path) -> EncoderFeaturizer:
  return EncoderFeaturizer(**load_settings("encoder", workdir))


def encode_notebooks(cfg: Mapping[str, Any], notebooks: Iterable[Notebook]) -> int:
  """Fills the vector cache for every cell of `notebooks`; returns the cached count."""
  f = from_config(cfg)
  f.vectors(encoder_texts(f, list(notebooks)))
  return len(f.cache())
