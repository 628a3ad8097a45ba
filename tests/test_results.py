"""Run results: RunRecorder files, kill -9 tolerant metrics log, runs table, export."""

import json
import logging
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import ml_collections
import pandas as pd
import pytest

from jaxrank import checkpoint, features, results
from tests import helpers
from tests.conftest import subprocess_env

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _config(name="bow_mlp", data="/data/nbcorpus"):
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict({"name": name, "embed_dim": 16, "buckets": (16, 32)})
  c.data = ml_collections.ConfigDict({"data_dir": data})
  return c


def _per_notebook(n=12):
  return pd.DataFrame({"id": [f"nb{i:03d}" for i in range(n)],
                       "n_cells": [3 + 7 * i for i in range(n)],
                       "n_markdown": [1 + i for i in range(n)],
                       "tau": [0.2 + 0.05 * i for i in range(n)]})


def _fake_run(workdir, *, model, tau, steps, data="/data/nbcorpus", status="done"):
  """A run folder in the real format, written through the real recorder."""
  rec = results.RunRecorder(workdir)
  rec.write_config(_config(model, data), argv=["experiments.train", f"--workdir={workdir}"])
  rec.update_run(status="running", model=model, data_dir=data)
  for step in range(10, steps + 1, 10):
    rec.log(step, "train", {"loss": 1.0 / step})
  rec.log(steps, "val", {"kendall_tau": tau})
  rec.write_eval("val", {"kendall_tau": tau, "pairwise_accuracy": (1 + tau) / 2},
                 _per_notebook())
  rec.write_predictions("val", {"nb000": ["c1", "m1", "c2"], "nb001": ["m2", "c3"]})
  rec.update_run(status=status, steps=steps, wall_s=12.5 * steps)
  return rec


def test_recorder_writes_every_file_of_a_run(tmp_path):
  wd = tmp_path / "runs" / "r1"
  rec = _fake_run(wd, model="bow_mlp", tau=0.61, steps=30)
  paths = rec.make_plots()

  config = json.loads((wd / "config.json").read_text())
  assert config["model"] == {"name": "bow_mlp", "embed_dim": 16, "buckets": [16, 32]}
  code = json.loads((wd / "code_version.json").read_text())
  assert code == results.code_version()
  assert len(code["source_sha256"]) == 64 and code["jaxrank_version"]
  run = json.loads((wd / "run.json").read_text())
  assert run["status"] == "done" and run["steps"] == 30 and run["model"] == "bow_mlp"
  assert run["argv"][0] == "experiments.train" and run["n_starts"] == 1
  assert run["pid"] == os.getpid() and run["host"] and run["started"] <= run["finished"]
  lines = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
  assert [(l["split"], l["step"]) for l in lines] == [("train", 10), ("train", 20),
                                                       ("train", 30), ("val", 30)]
  assert lines[0]["metrics"] == {"loss": 0.1} and lines[0]["time"] > 1e9
  ev = json.loads((wd / "eval" / "val.json").read_text())
  assert ev["metrics"]["kendall_tau"] == 0.61
  per_nb = pd.read_csv(wd / "eval" / "val_per_notebook.csv")
  assert list(per_nb.columns) == ["id", "n_cells", "n_markdown", "tau"] and len(per_nb) == 12
  preds = (wd / "predictions" / "val.csv").read_text()
  assert preds == "id,cell_order\nnb000,c1 m1 c2\nnb001,m2 c3\n"
  assert sorted(p.name for p in paths) == ["tau_by_length_val.png", "training_curves.png"]
  for p in paths:
    assert p.read_bytes().startswith(PNG_MAGIC) and p.stat().st_size > 5000


def test_per_notebook_table_must_have_the_columns(tmp_path):
  rec = results.RunRecorder(tmp_path)
  with pytest.raises(ValueError, match=r"table for split 'val' lacks columns \['tau'\]"):
    rec.write_eval("val", {"kendall_tau": 0.5}, _per_notebook().drop(columns="tau"))
  with pytest.raises(ValueError, match="status 'paused' is not one of"):
    rec.update_run(status="paused")


