"""launch/pipeline.sh: the recipe's stages run in order, a killed pipeline resumes
and skips finished stages, and on the real slurmctld the stages are SLURM jobs
chained with --dependency=afterok."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxrank import ensemble, store, pretrain
from jaxrank.data import notebooks as nb_io
from jaxrank.data.notebooks import sample_data_dir
from tests.conftest import FAST_XLA
from tests.tiny import tiny_pretrain_config
from tests.test_multi_data import split_sample

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "launch" / "pipeline.sh"
STAGES = ["import", "pairs", "encode", "member0", "ensemble", "score"]
HELD_OUT = "Kaggle/learntools"  # VAL_SOURCES of the local test: the recipe measured


def _env(ws: Path, **extra) -> dict[str, str]:
  return dict(os.environ, JAXRANK_HOME=str(ws), JAXRANK_PYTHON=sys.executable,
              PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"--xla_force_host_platform_device_count=1 {FAST_XLA}",
              BASE_MODEL="rb-tiny", BASE_SRC="/nonexistent", **extra)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
  """A workspace whose store holds a tiny RoBERTa "rb-tiny" (the test's base encoder)."""
  root = tmp_path_factory.mktemp("pipe")
  ws = store.Workspace(root / "ws").ensure()
  c = tiny_pretrain_config(300, **{"train.steps": 1, "train.batch_size": 4})
  pretrain.pretrain(c, ws, nb_io.load_split(sample_data_dir(), "train")[:10], root / "pre")
  return root, ws.root


def _marks(ws: Path, name: str) -> dict[str, float]:
  return {s: (ws / "pipelines" / name / s / "done.json").stat().st_mtime_ns
          for s in STAGES if (ws / "pipelines" / name / s / "done.json").exists()}


def test_local_pipeline_killed_resumes_skips_done_stages_and_leaves_an_ensemble(workspace):
  root, ws = workspace
  dirs = ",".join(str(d) for d in split_sample(root / "data"))
  cmd = ["bash", str(PIPELINE), "--local", "--quick", f"--data_dir={dirs}", "--name=best",
         "--members=1"]
  env = _env(ws, VAL_SOURCES=HELD_OUT)
  log = open(root / "first.log", "w")
  p = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                       start_new_session=True)
  deadline = time.time() + 400
  while "encode" not in _marks(ws, "best") and p.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  os.killpg(p.pid, signal.SIGKILL)  # the whole job at once, as a node failure would
  p.wait()
  first = _marks(ws, "best")
  assert list(first) == ["import", "pairs", "encode"], (root / "first.log").read_text()[-3000:]
  assert "already present: model rb-tiny" in (root / "first.log").read_text()
  store.read_manifest(store.Workspace(ws), "best-pairs")  # the fine-tuned encoder is stored
  pairs_log = (ws / "pipelines" / "best" / "pairs" / "local.log").read_text()
  assert f"--config.data.val_sources={HELD_OUT}" in pairs_log  # its orders were not read

  out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
  for s in ("import", "pairs", "encode"):
    assert f"stage {s}: done before, skipped" in out.stdout
  second = _marks(ws, "best")
  assert list(second) == STAGES and all(second[s] == first[s] for s in first)
  runs = ensemble.member_dirs(ws / "runs" / "best")
  assert runs == [ws / "runs" / "best-m0"]
  for r in runs:
    assert json.loads((r / "run.json").read_text())["status"] == "done"
    cfg = json.loads((r / "config.json").read_text())
    assert cfg["data"]["data_dir"] == dirs and cfg["features"]["encoder"] == "best-pairs"
    assert cfg["data"]["val_sources"] == HELD_OUT
  # The score stage scored the ensemble run on the held-out repository's notebooks.
  val = json.loads((ws / "runs" / "best" / "eval" / "train_val.json").read_text())["metrics"]
  held = [i for i, r in nb_io.read_sources(dirs).items() if r == HELD_OUT]
  assert -1 <= val["kendall_tau"] <= 1 and 0 < val["n_notebooks"] <= len(held)
  # A third run has nothing left to do.
  out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and out.stdout.count("done before, skipped") == len(STAGES)


