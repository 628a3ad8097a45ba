"""What every entry point shares: workspace root, multi-host start, stop signals."""

from __future__ import annotations

import logging as std_logging
import os
import signal
import threading
from pathlib import Path

from absl import flags, logging

WORKSPACE = flags.DEFINE_string(
    "workspace", None, "Workspace root (models/, tokenizers/, runs/, data/). "
    "Default: $JAXRANK_HOME, else ./workspace.")

EXIT_PREEMPTED = 85  # checkpointed on a stop signal: requeue me (launch/train.sbatch)


def workspace_root() -> Path:
  return Path(WORKSPACE.value or os.environ.get("JAXRANK_HOME") or "workspace").absolute()


def notebook_cache_dir() -> Path:
  """Where parsed competition splits are cached (`jaxrank.data.cache`)."""
  return workspace_root() / "data" / "cache"


def fill_workspace(config) -> None:
  """Points a run config's store fields (`features.workspace`, `model.workspace`)
  and the parsed-notebook cache at this workspace where they are left empty."""
  ws = workspace_root()
  with config.unlocked():
    if not config.data.get("cache_dir"):
      config.data.cache_dir = str(notebook_cache_dir())
    for group in ("features", "model"):
      if "workspace" in config[group] and not config[group].workspace:
        config[group].workspace = str(ws)


class _QuietLibraries(std_logging.Filter):
  """Drops INFO chatter of Orbax (it logs every file rename) from absl's output."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def setup_jax() -> None:
  """Offline, and `jax.distributed` when SLURM (or the user) starts several processes."""
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  import jax
  n_tasks = int(os.environ.get("SLURM_NTASKS", os.environ.get("JAXRANK_NUM_PROCESSES", "1")))
  if n_tasks > 1 and "SLURM_STEP_ID" in os.environ:
    jax.distributed.initialize()  # reads SLURM's environment
  elif "JAXRANK_COORDINATOR" in os.environ:
    jax.distributed.initialize(os.environ["JAXRANK_COORDINATOR"],
                               int(os.environ["JAXRANK_NUM_PROCESSES"]),
                               int(os.environ["JAXRANK_PROCESS_ID"]))
  logging.info("jax: %d processes, %d devices (%s)", jax.process_count(), jax.device_count(),
               jax.devices()[0].platform)


class StopFlag:
  """Set by SIGUSR1 (SLURM's warning before the time limit); polled by the loop.

  SIGTERM is left alone: jax installs its own handler for it.
  """

  def __init__(self, signals=(signal.SIGUSR1,)):
    self._event = threading.Event()
    for s in signals:
      signal.signal(s, self._handle)

  def _handle(self, signum, frame):
    logging.warning("received signal %d: will checkpoint after this step and exit", signum)
    self._event.set()

  def __call__(self) -> bool:
    return self._event.is_set()