def test_disabled_recorder_writes_nothing(tmp_path):
  rec = results.RunRecorder(tmp_path / "w", enabled=False)
  rec.write_config(_config())
  rec.update_run(status="running")
  rec.log(1, "train", {"loss": 1.0})
  rec.write_eval("val", {"kendall_tau": 0.5}, _per_notebook())
  rec.write_predictions("val", {"a": ["b"]})
  assert rec.make_plots() == []
  assert not (tmp_path / "w").exists()


def test_a_new_process_starts_a_new_segment(tmp_path):
  wd = tmp_path / "run"
  rec = results.RunRecorder(wd)
  rec.update_run(status="running", model="m")
  rec.update_run(status="running")  # same process: still one segment
  rec.update_run(status="preempted", steps=5)
  first = results.read_run(wd)
  assert first["n_starts"] == 1 and first["status"] == "preempted" and first["finished"] is None
  # The requeued job is another process: it continues the run's record.
  code = ("import sys; from jaxrank import results; r = results.RunRecorder(sys.argv[1]); "
          "r.update_run(status='running'); r.update_run(status='done', steps=9)")
  subprocess.run([PY, "-c", code, str(wd)], cwd=ROOT, check=True, timeout=120,
                 env=subprocess_env(None))
  run = results.read_run(wd)
  assert run["n_starts"] == 2 and run["status"] == "done" and run["steps"] == 9
  assert run["started"] == first["started"] and run["pid"] != os.getpid()
  assert run["finished"] and run["model"] == "m"


def test_code_version_hashes_every_source_file(tmp_path, monkeypatch):
  for rel, text in [("jaxrank/a.py", "x = 1\n"), ("jaxrank/sub/b.py", "y = 2\n"),
                    ("experiments/train.py", "z = 3\n"), ("jaxrank/notes.txt", "ignored")]:
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / rel).write_text(text)
  monkeypatch.setattr(results, "_source_root", lambda: tmp_path)
  v1 = results.code_version()
  assert v1["n_source_files"] == 3
  (tmp_path / "jaxrank/notes.txt").write_text("changed")
  assert results.code_version() == v1
  (tmp_path / "experiments/train.py").write_text("z = 4\n")
  v2 = results.code_version()
  assert v2["source_sha256"] != v1["source_sha256"]
  # Moving code between files changes the hash too.
  (tmp_path / "experiments/train.py").write_text("z = 3\n")
  assert results.code_version() == v1
  (tmp_path / "jaxrank/a.py").write_text("")
  (tmp_path / "jaxrank/sub/b.py").write_text("x = 1\ny = 2\n")
  assert results.code_version()["source_sha256"] != v1["source_sha256"]


def test_torn_last_line_is_skipped_and_the_next_append_stays_whole(tmp_path, caplog):
  rec = results.RunRecorder(tmp_path)
  for step in (1, 2, 3):
    rec.log(step, "train", {"loss": float(step)})
  with open(tmp_path / "metrics.jsonl", "ab") as f:
    f.write(b'{"metrics": {"loss": 4.0}, "split": "tr')  # what a kill -9 can leave
  with caplog.at_level(logging.WARNING):
    df = results.read_metrics(tmp_path)
  assert df["step"].tolist() == [1, 2, 3]
  assert "metrics.jsonl:4: skipping unreadable line" in caplog.text
  # The resumed run (a new recorder) re-logs steps 3 and 4: last line per step wins.
  rec2 = results.RunRecorder(tmp_path)
  rec2.log(3, "train", {"loss": 30.0})
  rec2.log(4, "train", {"loss": 40.0})
  rec2.log(4, "val", {"kendall_tau": 0.5})
  df = results.read_metrics(tmp_path)
  assert df[df.split == "train"][["step", "loss"]].values.tolist() == [[1, 1.0], [2, 2.0],
                                                                      [3, 30.0], [4, 40.0]]
  assert df[df.split == "val"]["kendall_tau"].tolist() == [0.5]


def test_run_folder_names_agree_with_the_modules_that_write_them():
  assert (results.CHECKPOINTS_DIR, results.BEST_DIR) == (checkpoint.LATEST, checkpoint.BEST)
  assert results.FEATURIZER_DIR == features.FOLDER


