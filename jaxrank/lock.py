"""One trainer per run folder: an exclusive lock file in the workdir.

    with lock.WorkdirLock(workdir, job_id="1234", restart=0):
      train_and_evaluate(config, workdir)

The lock is `workdir/run.lock`, created with O_CREAT|O_EXCL (atomic on local
filesystems and on NFSv3+/Lustre/GPFS, unlike `flock`, which NFS may not pass
to the server), and holds JSON naming its holder: host, pid, the pid's start
time, SLURM job id and restart count, start time. A second trainer gets
`LockHeld`, whose message names the holder, before it writes anything.

A lock whose holder is gone is taken over with a warning:
- same host and the pid is dead (or is now another process: its start time differs);
- the holder's SLURM job is no longer RUNNING per `squeue` (or SLURM no longer
  knows it), when `squeue` is available;
- the same SLURM job at a lower restart count (a requeued job's previous
  incarnation: SLURM requeues only a job that has ended).
Otherwise (another host, no SLURM to ask) the lock is held: the message says
which file to delete if its holder is known to be gone.

Library code: the SLURM job id and restart count are passed in by the entry
point (which reads SLURM's environment).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable

LOCK_FILE = "run.lock"
log = logging.getLogger(__name__)

# squeue states of a job that may still be running a trainer.
_LIVE_STATES = ("RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED", "SIGNALING",
                "STAGE_OUT", "RESIZING")


class LockHeld(RuntimeError):
  """The workdir is in use by another live trainer."""


def _pid_start(pid: int) -> str | None:
  """The process's start time in clock ticks since boot (Linux), None elsewhere."""
  try:
    stat = Path(f"/proc/{pid}/stat").read_text()
  except OSError:
    return None
  return stat.rsplit(")", 1)[1].split()[19]  # field 22, after the "(comm)" field


def _pid_alive(pid: int, start: str | None) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # exists, another user's
  now = _pid_start(pid)
  return start is None or now is None or now == start


def slurm_job_state(job_id: str, timeout: float = 10.0) -> str | None:
  """The job's state per `squeue` ("RUNNING", ...), "GONE" if SLURM no longer
  knows it, None if SLURM cannot be asked."""
  try:
    p = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True,
                       text=True, timeout=timeout)
  except (OSError, subprocess.SubprocessError):
    return None
  if p.returncode != 0:
    return "GONE" if "invalid job id" in p.stderr.lower() else None
  states = p.stdout.split()
  return states[0] if states else "GONE"


def describe(holder: dict[str, Any]) -> str:
  job = holder.get("slurm_job_id")
  job = f", SLURM job {job}" + (f" (restart {holder['restart']})" if holder.get("restart") else "") \
      if job else ""
  return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}{job}, "
          f"since {holder.get('started', '?')}")


def _stale_reason(holder: dict[str, Any], me: dict[str, Any],
                  job_state: Callable[[str], str | None]) -> str | None:
  """Why the holder is gone, or None if it may be alive."""
  if holder.get("host") == me["host"] and isinstance(holder.get("pid"), int):
    if not _pid_alive(holder["pid"], holder.get("pid_start")):
      return f"pid {holder['pid']} is no longer running on {me['host']}"
    if holder["pid"] == me["pid"]:
      return None
  job = holder.get("slurm_job_id")
  if job:
    if job == me.get("slurm_job_id") and int(holder.get("restart") or 0) < int(me.get("restart") or 0):
      return f"SLURM job {job} was requeued since (restart {me['restart']})"
    state = job_state(str(job))
    if state is not None and state not in _LIVE_STATES:
      return f"SLURM job {job} is {state}"
  return None


class WorkdirLock:
  """Context manager (or acquire()/release()) for the workdir's lock file."""

  def __init__(self, workdir: str | os.PathLike, *, job_id: str | None = None, restart: int = 0,
               job_state: Callable[[str], str | None] = slurm_job_state):
    self.workdir = Path(workdir)
    self.path = self.workdir / LOCK_FILE
    self.job_state = job_state
    pid = os.getpid()
    self.me = {"host": socket.gethostname(), "pid": pid, "pid_start": _pid_start(pid),
               "slurm_job_id": job_id or None, "restart": int(restart or 0),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "token": uuid.uuid4().hex}
    self.held = False

  def read_holder(self) -> dict[str, Any] | None:
    """The lock's content; {} if unreadable (being written, or torn); None if absent."""
    try:
      raw = self.path.read_bytes()
    except FileNotFoundError:
      return None
    try:
      holder = json.loads(raw)
      return holder if isinstance(holder, dict) else {}
    except ValueError:
      return {}

  def acquire(self) -> "WorkdirLock":
    self.workdir.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(self.me, sort_keys=True) + "\n").encode()
    for _ in range(5):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self.read_holder()
        if holder is None:
          continue  # released meanwhile: try again
        reason = self._stale(holder)
        if reason is None:
          raise LockHeld(f"{self.workdir} is in use by another trainer ({describe(holder)}); "
                         f"if that one is gone, delete {self.path}")
        self._break(holder, reason)
        continue
      try:
        os.write(fd, data)
        os.fsync(fd)
      finally:
        os.close(fd)
      self.held = True
      return self
    raise LockHeld(f"{self.workdir}: could not take {self.path} (others keep racing for it)")

  def _stale(self, holder: dict[str, Any]) -> str | None:
    if not holder:
      # Torn or mid-write: a writer needs microseconds, so only an old one is stale.
      age = time.time() - self.path.stat().st_mtime
      return f"it is unreadable and {age:.0f}s old" if age > 60 else None
    return _stale_reason(holder, self.me, self.job_state)

  def _break(self, holder: dict[str, Any], reason: str) -> None:
    """Moves a stale lock aside (rename: atomic), unless it changed since it was read."""
    aside = self.path.with_name(f".{LOCK_FILE}.stale-{self.me['token']}")
    if self.read_holder() != holder:
      return  # someone else took it over meanwhile: look again
    with contextlib.suppress(FileNotFoundError):
      os.rename(self.path, aside)
      log.warning("taking over the lock of %s: %s was held by %s, but %s", self.workdir,
                  LOCK_FILE, describe(holder), reason)
      aside.unlink()

  def release(self) -> None:
    if not self.held:
      return
    self.held = False
    if (self.read_holder() or {}).get("token") == self.me["token"]:
      with contextlib.suppress(FileNotFoundError):
        self.path.unlink()

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
