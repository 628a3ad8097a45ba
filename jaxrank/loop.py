"""The training-loop machinery every trainer shares: mesh, sharding, optimiser, state, steps.

    mesh = make_mesh()
    tx, schedule = make_optimizer(config.optim, total)
    state, state_sh = init_state(init_fn, tx, seed, mesh)
    step_fn = jit_step(loss_fn, schedule, state_sh, mesh)
    state, step, status = run(state, step_fn, make_batch, rng, ckpt=..., total=..., ...)

used by the rankers (`jaxrank.train`), MLM pretraining (`jaxrank.pretrain`) and
pair fine-tuning (`jaxrank.pair_finetune`). Parameters and optimiser state are
replicated; batches are sharded on rows over a 1-D "data" mesh axis. A step is
pure: its dropout key is `fold_in(rng, step)`, and `make_batch(step)` is a pure
function of the step, so a run resumed from a checkpoint (the step is the data
position) sees the same batches and masks as one never stopped.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np
import optax
from flax.training import train_state
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxrank import checkpoint, tensorboard

log = logging.getLogger(__name__)


# --- optimiser ------------------------------------------------------------------
def make_optimizer(optim, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  warmup = max(1, min(optim.warmup_steps, total_steps - 1))
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, optim.lr, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1),
      end_value=optim.lr * optim.final_lr_fraction)
  tx = optax.chain(optax.clip_by_global_norm(optim.clip_norm),
                   optax.adamw(schedule, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay))
  if optim.grad_accum > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=optim.grad_accum)
  return tx, schedule


# --- sharding -------------------------------------------------------------------
def make_mesh() -> jax.sharding.Mesh:
  # Auto axes: transformers' Flax models (and with_sharding_constraint-free code)
  # reject the Explicit axes that jax.make_mesh now defaults to.
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def shard_batch(arrays: Mapping[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """Global numpy batch (same on every process) -> arrays sharded on rows."""
  sharding = NamedSharding(mesh, P("data"))
  n_proc, pid = jax.process_count(), jax.process_index()
  out = {}
  for k, v in arrays.items():
    if n_proc == 1:
      out[k] = jax.device_put(v, sharding)
    else:
      rows = v.shape[0] // n_proc
      out[k] = jax.make_array_from_process_local_data(sharding, v[pid * rows:(pid + 1) * rows],
                                                      v.shape)
  return out


def agree(flag: bool) -> bool:
  """True on every process if it is true on any (multi-host stop agreement)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(multihost_utils.process_allgather(np.array(flag)).any())


# --- state ------------------------------------------------------------------------
def _replicated(abstract, mesh):
  repl = NamedSharding(mesh, P())
  return jax.tree.map(lambda _: repl, abstract)


def init_state(init_params: Callable[[jax.Array], Any], apply_fn, tx, seed: int, mesh):
  """A replicated TrainState of `init_params(rng)`; shardings come from eval_shape first.

  Returns (state, state shardings).
  """
  def init(rng):
    return train_state.TrainState.create(apply_fn=apply_fn, params=init_params(rng), tx=tx)

  shardings = _replicated(jax.eval_shape(init, jax.random.key(seed)), mesh)
  return jax.jit(init, out_shardings=shardings)(jax.random.key(seed)), shardings


def state_from_params(params, apply_fn, tx, mesh):
  """A replicated TrainState (step 0, fresh optimiser state) around given `params`."""
  def create(p):
    return train_state.TrainState.create(apply_fn=apply_fn, params=p, tx=tx)

  shardings = _replicated(jax.eval_shape(create, params), mesh)
  return jax.jit(create, out_shardings=shardings)(params), shardings


def state_dict(state):
  """What a checkpoint holds of a TrainState (the step is the data position)."""
  return {"step": state.step, "params": state.params, "opt_state": state.opt_state}


def restore_into(state, ckpt: checkpoint.Checkpointer, *, best: bool = False, step=None):
  """(state with the checkpoint's step, params and optimiser state, its metadata), or None."""
  restored = ckpt.restore(checkpoint.abstract_of(state_dict(state)), step=step, best=best)
  if restored is None:
    return None
  d, meta = restored
  return state.replace(step=d["step"], params=d["params"], opt_state=d["opt_state"]), meta


