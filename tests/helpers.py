"""Checks several test files share: stop/resume equals an uninterrupted run, the entry
points' train -> evaluate -> predict round trip, the train steps of metrics.jsonl, the
TensorBoard events beside it."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

from jaxrank import checkpoint, results, submission, train
from jaxrank.data import notebooks as nb_io
from tests.conftest import REPO_ROOT, subprocess_env


def params(workdir):
  return jax.tree.leaves(checkpoint.restore_params(workdir))


def train_steps_logged(workdir: Path) -> list[int]:
  """Every train step in metrics.jsonl, in file order (re-logged ones included); a torn
  last line (kill -9) is skipped."""
  path = Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  steps = []
  for line in path.read_bytes().splitlines():
    try:
      rec = json.loads(line)
    except ValueError:
      continue
    if rec.get("split") == "train":
      steps.append(rec["step"])
  return steps


def tensorboard_scalars(logdir: Path) -> dict[str, dict[int, float]]:
  """{tag: {step: value}} as TensorBoard shows a folder of events files: files in name
  order, a SessionLog START at step p hides the points of earlier files from p on. Checks
  every record's CRCs; a torn last record (kill -9) is skipped, as TensorBoard does."""
  out: dict[str, dict[int, float]] = {}
  for path in sorted(Path(logdir).glob("events.out.tfevents.*")):
    data, pos = path.read_bytes(), 0
    while pos + 12 <= len(data):
      header = data[pos:pos + 8]
      (n,) = struct.unpack("<Q", header)
      assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == masked_crc32c(header), path
      if pos + 16 + n > len(data):
        break  # torn tail
      body = data[pos + 12:pos + 12 + n]
      assert struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])[0] == masked_crc32c(body), path
      pos += 16 + n
      event = event_pb2.Event.FromString(body)
      if event.session_log.status == event_pb2.SessionLog.START:
        for points in out.values():
          for step in [s for s in points if s >= event.step]:
            del points[step]
      for v in event.summary.value:
        out.setdefault(v.tag, {})[int(event.step)] = v.simple_value
  return out


def assert_tensorboard_matches_metrics(workdir: Path) -> dict[str, dict[int, float]]:
  """The run's tb/ events show exactly metrics.jsonl's scalars (last line per step, as
  float32), no step more or less; returns them."""
  shown = tensorboard_scalars(Path(workdir) / results.TB_DIR)
  df = results.read_metrics(workdir)
  want: dict[str, dict[int, float]] = {}
  for row in df.to_dict("records"):
    for k, v in row.items():
      if k not in ("step", "split", "time") and not np.isnan(v):
        want.setdefault(f"{row['split']}/{k}", {})[int(row["step"])] = float(np.float32(v))
  assert want and shown == want
  return shown


def stop_resume_equals_uninterrupted(cfg, tmp_path: Path) -> dict:
  """3 steps: stopped after 2 (a should_stop request) and resumed equals 3 in one go,
  parameter for parameter; returns the resumed run's result."""
  stops = iter([False, True])  # stop requested after step 2
  out = train.train_and_evaluate(cfg, tmp_path / "a", should_stop=lambda: next(stops, False))
  assert out == {"status": "preempted", "step": 2}
  assert checkpoint.Checkpointer(tmp_path / "a").latest_step() == 2
  out = train.train_and_evaluate(cfg, tmp_path / "a")
  assert out["status"] == "done" and out["step"] == 3
  if cfg.data.n_folds > 1:
    assert -1.0 <= out["val"]["kendall_tau"] <= 1.0
  train.train_and_evaluate(cfg, tmp_path / "b")
  for x, y in zip(params(tmp_path / "a"), params(tmp_path / "b"), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert train_steps_logged(tmp_path / "a") == [1, 2, 3]
  lines = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
  assert all(np.isfinite(l["metrics"]["loss"]) for l in lines if l["split"] == "train")
  shown = assert_tensorboard_matches_metrics(tmp_path / "a")
  assert sorted(shown["train/loss"]) == [1, 2, 3] and "train/lr" in shown
  assert len(list((tmp_path / "a" / results.TB_DIR).glob("events.*"))) == 2  # one per start
  return out


def run_module(*args, env_extra=None, timeout=600) -> subprocess.CompletedProcess:
  """`python -m ARGS` from the repo root, one CPU device; fails the test on a non-zero exit."""
  p = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT,
                     env=subprocess_env(1, **(env_extra or {})), capture_output=True, text=True,
                     timeout=timeout)
  assert p.returncode == 0, f"{args[0]} failed ({p.returncode}):\n{p.stderr[-4000:]}"
  return p


def train_evaluate_predict(tmp_path: Path, flagfile: str, overrides) -> tuple[dict, dict]:
  """experiments.train with `flagfile` + `overrides` on the sample, then experiments.evaluate
  and experiments.predict on its run; checks each output; returns (run.json, config.json)."""
  sample = nb_io.sample_data_dir()
  wd = tmp_path / "run"
  run_module("experiments.train", f"--flagfile={flagfile}", f"--config.data.data_dir={sample}",
             f"--workdir={wd}", f"--workspace={tmp_path}", *overrides)
  run = json.loads((wd / "run.json").read_text())
  assert run["status"] == "done"
  assert -1 <= json.loads((wd / "eval" / "val.json").read_text())["metrics"]["kendall_tau"] <= 1

  p = run_module("experiments.evaluate", f"--workdir={wd}", f"--data_dir={sample}",
                 "--split=train", "--val_only")
  table = json.loads((wd / "eval" / "train_val.json").read_text())["metrics"]
  assert -1 <= table["kendall_tau"] <= 1 and "kendall_tau" in p.stdout

  out = tmp_path / "submission.csv"
  run_module("experiments.predict", f"--workdir={wd}", f"--data_dir={sample}", "--split=test",
             f"--output={out}")
  test = nb_io.load_split(sample, "test")
  scored = submission.read_submission(out)
  submission.validate_submission(scored, test)
  assert len(scored) == len(test)
  return run, json.loads((wd / "config.json").read_text())
