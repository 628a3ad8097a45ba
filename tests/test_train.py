"""Training loop: one step, exact resume, NaN stop, sharding, evaluation."""

import json

import jax
import numpy as np
import pytest

from jaxrank import loop, train
from tests import helpers
from tests.tiny import tiny_bow_config


def test_two_steps_stop_resume_third_equals_three_uninterrupted(tmp_path):
  helpers.stop_resume_equals_uninterrupted(tiny_bow_config(), tmp_path)


def test_full_capacity_model_overfits_a_few_notebooks(tmp_path):
  # The learned heads (key MLP, bilinear gap term) can memorise 8 notebooks:
  # the loss, gradients and optimiser are wired right.
  cfg = tiny_bow_config(**{"train.steps": 40, "data.n_folds": 1, "optim.warmup_steps": 1,
                           "data.max_notebooks": 8, "model.dropout": 0.0,
                           "model.key_mlp": True, "model.use_bilinear": True,
                           "model.term_dropout": 0.1})
  train.train_and_evaluate(cfg, tmp_path)
  lines = [json.loads(l)["metrics"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  losses = [l["loss"] for l in lines]
  assert all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_stop_on_a_periodic_checkpoint_step_saves_once(tmp_path):
  cfg = tiny_bow_config(**{"train.checkpoint_every": 1})
  stops = iter([False, True])
  out = train.train_and_evaluate(cfg, tmp_path, should_stop=lambda: next(stops, False))
  assert out == {"status": "preempted", "step": 2}


def test_nan_stops_with_a_clear_message(tmp_path):
  cfg = tiny_bow_config(**{"optim.lr": float("nan")})
  with pytest.raises(FloatingPointError, match="non-finite training metrics at step 1"):
    train.train_and_evaluate(cfg, tmp_path)
  run = json.loads((tmp_path / "run.json").read_text())
  assert run["status"] == "failed" and "non-finite" in run["error"]


def test_batch_is_sharded_over_the_data_axis():
  mesh = loop.make_mesh()
  assert mesh.shape == {"data": jax.device_count()} and jax.device_count() == 2
  x = loop.shard_batch({"a": np.arange(8).reshape(4, 2)}, mesh)["a"]
  assert x.sharding.spec == jax.sharding.PartitionSpec("data")
  assert [s.data.shape for s in x.addressable_shards] == [(2, 2), (2, 2)]


def test_run_folder_and_predictor_round_trip(tmp_path):
  cfg = tiny_bow_config()
  out = train.train_and_evaluate(cfg, tmp_path)
  for f in ["config.json", "run.json", "metrics.jsonl", "eval/val.json", "predictions/val.csv",
            "featurizer/featurizer.json"]:
    assert (tmp_path / f).exists(), f
  predictor, config = train.load_predictor(tmp_path)
  nbs = train.load_notebooks(config.data)
  _, val = train.split_data(nbs, config.data)
  table, _ = train.evaluate_predictions(val, predictor.predict(val))
  assert table["kendall_tau"] == pytest.approx(out["val"]["kendall_tau"], abs=1e-9)


def test_resume_accepts_a_model_field_added_since_at_its_default_only(tmp_path):
  """A run whose config.json predates a model field (older code) resumes when the
  field is at the model dataclass's default, and is refused when it is not."""
  train.train_and_evaluate(tiny_bow_config(**{"train.steps": 1}), tmp_path)
  cfg_file = tmp_path / "config.json"
  old = json.loads(cfg_file.read_text())
  del old["model"]["use_bilinear"]  # as written before the field existed (default False)
  cfg_file.write_text(json.dumps(old))
  with pytest.raises(train.ConfigChangedError, match="model.use_bilinear: '<absent>' -> True"):
    train.train_and_evaluate(tiny_bow_config(**{"train.steps": 1, "model.use_bilinear": True}),
                             tmp_path)
  cfg_file.write_text(json.dumps(old))
  out = train.train_and_evaluate(tiny_bow_config(**{"train.steps": 1}), tmp_path)
  assert out["status"] == "done"
  assert json.loads(cfg_file.read_text())["model"]["use_bilinear"] is False  # written in full


def test_resume_accepts_a_features_key_added_since_at_its_old_behaviour_only():
  cfg = {"model": {"name": "roberta_cells"}, "features": {"cell_shape": False}}
  assert train._added_key_at_old_value("features.cell_shape", "<absent>", False, cfg)  # pylint: disable=protected-access
  assert not train._added_key_at_old_value("features.cell_shape", "<absent>", True, cfg)  # pylint: disable=protected-access
  assert not train._added_key_at_old_value("features.cell_shape", True, False, cfg)  # pylint: disable=protected-access
  assert not train._added_key_at_old_value("features.encoder", "<absent>", "m", cfg)  # pylint: disable=protected-access


def test_resume_ignores_a_speed_key_but_not_a_result_key(tmp_path):
  """Cells per encoder call (`features.batch_rows`, whose default changed) set speed,
  not results: a run started with another value resumes; a result key still refuses."""
  train.train_and_evaluate(tiny_bow_config(**{"train.steps": 1}), tmp_path)
  cfg_file = tmp_path / "config.json"
  old = json.loads(cfg_file.read_text())
  old["features"]["batch_rows"] = 64
  cfg_file.write_text(json.dumps(old))
  out = train.train_and_evaluate(tiny_bow_config(**{"train.steps": 1}), tmp_path)
  assert out["status"] == "done"
  old = json.loads(cfg_file.read_text())
  old["features"]["max_tokens_unknown"] = 3
  cfg_file.write_text(json.dumps(old))
  with pytest.raises(train.ConfigChangedError, match="features.max_tokens_unknown"):
    train.train_and_evaluate(tiny_bow_config(**{"train.steps": 1}), tmp_path)
