"""Cluster life on a real SLURM (slurmctld + slurmd on 127.0.0.1, tests/slurm_cluster.py).

What users live with: a queue time limit, SIGUSR1 shortly before it, requeue.
  * the real trainer, submitted with launch/submit.sh, is signalled by SLURM at
    its time limit, checkpoints, exits 85, is requeued by launch/train.sbatch,
    resumes and ends with the same parameters and metrics as a run that was
    never interrupted;
  * a sweep (job array) of a tiny contract-honouring program finishes across as
    many queue slots as it needs, with nobody touching it;
  * a trainer that fails is not requeued;
  * `srun` with 2 tasks: a bare `jax.distributed.initialize()` finds its peers
    from SLURM's environment and an all-reduce sums over both processes.

Timing facts these tests plan with (measured, Slurm 22.05): slurmctld checks
time limits every 30 s (PERIODIC_TIMEOUT, not configurable) and sends the
`--signal` warning up to 30 s early, so with --time=T and --signal_lead=L the
warning comes 0-30 s after `T - L - 30` s of run time; a requeued job waits
`AuthInfo=cred_expire` (here 5 s, default 120 s) before it may start again.
Needs root and the Debian packages (.ci/install_slurm.sh): without them these
tests fail, they are never skipped.
"""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxrank import checkpoint, results
from tests import helpers
from tests.slurm_cluster import (FINAL_STATES, REPO_ROOT, SlurmCluster,
                                 missing_requirements, tiny_train_flagfile)

SUBMIT = REPO_ROOT / "launch" / "submit.sh"
SWEEP = REPO_ROOT / "launch" / "sweep.sh"
TRAIN_STEPS = 40
SWEEP_STEPS = (90, 100)  # x 0.5 s: longer than the 10-40 s until the first warning


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
  reason = missing_requirements()
  if reason:
    pytest.fail(f"{reason}. CI installs SLURM with .ci/install_slurm.sh; these tests are "
                "never skipped.")
  c = SlurmCluster(tmp_path_factory.mktemp("slurm"))
  c.start()
  try:
    yield c
  finally:
    c.stop()


def _launch(cluster: SlurmCluster, ws: Path, script: Path, *args: str) -> str:
  """Runs launch/submit.sh or sweep.sh the way a user would; returns the job id."""
  out = cluster.run([str(script), *args], cwd=ws.parent,
                    env={"JAXRANK_HOME": str(ws), "JAXRANK_PYTHON": sys.executable}).stdout
  match = re.search(r"submitted job (\d+)", out)
  assert match, out
  return match.group(1)


def _submit(cluster: SlurmCluster, ws: Path, name: str, flags: str, *opts: str) -> str:
  """launch/submit.sh with a flagfile holding `flags`, run NAME, a 5 min limit warned
  60 s ahead (the default 300 s lead would warn at once: a slow start would then be
  requeued again and again)."""
  flagfile = ws.parent / f"{name}.flags"
  flagfile.write_text(flags)
  return _launch(cluster, ws, SUBMIT, f"--flagfile={flagfile}", f"--name={name}", "--time=5",
                 "--signal_lead=60", *opts)


def _read(path: Path) -> str:
  return path.read_text(errors="replace") if path.exists() else ""


def _checksum(steps: int) -> int:
  """What tests.slurm_cluster.dummy_train computes when nothing is lost or redone."""
  c = 0
  for s in range(1, steps + 1):
    c = (c * 31 + s) % 1_000_003
  return c


@pytest.fixture(scope="module")
def dummy_sweep(cluster, tmp_path_factory):
  """A 2-run sweep of the dummy trainer, submitted when the module starts so that
  its minute of sleeping overlaps the other tests. Each run needs 45-50 s of
  work and gets SLURM's warning 10-40 s into each queue slot."""
  ws = tmp_path_factory.mktemp("sweep") / "ws"
  ws.mkdir()
  flagfile = ws.parent / "dummy.flags"
  flagfile.write_text("--step_time=0.5\n")
  sweepfile = ws.parent / "sweep.txt"
  sweepfile.write_text("# steps per run\n" + "\n".join(f"--steps={n}" for n in SWEEP_STEPS)
                       + "\n\n")
  job = _launch(cluster, ws, SWEEP, str(sweepfile), f"--flagfile={flagfile}", "--name=count",
                "--time=1", "--signal_lead=20", "--module=tests.slurm_cluster")
  return job, ws


