"""Orbax checkpoints of a run: periodic saves, auto-resume, best-by-validation.

Layout inside a run's workdir:
  checkpoints/<step>/   the latest `keep` training states (resume from the newest)
  best/<step>/          the state with the best validation tau (for evaluation)

A checkpoint holds `state` (step, params, opt_state) and `meta` (JSON: the data
position, the validation score, anything else small). Restores go through
`StandardRestore(abstract_tree)` so arrays come back with the right shapes,
dtypes, shardings and container types (optax states are named tuples, which a
restore without a target would flatten into lists).

Damaged checkpoints (a node crash or a full disk mid-write: a truncated file,
lost metadata, an empty step folder) do not stop a run. `Checkpointer.restore`
tries the steps newest first; a step that fails to restore is logged and, with
`set_aside=True` (the trainer), moved to `checkpoints/broken/<kind>step_<N>-<time>`
(never deleted), so the same command resumes from the newest good step.
Readers (`restore_params`: evaluation, prediction) fall back the same way
without touching the run folder, and restore the parameters only (no
optimiser state needed).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

LATEST = "checkpoints"
BEST = "best"
BROKEN = "broken"  # under checkpoints/: damaged steps set aside

log = logging.getLogger(__name__)


class CheckpointError(FileNotFoundError):
  """No usable checkpoint (none written, or every one damaged)."""


def _short(e: BaseException) -> str:
  """First line of an exception, bounded (TensorStore errors run to pages)."""
  line = (str(e).strip().splitlines() or [""])[0].split(" See full TensorStore details")[0]
  return f"{type(e).__name__}: {line[:200]}"


def set_aside(workdir: str | Path, kind: str, step: int) -> Path:
  """Moves step folder `workdir/<kind>/<step>` to checkpoints/broken/; returns where."""
  workdir = Path(workdir)
  src = workdir / kind / str(step)
  stamp = time.strftime("%Y%m%d-%H%M%S")
  prefix = "" if kind == LATEST else f"{kind}_"
  dest = workdir / LATEST / BROKEN / f"{prefix}step_{step}-{stamp}-{os.getpid()}"
  dest.parent.mkdir(parents=True, exist_ok=True)
  os.rename(src, dest)  # same filesystem: atomic, nothing copied or lost
  return dest


def _first_good(workdir: Path, kind: str, steps, restore_fn: Callable[[int], Any],
                failures: list[tuple[str, int, str]]):
  """(step, restore_fn(step)) of the newest step that restores, else None; each
  step that fails is logged and appended to `failures` as (kind, step, error)."""
  for step in sorted(steps, reverse=True):
    try:
      return step, restore_fn(step)
    except Exception as e:  # pylint: disable=broad-except  # Orbax/TensorStore raise anything
      failures.append((kind, step, _short(e)))
      log.warning("checkpoint %s does not restore (%s); trying the previous one",
                  workdir / kind / str(step), _short(e))
  return None


def _describe(failures) -> str:
  return "; ".join(f"{kind}/{step}: {err}" for kind, step, err in failures)


def _manager(directory: Path, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(directory.absolute(), options=options,
                               item_names=("state", "meta"))


class Checkpointer:
  """Latest-N and best-1 Orbax managers for one run."""

  def __init__(self, workdir: str | Path, keep: int = 2):
    self.workdir = Path(workdir)
    self.latest = _manager(self.workdir / LATEST, keep)
    self.best = _manager(self.workdir / BEST, 1)

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, state: Any, meta: dict, *, best: bool = False) -> None:
    """Saves `step`, unless it is on disk already: a resumed run replays the steps
    after its newest periodic checkpoint exactly, so a best/ step written before a
    kill holds this very state (and Orbax refuses to write a step twice)."""
    mngr = self.best if best else self.latest
    if step in mngr.all_steps():
      log.info("checkpoint %s/%d exists (written before a restart); not saving it again",
               BEST if best else LATEST, step)
      return
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    mngr.save(step, args=args, force=True)

  def restore(self, abstract_state: Any, step: int | None = None, *, best: bool = False):
    """Returns (state, meta) of `step`, or of the newest step that restores.

    Without `step`, steps that fail to restore are skipped with a warning; for
    the latest checkpoints, best/ is the last resort. Once a good step is
    found, the damaged newer ones are moved to checkpoints/broken/ (so the run
    goes on from the good one and a later save can reuse their numbers). None
    if there is no checkpoint; CheckpointError if there are some and none
    restores (damage, or a config that no longer fits the run), moving nothing.
    """
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                              meta=ocp.args.JsonRestore())

    def restore_from(mngr):
      def restore(s):
        out = mngr.restore(s, args=args)
        return out.state, out.meta
      return restore

    if step is not None:
      return restore_from(self.best if best else self.latest)(step)
    kinds = ((BEST, self.best),) if best else ((LATEST, self.latest), (BEST, self.best))
    failures: list[tuple[str, int, str]] = []
    for kind, mngr in kinds:
      out = _first_good(self.workdir, kind, mngr.all_steps(), restore_from(mngr), failures)
      if out is not None:
        good = f"{kind}/{out[0]}"
        break
    if not failures:
      return out and out[1]
    if out is None and best:
      return None  # evaluation goes on with the state at hand
    if out is None:
      raise CheckpointError(f"{self.workdir}: no checkpoint restores ({_describe(failures)}). "
                            "If the config changed, use a new workdir; if they are damaged, "
                            f"move {self.workdir / LATEST} aside to start over")
    if jax.process_index() == 0:
      for kind, s, err in failures:
        dest = set_aside(self.workdir, kind, s)
        log.warning("checkpoint %s/%d is damaged (%s): moved it to %s; using %s",
                    kind, s, err, dest, good)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("jaxrank_checkpoint_set_aside")
    self.latest.reload()  # forget the steps set aside
    self.best.reload()
    return out[1]

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def abstract_of(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a pytree of arrays."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
      tree)


def restore_params(workdir: str | Path, step: int | None = None, *, best: bool = False,
                   abstract_params: Any = None, fallback: bool = False):
  """A run's parameters alone (the optimiser state is not read).

  `step` of `best/` (or `checkpoints/`), default its newest. With
  `abstract_params` (ShapeDtypeStructs with shardings) they come back as jax
  arrays laid out so; without, as numpy arrays (no model code needed).
  With `fallback`, damaged steps are skipped with a warning, best/ first (if
  `best`) then checkpoints/, newest first; the run folder is not changed.
  Raises CheckpointError (one line, naming what was tried) when nothing restores.
  """
  workdir = Path(workdir)
  kinds = ((BEST, LATEST) if best else (LATEST,)) if fallback else ((BEST if best else LATEST),)
  failures: list[tuple[str, int, str]] = []
  for kind in kinds:
    directory = (workdir / kind).absolute()
    if not directory.is_dir():
      continue
    handlers = {"state": ocp.PyTreeCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    mngr = ocp.CheckpointManager(directory, item_handlers=handlers,
                                 options=ocp.CheckpointManagerOptions(create=False))
    try:
      steps = mngr.all_steps() if step is None else [step]
      fn = lambda s, mngr=mngr: _restore_params_step(mngr, s, abstract_params)
      if fallback:
        out = _first_good(workdir, kind, steps, fn, failures)
      else:
        out = (steps[-1], fn(steps[-1])) if steps else None
      if out is not None:
        if failures:
          log.warning("using checkpoint %s/%s instead", kind, out[0])
        return out[1]
    finally:
      mngr.close()
  tried = _describe(failures) or "none written"
  raise CheckpointError(f"{workdir}: no usable checkpoint in {' or '.join(k + '/' for k in kinds)} "
                        f"({tried})")


def _restore_params_step(mngr, step: int, abstract_params: Any):
  """The params of one step: a partial restore of state["params"]."""
  if abstract_params is None:
    meta = mngr.item_metadata(step)["state"]
    meta = getattr(meta, "tree", meta)["params"]
    abstract_params = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), meta)
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                                abstract_params)
  else:
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_params)
  item = {"params": abstract_params}
  args = ocp.args.PyTreeRestore(item, restore_args={"params": restore_args}, partial_restore=True)
  return mngr.restore(step, args=ocp.args.Composite(state=args)).state["params"]
