r"""Writes a Kaggle submission (id,cell_order) for every notebook of a split.

  python -m experiments.predict --workdir=workspace/runs/bow \
      --data_dir=jaxrank/data/sample --split=test --output=submission.csv

Several runs (--workdir=A,B,C, or an ensemble run folder with ensemble.json)
predict as one ensemble (jaxrank/ensemble.py). No orders are needed. The file
is written atomically; every notebook and every cell is checked to be present
exactly once before it is written. Notebooks of any length get a prediction:
those over --max_cells cells are predicted in windows (jaxrank.windows); a
notebook whose prediction fails is named in a warning and written in its given
order (code, then markdown).
"""

from absl import app, flags, logging

from experiments import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder, ensemble run folder, or several "
                               "runs A,B,C predicting as one (jaxrank.ensemble); or --name.")
_NAME = flags.DEFINE_string("name", None, "Run name under WORKSPACE/runs (instead of --workdir).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Competition-format folder, or several: D1,D2.",
                                 required=True)
_SPLIT = flags.DEFINE_string("split", "test", "Split folder to predict.")
_MAX_CELLS = flags.DEFINE_integer("max_cells", None, "Longer notebooks are predicted in "
                                  "windows of at most this many cells (default: the largest "
                                  "bucket of the run).")
_OUTPUT = flags.DEFINE_string("output", None, "submission.csv path (default: "
                              "WORKDIR/predictions/<split>.csv).")


def main(argv):
  del argv
  write(common.run_dir(_WORKDIR.value, _NAME.value))


def write(workdir: str):
  """Predicts --data_dir/--split with the runs `workdir` and writes the submission
  (--output); also the body of a bundle's predict.py (experiments.predict_bundle)."""
  common.setup_jax()
  from jaxrank import submission, train
  from jaxrank.data import notebooks

  if "," in workdir and not _OUTPUT.value:
    raise app.UsageError("several --workdir runs: name the submission file with --output")
  predictor, _ = train.load_predictor(workdir, workspace=common.workspace_for(workdir))
  nbs = notebooks.load_split(_DATA_DIR.value, _SPLIT.value)
  preds = predictor.predict(nbs, max_cells=_MAX_CELLS.value)
  submission.validate_submission(preds, nbs)
  out = _OUTPUT.value or f"{workdir}/predictions/{_SPLIT.value}.csv"
  path = submission.write_submission(out, preds)
  logging.info("wrote %d notebooks to %s", len(preds), path)
  print(path)
  return path


if __name__ == "__main__":
  common.run(main)
