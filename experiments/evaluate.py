r"""Restores a run's best checkpoint and scores it on a split with known orders.

  python -m experiments.evaluate --workdir=workspace/runs/bow \
      --data_dir=jaxrank/data/sample --split=train

Prints the metrics table and saves it (eval/<split>.json, per-notebook CSV,
predictions/<split>.csv) in the workdir. Several runs (--workdir=A,B,C, printed
only) or an ensemble run folder (ensemble.json) are scored as one ensemble.
"""

from absl import app, flags

from experiments import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder, ensemble run folder, or several "
                               "runs A,B,C scored as one ensemble (jaxrank.ensemble); "
                               "or --name.")
_NAME = flags.DEFINE_string("name", None, "Run name under WORKSPACE/runs (instead of --workdir).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Competition-format folder, or several: D1,D2.",
                                 required=True)
_SPLIT = flags.DEFINE_string("split", "train", "Split with a <split>_orders.csv.")
_VAL_ONLY = flags.DEFINE_bool("val_only", False,
                              "Only the run's own validation fold of this split.")
_LATEST = flags.DEFINE_bool("latest", False, "Use the newest checkpoint, not the best.")


def main(argv):
  del argv
  common.setup_jax()
  from jaxrank import results, train
  from jaxrank.data import notebooks

  workdir = common.run_dir(_WORKDIR.value, _NAME.value)
  predictor, config = train.load_predictor(workdir, best=not _LATEST.value,
                                           workspace=common.workspace_for(workdir))
  nbs = notebooks.load_split(_DATA_DIR.value, _SPLIT.value)
  if any(nb.order is None for nb in nbs):
    raise app.UsageError(f"{_DATA_DIR.value}: split {_SPLIT.value!r} has no orders file")
  name = _SPLIT.value
  if _VAL_ONLY.value:  # the run's own validation fold: same notebooks as in training
    if config is None:
      raise app.UsageError("--val_only: the ensemble's members validated on different "
                           "notebooks (config.data differs); score a split instead")
    nbs = nbs[: config.data.max_notebooks] if config.data.max_notebooks else nbs
    _, nbs = train.split_data(nbs, config.data)
    name += "_val"
  preds = predictor.predict(nbs)
  table, per_nb = train.evaluate_predictions(nbs, preds)
  if "," not in workdir:  # a list of runs has no folder of its own to write to
    rec = results.RunRecorder(workdir)
    rec.write_eval(name, table, per_nb)
    rec.write_predictions(name, preds)
  print(f"{workdir} on {_DATA_DIR.value} [{name}], {len(nbs)} notebooks:")
  for k, v in table.items():
    print(f"  {k:30s} {v:.4f}")


if __name__ == "__main__":
  common.run(main)
