"""features.kind "subword": per-cell token ids of a stored tokenizer (or a stored model's).

`tokens` [n_cells, max_tokens] int32, padded with the tokenizer's pad id. The
pointwise ranker builds its "markdown + sampled code" sequences from these
inside the model, and the cell-level ranker can fine-tune an encoder on them end
to end. The tokenizer is read from the store named in the config (workspace
passed in, never read from the environment).
"""

from __future__ import annotations

import dataclasses
import json
import weakref
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import tokenizers

from jaxrank import features, hf, io_utils, store
from jaxrank.data import batching
from jaxrank.data.types import Notebook

SETTINGS = "encoder_features.json"  # the subword / encoder featurizers' saved settings


def workspace_of(cfg: Mapping[str, Any]) -> store.Workspace:
  root = cfg.get("workspace") or ""
  if not root:
    raise ValueError("features.workspace is empty: set it to the workspace root that holds "
                     "models/ and tokenizers/ (e.g. --config.features.workspace=workspace)")
  return store.Workspace(root)


def clean_text(text: str, max_chars: int) -> str:
  """Cell text as the encoders see it: truncated (huge cells cost time, not signal)."""
  return text[:max_chars] if text else ""


def tokenize(tok, texts: Sequence[str], max_tokens: int, max_chars: int) -> np.ndarray:
  """[len(texts), max_tokens] int32 ids (with the tokenizer's specials), pad-padded.

  The same ids as `tok(texts, truncation=True, max_length=max_tokens)`, but a
  long text is first tokenized from its head only (`head_chars(max_tokens)`:
  a few hundred characters): the pre-tokenizer's cost grows with the characters it reads
  (~0.5 MB/s on this machine's 2 cores: 2000-character cells tokenized slower
  than MiniLM encodes them), while 64 tokens rarely need more than ~200. A cut
  can only change the word it falls in, so the head's ids are kept when every
  kept token comes from an earlier word (the head's encoding overflows past the
  kept tokens into a later word); otherwise the whole text is tokenized.
  """
  out = np.full((len(texts), max_tokens), tok.pad_token_id, np.int32)
  if not texts:
    return out
  texts = [clean_text(t, max_chars) or " " for t in texts]
  backend = _truncating_backend(tok, max_tokens)
  if backend is None:  # not a fast tokenizer, or left-side truncation: the plain way
    return _fill(out, tok(texts, truncation=True, max_length=max_tokens,
                          add_special_tokens=True)["input_ids"])
  encs: list = [None] * len(texts)
  todo = list(range(len(texts)))
  for head in head_chars(max_tokens):
    for i, e in zip(todo, backend.encode_batch([texts[i][:head] for i in todo])):
      encs[i] = e
    todo = [i for i in todo if len(texts[i]) > head and not _head_suffices(encs[i])]
    if not todo:
      break
  if todo:
    for i, e in zip(todo, backend.encode_batch([texts[i] for i in todo])):
      encs[i] = e
  return _fill(out, [e.ids for e in encs])


def head_chars(max_tokens: int) -> tuple[int, ...]:
  """The heads `tokenize` tries, shortest first (~3 characters a token; at 64
  tokens the first suffices for ~70% of corpus cells, the second for all but a
  few in 10,000)."""
  return (max(32, 3 * max_tokens), max(256, 6 * max_tokens))


def _fill(out: np.ndarray, rows) -> np.ndarray:
  for i, ids in enumerate(rows):
    out[i, :len(ids)] = ids
  return out


def _head_suffices(enc) -> bool:
  """Whether a head's truncated encoding equals the whole text's: it was cut
  (tokens overflowed) and its kept tokens all precede the head's last word,
  the only one the cut may have changed."""
  if not enc.overflowing:
    return False
  kept = [w for w in enc.word_ids if w is not None]
  rest = [w for o in enc.overflowing for w in o.word_ids if w is not None]
  return bool(kept) and bool(rest) and max(kept) < max(rest)


_BACKENDS: "weakref.WeakKeyDictionary[Any, dict[int, Any]]" = weakref.WeakKeyDictionary()


def _truncating_backend(tok, max_tokens: int):
  """A copy of a fast tokenizer's backend that truncates to `max_tokens` (kept
  per tokenizer: the wrapper's own backend is reconfigured on every call)."""
  if not getattr(tok, "is_fast", False) or getattr(tok, "truncation_side", "right") != "right":
    return None
  per_tok = _BACKENDS.setdefault(tok, {})
  if max_tokens not in per_tok:
    backend = tokenizers.Tokenizer.from_str(tok.backend_tokenizer.to_str())
    backend.no_padding()
    backend.enable_truncation(max_tokens)
    per_tok[max_tokens] = backend
  return per_tok[max_tokens]


@dataclasses.dataclass
class SubwordFeaturizer:
  """Token ids per cell from a stored tokenizer (`tokenizer` = a store name)."""

  workspace: str
  tokenizer: str
  max_tokens: int = 64
  max_chars: int = 2000
  _tok: Any = dataclasses.field(default=None, repr=False, compare=False)

  @property
  def tok(self):
    if self._tok is None:
      self._tok = hf.load_tokenizer(store.Workspace(self.workspace), self.tokenizer,
                                    check_hashes=False)
    return self._tok

  @property
  def vocab_size(self) -> int:
    return len(self.tok)

  @property
  def pad_id(self) -> int:
    return int(self.tok.pad_token_id)

  def to_json(self) -> dict[str, Any]:
    return {"workspace": self.workspace, "tokenizer": self.tokenizer,
            "max_tokens": self.max_tokens, "max_chars": self.max_chars}


def from_config(cfg: Mapping[str, Any]) -> SubwordFeaturizer:
  ws = workspace_of(cfg)
  name = cfg.get("tokenizer") or cfg.get("encoder")
  if not name:
    raise ValueError("features.tokenizer (or features.encoder) must name a store tokenizer/model")
  return SubwordFeaturizer(str(ws.root), name, int(cfg.get("max_tokens", 64)),
                           int(cfg.get("max_chars", 2000)))


def items(f: SubwordFeaturizer, notebooks: Sequence[Notebook]) -> list[batching.Arrays]:
  ids = tokenize(f.tok, features.cell_texts(notebooks), f.max_tokens, f.max_chars)
  return features.per_notebook(notebooks, {"tokens": ids})


def fit_items(cfg: Mapping[str, Any], notebooks: Sequence[Notebook]):
  f = from_config(cfg)
  return f, items(f, notebooks)


def save_settings(kind: str, featurizer, workdir: str | Path) -> Path:
  path = Path(workdir) / features.FOLDER / SETTINGS
  io_utils.atomic_write_json(path, {"type": kind, **featurizer.to_json()})
  return path


def load_settings(kind: str, workdir: str | Path) -> dict[str, Any]:
  path = Path(workdir) / features.FOLDER / SETTINGS
  if not path.exists():
    raise FileNotFoundError(f"{path} missing: not a subword/encoder-feature run")
  d = json.loads(path.read_text())
  if d.pop("type") != kind:
    raise ValueError(f"{path}: saved for features.kind {d.get('type')!r}, not {kind!r}")
  return d


def save(featurizer: SubwordFeaturizer, workdir: str | Path) -> Path:
  return save_settings("subword", featurizer, workdir)


def load(workdir: str | Path) -> SubwordFeaturizer:
  return SubwordFeaturizer(**load_settings("subword", workdir))
