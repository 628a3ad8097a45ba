"""Cross-validation folds grouped by `ancestor_id`.

Notebooks that share an ancestor (forks of one notebook in the competition; one
source repository in nbcorpus) are near copies, so they must never straddle
train and validation. A notebook with no ancestor_id is its own group.

Groups are dealt to folds greedily, each to the fold with the fewest cells so
far, biggest first. Sizes are compared in powers of two and the seed shuffles
groups within one power, so different seeds give genuinely different partitions
while the folds stay balanced by cell count (to within about one group).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxrank.data import notebooks as nb_io
from jaxrank.data.types import Notebook


def _group_key(nb: Notebook) -> str:
  # "\0" cannot occur in an ancestor id from a csv, so no clash with real ids.
  return nb.ancestor_id if nb.ancestor_id is not None else f"\0{nb.id}"


def ancestor_folds(notebooks: Sequence[Notebook], n_folds: int = 5, seed: int = 0) -> np.ndarray:
  """The fold (0..n_folds-1) of each notebook, aligned with `notebooks`.

  All notebooks of one ancestor_id land in one fold. The result depends only on
  the notebooks' (ancestor_id, id, n_cells) and `seed`, not on their order in
  the list.

  Raises:
    ValueError: n_folds < 2, or fewer ancestor groups than folds.
  """
  if n_folds < 2:
    raise ValueError(f"n_folds must be >= 2, got {n_folds}")
  keys = [_group_key(nb) for nb in notebooks]
  groups = sorted(set(keys))
  if len(groups) < n_folds:
    raise ValueError(f"{len(groups)} ancestor groups cannot fill {n_folds} folds: "
                     "lower n_folds or add notebooks from other ancestors")
  index = {g: i for i, g in enumerate(groups)}
  group_of_nb = np.array([index[k] for k in keys], np.int64)
  cells_G = np.bincount(group_of_nb, weights=[nb.n_cells for nb in notebooks],
                        minlength=len(groups))

  rng = np.random.default_rng(seed)
  shuffle_G = rng.permutation(len(groups))
  size_class_G = np.floor(np.log2(np.maximum(cells_G, 1)))
  # lexsort: last key is primary -> biggest size class first, random inside it.
  visit = np.lexsort((shuffle_G, -size_class_G))
  fold_label = rng.permutation(n_folds)  # which fold index gets which bin

  load_F = np.zeros(n_folds)
  fold_G = np.empty(len(groups), np.int64)
  for g in visit:
    f = int(np.argmin(load_F))
    fold_G[g] = f
    load_F[f] += cells_G[g]
  return fold_label[fold_G][group_of_nb]


def split_train_val(notebooks: Sequence[Notebook], *, fold: int = 0, n_folds: int = 5,
                    seed: int = 0) -> tuple[list[Notebook], list[Notebook]]:
  """(train, val): val is fold `fold` of `ancestor_folds`, train is the rest."""
  if not 0 <= fold < n_folds:
    raise ValueError(f"fold must be in [0, {n_folds}), got {fold}")
  folds = ancestor_folds(notebooks, n_folds=n_folds, seed=seed)
  train = [nb for nb, f in zip(notebooks, folds) if f != fold]
  val = [nb for nb, f in zip(notebooks, folds) if f == fold]
  return train, val


def split_chosen(notebooks: Sequence[Notebook], *, ancestors: Sequence[str] = (),
                 notebook_ids: Sequence[str] = ()) -> tuple[list[Notebook], list[Notebook]]:
  """(train, val) with a chosen validation set, still ancestor-grouped.

  val holds every notebook whose ancestor group contains one of `notebook_ids`
  (e.g. the notebooks of some repositories) or whose ancestor id is one of
  `ancestors`. An ancestor of several folders (`load_split` on "A,B") may be
  named in full ("nbcorpus2/89f593f7") or by its id in its folder ("89f593f7",
  which matches it in every folder).

  Raises:
    ValueError: a chosen ancestor matches no notebook, or val or train is empty.
  """
  keys = [_group_key(nb) for nb in notebooks]
  wanted = set(ancestors)
  chosen = set()
  for a in wanted:
    hit = {k for k in keys if k == a or k.endswith("/" + a)}
    if not hit:
      raise ValueError(f"validation ancestor {a!r} matches no notebook's ancestor_id")
    chosen |= hit
  ids = set(notebook_ids)
  chosen |= {k for nb, k in zip(notebooks, keys) if nb.id in ids}
  val = [nb for nb, k in zip(notebooks, keys) if k in chosen]
  train = [nb for nb, k in zip(notebooks, keys) if k not in chosen]
  if not val:
    raise ValueError("the chosen validation set holds no notebook")
  if not train:
    raise ValueError("the chosen validation set holds every notebook: nothing left to train on")
  return train, val


def split_by_config(notebooks: Sequence[Notebook], data_cfg) -> tuple[list[Notebook], list[Notebook]]:
  """(train, val) as a config's `data` group chooses them: the repositories named in
  `data.val_sources` (the folders' sources.csv) and the ancestors of `data.val_ancestors`
  (both comma-separated) if any, else ancestor-grouped fold `data.fold` of `data.n_folds`
  (n_folds <= 1 or fold < 0: every notebook trains, val is empty)."""
  val_ancestors = _names(data_cfg.get("val_ancestors", ""))
  val_sources = set(_names(data_cfg.get("val_sources", "")))
  if val_ancestors or val_sources:
    ids = []
    if val_sources:
      repo_of = nb_io.read_sources(data_cfg.data_dir)
      unknown = sorted(val_sources - set(repo_of.values()))
      if unknown:
        raise ValueError(f"data.val_sources: no notebook of {data_cfg.data_dir} comes from "
                         f"{unknown} (sources.csv repos: {sorted(set(repo_of.values()))[:20]})")
      ids = [i for i, r in repo_of.items() if r in val_sources]
    return split_chosen(notebooks, ancestors=val_ancestors, notebook_ids=ids)
  if data_cfg.n_folds <= 1 or data_cfg.fold < 0:
    return list(notebooks), []
  return split_train_val(notebooks, fold=data_cfg.fold, n_folds=data_cfg.n_folds,
                         seed=data_cfg.seed)


def split_fields(data_cfg) -> tuple[str, ...]:
  """The `data` fields that decide `split_by_config`'s validation set, given the
  notebooks: the chosen sets if any is set (the folds then play no part), else also
  the fold's."""
  chosen = ("val_ancestors", "val_sources")
  if any(data_cfg.get(f) for f in chosen):
    return chosen
  return ("n_folds", "fold", "seed") + chosen


def _names(value) -> list[str]:
  """A comma-separated string (or a list) -> its non-empty, stripped items."""
  items = value.split(",") if isinstance(value, str) else list(value or ())
  return [str(v).strip() for v in items if str(v).strip()]
