"""One trainer per workdir: the lock file, its holder, stale locks taken over."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from jaxrank import lock
from tests.conftest import REPO_ROOT, subprocess_env
from tests.slurm_cluster import tiny_train_flagfile


def _write_lock(workdir, **holder):
  workdir.mkdir(parents=True, exist_ok=True)
  base = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": None,
          "slurm_job_id": None, "restart": 0, "started": "2026-01-01T00:00:00", "token": "x"}
  (workdir / lock.LOCK_FILE).write_text(json.dumps(dict(base, **holder)))


def _dead_pid() -> int:
  p = subprocess.Popen([sys.executable, "-c", "pass"])
  p.wait()
  return p.pid


def test_second_holder_is_refused_naming_the_first_and_release_frees_it(tmp_path):
  first = lock.WorkdirLock(tmp_path, job_id="77").acquire()
  holder = json.loads((tmp_path / lock.LOCK_FILE).read_text())
  assert (holder["host"], holder["pid"], holder["slurm_job_id"]) == (socket.gethostname(),
                                                                     os.getpid(), "77")
  with pytest.raises(lock.LockHeld) as e:
    lock.WorkdirLock(tmp_path, job_state=lambda job: "RUNNING").acquire()
  msg = str(e.value)
  assert "\n" not in msg and f"pid {os.getpid()}" in msg and "SLURM job 77" in msg
  first.release()
  assert not (tmp_path / lock.LOCK_FILE).exists()
  with lock.WorkdirLock(tmp_path):
    assert (tmp_path / lock.LOCK_FILE).exists()
  assert not (tmp_path / lock.LOCK_FILE).exists()


def test_lock_of_a_dead_pid_on_this_host_is_taken_over(tmp_path, caplog):
  pid = _dead_pid()
  _write_lock(tmp_path, pid=pid)
  with lock.WorkdirLock(tmp_path) as held:
    assert json.loads((tmp_path / lock.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert held.held
  assert f"pid {pid} is no longer running" in caplog.text


def test_a_reused_pid_is_not_the_holder(tmp_path):
  # Our own pid, but a different process start time: the holder is gone.
  _write_lock(tmp_path, pid=os.getppid(), pid_start="1")
  with lock.WorkdirLock(tmp_path):
    pass


def test_live_holder_on_another_host_without_slurm_is_kept(tmp_path):
  _write_lock(tmp_path, host="node-b", pid=1)
  with pytest.raises(lock.LockHeld, match="host node-b, pid 1"):
    lock.WorkdirLock(tmp_path, job_state=lambda job: None).acquire()


@pytest.mark.parametrize("state,taken", [("RUNNING", False), ("COMPLETED", True),
                                         ("GONE", True), ("CANCELLED", True), (None, False)])
def test_holder_on_another_host_is_judged_by_its_slurm_job(tmp_path, state, taken):
  _write_lock(tmp_path, host="node-b", pid=1, slurm_job_id="123")
  asked = []
  lk = lock.WorkdirLock(tmp_path, job_state=lambda job: asked.append(job) or state)
  if taken:
    lk.acquire().release()
  else:
    with pytest.raises(lock.LockHeld, match="SLURM job 123"):
      lk.acquire()
  assert asked == ["123"]


def test_requeued_job_takes_over_its_previous_incarnation(tmp_path):
  _write_lock(tmp_path, host="node-b", pid=1, slurm_job_id="123", restart=0)
  lock.WorkdirLock(tmp_path, job_id="123", restart=1, job_state=lambda job: "RUNNING").acquire()


def test_squeue_is_asked_for_real(tmp_path, monkeypatch):
  # A stand-in `squeue` on PATH (no SLURM on this machine): the real subprocess call and parsing.
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "squeue").write_text('#!/bin/sh\n[ "$3" = 5 ] && echo RUNNING && exit 0\n'
                                  'echo "slurm_load_jobs error: Invalid job id specified" >&2\n'
                                  'exit 1\n')
  (bin_dir / "squeue").chmod(0o755)
  monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
  assert lock.slurm_job_state("5") == "RUNNING"
  assert lock.slurm_job_state("6") == "GONE"
  monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
  assert lock.slurm_job_state("5") is None


def test_young_unreadable_lock_is_held_old_one_taken(tmp_path):
  (tmp_path / lock.LOCK_FILE).write_bytes(b"")  # a writer between create and write
  with pytest.raises(lock.LockHeld):
    lock.WorkdirLock(tmp_path).acquire()
  old = time.time() - 3600
  os.utime(tmp_path / lock.LOCK_FILE, (old, old))
  lock.WorkdirLock(tmp_path).acquire().release()


def test_second_trainer_exits_at_once_and_the_first_finishes_undisturbed(tmp_path):
  flagfile = tiny_train_flagfile(tmp_path / "tiny.flags", **{"train.steps": 30})
  wd = tmp_path / "run"
  env = subprocess_env(1)
  cmd = [sys.executable, "-m", "experiments.train", f"--flagfile={flagfile}", f"--workdir={wd}",
         f"--workspace={tmp_path / 'ws'}"]
  first = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                           stderr=open(tmp_path / "first.log", "wb"))
  try:
    deadline = time.monotonic() + 300
    while not (wd / "metrics.jsonl").exists():
      assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
      assert time.monotonic() < deadline
      time.sleep(0.05)
    config_before = (wd / "config.json").read_bytes()
    t0 = time.monotonic()
    second = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    took = time.monotonic() - t0
    assert second.returncode == 1, second.stderr[-3000:]
    assert first.poll() is None, "the first trainer finished before the second one was refused"
    err = second.stderr.strip().splitlines()
    assert err[-2].startswith("error: ") and f"pid {first.pid}" in err[-2], err
    assert "Traceback" not in second.stderr
    assert (wd / "config.json").read_bytes() == config_before  # the second wrote nothing
    assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()[-3000:]
  finally:
    if first.poll() is None:
      first.kill()
  run = json.loads((wd / "run.json").read_text())
  assert (run["status"], run["steps"], run["n_starts"], run["pid"]) == ("done", 30, 1, first.pid)
  steps = [json.loads(l)["step"] for l in (wd / "metrics.jsonl").read_text().splitlines()
           if json.loads(l)["split"] == "train"]
  assert steps == list(range(1, 31))  # one run's lines, once each
  assert not (wd / lock.LOCK_FILE).exists()
  print(f"second trainer refused in {took:.1f}s")
