"""Orbax checkpoints of a run: periodic saves, auto-resume, best-by-validation.

Layout inside a run's workdir:
  checkpoints/<step>/   the latest `keep` training states (resume from the newest)
  best/<step>/          the state with the best validation tau (for evaluation)

A checkpoint holds `state` (step, params, opt_state) and `meta` (JSON: the data
position, the validation score, anything else small). Restores go through
`StandardRestore(abstract_tree)` so arrays come back with the right shapes,
dtypes, shardings and container types (optax states are named tuples, which a
restore without a target would flatten into lists).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

LATEST = "checkpoints"
BEST = "best"


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
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    (self.best if best else self.latest).save(step, args=args, force=True)

  def restore(self, abstract_state: Any, step: int | None = None, *, best: bool = False):
    """Returns (state, meta) of `step` (default: newest) or None if there is none."""
    mngr = self.best if best else self.latest
    step = mngr.latest_step() if step is None else step
    if step is None:
      return None
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                              meta=ocp.args.JsonRestore())
    out = mngr.restore(step, args=args)
    return out.state, out.meta

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


def restore_params(workdir: str | Path, step: int | None = None, *, best: bool = False):
  """Params of a run's checkpoint as numpy-backed arrays, no model code needed."""
  directory = Path(workdir) / (BEST if best else LATEST)
  mngr = ocp.CheckpointManager(directory.absolute(), item_names=("state", "meta"))
  try:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {directory}")
    out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return out.state["params"]
  finally:
    mngr.close()
