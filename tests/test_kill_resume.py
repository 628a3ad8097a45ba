"""kill -9 the real training command at a random step; the rerun ends where an
uninterrupted run ends (same parameters, same metrics).

No SLURM here: this is what a node crash, an OOM kill or a time limit without
warning does to a run. SIGKILL, because it cannot be caught (jax handles SIGTERM).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxrank import checkpoint, results
from tests import helpers
from tests.slurm_cluster import REPO_ROOT, tiny_train_flagfile

STEPS = 30
CHECKPOINT_EVERY = 5


def _train_cmd(flagfile: Path, workdir: Path) -> list[str]:
  return [sys.executable, "-m", "experiments.train", f"--flagfile={flagfile}",
          f"--workdir={workdir}", f"--workspace={workdir.parent / 'ws'}"]


def _last_train_step(workdir: Path) -> int:
  return max([0] + helpers.train_steps_logged(workdir))


def test_kill_9_at_a_random_step_then_rerun_equals_uninterrupted(tmp_path):
  seed = int(os.environ.get("KILL_RESUME_SEED", random.randrange(1 << 30)))
  kill_after = random.Random(seed).randint(CHECKPOINT_EVERY + 1, STEPS // 2)
  print(f"KILL_RESUME_SEED={seed}: kill after step {kill_after}")
  flagfile = tiny_train_flagfile(tmp_path / "tiny.flags", **{
      "train.steps": STEPS, "train.checkpoint_every": CHECKPOINT_EVERY,
      "train.eval_every": 15})
  killed, reference = tmp_path / "killed", tmp_path / "reference"
  logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("killed", "reference", "rerun")}

  # The uninterrupted run goes beside the one we kill (the machine has few cores).
  ref_proc = subprocess.Popen(_train_cmd(flagfile, reference), cwd=REPO_ROOT,
                              stdout=logs["reference"], stderr=subprocess.STDOUT)
  proc = subprocess.Popen(_train_cmd(flagfile, killed), cwd=REPO_ROOT,
                          stdout=logs["killed"], stderr=subprocess.STDOUT)
  try:
    deadline = time.monotonic() + 600
    while _last_train_step(killed) < kill_after:
      assert proc.poll() is None, f"trainer exited early:\n{(tmp_path / 'killed.log').read_text()}"
      assert time.monotonic() < deadline, "trainer too slow to reach the kill step"
      time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
  finally:
    if proc.poll() is None:
      proc.kill()
  killed_at = _last_train_step(killed)
  assert kill_after <= killed_at < STEPS, f"killed at {killed_at}, not mid-run"
  saved = checkpoint.Checkpointer(killed).latest_step()
  assert saved is not None and saved <= killed_at and saved % CHECKPOINT_EVERY == 0
  assert results.read_run(killed)["status"] == "running"  # it never got to say otherwise

  rerun = subprocess.run(_train_cmd(flagfile, killed), cwd=REPO_ROOT, stdout=logs["rerun"],
                         stderr=subprocess.STDOUT, timeout=600)
  rerun_log = (tmp_path / "rerun.log").read_text()
  assert rerun.returncode == 0, rerun_log
  assert f"resumed from step {saved}" in rerun_log
  assert ref_proc.wait(timeout=600) == 0, (tmp_path / "reference.log").read_text()

  # Same final parameters, bit for bit (CPU, same programs, same data order).
  got, want = checkpoint.restore_params(killed), checkpoint.restore_params(reference)
  got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
  assert jax.tree.structure(got) == jax.tree.structure(want) and got_leaves
  for x, y in zip(got_leaves, want_leaves, strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # Same final metrics, and the record shows the two segments.
  ev = lambda wd: json.loads((wd / "eval" / "val.json").read_text())["metrics"]
  assert ev(killed) == ev(reference)
  run = results.read_run(killed)
  assert (run["status"], run["steps"], run["n_starts"]) == ("done", STEPS, 2)
  m_got, m_want = results.read_metrics(killed), results.read_metrics(reference)
  assert m_got["step"].tolist() == m_want["step"].tolist()
  np.testing.assert_array_equal(m_got["loss"].to_numpy(), m_want["loss"].to_numpy())
  # TensorBoard shows what metrics.jsonl says: the steps after the checkpoint, logged by the
  # killed process too, are hidden (SessionLog START in the rerun's file), none is doubled.
  tb_got = helpers.assert_tensorboard_matches_metrics(killed)
  assert tb_got["train/loss"] == helpers.assert_tensorboard_matches_metrics(reference)["train/loss"]
  assert len(list((killed / results.TB_DIR).glob("events.*"))) == 2