# --- steps ------------------------------------------------------------------------
def jit_step(loss_fn, schedule, state_sh, mesh):
  """The jitted training step of a loss.

  `loss_fn(apply_fn, params, batch, rng) -> (loss, metrics)`; the step folds
  the step number into `rng` (dropout), applies the gradients and returns
  (state, metrics + {"grad_norm", "lr"}). The state is replicated and donated;
  the batch is sharded over the mesh's "data" axis.
  """
  repl, data_sh = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

  def step_fn(state, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    (_, aux), grads = jax.value_and_grad(
        lambda p: loss_fn(state.apply_fn, p, batch, rng), has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads)
    return state, dict(aux, grad_norm=optax.global_norm(grads), lr=schedule(state.step - 1))

  return jax.jit(step_fn, in_shardings=(state_sh, data_sh, repl),
                 out_shardings=(state_sh, repl), donate_argnums=0)


# --- the loop ---------------------------------------------------------------------
def run(state, step_fn, make_batch: Callable[[int], Mapping[str, np.ndarray]], rng, *,
        mesh, total: int, ckpt: checkpoint.Checkpointer, log_every: int,
        checkpoint_every: int, on_log: Callable[[int, dict, float], None],
        meta: Callable[[int], dict] = lambda step: {"step": step},
        after_step: Callable[[Any, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        stop_check_every: int = 1,
        on_save: Callable[[int], None] | None = None) -> tuple[Any, int, str]:
  """Steps `state` from its step to `total`; returns (state, step, "done" | "preempted").

  Each step feeds `make_batch(step)`, sharded over the mesh's "data" axis, to
  `step_fn(state, batch, rng) -> (state, metrics)`. Every `log_every` steps
  (and at the end) the metrics are pulled to the host, averaged, checked
  (a non-finite value raises FloatingPointError) and handed to
  `on_log(step, mean, steps_per_s)`. `after_step(state, step)` runs next
  (e.g. validation). The state is checkpointed in `ckpt`, with `meta(step)`,
  every `checkpoint_every` steps and at the end, then `on_save(step)` runs (e.g. a
  flush of the logs). `should_stop` (e.g. SLURM's SIGUSR1
  flag) is polled every `stop_check_every` steps, agreed across processes;
  when it turns true the step is checkpointed and the loop returns early.
  """
  def save(step):
    ckpt.save(step, state_dict(state), meta(step))
    if on_save is not None:
      on_save(step)

  pending: list[dict] = []
  step = int(state.step)
  t_last, step_last = time.time(), step
  status = "done"
  if step < total:
    log.info("step %d: compiling the step function (the first step takes longer)", step + 1)
  while step < total:
    state, aux = step_fn(state, shard_batch(make_batch(step), mesh), rng)
    step += 1
    pending.append(aux)
    if step % log_every == 0 or step == total:
      host = jax.device_get(pending)
      pending = []
      mean = {k: float(np.mean([h[k] for h in host])) for k in host[0]}
      if not all(math.isfinite(v) for v in mean.values()):
        raise FloatingPointError(
            f"non-finite training metrics at step {step}: {mean}. Lower optim.lr or check the "
            f"data; the last good checkpoint is step {ckpt.latest_step()}.")
      rate = (step - step_last) / max(time.time() - t_last, 1e-9)
      t_last, step_last = time.time(), step
      on_log(step, mean, rate)
    if after_step is not None:
      after_step(state, step)
    saved = step % checkpoint_every == 0 or step == total
    if saved:
      save(step)
    if (should_stop is not None and step % stop_check_every == 0 and step < total
        and agree(should_stop())):
      if not saved:  # Orbax refuses a second save of the same step
        save(step)
      status = "preempted"
      log.warning("stop requested: checkpointed step %d, exiting for requeue", step)
      break
  return state, step, status


def run_steps(name: str, state, step_fn, make_batch, rng, *, mesh, total: int,
              workdir: Path, batch_size: int, log_every: int, checkpoint_every: int,
              should_stop=None):
  """`run` for the encoder objectives (MLM pretraining, pair fine-tuning).

  Resumes from the newest Orbax checkpoint in `workdir`; every `log_every`
  steps the mean metrics are logged and appended to
  `workdir/<name>_metrics.jsonl` and, as TensorBoard scalars `<name>/...`, to
  `workdir/tb/`; checkpoints every `checkpoint_every` steps,
  at the end and on a stop request (`should_stop`, see `run`), after which
  it returns early. Returns (state, history, steps done).
  """
  ckpt = checkpoint.Checkpointer(workdir, keep=2)
  restored = restore_into(state, ckpt)
  if restored is not None:
    state, _ = restored
    log.info("resumed %s at step %d", name, int(state.step))
  is_main = jax.process_index() == 0
  tb = tensorboard.ScalarWriter(workdir / tensorboard.TB_DIR, purge_step=int(state.step) + 1,
                                enabled=is_main)
  history = []

  def on_log(step, mean, steps_per_s):
    mean.update(step=step, seqs_per_s=steps_per_s * batch_size)
    history.append(mean)
    log.info("%s step %d/%d  %s", name, step, total,
             "  ".join(f"{k} {v:.4g}" for k, v in mean.items() if k != "step"))
    tb.write(step, name, {k: v for k, v in mean.items() if k != "step"})
    if is_main:
      with open(workdir / f"{name}_metrics.jsonl", "a") as f:
        f.write(json.dumps(mean) + "\n")

  try:
    state, step, _ = run(state, step_fn, make_batch, rng, mesh=mesh, total=total, ckpt=ckpt,
                         log_every=log_every, checkpoint_every=checkpoint_every,
                         on_log=on_log, should_stop=should_stop, on_save=lambda _: tb.flush())
  finally:
    tb.close()
  ckpt.wait()
  ckpt.close()
  return state, history, step