def test_pipeline_rejects_bad_arguments(tmp_path):
  def fails(*args):
    return subprocess.run(["bash", str(PIPELINE), *args], cwd=tmp_path, capture_output=True,
                          text=True, env=_env(tmp_path / "ws"), timeout=30)
  p = fails("--local", "--name=x")
  assert p.returncode == 2 and "--data_dir is required" in p.stderr
  p = fails("--local", "--name=x", f"--data_dir={tmp_path / 'nope'}")
  assert p.returncode == 2 and "not found" in p.stderr
  bad = tmp_path / "bad.sh"
  bad.write_text("stage a -- tests.x\nstage b --after=zz -- tests.x\n")
  p = fails("--local", "--name=x", f"--data_dir={tmp_path}", f"--recipe={bad}")
  assert p.returncode == 2 and "stage b: --after=zz names no stage" in p.stderr
  sample = str(nb_io.sample_data_dir())
  for env_extra, msg in [({"MEMBER_KIND": "folds", "VAL_SOURCES": "a/b"}, "set one or the other"),
                         ({"MEMBER_KIND": "fold"}, "MEMBER_KIND must be seeds or folds")]:
    p = subprocess.run(["bash", str(PIPELINE), "--local", "--name=x", f"--data_dir={sample}"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=30,
                       env={**_env(tmp_path / "ws"), **env_extra})
    assert p.returncode == 2 and msg in p.stderr, p.stderr
    assert not (tmp_path / "ws" / "pipelines" / "x").exists() or not any(
        (tmp_path / "ws" / "pipelines" / "x").glob("*/done.json"))  # refused before any stage


# --- SLURM: the real local slurmctld (tests/slurm_cluster.py) ----------------------------

from tests.test_slurm import cluster  # noqa: E402,F401  (the module's own real cluster)

_SLURM_RECIPE = """\
# a -> b, a -> c, (b, c) -> d; c fails while $WORKSPACE/FAIL exists.
dummy() { echo tests.slurm_cluster --workdir="$WORKSPACE/out/$1" --step_time=0.5; }
stage a -- $(dummy a) --steps=4
stage b -- $(dummy b) --steps=1
stage c --after=a -- $(dummy c) --steps=1 --mode=$([[ -e "$WORKSPACE/FAIL" ]] && echo fail || echo train)
stage d --after=b,c -- $(dummy d) --steps=1
"""


def _pipeline_jobs(cluster, ws: Path, recipe: Path, data: Path) -> tuple[dict[str, str], str]:
  out = cluster.run(["bash", str(PIPELINE), f"--data_dir={data}", "--name=chain",
                     f"--recipe={recipe}", "--time=5"], cwd=ws.parent,
                    env={"JAXRANK_HOME": str(ws), "JAXRANK_PYTHON": sys.executable}).stdout
  return dict(re.findall(r"stage (\w+): job (\d+)", out)), out


def test_slurm_pipeline_chains_its_stages_with_afterok(cluster, tmp_path):
  ws = tmp_path / "ws"
  ws.mkdir()
  (ws / "FAIL").touch()
  recipe = tmp_path / "chain.sh"
  recipe.write_text(_SLURM_RECIPE)
  jobs, out = _pipeline_jobs(cluster, ws, recipe, sample_data_dir())
  assert list(jobs) == ["a", "b", "c", "d"], out
  deps = {s: cluster.job_info(j).get("Dependency", "") for s, j in jobs.items()}
  assert deps["b"].startswith(f"afterok:{jobs['a']}"), deps
  assert deps["c"].startswith(f"afterok:{jobs['a']}"), deps
  assert re.match(rf"afterok:{jobs['b']}(\(\w+\))?,afterok:{jobs['c']}", deps["d"]), deps
  final = {s: cluster.wait_job(j, timeout=180) for s, j in jobs.items()}
  assert [final[s]["JobState"] for s in "abcd"] == ["COMPLETED", "COMPLETED", "FAILED",
                                                     "CANCELLED"], cluster.logs()
  assert final["b"]["StartTime"] >= final["a"]["EndTime"]  # ISO times sort as strings
  assert final["c"]["StartTime"] >= final["a"]["EndTime"]
  marks = ws / "pipelines" / "chain"
  assert [s for s in "abcd" if (marks / s / "done.json").exists()] == ["a", "b"]
  assert not (ws / "out" / "d").exists()  # never ran

  # Fixed and rerun: done stages are skipped, the rest is submitted and chained.
  (ws / "FAIL").unlink()
  jobs2, out = _pipeline_jobs(cluster, ws, recipe, sample_data_dir())
  assert list(jobs2) == ["c", "d"] and "stage a: done before, skipped" in out, out
  assert cluster.job_info(jobs2["d"])["Dependency"].startswith(f"afterok:{jobs2['c']}")
  assert cluster.wait_job(jobs2["d"], timeout=180)["JobState"] == "COMPLETED", cluster.logs()
  assert all((marks / s / "done.json").exists() for s in "abcd")
  assert (ws / "out" / "a" / "steps.log").read_text().count("\n") == 4  # ran once
  jobs3, out = _pipeline_jobs(cluster, ws, recipe, sample_data_dir())
  assert not jobs3 and out.count("done before, skipped") == 4, out
