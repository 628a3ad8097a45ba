"""Fold and run ensembles (jaxrank/ensemble.py): combining rule, ensemble runs,
and predict / evaluate on several runs as a user runs them."""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest

from jaxrank import decode, ensemble, submission, train
from jaxrank.data import notebooks, targets
from tests.helpers import run_module as _run
from tests.tiny import tiny_bow_config


def test_combine_one_member_decodes_as_that_member():
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(6), size=4)
  key = rng.uniform(size=4)
  np.testing.assert_array_equal(ensemble.combine([(probs, key)], 5, crowding=2.0),
                                decode.keys_from_gap_probs(probs, tiebreak=key, crowding=2.0))
  np.testing.assert_array_equal(ensemble.combine([(None, key)], 5), key)


def test_combine_averages_distributions_and_places_pointwise_keys_in_their_gap():
  # 3 code cells: code keys .25 .5 .75; gaps 0..3.
  a = np.array([[0.6, 0.4, 0.0, 0.0]])
  b = np.array([[0.0, 0.45, 0.55, 0.0]])
  # Each alone: a -> gap 0, b -> gap 2; their mean [.3 .425 .275 0] -> median gap 1.
  keys = ensemble.combine([(a, np.array([0.1])), (b, np.array([0.6]))], 3)
  assert targets.code_keys(3)[0] < keys[0] < targets.code_keys(3)[1]
  # A pointwise key of 0.8 lies in gap 3: one-hot there; with b: mean [0 .225 .275 .5]
  # -> gap 2 (alone it would be gap 3).
  keys = ensemble.combine([(b, np.array([0.6])), (None, np.array([0.8]))], 3)
  assert targets.code_keys(3)[1] < keys[0] < targets.code_keys(3)[2]
  # All pointwise: keys averaged.
  np.testing.assert_allclose(ensemble.combine([(None, np.array([0.2, 0.9])),
                                               (None, np.array([0.4, 0.1]))], 3), [0.3, 0.5])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("ens")
  out = []
  for seed in (0, 1):
    wd = root / "runs" / f"m{seed}"
    train.train_and_evaluate(tiny_bow_config(**{"train.seed": seed, "train.steps": 4}), wd)
    out.append(wd)
  return root, out


def test_ensemble_of_one_equals_the_run_and_of_a_run_twice_too(runs):
  root, (a, b) = runs
  single, config = train.load_predictor(a)
  nbs = train.load_notebooks(config.data)
  _, val = train.split_data(nbs, config.data)
  want = single.predict(val)
  ensemble.write_ensemble_run(root / "runs" / "one", [a])
  one, one_cfg = train.load_predictor(root / "runs" / "one")
  assert isinstance(one, ensemble.EnsemblePredictor) and one_cfg.to_dict() == config.to_dict()
  assert one.predict(val) == want
  twice, _ = train.load_predictor(f"{a},{a}")
  assert twice.predict(val) == want
  other, _ = train.load_predictor(b)
  pair, _ = train.load_predictor([a, b])
  got = pair.predict(val)
  assert got != want and got != other.predict(val)  # a real combination of two runs


def test_ensemble_file_is_relative_nested_and_checked(runs, tmp_path):
  root, (a, b) = runs
  ens = root / "runs" / "pair"
  ensemble.write_ensemble_run(ens, [a, b], recipe="test")
  obj = json.loads((ens / "ensemble.json").read_text())
  assert obj["members"] == ["../m0", "../m1"] and obj["recipe"] == "test"
  nested = root / "runs" / "nested"
  ensemble.write_ensemble_run(nested, [ens, a])
  assert ensemble.member_dirs(nested) == [a, b, a]
  with pytest.raises(FileNotFoundError, match="not a run folder"):
    ensemble.write_ensemble_run(tmp_path / "bad", [a, tmp_path])
  assert not (tmp_path / "bad" / "ensemble.json").exists()
  with pytest.raises(ValueError, match="single run's folder"):
    ensemble.write_ensemble_run(a, [b])
  (tmp_path / "loop").mkdir()
  (tmp_path / "loop" / "ensemble.json").write_text('{"members": ["."]}')
  with pytest.raises(ValueError, match="contains itself"):
    ensemble.member_dirs(tmp_path / "loop")
  (tmp_path / "loop" / "ensemble.json").write_text('{"members": []}')
  with pytest.raises(ValueError, match="not a valid ensemble file"):
    ensemble.member_dirs(tmp_path / "loop")


def test_evaluate_and_predict_score_an_ensemble_of_two_runs(runs):
  root, (a, b) = runs
  sample = notebooks.sample_data_dir()
  p = _run("experiments.ensemble", f"--workspace={root}", "--name=ens2",
           "--members=runs/m0,runs/m1")
  ens = root / "runs" / "ens2"
  assert ensemble.member_dirs(ens) == [a, b], p.stdout
  p = _run("experiments.evaluate", f"--workdir={ens}", f"--data_dir={sample}", "--split=train",
           "--val_only")
  table = json.loads((ens / "eval" / "train_val.json").read_text())["metrics"]
  assert -1 <= table["kendall_tau"] <= 1
  # The same score as the library's ensemble on the same validation fold.
  pred, config = train.load_predictor(ens)
  _, val = train.split_data(train.load_notebooks(config.data), config.data)
  want, _ = train.evaluate_predictions(val, pred.predict(val))
  assert table["kendall_tau"] == pytest.approx(want["kendall_tau"], abs=1e-9)
  out = root / "sub.csv"
  _run("experiments.predict", f"--workdir={a},{b}", f"--data_dir={sample}", "--split=test",
       f"--output={out}")
  test = notebooks.load_split(sample, "test")
  submission.validate_submission(submission.read_submission(out), test)


def test_shared_config_ignores_fold_and_seed_under_a_chosen_validation_set():
  def cfg(**data):
    fields = dict(data_dir="D", split="train", n_folds=1, fold=0, seed=0, max_notebooks=0,
                  val_ancestors="", val_sources="")
    return ml_collections.ConfigDict({"data": {**fields, **data}})
  held = [cfg(val_sources="a/b", seed=0), cfg(val_sources="a/b", seed=1, n_folds=5)]
  assert ensemble.shared_config(held) is held[0]  # the same notebooks validate
  assert ensemble.shared_config([cfg(val_sources="a/b"), cfg(val_sources="a/c")]) is None
  folded = [cfg(n_folds=5, seed=0), cfg(n_folds=5, seed=1)]  # different folds
  assert ensemble.shared_config(folded) is None
