r"""Prediction throughput of a trained run (any model family), in notebooks/s.

  .venv/bin/python -m benchmarks.bench_predict --workdir=workspace/runs/bow \
      [--data_dir=../shared/data/nbcorpus --split=train --max_notebooks=500]

Times featurize + forward + decode for the split's notebooks twice (the first
pass includes compiling each length bucket once), prints notebooks/s and
extrapolates to Kaggle's 20,000 hidden-test notebooks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
KAGGLE_TEST = 20_000

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained run folder.", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data/nbcorpus", "Competition folder.")
_SPLIT = flags.DEFINE_string("split", "train", "Split to predict.")
_MAX = flags.DEFINE_integer("max_notebooks", 500, "Notebooks to time (0 = all).")


def main(argv: Sequence[str]) -> None:
  del argv
  from jaxrank import train
  from jaxrank.data import notebooks
  data_dir = Path(_DATA_DIR.value)
  data_dir = data_dir if data_dir.is_absolute() else (REPO / data_dir).resolve()
  nbs = notebooks.load_split(data_dir, _SPLIT.value)
  nbs = nbs[: _MAX.value] if _MAX.value else nbs
  predictor, config = train.load_predictor(_WORKDIR.value)
  n_cells = sum(nb.n_cells for nb in nbs)
  times = []
  for _ in range(2):
    t0 = time.perf_counter()
    preds = predictor.predict(nbs)
    times.append(time.perf_counter() - t0)
  assert len(preds) == len(nbs)
  warm = times[1]
  print(f"{config.model.name}: {len(nbs)} notebooks ({n_cells} cells)")
  print(f"  first pass (with compiles) {times[0]:.1f}s, warm {warm:.2f}s: "
        f"{len(nbs) / warm:.1f} notebooks/s, {n_cells / warm:.0f} cells/s")
  print(f"  Kaggle hidden test ({KAGGLE_TEST} notebooks): ~{KAGGLE_TEST / (len(nbs) / warm) / 60:.1f} "
        f"min warm (+ {times[0] - warm:.0f}s compile)")


if __name__ == "__main__":
  app.run(main)
