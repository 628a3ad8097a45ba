"""Code-first layout, targets, buckets and the replayable batch schedule."""

import numpy as np
import pytest

from jaxrank import decode
from jaxrank.data import batching
from jaxrank.data.types import Notebook


def _nb(i, n_code, n_md, rng):
  code = [f"c{i}_{k}" for k in range(n_code)]
  md = [f"m{i}_{k}" for k in range(n_md)]
  order = list(code)
  for m in md:
    order.insert(int(rng.integers(0, len(order) + 1)), m)
  file_ids = code + list(rng.permutation(md))
  types = ["code"] * n_code + ["markdown"] * n_md
  return Notebook(f"nb{i}", tuple(file_ids), tuple(types), tuple(file_ids), tuple(order))


def _items(nbs):
  return [batching.notebook_arrays(nb, {"x": np.arange(nb.n_cells, dtype=np.float32)}) for nb in nbs]


def test_layout_targets_decode_back_to_truth():
  rng = np.random.default_rng(0)
  for i in range(20):
    nb = _nb(i, int(rng.integers(0, 6)), int(rng.integers(0, 6)), rng)
    if nb.n_cells == 0:
      continue
    a = batching.notebook_arrays(nb, {"x": np.arange(nb.n_cells, dtype=np.float32)})
    assert a["is_code"][: nb.n_code].all() and not a["is_code"][nb.n_code:].any()
    # Per-cell features follow the layout.
    np.testing.assert_array_equal(a["x"], a["cell_index"])
    md_keys = a["target_key"][nb.n_code:]
    assert decode.order_from_keys(nb, md_keys) == list(nb.order)
    assert (a["target_gap"][nb.n_code:] <= nb.n_code).all()
    assert (a["target_gap"][: nb.n_code] == -1).all()


def test_collate_pads_with_empty_rows():
  rng = np.random.default_rng(1)
  items = _items([_nb(0, 3, 2, rng), _nb(1, 1, 1, rng)])
  b = batching.collate([items[0], None, items[1]], 8)
  assert b["cell_mask"].shape == (3, 8)
  assert b["cell_mask"].sum(1).tolist() == [5, 0, 2]
  assert b["n_code"].tolist() == [3, 0, 1]
  assert (b["target_gap"][1] == -1).all()


def test_schedule_is_replayable_and_covers_each_epoch_once():
  rng = np.random.default_rng(2)
  nbs = [_nb(i, int(rng.integers(1, 40)), int(rng.integers(1, 40)), rng) for i in range(50)]
  items = _items(nbs)
  kw = dict(buckets=(16, 32, 64, 128), cells_per_batch=64, row_multiple=2, seed=3)
  s1, s2 = batching.BatchSchedule(items, **kw), batching.BatchSchedule(items, **kw)
  n = s1.batches_per_epoch
  seen = []
  for step in range(n):
    b = s1.batch(step)
    assert b.arrays["cell_mask"].shape[0] % 2 == 0
    seen += [j for j in b.nb_index if j >= 0]
  assert sorted(seen) == list(range(50))
  # Random access (as after a resume) gives the same batch as a replay.
  for step in [n + 3, 1, 2 * n - 1]:
    np.testing.assert_array_equal(s1.batch(step).nb_index, s2.batch(step).nb_index)
  assert not np.array_equal(
      np.concatenate([s1.batch(k).nb_index for k in range(n)]),
      np.concatenate([s1.batch(n + k).nb_index for k in range(n)]))  # epochs differ


def test_eval_batches_hold_every_notebook_once():
  rng = np.random.default_rng(4)
  items = _items([_nb(i, 3 + i, 2, rng) for i in range(9)])
  batches = batching.eval_batches(items, buckets=(8, 32), cells_per_batch=16, row_multiple=2)
  got = sorted(j for b in batches for j in b.nb_index if j >= 0)
  assert got == list(range(9))


def test_too_long_notebook_names_the_limit():
  with pytest.raises(ValueError, match="exceeds the largest bucket 8"):
    batching.bucket_size(9, (4, 8))
