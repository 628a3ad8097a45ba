"""The absl entry points as a user runs them: real subprocesses, real files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jaxrank import submission
from jaxrank.data import notebooks
from tests.conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, cwd=ROOT, env_extra=None, timeout=600):
  env = subprocess_env(1, **(env_extra or {}))
  p = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                     text=True, timeout=timeout)
  assert p.returncode == 0, f"{args[0]} failed ({p.returncode}):\n{p.stderr[-4000:]}"
  return p


def test_readme_main_job_runs_on_the_sample(tmp_path):
  p = _run("experiments.quickstart", f"--workspace={tmp_path}", "--steps=4")
  sub = tmp_path / "runs" / "quickstart-bow_mlp" / "submission.csv"
  test = notebooks.load_split(notebooks.sample_data_dir(), "test")
  submission.validate_submission(submission.read_submission(sub), test)  # complete, no extras
  assert "kendall_tau" in p.stdout and "quickstart-bow_mlp" in p.stdout


def test_train_evaluate_predict_with_flagfile(tmp_path):
  sample = notebooks.sample_data_dir()
  wd = tmp_path / "run"
  tiny = ["--config.data.max_notebooks=40", "--config.data.n_folds=2", "--config.train.steps=2",
          "--config.model.hidden_dim=16", "--config.model.embed_dim=8",
          "--config.features.word_vocab=500"]
  _run("experiments.train", "--flagfile=experiments/flags/bow_mlp.flags",
       f"--config.data.data_dir={sample}", f"--workdir={wd}", f"--workspace={tmp_path}", *tiny)
  run = json.loads((wd / "run.json").read_text())
  assert run["status"] == "done" and run["steps"] == 2
  cfg = json.loads((wd / "config.json").read_text())
  assert cfg["model"]["hidden_dim"] == 16  # the override reached the saved config
  assert (tmp_path / "data" / "cache").is_dir()  # parsed-data cache lives in the workspace

  p = _run("experiments.evaluate", f"--workdir={wd}", f"--data_dir={sample}", "--split=train",
           "--val_only")
  table = json.loads((wd / "eval" / "train_val.json").read_text())["metrics"]
  assert -1 <= table["kendall_tau"] <= 1 and "kendall_tau" in p.stdout

  out = tmp_path / "submission.csv"
  _run("experiments.predict", f"--workdir={wd}", f"--data_dir={sample}", "--split=test",
       f"--output={out}")
  test = notebooks.load_split(sample, "test")
  scored = submission.read_submission(out)
  submission.validate_submission(scored, test)
  assert len(scored) == len(test)


def test_typo_in_config_override_fails(tmp_path):
  env = subprocess_env(None)
  p = subprocess.run([sys.executable, "-m", "experiments.train",
                      "--flagfile=experiments/flags/bow_mlp.flags", "--config.model.hiden_dim=3",
                      f"--workdir={tmp_path}"], cwd=ROOT, env=env, capture_output=True, text=True,
                     timeout=120)
  assert p.returncode != 0 and "hiden_dim" in p.stderr