def test_tensorboard_events_follow_the_log_and_a_resume_hides_what_it_redoes(tmp_path):
  rec = results.RunRecorder(tmp_path)
  rec.open_tensorboard()
  for step in range(1, 6):
    rec.log(step, "train", {"loss": float(step), "lr": 0.1})
  rec.log(5, "val", {"kendall_tau": 0.25})
  rec.close()
  assert helpers.assert_tensorboard_matches_metrics(tmp_path)["val/kendall_tau"] == {5: 0.25}
  # The same second, another process resumed from the step-3 checkpoint: a new file whose
  # START at step 4 hides the first file's steps 4 and 5 (step 5 is not redone here).
  rec2 = results.RunRecorder(tmp_path)
  rec2.open_tensorboard(purge_step=4)
  rec2.log(4, "train", {"loss": 40.0})
  rec2.close()
  assert len(list((tmp_path / results.TB_DIR).glob("events.out.tfevents.*"))) == 2
  shown = helpers.tensorboard_scalars(tmp_path / results.TB_DIR)
  assert shown["train/loss"] == {1: 1.0, 2: 2.0, 3: 3.0, 4: 40.0}
  assert shown["train/lr"] == {s: pytest.approx(0.1) for s in (1, 2, 3)} and shown["val/kendall_tau"] == {}
  # Disabled (non-main processes): no events folder.
  quiet = results.RunRecorder(tmp_path / "q", enabled=False)
  quiet.open_tensorboard()
  quiet.log(1, "train", {"loss": 1.0})
  assert not (tmp_path / "q").exists()


_LOGGER = """
import sys
from jaxrank import results
rec = results.RunRecorder(sys.argv[1])
step = 0
while True:
  step += 1
  rec.log(step, "train", {"loss": 1.0 / step, "lr": 1e-3, "pad": 1.0})
"""


def test_metrics_log_survives_kill_9(tmp_path):
  proc = subprocess.Popen([PY, "-c", _LOGGER, str(tmp_path)], cwd=ROOT)
  path = tmp_path / "metrics.jsonl"
  deadline = time.monotonic() + 180  # a loaded 2-core machine starts python slowly
  while not (path.exists() and path.stat().st_size > 50_000):
    assert time.monotonic() < deadline and proc.poll() is None, "logger never got going"
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=30)
  df = results.read_metrics(tmp_path)
  n_lines = len(path.read_bytes().splitlines())
  assert n_lines - 1 <= len(df) <= n_lines  # at most the torn last line is lost
  assert df["step"].tolist() == list(range(1, len(df) + 1))
  results.RunRecorder(tmp_path).log(len(df) + 1, "train", {"loss": 0.0})
  df2 = results.read_metrics(tmp_path)
  assert df2["step"].tolist()[-1] == len(df) + 1 and df2["loss"].tolist()[-1] == 0.0


def test_collect_runs_sorts_by_tau_and_reads_both_wall_time_fields(tmp_path):
  _fake_run(tmp_path / "runs" / "small", model="bow_mlp", tau=0.55, steps=20)
  _fake_run(tmp_path / "runs" / "big", model="roberta", tau=0.71, steps=40, data="/d/sample")
  rec = results.RunRecorder(tmp_path / "runs" / "crashed")
  rec.write_config(_config("diffusion"))
  rec.update_run(status="running")
  rec.log(5, "train", {"loss": 3.0})
  rec.update_run(status="failed")
  (tmp_path / "runs" / "not_a_run").mkdir()
  table = results.collect_runs(tmp_path)
  assert table["run"].tolist() == ["big", "small", "crashed"]
  assert table["model"].tolist() == ["roberta", "bow_mlp", "diffusion"]
  assert table["status"].tolist() == ["done", "done", "failed"]
  assert table["steps"].tolist()[:2] == [40, 20] and table["steps"].tolist()[2] == 5
  assert table["kendall_tau"].tolist()[:2] == [0.71, 0.55] and pd.isna(table["kendall_tau"][2])
  assert table["pairwise_accuracy"].tolist()[:2] == [0.855, 0.775]
  assert table["wall_time_s"].tolist()[:2] == [500.0, 250.0]
  assert table["data"].tolist()[:2] == ["/d/sample", "/data/nbcorpus"]
  assert results.collect_runs(tmp_path / "empty").empty


