"""What every entry point shares: workspace root, multi-host start, stop signals,
the workdir lock, and `run(main)`: user errors as one line, not a traceback.

Every entry point ends with `common.run(main)` (absl's `app.run` plus the
error handling). A user error (bad notebook, unknown config field, missing
flagfile or run folder, a run folder in use, no usable checkpoint, ...) is
printed as `error: <what and where>` on stderr with exit code 1; the
traceback is shown with --verbosity=1 (or more) or JAXRANK_TRACEBACK=1.
Importing this module also installs the same handling for errors raised while
flags are defined (ml_collections reads --flagfile at import time).
"""

from __future__ import annotations

import contextlib
import difflib
import logging as std_logging
import os
import re
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Callable, Iterator

from absl import app, flags, logging

WORKSPACE = flags.DEFINE_string(
    "workspace", None, "Workspace root (models/, tokenizers/, runs/, data/). "
    "Default: $JAXRANK_HOME, else ./workspace.")

EXIT_PREEMPTED = 85  # checkpointed on a stop signal: requeue me (launch/train.sbatch)


def workspace():
  """The workspace in use: --workspace, else $JAXRANK_HOME, else ./workspace."""
  from jaxrank import store  # pylint: disable=g-import-not-at-top
  return store.Workspace(store.default_workspace_root(WORKSPACE.value, os.environ))


def workspace_root() -> Path:
  return workspace().root


def notebook_cache_dir() -> Path:
  """Where parsed competition splits are cached (`jaxrank.data.cache`)."""
  return workspace().notebook_cache_dir


def fill_workspace(config) -> None:
  """Points a run config's store fields (`features.workspace`, `model.workspace`)
  and the parsed-notebook cache at this workspace where they are left empty."""
  workspace().fill_run_config(config)


def run_dir(workdir: str | None, name: str | None) -> str:
  """--workdir, else WORKSPACE/runs/<--name>; one of them is required."""
  if workdir:
    return workdir
  if not name:
    raise app.UsageError("set --workdir or --name (a run under WORKSPACE/runs)")
  return str(workspace().run_dir(name))


def workspace_for(workdir: str):
  """The workspace a run's store models and caches are looked up in: --workspace
  or $JAXRANK_HOME when given, else None (the run's own: `train.run_workspace`)."""
  from jaxrank import store  # pylint: disable=g-import-not-at-top
  if WORKSPACE.value or os.environ.get(store.ENV_HOME):
    return workspace()
  return None


