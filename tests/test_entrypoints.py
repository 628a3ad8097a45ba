"""The absl entry points as a user runs them: real subprocesses, real files."""

import subprocess
import sys
from pathlib import Path


from jaxrank import submission
from jaxrank.data import notebooks
from tests import helpers
from tests.conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[1]


def test_readme_main_job_runs_on_the_sample(tmp_path):
  p = helpers.run_module("experiments.quickstart", f"--workspace={tmp_path}", "--steps=4")
  sub = tmp_path / "runs" / "quickstart-bow_mlp" / "submission.csv"
  test = notebooks.load_split(notebooks.sample_data_dir(), "test")
  submission.validate_submission(submission.read_submission(sub), test)  # complete, no extras
  assert "kendall_tau" in p.stdout and "quickstart-bow_mlp" in p.stdout


def test_train_evaluate_predict_with_flagfile(tmp_path):
  tiny = ["--config.data.max_notebooks=40", "--config.data.n_folds=2", "--config.train.steps=2",
          "--config.model.hidden_dim=16", "--config.model.embed_dim=8",
          "--config.features.word_vocab=500"]
  run, cfg = helpers.train_evaluate_predict(tmp_path, "experiments/flags/bow_mlp.flags", tiny)
  assert run["steps"] == 2
  assert cfg["model"]["hidden_dim"] == 16  # the override reached the saved config
  assert (tmp_path / "data" / "cache").is_dir()  # parsed-data cache lives in the workspace


def test_typo_in_config_override_fails(tmp_path):
  env = subprocess_env(None)
  p = subprocess.run([sys.executable, "-m", "experiments.train",
                      "--flagfile=experiments/flags/bow_mlp.flags", "--config.model.hiden_dim=3",
                      f"--workdir={tmp_path}"], cwd=ROOT, env=env, capture_output=True, text=True,
                     timeout=120)
  assert p.returncode != 0 and "hiden_dim" in p.stderr