def test_slurm_time_limit_signal_checkpoint_requeue_resume_real_trainer(
    cluster, dummy_sweep, tmp_path):
  del dummy_sweep  # only started here, checked in its own test
  ws = tmp_path / "ws"
  ws.mkdir()
  flagfile = tiny_train_flagfile(tmp_path / "tiny.flags", **{"train.steps": TRAIN_STEPS})
  reference = tmp_path / "reference"
  ref_log = open(tmp_path / "reference.log", "wb")
  ref = subprocess.Popen([sys.executable, "-m", "experiments.train", f"--flagfile={flagfile}",
                          f"--workdir={reference}", f"--workspace={ws}"],
                         cwd=REPO_ROOT, stdout=ref_log, stderr=subprocess.STDOUT)
  try:
    # A 2 min limit, warned 70 s ahead: SIGUSR1 comes 20-50 s into the slot.
    job = _launch(cluster, ws, SUBMIT, f"--flagfile={flagfile}", "--name=tiny", "--time=2",
                  "--signal_lead=70")
    workdir = ws / "runs" / "tiny"
    log = workdir / f"slurm-{job}.out"

    # On a fast machine the 40 steps would be done before the warning; hold the
    # trainer after its first step until the warning is there (SIGSTOP, then
    # SIGCONT), so it is mid-run whatever this machine's speed.
    held = None
    deadline = time.monotonic() + 240
    while "got USR1" not in _read(log):
      info = cluster.job_info(job)
      assert info["JobState"] not in FINAL_STATES, f"{info}\n{_read(log)}"
      assert time.monotonic() < deadline, f"no USR1 from SLURM:\n{_read(log)}\n{cluster.logs()}"
      if held is None and helpers.train_steps_logged(workdir):
        held = results.read_run(workdir)["pid"]
        os.kill(held, signal.SIGSTOP)
      time.sleep(0.02)
    if held is not None:
      os.kill(held, signal.SIGCONT)

    # The job requeues itself. Give the next slot a long limit, so the test
    # does not depend on how fast this machine restarts jax (the dummy sweep
    # shows runs that need many slots).
    deadline = time.monotonic() + 180
    while int(cluster.job_info(job)["Restarts"]) < 1:
      info = cluster.job_info(job)
      assert info["JobState"] not in FINAL_STATES, f"{info}\n{_read(log)}"
      assert time.monotonic() < deadline, f"never requeued:\n{_read(log)}"
      time.sleep(0.2)
    cluster.run(["scontrol", "update", f"JobId={job}", "TimeLimit=15"])
    info = cluster.wait_job(job, timeout=480)
    ref.wait(timeout=600)
  finally:
    if ref.poll() is None:  # the test failed before the reference run ended
      ref.kill()
      ref.wait()
    ref_log.close()
  text = _read(log)
  assert ref.returncode == 0, _read(tmp_path / "reference.log")
  assert (info["JobState"], info["Restarts"], info["ExitCode"]) == ("COMPLETED", "1", "0:0"), text

  # The job's own log tells the story, in order.
  story = [f"job {job} restart 0 on", "got USR1 (time limit near)",
           "trainer checkpointed and exited 85", f"requeueing job {job} (restart 1)",
           f"job {job} restart 1 on", "trainer exited with 0"]
  positions = [text.find(s) for s in story]
  assert -1 not in positions and positions == sorted(positions), text
  resumed = re.search(r"resumed from step (\d+)", text)
  assert resumed, text
  k = int(resumed.group(1))
  assert 1 <= k < TRAIN_STEPS, text
  assert "stop requested: checkpointed step" in text

  # Every step trained exactly once across the two slots.
  assert helpers.train_steps_logged(workdir) == list(range(1, TRAIN_STEPS + 1))
  run = results.read_run(workdir)
  assert (run["status"], run["steps"], run["n_starts"]) == ("done", TRAIN_STEPS, 2)
  # Same result as the run that was never interrupted.
  ev = lambda wd: json.loads((wd / "eval" / "val.json").read_text())["metrics"]
  assert ev(workdir) == ev(reference)
  got, want = checkpoint.restore_params(workdir), checkpoint.restore_params(reference)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_slurm_failing_trainer_is_not_requeued(cluster, tmp_path):
  ws = tmp_path / "ws"
  ws.mkdir()
  job = _submit(cluster, ws, "broken", "--mode=fail\n--exit_code=3\n",
                "--module=tests.slurm_cluster")
  info = cluster.wait_job(job, timeout=120)
  text = _read(ws / "runs" / "broken" / f"slurm-{job}.out")
  assert (info["JobState"], info["Restarts"], info["ExitCode"]) == ("FAILED", "0", "3:0"), text
  assert "trainer exited with 3" in text and "requeue" not in text


