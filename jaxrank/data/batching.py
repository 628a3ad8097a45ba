"""Notebooks -> padded, length-bucketed numpy batches with a replayable order.

Every notebook becomes a dict of per-cell arrays with its cells laid out **code
first, in the given order, then markdown in file order**. So code cell k sits
at row k, and gap g ("before code cell g"; g == n_code is the end) lines up
with row g. Models rely on that layout.

Batches group notebooks of similar length (buckets of cell counts), so little
compute goes to padding, and each bucket is one compiled shape. The order of
batches is a pure function of (seed, epoch): `BatchSchedule.batch(step)` gives
the batch of any global step without replaying earlier ones, so a resumed run
continues with exactly the batch it would have seen (the checkpoint only needs
the step).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from jaxrank.data import targets
from jaxrank.data.types import CODE, Notebook

Arrays = dict[str, np.ndarray]

# Per-cell fields and their padding values; extra per-cell fields (e.g. token
# ids of a subword featurizer) are padded with zeros.
# Fields with two cell axes ([n, n], e.g. cell-cell similarity), padded on both.
PAIR_FIELDS = ("sim", "sim_lex")
_PAD = {"is_code": False, "cell_mask": False, "code_pos": 0.0, "target_key": 0.0,
        "target_gap": -1, "cell_index": -1}


def layout(nb: Notebook) -> np.ndarray:
  """Indices into nb.cell_ids: code cells (given order), then markdown (file order)."""
  is_code = np.array([t == CODE for t in nb.cell_types], bool)
  return np.concatenate([np.flatnonzero(is_code), np.flatnonzero(~is_code)])


def notebook_arrays(nb: Notebook, cell_features: Mapping[str, np.ndarray]) -> Arrays:
  """Per-cell arrays of one notebook in the code-first layout.

  Args:
    nb: the notebook (targets are filled when `nb.order` is known).
    cell_features: per-cell feature arrays aligned with `nb.cell_ids`
      (e.g. {"ids": [n, K] int32, "weights": [n, K] float32}).
  """
  perm = layout(nb)
  n_code = nb.n_code
  out: Arrays = {k: np.asarray(v)[perm] for k, v in cell_features.items()}
  is_code = np.zeros(nb.n_cells, bool)
  is_code[:n_code] = True
  code_pos = np.zeros(nb.n_cells, np.float32)
  code_pos[:n_code] = targets.code_keys(n_code)
  out.update(is_code=is_code, cell_mask=np.ones(nb.n_cells, bool), code_pos=code_pos,
             cell_index=perm.astype(np.int32))
  if nb.order is not None:
    keys = targets.true_keys(nb)[perm].astype(np.float32)
    gaps = np.full(nb.n_cells, -1, np.int32)
    gaps[n_code:] = targets.true_gaps(nb)  # aligned with nb.markdown_ids = file order
    out.update(target_key=keys, target_gap=gaps)
  return out


def bucket_size(n_cells: int, buckets: Sequence[int]) -> int:
  for b in buckets:
    if n_cells <= b:
      return b
  raise ValueError(f"notebook with {n_cells} cells exceeds the largest bucket {buckets[-1]}")


def rows_for(bucket: int, cells_per_batch: int, multiple: int) -> int:
  """Batch rows for a bucket: ~cells_per_batch cells, a multiple of `multiple`."""
  rows = max(1, cells_per_batch // bucket)
  return max(multiple, rows // multiple * multiple)


def collate(items: Sequence[Arrays | None], n_cells: int) -> Arrays:
  """Pads notebooks to [B, n_cells, ...]; None rows are empty padding rows."""
  template = next(it for it in items if it is not None)
  out: Arrays = {}
  for key, ref in template.items():
    pair = key in PAIR_FIELDS
    shape = (len(items), n_cells) + ((n_cells,) if pair else ref.shape[1:])
    arr = np.full(shape, _PAD.get(key, 0), dtype=ref.dtype)
    for r, it in enumerate(items):
      if it is not None:
        n = len(it[key])
        if pair:
          arr[r, :n, :n] = it[key]
        else:
          arr[r, :n] = it[key]
    out[key] = arr
  n_code = np.array([0 if it is None else int(it["is_code"].sum()) for it in items], np.int32)
  out["n_code"] = n_code
  return out


@dataclasses.dataclass(frozen=True)
class Batch:
  arrays: Arrays
  nb_index: np.ndarray  # [B] index into the notebook list, -1 for padding rows


class BatchSchedule:
  """Deterministic, resumable sequence of training batches over epochs."""

  def __init__(self, items: Sequence[Arrays], *, buckets: Sequence[int],
               cells_per_batch: int, row_multiple: int = 1, seed: int = 0):
    self.items = items
    self.buckets = tuple(buckets)
    self.seed = seed
    self.cells_per_batch = cells_per_batch
    self.row_multiple = row_multiple
    by_bucket: dict[int, list[int]] = {}
    for i, it in enumerate(items):
      by_bucket.setdefault(bucket_size(len(it["cell_mask"]), self.buckets), []).append(i)
    self.by_bucket = dict(sorted(by_bucket.items()))
    self.rows = {b: rows_for(b, cells_per_batch, row_multiple) for b in self.by_bucket}
    self.batches_per_epoch = sum(-(-len(ix) // self.rows[b]) for b, ix in self.by_bucket.items())

  def epoch_plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
    """[(bucket, notebook indices padded with -1)] for one epoch, shuffled."""
    rng = np.random.default_rng([self.seed, epoch])
    plan = []
    for b, ix in self.by_bucket.items():
      ix = rng.permutation(ix)
      rows = self.rows[b]
      pad = (-len(ix)) % rows
      ix = np.concatenate([ix, np.full(pad, -1, ix.dtype)])
      plan += [(b, chunk) for chunk in ix.reshape(-1, rows)]
    order = rng.permutation(len(plan))
    return [plan[i] for i in order]

  def position(self, step: int) -> tuple[int, int]:
    """(epoch, index within epoch) of a global step."""
    return divmod(step, self.batches_per_epoch)

  def batch(self, step: int) -> Batch:
    epoch, i = self.position(step)
    if getattr(self, "_cached_epoch", None) != epoch:
      self._plan, self._cached_epoch = self.epoch_plan(epoch), epoch
    bucket, idx = self._plan[i]
    arrays = collate([self.items[j] if j >= 0 else None for j in idx], bucket)
    return Batch(arrays, idx)


def eval_batches(items: Sequence[Arrays], *, buckets: Sequence[int], cells_per_batch: int,
                 row_multiple: int = 1) -> list[Batch]:
  """Every notebook exactly once, in bucketed batches (no shuffling)."""
  sched = BatchSchedule(items, buckets=buckets, cells_per_batch=cells_per_batch,
                        row_multiple=row_multiple)
  out = []
  for b, ix in sched.by_bucket.items():
    rows = sched.rows[b]
    for s in range(0, len(ix), rows):
      chunk = list(ix[s:s + rows]) + [-1] * (rows - len(ix[s:s + rows]))
      out.append(Batch(collate([items[j] if j >= 0 else None for j in chunk], b),
                       np.array(chunk)))
  return out
