"""A real one-node SLURM cluster on 127.0.0.1 for tests (slurmctld + slurmd).

Needs the Debian/Ubuntu packages `slurmctld slurmd slurm-client` (see
.ci/install_slurm.sh) and root, since the daemons run as root with
`AuthType=auth/none` (no munge). Everything the cluster writes (state, spool,
logs, pid files) stays in one temp folder; ports are picked free at start.

  with SlurmCluster(tmp_path / "slurm") as cluster:
    job = cluster.sbatch(["--wrap", "hostname"])
    cluster.wait_job(job, timeout=30)

Run as a program, this module is a tiny trainer that honours the trainer's
preemption contract (SIGUSR1 -> finish the step, save state, exit 85; rerun
resumes), for testing the launch scripts without jax:
  python -m tests.slurm_cluster --workdir=W --steps=N --step_time=S
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

# Job states after which nothing more happens to a job (a requeued job is not
# among them: it goes back to PENDING).
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                "BOOT_FAIL", "DEADLINE", "PREEMPTED")
SLURM_BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "scancel")
# A requeued job may not start before now + cred_expire (default 120 s); 5 s is
# enough for one node whose clock is its own.
CRED_EXPIRE_S = 5

_CONF = """\
# Written by tests/slurm_cluster.py: a throwaway one-node cluster.
ClusterName=jaxranktest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/none
CredType=cred/none
AuthInfo=cred_expire={cred_expire}
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ReturnToService=2
# More CPUs than the machine has, so the tests' jobs run side by side.
SlurmdParameters=config_overrides
KillWait=10
MinJobAge=600
# jax.distributed derives its port from the job id: differ between concurrent clusters.
FirstJobId={first_job_id}
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def missing_requirements() -> str | None:
  """Why a cluster cannot start here, or None if it can."""
  missing = [b for b in SLURM_BINARIES if shutil.which(b) is None]
  if missing:
    return f"SLURM binaries not found: {missing} (run .ci/install_slurm.sh)"
  if os.geteuid() != 0:
    return "the test cluster runs its daemons as root (auth/none); not root"
  return None


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class SlurmCluster:
  """Starts slurmctld + slurmd in the foreground; `stop()` ends both (and all jobs)."""

  def __init__(self, root: str | os.PathLike, *, cpus: int | None = None):
    """`cpus`: what the node offers SLURM (default 8, whatever the machine has)."""
    self.root = Path(root).resolve()
    self.host = socket.gethostname()
    self.cpus = cpus or 8
    self.conf = self.root / "slurm.conf"
    self.env = dict(os.environ, SLURM_CONF=str(self.conf))
    self._procs: dict[str, subprocess.Popen] = {}

  # -- life cycle -------------------------------------------------------------

  def start(self, timeout: float = 60.0) -> "SlurmCluster":
    reason = missing_requirements()
    if reason:
      raise RuntimeError(reason)
    try:
      socket.gethostbyname(self.host)
    except OSError as e:
      raise RuntimeError(f"host name {self.host!r} does not resolve ({e}); srun tasks and "
                         "jax.distributed need it to") from e
    for sub in ("state", "spool", "log"):
      (self.root / sub).mkdir(parents=True, exist_ok=True)
    self.conf.write_text(_CONF.format(
        host=self.host, root=self.root, ctld_port=_free_port(), slurmd_port=_free_port(),
        cred_expire=CRED_EXPIRE_S, cpus=self.cpus, mem_mb=1000,
        first_job_id=random.randrange(1000, 4_000_000)))
    # -D: stay in the foreground, so we own the pid; -c: no old state; -i: ignore errors in it.
    self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-i", "-f", str(self.conf)])
    self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.host])
    deadline = time.monotonic() + timeout
    while True:
      self._check_alive()
      out = self.run(["sinfo", "-h", "-N", "-o", "%T"], check=False).stdout.strip()
      if out in ("idle", "mixed", "allocated"):
        return self
      if time.monotonic() > deadline:
        raise RuntimeError(f"node never became idle (sinfo says {out!r})\n{self.logs()}")
      time.sleep(0.3)

  def _spawn(self, name: str, argv: Sequence[str]) -> None:
    log = open(self.root / "log" / f"{name}.stdout", "ab")
    self._procs[name] = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
    log.close()

  def _check_alive(self) -> None:
    for name, proc in self._procs.items():
      if proc.poll() is not None:
        raise RuntimeError(f"{name} exited with code {proc.returncode}\n{self.logs()}")

  def stop(self) -> None:
    """Cancels all jobs, waits for their processes to end, then stops the daemons."""
    if not self._procs:
      return
    try:
      if all(p.poll() is None for p in self._procs.values()):
        self.run(["scancel", "--full", "--quiet", f"--user={os.getuid()}"], check=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
          left = self.run(["squeue", "-h", "-o", "%i %T"], check=False).stdout.strip()
          if not left:
            break
          time.sleep(0.5)
    finally:
      for name in ("slurmd", "slurmctld"):
        proc = self._procs.get(name)
        if proc is None or proc.poll() is not None:
          continue
        proc.send_signal(signal.SIGTERM)
        try:
          proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
          proc.kill()
          proc.wait(timeout=10)
      self._procs.clear()

  def __enter__(self) -> "SlurmCluster":
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()

  # -- clients ----------------------------------------------------------------

  def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 60,
          env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None
          ) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), env={**self.env, **(env or {})}, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
      raise RuntimeError(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n"
                         f"{proc.stdout}\n{proc.stderr}\n{self.logs()}")
    return proc

  def sbatch(self, args: Sequence[str], **kwargs) -> str:
    out = self.run(["sbatch", "--parsable", *args], **kwargs).stdout.strip()
    return out.split(";")[0]

  def job_info(self, job_id: str) -> dict[str, str]:
    """`scontrol show job` as a dict (JobState, Restarts, ExitCode, ...)."""
    out = self.run(["scontrol", "-o", "show", "job", job_id]).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))

  def wait_job(self, job_id: str, timeout: float, poll: float = 1.0,
               states: Sequence[str] = FINAL_STATES) -> dict[str, str]:
    """Polls until the job reaches a final state; returns its last job_info."""
    deadline = time.monotonic() + timeout
    while True:
      self._check_alive()
      info = self.job_info(job_id)
      if info.get("JobState") in states:
        return info
      if time.monotonic() > deadline:
        raise TimeoutError(f"job {job_id} still {info.get('JobState')} after {timeout} s: "
                           f"{info}\n{self.logs()}")
      time.sleep(poll)

  def logs(self, tail: int = 40) -> str:
    parts = []
    for path in sorted((self.root / "log").glob("*")):
      lines = path.read_text(errors="replace").splitlines()[-tail:]
      parts.append(f"--- {path} (last {len(lines)} lines)\n" + "\n".join(lines))
    return "\n".join(parts)