def test_slurm_srun_two_tasks_jax_distributed_all_reduce(cluster, tmp_path):
  ws = tmp_path / "ws"
  ws.mkdir()
  job = _submit(cluster, ws, "ar", "--mode=allreduce\n", "--nodes=1", "--ntasks-per-node=2",
                "--module=tests.slurm_cluster")
  info = cluster.wait_job(job, timeout=300)
  workdir = ws / "runs" / "ar"
  text = _read(workdir / f"slurm-{job}.out")
  assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), text
  assert "srun --kill-on-bad-exit=1" in text
  outs = [json.loads((workdir / f"allreduce-{i}.json").read_text()) for i in range(2)]
  local = outs[0]["local_device_count"]
  want = sum((i + 1.0) * local for i in range(2))
  for i, out in enumerate(outs):
    assert out["process_index"] == i and out["slurm_procid"] == str(i)
    assert out["process_count"] == 2 and out["device_count"] == 2 * local
    assert out["sum"] == want


def test_slurm_sweep_runs_finish_across_slots_unattended(cluster, dummy_sweep):
  job, ws = dummy_sweep
  for task, steps in enumerate(SWEEP_STEPS):
    info = cluster.wait_job(f"{job}_{task}", timeout=400)
    workdir = ws / "runs" / f"count-{task}"
    text = _read(workdir / f"slurm-{job}_{task}.out")
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), text
    restarts = int(info["Restarts"])
    assert restarts >= 1, text
    assert text.count("got USR1") == restarts and text.count("requeueing job") == restarts
    assert f"--steps={steps}" in text and text.rstrip().endswith("trainer exited with 0")
    state = json.loads((workdir / "state.json").read_text())
    assert state == {"step": steps, "checksum": _checksum(steps)}
    lines = [l.split() for l in (workdir / "steps.log").read_text().splitlines()]
    assert [int(s) for s, _ in lines] == list(range(1, steps + 1))  # none lost, none redone
    # Each job segment (a new process) continues where the last one stopped: its steps
    # are one block. A segment signalled before its first step (a loaded machine) makes
    # no step, so there are at most restarts + 1 blocks, and at least 2.
    pids = [pid for _, pid in lines]
    blocks = [p for i, p in enumerate(pids) if i == 0 or p != pids[i - 1]]
    assert len(set(blocks)) == len(blocks), blocks  # no process came back
    assert 2 <= len(blocks) <= restarts + 1, (blocks, restarts)


def _dry_run(script: Path, *args: str, home: Path) -> list[str]:
  argv = [str(script), *args[:1], "--dry_run", *args[1:]]  # before any `--`
  out = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, JAXRANK_HOME=str(home)))
  assert out.returncode == 0, out.stderr
  return shlex.split(out.stdout)


def _refused(script: Path, *args: str, home: Path) -> str:
  """Runs a submission that must fail before sbatch; returns its one-line error."""
  out = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, JAXRANK_HOME=str(home)))
  assert out.returncode == 2, (out.stdout, out.stderr)
  assert "Traceback" not in out.stderr, out.stderr
  return out.stderr