def _cli(*args, workspace=None, home=None):
  env = {k: v for k, v in os.environ.items() if k != "JAXRANK_HOME"}
  if home is not None:
    env["JAXRANK_HOME"] = str(home)
  argv = [PY, "-m", "experiments.results", *args]
  if workspace is not None:
    argv.append(f"--workspace={workspace}")
  return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                        check=True)


def test_results_cli_prints_and_writes_table_markdown_and_plot(tmp_path):
  ws = tmp_path / "ws"
  _fake_run(ws / "runs" / "small", model="bow_mlp", tau=0.55, steps=20)
  _fake_run(ws / "runs" / "big", model="roberta", tau=0.71, steps=40)
  # Workspace from $JAXRANK_HOME when there is no --workspace.
  out = _cli(home=ws).stdout
  lines = out.splitlines()
  assert lines[0].split()[:7] == ["run", "model", "data", "status", "steps", "wall_time",
                                  "kendall_tau"]
  assert lines[1].split()[:7] == ["big", "roberta", "nbcorpus", "done", "40", "0:08:20", "0.7100"]
  assert lines[2].split()[:7] == ["small", "bow_mlp", "nbcorpus", "done", "20", "0:04:10",
                                  "0.5500"]
  csv = pd.read_csv(ws / "results" / "runs.csv")
  assert csv["run"].tolist() == ["big", "small"] and csv["kendall_tau"].tolist() == [0.71, 0.55]
  md = (ws / "results" / "runs.md").read_text().splitlines()
  assert md[0].startswith("| run | model | data | status | steps | wall_time | kendall_tau |")
  assert md[2].startswith("| big | roberta | nbcorpus | done | 40 | 0:08:20 | 0.7100 |")
  assert (ws / "results" / "kendall_tau.png").read_bytes().startswith(PNG_MAGIC)


def test_export_packs_results_but_not_checkpoints(tmp_path):
  ws = tmp_path / "ws"
  _fake_run(ws / "runs" / "a", model="bow_mlp", tau=0.5, steps=10)
  _fake_run(ws / "runs" / "b", model="bow_mlp", tau=0.6, steps=10)
  for ckpt in ("a/checkpoints/10/state", "a/best/10/state", "b/checkpoints/5/state"):
    (ws / "runs" / ckpt).mkdir(parents=True)
    (ws / "runs" / ckpt / "blob").write_bytes(os.urandom(1000))
    (ws / "runs" / ckpt).parent.joinpath("_CHECKPOINT_METADATA").write_text("{}")
  (ws / "runs" / "a" / "slurm-7.out").write_text("job log\n")
  out = tmp_path / "carry" / "results.tar.gz"
  stdout = _cli("export", f"--out={out}", workspace=ws).stdout
  assert f"wrote {out}" in stdout
  with tarfile.open(out) as tar:
    names = set(tar.getnames())
    assert tar.extractfile("ws/runs/a/run.json").read() == (ws / "runs/a/run.json").read_bytes()
  assert {"ws/runs/a/config.json", "ws/runs/a/metrics.jsonl", "ws/runs/a/eval/val.json",
          "ws/runs/a/eval/val_per_notebook.csv", "ws/runs/a/predictions/val.csv",
          "ws/runs/a/slurm-7.out", "ws/runs/b/code_version.json"} <= names
  assert not [n for n in names if "checkpoints" in n or "/best/" in n or "blob" in n]
  assert not list(out.parent.glob(".*tmp"))


