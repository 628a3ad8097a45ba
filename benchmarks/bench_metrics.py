"""Speed of the metrics on a competition-sized set of synthetic notebooks.

Scores `--n_notebooks` synthetic notebooks (lengths log-normal, mean ~46 cells,
capped at 1000, like the competition's 140k) with `jaxrank.metrics`, and compares
with plain-Python per-notebook loops timed in the same run on a random subset and
extrapolated to the whole set (times are CPU seconds of this single-threaded process):
  * `kaggle_reference`: the competition's published metric code (gt.index + bisect);
  * `python_loop`: a dict of true ranks per notebook + our O(n log n) count_inversions.

  python -m benchmarks.bench_metrics                  # 140k notebooks
  python -m benchmarks.bench_metrics --n_notebooks=20000 --subset=2000
"""

from __future__ import annotations

import bisect
import time
from typing import Sequence

from absl import app
from absl import flags
import numpy as np

from jaxrank import metrics

_N_NOTEBOOKS = flags.DEFINE_integer("n_notebooks", 140_000, "Synthetic notebooks to score.")
_SUBSET = flags.DEFINE_integer("subset", 3_000, "Notebooks timed with the plain-Python loops.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")


def synthetic_set(num: int, seed: int = 0):
  """(gt, pred, cell_types) dicts for `num` notebooks with noisy predictions."""
  rng = np.random.default_rng(seed)
  lengths = np.clip(np.round(rng.lognormal(np.log(30), 0.9, size=num)), 2, 1000).astype(int)
  gt, pred, types = {}, {}, {}
  ids = rng.integers(0, 2**32, size=int(lengths.sum()), dtype=np.uint64).tolist()
  start = 0
  for i, n in enumerate(lengths.tolist()):
    # Fresh 8-hex strings per notebook, unique within it (as in the competition).
    cells = list(dict.fromkeys(f"{x:08x}" for x in ids[start:start + n]))
    start += n
    n = len(cells)
    is_md = rng.random(n) < 0.35
    # Predicted order: true positions plus noise (a mediocre model).
    noisy = np.arange(n) + rng.normal(0, max(1.0, 0.2 * n), size=n)
    nb = f"{i:014x}"
    gt[nb] = cells
    pred[nb] = [cells[k] for k in np.argsort(noisy, kind="stable")]
    types[nb] = {c: ("markdown" if m else "code") for c, m in zip(cells, is_md.tolist())}
  return gt, pred, types


def _kaggle_count_inversions(a: Sequence[int]) -> int:
  inversions = 0
  sorted_so_far: list[int] = []
  for i, u in enumerate(a):
    j = bisect.bisect(sorted_so_far, u)
    inversions += i - j
    sorted_so_far.insert(j, u)
  return inversions


def kaggle_reference(ground_truth, predictions) -> float:
  """The competition's metric code, verbatim in substance."""
  total_inversions = 0
  total_2max = 0
  for gt, pred in zip(ground_truth, predictions):
    ranks = [gt.index(x) for x in pred]
    total_inversions += _kaggle_count_inversions(ranks)
    n = len(gt)
    total_2max += n * (n - 1)
  return 1 - 4 * total_inversions / total_2max


def python_loop(ground_truth, predictions) -> float:
  """Per-notebook loop with dict ranks and the exact O(n log n) count."""
  inv = pairs2 = 0
  for gt, pred in zip(ground_truth, predictions):
    pos = {c: k for k, c in enumerate(gt)}
    inv += metrics.count_inversions([pos[c] for c in pred])
    pairs2 += len(gt) * (len(gt) - 1)
  return 1 - 4 * inv / pairs2


def _timed(fn, *args):
  # CPU time of this process: the work done on one core, robust to other jobs
  # sharing the machine (everything timed here is single-threaded).
  t = time.process_time()
  out = fn(*args)
  return out, time.process_time() - t


def main(argv: Sequence[str]) -> None:
  del argv
  num = _N_NOTEBOOKS.value
  t = time.perf_counter()
  gt, pred, types = synthetic_set(num, _SEED.value)
  n_cells = sum(map(len, gt.values()))
  print(f"built {num} notebooks, {n_cells} cells (mean {n_cells / num:.1f}) "
        f"in {time.perf_counter() - t:.1f}s")

  keys = list(gt)
  tau, t_tau = _timed(metrics.kendall_tau, [gt[k] for k in keys], [pred[k] for k in keys])
  res, t_eval = _timed(metrics.evaluate_orders, gt, pred, None)
  res_types, t_eval_types = _timed(metrics.evaluate_orders, gt, pred, types)

  rng = np.random.default_rng(_SEED.value + 1)
  sub = rng.choice(num, size=min(_SUBSET.value, num), replace=False)
  sub_gt = [gt[keys[i]] for i in sub]
  sub_pred = [pred[keys[i]] for i in sub]
  scale = num / len(sub)
  ref_tau, t_ref = _timed(kaggle_reference, sub_gt, sub_pred)
  loop_tau, t_loop = _timed(python_loop, sub_gt, sub_pred)
  ours_sub, _ = _timed(metrics.kendall_tau, sub_gt, sub_pred)
  assert abs(ours_sub - ref_tau) < 1e-12, (ours_sub, ref_tau)
  assert abs(ours_sub - loop_tau) < 1e-12, (ours_sub, loop_tau)
  assert res["kendall_tau"] == tau == res_types["kendall_tau"]

  t_ref_all, t_loop_all = t_ref * scale, t_loop * scale
  print(f"pooled kendall tau {tau:.6f} (subset: ours {ours_sub:.6f} == kaggle {ref_tau:.6f})")
  print(f"{'method':44s} {'cpu_s':>9s} {'kaggle_ref/this':>16s}")
  rows = [
      ("metrics.kendall_tau", t_tau),
      ("metrics.evaluate_orders (no cell types)", t_eval),
      ("metrics.evaluate_orders (with cell types)", t_eval_types),
      (f"python_loop (dict + Fenwick), x{scale:.0f} of subset", t_loop_all),
      (f"kaggle_reference, x{scale:.0f} of subset", t_ref_all),
  ]
  for name, sec in rows:
    print(f"{name:44s} {sec:9.2f} {t_ref_all / sec:16.1f}")
  print(f"speed-up of kendall_tau over python_loop: {t_loop_all / t_tau:.1f}x")
  print(f"markdown_placement_accuracy {res_types['markdown_placement_accuracy']:.4f}, "
        f"spearman {res['spearman']:.4f}")


if __name__ == "__main__":
  app.run(main)