SAMPLE = REPO_ROOT / "jaxrank" / "data" / "sample"


def test_slurm_submit_and_sweep_build_the_sbatch_command(tmp_path):
  flags = tmp_path / "run.flags"
  flags.write_text(f"--config=experiments/configs/bow_mlp.py\n--config.data.data_dir={SAMPLE}\n")
  home = tmp_path / "ws"
  cmd = _dry_run(SUBMIT, f"--flagfile={flags}", "--name=big", "--time=04:00:00",
                 "--partition=gpu", "--gpus=4", "--nodes=2", "--ntasks-per-node=4",
                 "--signal_lead=600", "--", "--config.train.epochs=3", home=home)
  run = home / "runs" / "big"
  assert cmd[:2] == ["sbatch", "--parsable"]
  for opt in ["--job-name=big", "--time=04:00:00", "--requeue", "--signal=B:USR1@600",
              "--open-mode=append", f"--chdir={REPO_ROOT}", "--partition=gpu",
              "--gpus-per-node=4", "--nodes=2", "--ntasks-per-node=4",
              f"--output={run}/slurm-%j.out"]:
    assert opt in cmd, (opt, cmd)
  assert any(a.startswith("--export=") and "JAXRANK_EXPECT_GPU=1" in a for a in cmd), cmd
  script = cmd.index(str(REPO_ROOT / "launch" / "train.sbatch"))
  assert cmd[script + 1:] == [str(run), "--module=experiments.train", "--",
                              f"--flagfile={home}/launch/big/train.flags",
                              "--config.train.epochs=3"]
  assert not home.exists()  # a dry run writes nothing

  # sbatch options submit.sh does not know go to sbatch as they are.
  passthrough = ["--gres=gpu:a100:1", "--dependency=afterok:123", "--mail-type=END,FAIL",
                 "--account=team", "--qos=short", "--cpus-per-task=8", "--exclusive"]
  cmd = _dry_run(SUBMIT, f"--flagfile={flags}", "--name=gpu", *passthrough, home=home)
  for opt in passthrough:
    assert opt in cmd, (opt, cmd)
  assert any(a.startswith("--export=") and "JAXRANK_EXPECT_GPU=1" in a for a in cmd), cmd

  # The sweep example shipped with launch/sweep.sh: 4 runs, every line checked.
  sweep = REPO_ROOT / "experiments" / "flags" / "sweep_lr.txt"
  cmd = _dry_run(SWEEP, str(sweep), f"--flagfile={flags}", "--name=lr", "--max_parallel=1",
                 home=home)
  assert "--array=0-3%1" in cmd and f"--output={home}/runs/lr-%a/slurm-%A_%a.out" in cmd
  assert f"--sweep={home}/launch/lr/sweep.txt" in cmd

  # Every entry point is submittable; those without --workdir do not get one.
  table_flags = tmp_path / "table.flags"
  table_flags.write_text("--sort_by=kendall_tau\n")
  cmd = _dry_run(SUBMIT, f"--flagfile={table_flags}", "--name=table",
                 "--module=experiments.results", home=home)
  assert "--no_workdir" in cmd and "--module=experiments.results" in cmd
  ev_flags = tmp_path / "ev.flags"
  ev_flags.write_text(f"--data_dir={SAMPLE}\n--split=train\n")
  cmd = _dry_run(SUBMIT, f"--flagfile={ev_flags}", "--name=big", "--module=experiments.evaluate",
                 home=home)
  assert "--no_workdir" not in cmd and "--module=experiments.evaluate" in cmd

  bad = subprocess.run([str(SUBMIT), f"--flagfile={flags}", "gpu=1"], capture_output=True,
                       text=True, env=dict(os.environ, JAXRANK_HOME=str(home)))
  assert bad.returncode == 2 and "unexpected argument gpu=1" in bad.stderr
  missing = subprocess.run([str(SUBMIT), "--name=x"], capture_output=True, text=True)
  assert missing.returncode == 2 and "--flagfile is required" in missing.stderr


