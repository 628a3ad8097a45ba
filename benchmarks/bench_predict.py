r"""Prediction at Kaggle scale: a trained run (any family, or an ensemble), encoding included.

  .venv/bin/python -m benchmarks.bench_predict --workdir=workspace/runs/best \
      [--data_dir=../shared/data/nbcorpus --split=train --max_notebooks=500] [--warm_cache]

Predicts the split's notebooks twice with `train.load_predictor` (a run
folder, "A,B,C" or an ensemble run such as launch/pipeline.sh leaves):

  cold  featurize (for encoder features: encoding every cell into an EMPTY
        vector cache, as on Kaggle where every hidden notebook is new) + forward
        (compiling each length bucket once) + decode;
  warm  the same notebooks again: vectors cached, functions compiled.

By default the run's store models are reached through a temporary workspace
whose `models/` links to the real one and whose encoder cache starts empty, so
the cold pass pays the encoding; `--warm_cache` uses the run's own workspace
(and cache) instead. Prints notebooks/s and cells/s of both passes, the peak
resident memory of the process, and, as its last line, the extrapolation to
Kaggle's 20,000 hidden-test notebooks (same cells per notebook as the sample):

  kaggle_20k_min_cold=… kaggle_20k_min_warm=… peak_rss_gb=… nb_per_s_cold=…
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Sequence

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
KAGGLE_TEST = 20_000

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder, 'A,B,C' or ensemble run.",
                               required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data/nbcorpus", "Competition folder.")
_SPLIT = flags.DEFINE_string("split", "train", "Split to predict.")
_MAX = flags.DEFINE_integer("max_notebooks", 500, "Notebooks to time (0 = all).")
_WARM_CACHE = flags.DEFINE_bool("warm_cache", False, "Use the run's own encoder vector cache "
                                "(the cold pass then skips encoding what is cached).")


def cold_workspace(root: Path, real_models: Path):
  """A workspace at `root` whose models/ links to `real_models` and whose caches are empty."""
  from jaxrank import store  # pylint: disable=g-import-not-at-top
  ws = store.Workspace(root)
  ws.root.mkdir(parents=True, exist_ok=True)
  os.symlink(real_models, ws.models_dir)
  return ws


def main(argv: Sequence[str]) -> None:
  del argv
  from jaxrank import ensemble, train  # pylint: disable=g-import-not-at-top
  from jaxrank.data import notebooks  # pylint: disable=g-import-not-at-top
  data_dir = Path(_DATA_DIR.value)
  data_dir = data_dir if data_dir.is_absolute() else (REPO / data_dir).resolve()
  nbs = notebooks.load_split(data_dir, _SPLIT.value)
  nbs = nbs[: _MAX.value] if _MAX.value else nbs
  first = ensemble.member_dirs(_WORKDIR.value)[0] if (
      "," in _WORKDIR.value or ensemble.is_ensemble_run(_WORKDIR.value)) else _WORKDIR.value
  real_ws = train.run_workspace(first)
  with tempfile.TemporaryDirectory(prefix="bench_predict-") as tmp:
    ws = None if _WARM_CACHE.value else cold_workspace(Path(tmp) / "ws", real_ws.models_dir)
    predictor, config = train.load_predictor(_WORKDIR.value, workspace=ws)
    n_cells = sum(nb.n_cells for nb in nbs)
    times = []
    for _ in range(2):
      t0 = time.perf_counter()
      preds = predictor.predict(nbs)
      times.append(time.perf_counter() - t0)
  assert len(preds) == len(nbs)
  cold, warm = times
  peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
  name = config.model.name if config is not None else "ensemble"
  print(f"{name} ({_WORKDIR.value}): {len(nbs)} notebooks, {n_cells} cells, "
        f"{'warm' if _WARM_CACHE.value else 'empty'} encoder cache")
  for label, t in (("cold (encode + compile)", cold), ("warm", warm)):
    print(f"  {label}: {t:.1f}s, {len(nbs) / t:.2f} notebooks/s, {n_cells / t:.0f} cells/s")
  scale = KAGGLE_TEST / len(nbs) / 60
  print(f"kaggle_20k_min_cold={cold * scale:.1f} kaggle_20k_min_warm={warm * scale:.1f} "
        f"peak_rss_gb={peak_gb:.2f} nb_per_s_cold={len(nbs) / cold:.2f}")


if __name__ == "__main__":
  app.run(main)