def test_collect_runs_reads_a_real_training_run(tmp_path):
  from jaxrank import train  # pylint: disable=g-import-not-at-top
  from tests.tiny import tiny_bow_config  # pylint: disable=g-import-not-at-top

  train.train_and_evaluate(tiny_bow_config(), tmp_path / "runs" / "bow")
  _fake_run(tmp_path / "runs" / "other", model="roberta", tau=-0.5, steps=10)
  table = results.collect_runs(tmp_path)
  assert table["run"].tolist() == ["bow", "other"]
  bow = table.iloc[0]
  ev = json.loads((tmp_path / "runs" / "bow" / "eval" / "val.json").read_text())
  assert bow["kendall_tau"] == ev["metrics"]["kendall_tau"] and -0.5 < bow["kendall_tau"] <= 1
  assert (bow["model"], bow["status"], bow["steps"]) == ("bow_mlp", "done", 3)
  assert bow["data"].endswith("sample") and bow["wall_time_s"] > 0 and bow["n_starts"] == 1
  assert bow["source_sha256"] == results.code_version()["source_sha256"][:12]
  paths = sorted(p.name for p in (tmp_path / "runs" / "bow" / "plots").iterdir())
  assert paths == ["tau_by_length_val.png", "training_curves.png"]


@pytest.mark.parametrize("damage,problem", [
    (b"", "run.json: empty file"),
    (b'{"status": "done", "steps": 4', "run.json: not valid JSON"),
    (bytes(range(200, 256)) * 3, "run.json: not UTF-8 text"),
    (b"[1, 2]", "run.json: a JSON list, expected an object"),
])
def test_a_broken_run_json_is_listed_not_fatal(tmp_path, damage, problem):
  _fake_run(tmp_path / "runs" / "good", model="bow_mlp", tau=0.55, steps=20)
  _fake_run(tmp_path / "runs" / "broken", model="roberta", tau=0.61, steps=40)
  (tmp_path / "runs" / "broken" / "run.json").write_bytes(damage)
  table = results.collect_runs(tmp_path)
  assert table["run"].tolist() == ["broken", "good"]  # its eval still counts
  rows = table.set_index("run")
  assert rows.loc["broken", "problems"].startswith(problem)
  assert rows.loc["broken", "model"] == "roberta"  # from config.json
  assert rows.loc["good", "problems"] == ""
  with pytest.raises(ValueError, match=r"broken/run.json: "):
    results.read_run(tmp_path / "runs" / "broken")


def test_garbage_metrics_and_eval_are_named_and_a_broken_run_json_is_set_aside(tmp_path):
  wd = tmp_path / "runs" / "r"
  _fake_run(wd, model="bow_mlp", tau=0.55, steps=20)
  with open(wd / "metrics.jsonl", "ab") as f:
    f.write(os.urandom(300).replace(b"\n", b"") + b"\n{not json}\n")
  (wd / "eval" / "test.json").write_bytes(b'{"split": "te')
  row = results.collect_runs(tmp_path).iloc[0]
  assert "metrics.jsonl: 2 unreadable line(s) skipped" in row["problems"]
  assert "eval/test.json: not valid JSON" in row["problems"]
  assert row["kendall_tau"] == 0.55
  # A recorder meeting a damaged run.json keeps it aside and goes on.
  (wd / "run.json").write_bytes(b"\x00\xff garbage")
  results.RunRecorder(wd).update_run(status="running")
  assert results.read_run(wd)["status"] == "running"
  assert [p.read_bytes() for p in wd.glob("run.json.broken-*")] == [b"\x00\xff garbage"]


def test_results_cli_names_the_broken_run(tmp_path):
  ws = tmp_path / "ws"
  _fake_run(ws / "runs" / "good", model="bow_mlp", tau=0.55, steps=20)
  _fake_run(ws / "runs" / "broken", model="roberta", tau=0.61, steps=40)
  (ws / "runs" / "broken" / "run.json").write_bytes(os.urandom(64))
  p = _cli(workspace=ws)
  assert p.stdout.splitlines()[0].split()[-1] == "problems"
  assert "good" in p.stdout and "broken" in p.stdout
  assert "warning: run broken: run.json: not " in p.stderr


def _fold_run(ws, name, *, fold, seed=0, lr=1e-3, tau):
  c = _config("bow_mlp")
  c.data.fold, c.data.n_folds = fold, 3
  c.optim = ml_collections.ConfigDict({"lr": lr})
  c.train = ml_collections.ConfigDict({"seed": seed})
  rec = results.RunRecorder(ws / "runs" / name)
  rec.write_config(c)
  rec.update_run(status="done", model="bow_mlp", data_dir="/data/nbcorpus", steps=10)
  for step, t in ((5, tau - 0.1), (10, tau)):
    rec.log(step, "val", {"kendall_tau": t})
  rec.write_eval("val", {"kendall_tau": tau})