def test_slurm_submit_checks_the_job_before_the_queue(tmp_path):
  """Typos, missing data and missing store models fail at once, in one line, with
  --dry_run as without; nothing is written and nothing is queued."""
  home = tmp_path / "ws"
  flags = tmp_path / "run.flags"
  flags.write_text(f"--config=experiments/configs/bow_mlp.py\n--config.data.data_dir={SAMPLE}\n")
  for dry in ([], ["--dry_run"]):
    err = _refused(SUBMIT, f"--flagfile={flags}", *dry, "--", "--config.optim.learning_rate=1e-3",
                   home=home)
    assert "unknown config key --config.optim.learning_rate" in err, err
    assert "did you mean --config.optim.lr?" in err, err
  err = _refused(SUBMIT, f"--flagfile={flags}", "--", "--config.seed=0", home=home)
  assert "did you mean --config.data.seed or --config.train.seed?" in err, err
  err = _refused(SUBMIT, f"--flagfile={flags}", "--", "--config.data.split=tset", home=home)
  assert "has no split 'tset' (folders: test, train)" in err, err
  err = _refused(SUBMIT, f"--flagfile={flags}", "--", f"--config.data.data_dir={tmp_path}/nope",
                 home=home)
  assert f"{tmp_path}/nope: no such folder" in err, err
  # A config that names a store model the workspace lacks.
  cells = tmp_path / "cells.flags"
  cells.write_text(f"--flagfile={REPO_ROOT}/experiments/flags/roberta_cells.flags\n"
                   f"--config.data.data_dir={SAMPLE}\n")
  err = _refused(SUBMIT, f"--flagfile={cells}", home=home)
  assert "--config.features.encoder='minilm-l6': no such model in " + str(home) in err, err
  enc = tmp_path / "encode.flags"
  enc.write_text(f"--data_dir={SAMPLE}\n--split=train\n")
  err = _refused(SUBMIT, f"--flagfile={enc}", "--module=experiments.encode", "--",
                 "--encoder=minilm", home=home)
  assert "--encoder='minilm': no such model" in err, err
  # The old sweep example's keys: refused naming the line.
  sweep = tmp_path / "old.txt"
  sweep.write_text("--config.optim.lr=1e-3\n--config.optim.learning_rate=1e-3 --config.seed=0\n")
  err = _refused(SWEEP, str(sweep), f"--flagfile={flags}", "--name=old", home=home)
  assert "sweep line 2: unknown config key --config.optim.learning_rate" in err, err
  assert len(err.strip().splitlines()) == 2, err  # the problem + "not submitted"
  assert not (home / "runs").exists() and not (home / "launch").exists()


def test_slurm_entry_point_without_workdir_and_cpus_per_task(cluster, tmp_path):
  """A module without --workdir (experiments.results) runs as submitted; srun gets
  the --cpus-per-task the job asked for (SRUN_CPUS_PER_TASK, Slurm >= 22.05)."""
  ws = tmp_path / "ws"
  ws.mkdir()
  job = _submit(cluster, ws, "table", "--sort_by=kendall_tau\n", "--module=experiments.results")
  job2 = _submit(cluster, ws, "env", "--mode=env\n", "--cpus-per-task=2",
                 "--module=tests.slurm_cluster")
  info = cluster.wait_job(job, timeout=180)
  text = _read(ws / "runs" / "table" / f"slurm-{job}.out")
  assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), text
  assert "--workdir" not in text and f"no runs under {ws / 'runs'}" in text, text
  info = cluster.wait_job(job2, timeout=180)
  text = _read(ws / "runs" / "env" / f"slurm-{job2}.out")
  assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), text
  env = json.loads((ws / "runs" / "env" / "env.json").read_text())
  assert env["SRUN_CPUS_PER_TASK"] == "2" and env["SLURM_CPUS_PER_TASK"] == "2", env
  assert env["JAXRANK_EXPECT_GPU"] == "0"