class _QuietLibraries(std_logging.Filter):
  """Drops INFO chatter of Orbax (it logs every file rename) from absl's output."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def setup_jax() -> None:
  """Offline, and `jax.distributed` when SLURM (or the user) starts several processes."""
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  logging.get_absl_handler().addFilter(_OneLineExceptions())
  # "Unable to initialize backend 'tpu'/IFRT proxy ..." INFO lines at every start.
  std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)
  import jax
  n_tasks = int(os.environ.get("SLURM_NTASKS", os.environ.get("JAXRANK_NUM_PROCESSES", "1")))
  if n_tasks > 1 and "SLURM_STEP_ID" in os.environ:
    jax.distributed.initialize()  # reads SLURM's environment
  elif "JAXRANK_COORDINATOR" in os.environ:
    jax.distributed.initialize(os.environ["JAXRANK_COORDINATOR"],
                               int(os.environ["JAXRANK_NUM_PROCESSES"]),
                               int(os.environ["JAXRANK_PROCESS_ID"]))
  devices = jax.devices()
  logging.info("jax %s: %d processes, %d devices: %s", jax.__version__, jax.process_count(),
               len(devices), ", ".join(sorted({f"{d.platform}:{d.device_kind}" for d in devices})))
  if gpu_requested(os.environ) and devices[0].platform == "cpu":
    sys.exit("error: this job asked for a GPU but jax found only CPUs "
             f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}): install the "
             "CUDA jaxlib into the job's environment (BUILD.md, 'GPU jobs') or submit without GPUs")


def gpu_requested(environ) -> bool:
  """Whether the job asked for a GPU (submit.sh --gpus/--gres=gpu, SLURM's GPU
  variables, CUDA_VISIBLE_DEVICES) and did not force JAX_PLATFORMS=cpu."""
  if environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
    return False
  if environ.get("JAXRANK_EXPECT_GPU") == "1":
    return True
  slurm = ("SLURM_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS", "SLURM_GPUS_PER_NODE",
           "SLURM_STEP_GPUS")
  if any(environ.get(k) not in (None, "", "0") for k in slurm):
    return True
  cvd = environ.get("CUDA_VISIBLE_DEVICES", "")
  return bool(cvd) and cvd not in ("-1", "NoDevFiles")


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


# --- user errors: one line, exit code 1 ---------------------------------------------
EXIT_USER_ERROR = 1


# Exceptions that mean "fix your input", not "the program is broken": module -> class names.
_USER_ERRORS = {"jaxrank.data.notebooks": ("DataError",), "jaxrank.lock": ("LockHeld",),
                "jaxrank.checkpoint": ("CheckpointError",), "jaxrank.store": ("StoreError",),
                "jaxrank.submission": ("SubmissionError",), "jaxrank.train": ("ConfigChangedError",),
                "jaxrank.bundle": ("BundleError",)}


def _user_error_types() -> tuple[type[BaseException], ...]:
  # Only modules already imported can have raised: importing the others (Orbax...) is slow.
  found = [getattr(sys.modules[m], c) for m, names in _USER_ERRORS.items() if m in sys.modules
           for c in names]
  return (app.UsageError, flags.Error, FileNotFoundError, NotADirectoryError, IsADirectoryError,
          PermissionError, *found)


def _want_traceback() -> bool:
  if os.environ.get("JAXRANK_TRACEBACK", "") not in ("", "0"):
    return True
  try:
    return flags.FLAGS["verbosity"].value >= 1 if flags.FLAGS.is_parsed() else any(
        re.fullmatch(r"--?(v|verbosity)=([1-9]\d*)", a) for a in sys.argv[1:])
  except Exception:  # pylint: disable=broad-except
    return False


def _config_being_parsed(e: BaseException):
  """The ConfigDict that ml_collections was applying overrides to when `e` was raised."""
  from ml_collections import ConfigDict  # pylint: disable=g-import-not-at-top
  found, tb = None, e.__traceback__
  while tb is not None:
    if isinstance(tb.tb_frame.f_locals.get("config"), ConfigDict):
      found = tb.tb_frame.f_locals["config"]
    tb = tb.tb_next
  return found


def _config_field_message(e: BaseException) -> str | None:
  """For a --config.a.b override naming no field: which flag, and the valid names."""
  m = re.search(r"'?\\?'(\w+)\\?''?", str(e))
  if not isinstance(e, (AttributeError, KeyError)) or not m:
    return None
  key = m.group(1)
  argv = sys.argv[1:]
  with contextlib.suppress(Exception):
    argv = flags.FLAGS.read_flags_from_files(argv, force_gnu=False)  # overrides in flagfiles
  args = [a for a in argv if re.match(rf"--?\w+(\.\w+)*\.{key}(=|$)", a)]
  flag = args[0].split("=")[0].lstrip("-") if args else None
  valid: list[str] = []
  if flag:
    root, *path = flag.split(".")
    with contextlib.suppress(Exception):
      node = _config_being_parsed(e)
      for part in path[:-1]:
        node = node[part]
      valid = sorted(node.keys())
  where = f"--{flag}" if flag else f"config field {key!r}"
  parent = flag.rsplit(".", 1)[0] if flag else "the config"
  close = difflib.get_close_matches(key, valid, n=1) or re.findall(r'Did you mean "(\w+)"', str(e))
  hint = f'; did you mean "{close[0]}"?' if close else ""
  names = f" Valid fields of {parent}: {', '.join(valid)}." if valid else ""
  return f"{where}: {parent} has no field {key!r}{hint}{names}"


def _one_line(e: BaseException) -> str:
  msg = str(e).strip()
  if isinstance(e, flags.Error):
    msg = re.sub(r"^(ERROR:+\s*)+", "", msg)
  if isinstance(e, KeyError) and len(e.args) == 1:
    msg = str(e.args[0])
  return msg or type(e).__name__


def report_user_error(e: BaseException, *, parsing_flags: bool = False) -> bool:
  """Prints `error: ...` for a user error and returns True; False for anything else.

  `parsing_flags`: raised while flags were parsed or defined, where a bad
  --config.* override surfaces as an AttributeError/KeyError/TypeError.
  """
  msg = _config_field_message(e) if parsing_flags else None
  if msg is None and parsing_flags and isinstance(e, (AttributeError, KeyError, TypeError,
                                                      ValueError)):
    msg = f"bad flag value: {_one_line(e)}"
  if msg is None:
    if not isinstance(e, _user_error_types()):
      return False
    msg = _one_line(e)
  if _want_traceback():
    traceback.print_exception(e)
  print(f"error: {msg}", file=sys.stderr)
  if not _want_traceback():
    print("(--verbosity=1 or JAXRANK_TRACEBACK=1 shows the traceback)", file=sys.stderr)
  return True


def run(main: Callable[[list[str]], object]) -> None:
  """`absl.app.run(main)`, with user errors as one line on stderr and exit code 1."""
  global _RUN_CALLED
  _RUN_CALLED = True
  started = []

  def wrapped(argv):
    started.append(True)
    return main(argv)

  try:
    app.run(wrapped)
  except SystemExit:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if report_user_error(e, parsing_flags=not started):
      sys.exit(EXIT_USER_ERROR)
    raise


_RUN_CALLED = False


def _excepthook(exc_type, exc, tb):
  """Errors raised while the entry point's flags are defined (before `run`)."""
  if isinstance(exc, Exception) and not _RUN_CALLED:
    with contextlib.suppress(Exception):
      if report_user_error(exc, parsing_flags=True):
        sys.exit(EXIT_USER_ERROR)
  sys.__excepthook__(exc_type, exc, tb)


