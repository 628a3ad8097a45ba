r"""Runs one stage of a pipeline (launch/pipeline.sh) and marks it done.

  python -m experiments.stage --workdir=W/pipelines/NAME/STAGE \
      --module=experiments.encode --arg=--data_dir=D --arg=--encoder=E

A stage is done when WORKDIR/done.json exists: then this exits 0 at once.
Otherwise it runs `python -m MODULE ARGS...` (this interpreter, this folder)
and exits with its status; status 0 first writes done.json atomically (the
command, the wall time). SIGUSR1 (SLURM's time-limit warning) and SIGINT are
passed on to the command, so a trainer checkpoints and exits 85 and
launch/train.sbatch requeues the stage; every stage's command resumes when run
again (training, pair fine-tuning and encoding all do), so a rerun after a kill
continues the stage. The command dies with this process (Linux parent-death
signal): a killed stage leaves no orphan writing beside its rerun.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

from experiments import common

_WORKDIR = flags.DEFINE_string("workdir", None, "The stage's folder (holds done.json).",
                               required=True)
_MODULE = flags.DEFINE_string("module", None, "Entry point to run (python -m MODULE).",
                              required=True)
_ARGS = flags.DEFINE_multi_string("arg", [], "One argument of the command (repeat).")
_STAGE = flags.DEFINE_string("stage", None, "Stage name, for messages (default: folder name).")

DONE = "done.json"


def _die_with_parent() -> None:
  try:  # prctl(PR_SET_PDEATHSIG, SIGKILL); Linux only, best effort elsewhere.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
  except (OSError, AttributeError):
    pass


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from jaxrank import io_utils  # pylint: disable=g-import-not-at-top

  folder = Path(_WORKDIR.value)
  name = _STAGE.value or folder.name
  if (folder / DONE).exists():
    print(f"stage {name}: already done ({folder / DONE})")
    return 0
  cmd = [sys.executable, "-m", _MODULE.value, *_ARGS.value]
  print(f"stage {name}: {' '.join(cmd[1:])}", flush=True)
  t0 = time.time()
  child = subprocess.Popen(cmd, preexec_fn=_die_with_parent)  # pylint: disable=subprocess-popen-preexec-fn

  def forward(signum, frame):
    del frame
    child.send_signal(signum)

  for s in (signal.SIGUSR1, signal.SIGINT, signal.SIGTERM):
    signal.signal(s, forward)
  rc = child.wait()
  if rc < 0:  # killed by a signal: report it as a shell would
    rc = 128 - rc
  if rc != 0:
    print(f"stage {name}: exited {rc} after {time.time() - t0:.0f}s", flush=True)
    return rc
  io_utils.atomic_write_json(folder / DONE, {"stage": name, "command": cmd[1:],
                                              "wall_s": round(time.time() - t0, 1),
                                              "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
  print(f"stage {name}: done in {time.time() - t0:.0f}s", flush=True)
  return 0


if __name__ == "__main__":
  common.run(main)  # exits with main's status