def test_runs_of_one_recipe_are_grouped_with_mean_and_std(tmp_path):
  """The folds (and seeds) of one config form one group; another lr is another
  group. The table shows fold, n_folds, lr and seed of every run."""
  ws = tmp_path / "ws"
  for fold, tau in enumerate((0.60, 0.64, 0.68)):
    _fold_run(ws, f"cv-{fold}", fold=fold, tau=tau)
  _fold_run(ws, "cv-lr-0", fold=0, lr=3e-4, seed=1, tau=0.5)
  table = results.collect_runs(ws)
  row = table.set_index("run").loc["cv-1"]
  assert (row["fold"], row["n_folds"], row["lr"], row["seed"]) == (1, 3, 1e-3, 0)
  groups = results.group_runs(table)
  assert groups["group"].tolist() == ["cv", "cv-lr-0"]
  assert groups["n_runs"].tolist() == [3, 1] and groups["folds"].tolist() == ["0,1,2", "0"]
  assert groups["kendall_tau_mean"][0] == pytest.approx(0.64)
  assert groups["kendall_tau_std"][0] == pytest.approx(0.04)  # sample std of .60 .64 .68
  assert groups["kendall_tau_std"][1] == 0.0

  out = _cli(workspace=ws).stdout
  assert "runs of one recipe" in out and "0.6400 ± 0.0400" in out
  md = (ws / "results" / "groups.md").read_text()
  assert "| cv | bow_mlp | 3 | 0,1,2 | 0.6400 ± 0.0400 |" in md
  for png in ("kendall_tau.png", "learning_curves.png"):
    assert (ws / "results" / png).read_bytes().startswith(PNG_MAGIC)


def test_comparison_plot_axis_starts_near_the_data_with_error_bars(tmp_path, monkeypatch):
  import matplotlib.figure
  ws = tmp_path / "ws"
  for fold, tau in enumerate((0.80, 0.82)):
    _fold_run(ws, f"a-{fold}", fold=fold, tau=tau)
  _fold_run(ws, "b-0", fold=0, lr=0.1, tau=0.78)
  seen = {}
  monkeypatch.setattr(results, "_save_figure",
                      lambda fig, path: seen.setdefault("ax", fig.axes[0]) and path)
  results.plot_comparison(results.collect_runs(ws), tmp_path / "p.png")
  ax = seen["ax"]
  lo, hi = ax.get_xlim()
  assert 0.7 < lo < 0.78 and 0.82 < hi < 0.9  # not from 0: the differences are visible
  [bars] = [c for c in ax.containers if type(c).__name__ == "BarContainer"]
  assert len(bars) == 2 and bars.errorbar is not None
  sd = 0.02 / 2 ** 0.5  # sample std of .80 and .82, around their mean .81
  assert bars.errorbar.lines[2][0].get_segments()[-1][:, 0] == pytest.approx([0.81 - sd, 0.81 + sd])
  matplotlib.pyplot.close("all")


def test_metrics_line_is_short_and_progress_logs_an_eta(caplog):
  line = results.format_metrics({"kendall_tau": 0.61234, "n_notebooks": 40.0, "loss": 1.5,
                                 "pairwise_accuracy": 0.8})
  assert line == "kendall_tau 0.6123 | pairwise_accuracy 0.8000 | n_notebooks 40"
  from jaxrank import progress
  prog = progress.Progress(10, "encoded", "cells", every_s=0.0)
  with caplog.at_level(logging.INFO, logger="jaxrank.progress"):
    prog.update(4)
    prog.update(6)
  msgs = [r.getMessage() for r in caplog.records if r.name == "jaxrank.progress"]
  assert msgs[0].startswith("encoded: 4/10 cells (40%)") and "ETA 0:00:" in msgs[0]
  assert msgs[-1].startswith("encoded: 10/10 cells (100%)") and msgs[-1].endswith("ETA 0:00:00")
