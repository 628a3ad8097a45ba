"""The absl entry points as a user runs them: real subprocesses, real files."""

import os
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

  # Every checkpoint damaged: one clear line, exit code 1, no submission.
  wd = tmp_path / "run"
  for f in wd.glob("*/*/state/**/d/*"):
    os.truncate(f, os.path.getsize(f) // 2)
  p = _run_fails("experiments.predict", f"--workdir={wd}",
                 f"--data_dir={notebooks.sample_data_dir()}", "--split=test",
                 f"--output={tmp_path / 'none.csv'}")
  assert "no usable checkpoint" in p.stderr.splitlines()[-2]
  assert not (tmp_path / "none.csv").exists()


def _run_fails(*args, env_extra=None):
  """Runs an entry point that must fail as a user error: exit 1, one `error:` line."""
  env = subprocess_env(None)
  env.pop("JAXRANK_TRACEBACK", None)
  env.update(env_extra or {})
  p = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=300)
  assert p.returncode == 1, p.stderr[-3000:]
  if not (env_extra or {}).get("JAXRANK_TRACEBACK"):
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    errors = [l for l in p.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1 and p.stderr.splitlines()[-2] == errors[0], p.stderr[-3000:]
  return p


def test_typo_in_config_override_is_one_line_with_the_valid_names(tmp_path):
  args = ("experiments.train", "--flagfile=experiments/flags/bow_mlp.flags",
          "--config.model.hiden_dim=3", f"--workdir={tmp_path / 'run'}")
  err = _run_fails(*args).stderr.splitlines()[-2]
  assert err.startswith("error: --config.model.hiden_dim: config.model has no field 'hiden_dim'")
  assert 'did you mean "hidden_dim"?' in err and "embed_dim" in err
  assert not (tmp_path / "run").exists()
  # The traceback on demand.
  p = _run_fails(*args, env_extra={"JAXRANK_TRACEBACK": "1"})
  assert "Traceback" in p.stderr and "AttributeError" in p.stderr


def test_missing_flagfile_is_one_line(tmp_path):
  err = _run_fails("experiments.train", f"--flagfile={tmp_path / 'nope.flags'}",
                   f"--workdir={tmp_path / 'run'}").stderr.splitlines()[-2]
  assert "nope.flags" in err and "Unable to open flagfile" in err


def test_bad_notebook_is_one_line_naming_the_file(tmp_path):
  (tmp_path / "data" / "test").mkdir(parents=True)
  (tmp_path / "data" / "test" / "broken.json").write_text('{"cell_type": {"a": "code"}, ')
  err = _run_fails("experiments.encode", f"--data_dir={tmp_path / 'data'}", "--split=test",
                   f"--workspace={tmp_path / 'ws'}").stderr.splitlines()[-2]
  assert "broken.json" in err and "bad JSON" in err


def test_a_gpu_job_without_a_gpu_stops_in_one_line(tmp_path):
  """A job that asked for a GPU (submit.sh --gpus / --gres=gpu sets JAXRANK_EXPECT_GPU;
  SLURM's GPU variables count too) but whose jax finds only CPUs stops at start."""
  from experiments import common
  assert common.gpu_requested({"SLURM_GPUS_ON_NODE": "2"})
  assert common.gpu_requested({"CUDA_VISIBLE_DEVICES": "0,1"})
  assert not common.gpu_requested({"CUDA_VISIBLE_DEVICES": "", "SLURM_GPUS_ON_NODE": "0"})
  assert not common.gpu_requested({"JAXRANK_EXPECT_GPU": "1", "JAX_PLATFORMS": "cpu"})
  env = subprocess_env(None, JAXRANK_EXPECT_GPU="1")
  env.pop("JAX_PLATFORMS")
  p = subprocess.run([sys.executable, "-m", "experiments.predict", f"--workdir={tmp_path}",
                      f"--data_dir={notebooks.sample_data_dir()}"], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 1, p.stderr[-2000:]
  last = p.stderr.strip().splitlines()[-1]
  assert last.startswith("error: this job asked for a GPU but jax found only CPUs"), p.stderr
  assert "Traceback" not in p.stderr
  assert "devices: cpu:cpu" in p.stderr  # the devices it saw are logged first
  assert "Unable to initialize backend" not in p.stderr  # xla_bridge's INFO lines are gone


_BACKGROUND_FAILURES = """
import asyncio, gc, logging, threading
from experiments import common

class Leaky:
  def __del__(self):
    raise OSError("read past the end of a damaged file")

def main(argv):
  common.setup_jax()
  t = threading.Thread(target=lambda: 1 / 0, name="reader"); t.start(); t.join()
  try:
    raise ValueError("first line\\nsecond line")
  except ValueError:
    logging.getLogger("somelib").exception("a library gave up")
  async def fails():
    raise RuntimeError("task failed")
  async def leave_it():
    asyncio.ensure_future(fails()); await asyncio.sleep(0.01)
  asyncio.run(leave_it()); gc.collect()
  Leaky(); gc.collect()
  raise FileNotFoundError("the real error")

common.run(main)
"""


def test_background_failures_are_one_line_each_and_tracebacks_on_demand():
  """Exceptions the main thread cannot catch (a library's reader thread, a logged
  exception, an error in __del__) are one line each, and an asyncio task nobody
  awaited is dropped, so a damaged checkpoint's `error:` line stays the last word."""
  env = subprocess_env(None)
  env.pop("JAXRANK_TRACEBACK", None)
  p = subprocess.run([sys.executable, "-c", _BACKGROUND_FAILURES], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
  assert "warning: thread reader: ZeroDivisionError: division by zero" in p.stderr
  assert "a library gave up (ValueError: first line)" in p.stderr
  assert "task failed" not in p.stderr and "OSError: read past the end" in p.stderr
  assert p.stderr.splitlines()[-2] == "error: the real error"
  env["JAXRANK_TRACEBACK"] = "1"
  p = subprocess.run([sys.executable, "-c", _BACKGROUND_FAILURES], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=300)
  assert p.stderr.count("Traceback") >= 4, p.stderr[-3000:]
