"""Cell features for models, fitted on train and saved beside the run.

`config.features.kind` picks a featurizer module in KINDS, one file each:

  bow      n-gram TF-IDF bags (`jaxrank.text.bow`) + the cell-cell TF-IDF cosine
  subword  token ids of a stored tokenizer (models that run the encoder)
  encoder  cached vectors of a frozen stored encoder + their cosine (+ lexical)

A featurizer module provides

    fit_items(cfg, notebooks) -> (featurizer, items)   # fit on train, featurize it
    items(featurizer, notebooks) -> items
    save(featurizer, workdir) / load(workdir) -> featurizer

where `featurizer.vocab_size` sizes the model's input and `items` are the
per-notebook arrays of `jaxrank.data.batching.notebook_arrays`. Whole splits are
featurized at once (one flat list of cell texts: scikit-learn's vectorizers and
the encoder batch much better on it), then cut back into notebooks by
`per_notebook`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jaxrank import io_utils
from jaxrank.data import batching
from jaxrank.data.types import Notebook

FOLDER = "featurizer"
# kind -> the module implementing the interface above.
KINDS = {"bow": "jaxrank.features.bow", "subword": "jaxrank.features.subword",
         "encoder": "jaxrank.features.encoder"}


def module_for(kind: str):
  if kind not in KINDS:
    raise ValueError(f"unknown features.kind {kind!r}; known: {sorted(KINDS)}")
  return importlib.import_module(KINDS[kind])


def fit_any(cfg: Mapping[str, Any], notebooks: Sequence[Notebook]):
  """Dispatches on cfg["kind"]; (featurizer, items of `notebooks`)."""
  return module_for(cfg["kind"]).fit_items(cfg, notebooks)


def _map_paths(featurizer, fn: Callable[[Any], Any]):
  """The featurizer with `fn` applied to its string fields (store root, caches)."""
  if not dataclasses.is_dataclass(featurizer):
    return featurizer
  changed = {f.name: fn(getattr(featurizer, f.name)) for f in dataclasses.fields(featurizer)
             if f.init and isinstance(getattr(featurizer, f.name), str)}
  return dataclasses.replace(featurizer, **changed)


def save_any(kind: str, featurizer, workdir: str | Path, workspace=None) -> None:
  """Saves the featurizer and records its kind beside the run for `load_any`.

  Paths under `workspace` (a `store.Workspace`) are saved as `$WORKSPACE/...`, so
  the run finds the store and caches of whatever workspace it is used in.
  """
  if workspace is not None:
    featurizer = _map_paths(featurizer, workspace.portable)
  module_for(kind).save(featurizer, workdir)
  io_utils.atomic_write_json(Path(workdir) / FOLDER / "kind.json", {"kind": kind})


def load_any(workdir: str | Path, workspace=None):
  """(kind, featurizer) saved in a run folder, `$WORKSPACE` paths resolved against
  `workspace` (the one in use); FileNotFoundError if none."""
  path = Path(workdir) / FOLDER / "kind.json"
  kind = json.loads(path.read_text())["kind"] if path.exists() else "bow"
  featurizer = module_for(kind).load(workdir)
  if workspace is not None:
    featurizer = _map_paths(featurizer, workspace.resolve)
  return kind, featurizer


def items_any(kind: str, featurizer, notebooks: Sequence[Notebook]) -> list[batching.Arrays]:
  return module_for(kind).items(featurizer, notebooks)


# --- shared by the featurizers ----------------------------------------------------------
def cell_texts(notebooks: Sequence[Notebook]) -> list[str]:
  """Every cell's source, notebook after notebook (file order): the flat list featurized."""
  return [s for nb in notebooks for s in nb.sources]


def per_notebook(notebooks: Sequence[Notebook], per_cell: Mapping[str, np.ndarray],
                 extra: Callable[[Notebook, slice, np.ndarray], Mapping[str, np.ndarray]]
                 | None = None) -> list[batching.Arrays]:
  """Rows of `per_cell` arrays (one per cell of `cell_texts(notebooks)`) cut back into
  notebooks, as `batching.notebook_arrays` (code-first layout). `extra(nb, rows,
  cell_index)` adds per-notebook arrays (e.g. cell-cell similarities), `rows` being
  the notebook's slice of the flat list and `cell_index` its code-first permutation."""
  bounds = np.cumsum([0] + [nb.n_cells for nb in notebooks])
  out = []
  for nb, a, b in zip(notebooks, bounds[:-1], bounds[1:]):
    it = batching.notebook_arrays(nb, {k: v[a:b] for k, v in per_cell.items()})
    if extra is not None:
      it.update(extra(nb, slice(a, b), it["cell_index"]))
    out.append(it)
  return out