def _first_line(e: BaseException) -> str:
  return (_one_line(e).splitlines() or [""])[0][:300]


def _unraisablehook(unraisable):
  """Drops "Event loop is closed" from TensorStore callbacks that finish after
  Orbax gave up on a damaged checkpoint (dozens of tracebacks, all harmless);
  any other exception nobody could catch is one warning line."""
  if _want_traceback():
    sys.__unraisablehook__(unraisable)
    return
  e = unraisable.exc_value
  if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
    return
  print(f"warning: ignored {type(e).__name__}: {_first_line(e)}", file=sys.stderr)


def _threading_excepthook(args):
  """An exception that ends a library's background thread (Orbax, TensorStore
  readers) is one warning line; the main thread reports what failed."""
  if _want_traceback() or args.exc_type is SystemExit:
    threading.__excepthook__(args)
    return
  name = args.thread.name if args.thread else "?"
  print(f"warning: thread {name}: {args.exc_type.__name__}: {_first_line(args.exc_value)}",
        file=sys.stderr)


class _OneLineExceptions(std_logging.Filter):
  """Log records that carry an exception lose the traceback and keep its first
  line, unless the traceback was asked for; asyncio's "Task exception was never
  retrieved" (Orbax's readers of a damaged checkpoint, logged at exit after the
  one `error:` line) is dropped."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.exc_info and record.exc_info[1] is not None and not _want_traceback():
      if record.name == "asyncio" and str(record.msg).startswith("Task exception was never"):
        return False  # a reader Orbax gave up on: its failure was reported already
      e = record.exc_info[1]
      first = (record.getMessage().splitlines() or [""])[0]
      record.msg = f"{first} ({type(e).__name__}: {_first_line(e)})"
      record.args = None
      record.exc_info = record.exc_text = None
    return True


if sys.excepthook is sys.__excepthook__:
  sys.excepthook = _excepthook
if sys.unraisablehook is sys.__unraisablehook__:
  sys.unraisablehook = _unraisablehook
if threading.excepthook is threading.__excepthook__:
  threading.excepthook = _threading_excepthook


# --- one trainer per run folder ---------------------------------------------------------
@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike) -> Iterator[None]:
  """Holds `jaxrank.lock.WorkdirLock` on `workdir` (process 0 of a multi-host job)
  for the block; raises LockHeld (a user error) if another live trainer has it."""
  import jax  # pylint: disable=g-import-not-at-top
  from jaxrank import lock  # pylint: disable=g-import-not-at-top
  held, error = None, None
  if jax.process_index() == 0:
    try:
      held = lock.WorkdirLock(workdir, job_id=os.environ.get("SLURM_JOB_ID"),
                              restart=int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)).acquire()
    except lock.LockHeld as e:
      error = e
  if jax.process_count() > 1:
    from jaxrank import train  # pylint: disable=g-import-not-at-top
    if train.agree(error is not None) and error is None:
      error = lock.LockHeld(f"{workdir}: in use by another trainer (see process 0)")
  if error is not None:
    raise error
  try:
    yield
  finally:
    if held is not None:
      held.release()
