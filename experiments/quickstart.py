r"""The main job on the embedded sample: train, evaluate, predict, compare.

  python -m experiments.quickstart [--workspace=workspace] [--steps=0]

Trains the BOW-MLP ranker (experiments/configs/bow_mlp.py) on the sample's
train split with an ancestor-held-out validation fold, evaluates the best
checkpoint on it, writes a Kaggle submission for the sample's test split
(WORKSPACE/runs/quickstart-bow_mlp/submission.csv) and prints the results
table of every run in the workspace. Running it again resumes/reuses the run.
"""

from absl import flags

from experiments import common
from experiments.configs import bow_mlp

_STEPS = flags.DEFINE_integer("steps", 0, "Training steps (0 = the config's epochs).")
_NAME = flags.DEFINE_string("name", "quickstart-bow_mlp", "Run name under WORKSPACE/runs.")


def main(argv):
  del argv
  common.setup_jax()
  from jaxrank import metrics, results, submission, train
  from jaxrank.data import notebooks

  ws = common.workspace()
  workdir = ws.run_dir(_NAME.value)
  config = bow_mlp.get_config()
  config.data.data_dir = str(notebooks.sample_data_dir())
  common.fill_workspace(config)
  config.data.n_folds = 4
  config.train.steps = _STEPS.value
  config.train.eval_every = 50
  out = train.train_and_evaluate(config, workdir)

  predictor, _ = train.load_predictor(workdir)
  test = notebooks.load_split(config.data.data_dir, "test")
  preds = predictor.predict(test)
  submission.validate_submission(preds, test)
  path = submission.write_submission(workdir / "submission.csv", preds)

  print(f"\nvalidation (ancestor-held-out fold, {out['val']['n_notebooks']:.0f} notebooks):")
  for k, v in out["val"].items():
    print(f"  {k:30s} {v:.4f}")
  print(f"\nsubmission for {len(preds)} test notebooks: {path}")
  print("\nall runs in", ws.root)
  print(results.collect_runs(ws.root).to_string(index=False, max_colwidth=30))


if __name__ == "__main__":
  common.run(main)