# -- the dummy trainer ----------------------------------------------------------

EXIT_REQUEUE = 85


def dummy_train(workdir: Path, steps: int, step_time: float) -> int:
  """Counts to `steps`, `step_time` s a step, folding each step into a checksum."""
  workdir.mkdir(parents=True, exist_ok=True)
  state_file = workdir / "state.json"
  stop: list[float] = []
  signal.signal(signal.SIGUSR1, lambda *_: stop.append(time.time()))
  state = {"step": 0, "checksum": 0}
  if state_file.exists():
    state = json.loads(state_file.read_text())
  print(f"dummy: start at step {state['step']} pid {os.getpid()}", flush=True)

  def save():
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, state_file)

  while state["step"] < steps:
    time.sleep(step_time)
    state["step"] += 1
    state["checksum"] = (state["checksum"] * 31 + state["step"]) % 1_000_003
    with open(workdir / "steps.log", "a") as f:
      f.write(f"{state['step']} {os.getpid()}\n")
    if stop:
      save()
      print(f"dummy: USR1, saved step {state['step']}, exit {EXIT_REQUEUE}", flush=True)
      return EXIT_REQUEUE
  save()
  print(f"dummy: done {state}", flush=True)
  return 0


def allreduce(workdir: Path) -> int:
  """Joins the job's jax processes from SLURM's environment; sums over all devices."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from jax.sharding import Mesh, NamedSharding  # pylint: disable=g-import-not-at-top
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top

  jax.distributed.initialize()  # bare: coordinator, count and id come from SLURM_*
  pid = jax.process_index()
  mesh = Mesh(np.array(jax.devices()), ("d",))
  local_x = np.full((jax.local_device_count(),), pid + 1.0, np.float32)
  x = multihost_utils.host_local_array_to_global_array(local_x, mesh, P("d"))
  total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))(x)
  out = {"process_index": pid, "process_count": jax.process_count(),
         "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
         "sum": float(total), "slurm_procid": os.environ.get("SLURM_PROCID")}
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / f"allreduce-{pid}.json").write_text(json.dumps(out))
  print(f"allreduce: {out}", flush=True)
  jax.distributed.shutdown()
  return 0


def _main(argv: Sequence[str]) -> int:
  flags = []
  for a in argv:  # --flagfile=F: one --name=value a line, like absl
    if a.startswith("--flagfile="):
      flags += [l.strip() for l in Path(a.split("=", 1)[1]).read_text().splitlines()]
    else:
      flags.append(a)
  args = dict(a[2:].split("=", 1) for a in flags if a.startswith("--") and "=" in a)
  mode = args.get("mode", "train")
  if mode == "allreduce":
    return allreduce(Path(args["workdir"]))
  if mode == "env":  # what the job step sees: the CPUs srun gave it, the flags it got
    out = {k: os.environ.get(k) for k in ("SRUN_CPUS_PER_TASK", "SLURM_CPUS_PER_TASK",
                                          "JAXRANK_EXPECT_GPU")}
    out["argv"] = list(argv)
    Path(args["workdir"]).mkdir(parents=True, exist_ok=True)
    (Path(args["workdir"]) / "env.json").write_text(json.dumps(out))
    return 0
  if mode == "fail":  # a trainer that crashes: must not be requeued
    print("dummy: failing on purpose", flush=True)
    return int(args.get("exit_code", 3))
  return dummy_train(Path(args["workdir"]), int(args.get("steps", 10)),
                     float(args.get("step_time", 0.1)))


if __name__ == "__main__":
  sys.exit(_main(sys.argv[1:]))


# -- the real trainer, tiny ---------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parent.parent


def tiny_train_flagfile(path: str | os.PathLike, **overrides) -> Path:
  """Writes a --flagfile for `python -m experiments.train`: the real BOW-MLP config
  shrunk like tests/tiny.py, on the embedded sample.

  `overrides`: config keys without the `config.` prefix, e.g. `**{"train.steps": 40}`.
  """
  values = {
      "data.data_dir": str(REPO_ROOT / "jaxrank" / "data" / "sample"),
      "data.max_notebooks": 60,
      "data.n_folds": 3,
      "data.buckets": "(64, 256, 1024)",
      "data.cells_per_batch": 512,
      "features.word_vocab": 2000,
      "features.max_terms": 16,
      "model.embed_dim": 16,
      "model.hidden_dim": 32,
      "train.steps": 40,
      "train.log_every": 1,
      "train.eval_every": 1000,
      "train.checkpoint_every": 1000,
  }
  values.update(overrides)
  lines = [f"--flagfile={REPO_ROOT / 'experiments' / 'flags' / 'bow_mlp.flags'}"]
  lines += [f"--config.{k}={v}" for k, v in values.items()]
  path = Path(path)
  path.write_text("\n".join(lines) + "\n")
  return path
