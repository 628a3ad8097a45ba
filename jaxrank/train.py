"""Training, evaluation and prediction for every ranker family.

    train_and_evaluate(config, workdir) -> dict

runs one experiment end to end: load and split the data, fit and save the
featurizer, build the model named by `config.model.name`, train with a pure
`train_step(state, batch, rng)` under `jax.jit` with the batch sharded over a
1-D device mesh ("data"), log, evaluate, checkpoint (Orbax, auto-resume) and
write the run's results. The same command run again resumes from the newest
checkpoint, including the data position (the batch order is a pure function
of the step; see `jaxrank.data.batching.BatchSchedule`).

A model family is a module with a config dataclass (fields from `config.model`)
and
    build(cfg) -> nn.Module                 # apply(vars, batch, deterministic, rngs)
    loss_fn(outputs, batch, cfg) -> (loss, metrics)
    markdown_keys(outputs, row, n_code, n_md, cfg) -> keys of one notebook's markdown
and optionally
    predict(model, params, batch, rng, cfg) -> outputs   # jit-able; default: a
                                                         # deterministic forward
pick one by name in MODELS. Features come from `jaxrank.features` by
`config.features.kind`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxrank import checkpoint, decode, features, metrics, results
from jaxrank.data import batching, folds, notebooks as nb_io
from jaxrank.data.types import Notebook

# name -> (module, config class name)
MODELS = {"bow_mlp": ("jaxrank.models.bow_mlp", "BowMlpConfig"),
          "diffusion": ("jaxrank.models.diffusion", "DiffusionConfig"),
          "roberta_cells": ("jaxrank.models.rankers", "CellsConfig"), "roberta_pointwise": ("jaxrank.models.rankers", "PointwiseConfig")}


# --- model family -------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Family:
  module: Any
  cfg: Any

  def build(self) -> nn.Module:
    return self.module.build(self.cfg)


def family_from_config(config, vocab_size: int) -> Family:
  name = config.model.name
  if name not in MODELS:
    raise ValueError(f"unknown model.name {name!r}; known: {sorted(MODELS)}")
  mod_name, cls_name = MODELS[name]
  module = importlib.import_module(mod_name)
  cls = getattr(module, cls_name)
  fields = {f.name for f in dataclasses.fields(cls)}
  kwargs = {k: v for k, v in config.model.items() if k in fields}
  if "dtype" in fields:
    kwargs["dtype"] = jnp.bfloat16 if config.model.get("dtype", "float32") == "bfloat16" else jnp.float32
  kwargs["vocab_size"] = vocab_size
  return Family(module, cls(**kwargs))


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


# --- steps ------------------------------------------------------------------------
def train_step(state: train_state.TrainState, batch, rng, *, family: Family, schedule):
  """One optimiser step. Pure: the dropout key is `fold_in(rng, step)`."""
  rng = jax.random.fold_in(rng, state.step)

  def loss(params):
    out = state.apply_fn({"params": params}, batch, deterministic=False, rngs={"dropout": rng})
    return family.module.loss_fn(out, batch, family.cfg)

  (_, aux), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads)
  aux = dict(aux, grad_norm=optax.global_norm(grads), lr=schedule(state.step - 1))
  return state, aux


def forward(params, batch, rng, *, apply_fn):
  del rng
  return apply_fn({"params": params}, batch, deterministic=True)


# --- data --------------------------------------------------------------------------
def load_notebooks(data_cfg) -> list[Notebook]:
  nbs = nb_io.load_split(data_cfg.data_dir, data_cfg.split, cache_dir=data_cfg.cache_dir or None)
  if data_cfg.max_notebooks:
    nbs = nbs[: data_cfg.max_notebooks]
  return nbs


def split_data(nbs, data_cfg) -> tuple[list[Notebook], list[Notebook]]:
  """(train, val): the chosen validation set (`data.val_ancestors` / `data.val_sources`,
  comma-separated) if any, else ancestor-grouped fold `data.fold` of `data.n_folds`."""
  val_ancestors = _names(data_cfg.get("val_ancestors", ""))
  val_sources = set(_names(data_cfg.get("val_sources", "")))
  if val_ancestors or val_sources:
    ids = []
    if val_sources:
      repo_of = nb_io.read_sources(data_cfg.data_dir)
      unknown = sorted(val_sources - set(repo_of.values()))
      if unknown:
        raise ValueError(f"data.val_sources: no notebook of {data_cfg.data_dir} comes from "
                         f"{unknown} (sources.csv repos: {sorted(set(repo_of.values()))[:20]})")
      ids = [i for i, r in repo_of.items() if r in val_sources]
    return folds.split_chosen(nbs, ancestors=val_ancestors, notebook_ids=ids)
  if data_cfg.n_folds <= 1:
    return list(nbs), []
  return folds.split_train_val(nbs, fold=data_cfg.fold, n_folds=data_cfg.n_folds, seed=data_cfg.seed)


def _names(value) -> list[str]:
  """A comma-separated string (or a list) -> its non-empty, stripped items."""
  items = value.split(",") if isinstance(value, str) else list(value or ())
  return [str(v).strip() for v in items if str(v).strip()]


# --- prediction ------------------------------------------------------------------------
class Predictor:
  """Trained params + featurizer -> full cell orders for any notebooks."""

  def __init__(self, family: Family, params, featurizer, data_cfg, mesh, *,
               features_kind: str = "bow", seed: int = 0):
    self.family, self.params, self.featurizer = family, params, featurizer
    self.data_cfg, self.mesh, self.features_kind = data_cfg, mesh, features_kind
    self.rng = jax.random.key(seed)
    model = family.build()
    custom = getattr(family.module, "predict", None)
    fn = (functools.partial(custom, model, cfg=family.cfg) if custom
          else functools.partial(forward, apply_fn=model.apply))
    self._fwd = jax.jit(fn, out_shardings=NamedSharding(mesh, P()))
    self._cfg_fwd = {}

  def predict(self, notebooks: Sequence[Notebook], cfg_override: Any = None) -> dict[str, list[str]]:
    items = features.items_any(self.features_kind, self.featurizer, notebooks)
    return self.predict_items(notebooks, items, cfg_override)

  def _fwd_for(self, cfg):
    """The jitted forward for a model config (decode-time overrides may change it)."""
    if cfg is self.family.cfg or getattr(self.family.module, "predict", None) is None:
      return self._fwd
    if cfg not in self._cfg_fwd:
      model = self.family.module.build(cfg)
      fn = functools.partial(self.family.module.predict, model, cfg=cfg)
      self._cfg_fwd[cfg] = jax.jit(fn, out_shardings=NamedSharding(self.mesh, P()))
    return self._cfg_fwd[cfg]

  def outputs(self, items, cfg_override=None):
    """Yields (index into items, host outputs of its batch, its row in them)."""
    fwd = self._fwd_for(cfg_override or self.family.cfg)
    for b in batching.eval_batches(items, buckets=self.data_cfg.buckets,
                                   cells_per_batch=self.data_cfg.cells_per_batch,
                                   row_multiple=jax.device_count()):
      arrays = {k: v for k, v in b.arrays.items() if not k.startswith("target_")}
      # Same key for every batch: predictions depend only on the seed.
      out = jax.device_get(fwd(self.params, shard_batch(arrays, self.mesh), self.rng))
      for row, j in enumerate(b.nb_index):
        if j >= 0:
          yield j, out, row

  def predict_items(self, notebooks, items, cfg_override=None) -> dict[str, list[str]]:
    cfg = cfg_override or self.family.cfg
    preds: dict[str, list[str]] = {}
    for j, out, row in self.outputs(items, cfg):
      nb = notebooks[j]
      keys = self.family.module.markdown_keys(out, row, nb.n_code, nb.n_markdown, cfg)
      preds[nb.id] = decode.order_from_keys(nb, keys)
    return preds


def evaluate_predictions(notebooks: Sequence[Notebook], preds) -> tuple[dict, Any]:
  gt = {nb.id: list(nb.order) for nb in notebooks}
  types = {nb.id: dict(zip(nb.cell_ids, nb.cell_types)) for nb in notebooks}
  table = metrics.evaluate_orders(gt, preds, types)
  per_nb = metrics.per_notebook_tau(gt, preds)
  import pandas as pd
  df = pd.DataFrame({"id": [nb.id for nb in notebooks],
                     "n_cells": [nb.n_cells for nb in notebooks],
                     "n_markdown": [nb.n_markdown for nb in notebooks],
                     "tau": [per_nb[nb.id] for nb in notebooks]})
  return table, df


# --- state ------------------------------------------------------------------------------
def state_dict(state):
  """What a checkpoint holds of a TrainState (the step is the data position)."""
  return {"step": state.step, "params": state.params, "opt_state": state.opt_state}


def create_state(family: Family, tx, example: Mapping[str, np.ndarray], seed: int, mesh, *,
                 pretrained: bool = True):
  """Initialises a replicated TrainState; shardings come from eval_shape first.

  With `pretrained`, the family's `pretrained_params` hook (if any) puts e.g. a
  stored encoder's weights in; a state about to be overwritten by a
  checkpoint restore skips it (no store read).
  """
  model = family.build()
  example = {k: v[:1] for k, v in example.items() if not k.startswith("target_")}

  def init(rng):
    params = model.init({"params": rng}, example, deterministic=True)["params"]
    return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

  abstract = jax.eval_shape(init, jax.random.key(seed))
  repl = NamedSharding(mesh, P())
  shardings = jax.tree.map(lambda _: repl, abstract)
  state = jax.jit(init, out_shardings=shardings)(jax.random.key(seed))
  hook = getattr(family.module, "pretrained_params", None) if pretrained else None
  params = state.params if hook is None else hook(state.params, family.cfg)
  if params is not state.params:
    params = jax.device_put(params, shardings.params)
    state = jax.jit(lambda p: train_state.TrainState.create(apply_fn=model.apply, params=p, tx=tx),
                    out_shardings=shardings)(params)
  return state, shardings


def restore_into(state, ckpt: checkpoint.Checkpointer, *, best: bool = False, step=None):
  restored = ckpt.restore(checkpoint.abstract_of(state_dict(state)), step=step, best=best)
  if restored is None:
    return None
  d, meta = restored
  return state.replace(step=d["step"], params=d["params"], opt_state=d["opt_state"]), meta


def load_predictor(workdir: str | Path, *, best: bool = True) -> tuple[Predictor, Any]:
  """Rebuilds a run's model from its config.json, featurizer and checkpoint."""
  import ml_collections
  workdir = Path(workdir)
  cfg_path = workdir / "config.json"
  if not cfg_path.exists():
    raise FileNotFoundError(f"{workdir} is not a run folder: no config.json")
  config = ml_collections.ConfigDict(json.loads(cfg_path.read_text()))
  kind, featurizer = features.load_any(workdir)
  family = family_from_config(config, featurizer.vocab_size)
  mesh = make_mesh()
  tx, _ = make_optimizer(config.optim, 1)
  example = batching.collate([_dummy_item(kind, featurizer)], config.data.buckets[0])
  state, _ = create_state(family, tx, example, config.train.seed, mesh, pretrained=False)
  ckpt = checkpoint.Checkpointer(workdir)
  try:
    restored = restore_into(state, ckpt, best=best) or restore_into(state, ckpt, best=False)
  finally:
    ckpt.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {workdir}")
  state, _ = restored
  return Predictor(family, state.params, featurizer, config.data, mesh, features_kind=kind,
                   seed=config.train.seed), config


def _dummy_item(kind, featurizer):
  nb = Notebook("dummy", ("a", "b"), ("code", "markdown"), ("x", "y"), ("a", "b"))
  return features.items_any(kind, featurizer, [nb])[0]


# --- the loop ------------------------------------------------------------------------------
def train_and_evaluate(config, workdir: str | Path, *,
                       should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
  """Trains (or resumes) the run in `workdir`; see `_train_and_evaluate`.

  Marks the run "failed" in run.json (with the error) if anything raises.
  """
  try:
    return _train_and_evaluate(config, workdir, should_stop=should_stop)
  except BaseException as e:
    results.RunRecorder(workdir, enabled=jax.process_index() == 0).update_run(
        status="failed", error=repr(e)[:2000])
    raise


def _train_and_evaluate(config, workdir: str | Path, *,
                        should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
  """Trains (or resumes) the run in `workdir`; returns its final status and metrics.

  `should_stop` is polled after every step (e.g. a SIGUSR1 flag set by the
  entry point): when it turns true the state is checkpointed and the function
  returns with status "preempted"; running again resumes.
  """
  workdir = Path(workdir)
  is_main = jax.process_index() == 0
  rec = results.RunRecorder(workdir, enabled=is_main)
  t_start = time.time()
  rec.write_config(config.to_dict())
  rec.update_run(status="running", model=config.model.name, data_dir=str(config.data.data_dir),
                 devices=[str(d) for d in jax.devices()], process_count=jax.process_count())

  # Data and features. Features are refit only when none are saved yet.
  nbs = load_notebooks(config.data)
  train_nbs, val_nbs = split_data(nbs, config.data)
  logging.info("data: %d train / %d validation notebooks", len(train_nbs), len(val_nbs))
  kind = config.features.kind
  try:
    _, featurizer = features.load_any(workdir)
    train_items = features.items_any(kind, featurizer, train_nbs)
  except FileNotFoundError:
    featurizer, train_items = features.fit_any(config.features, train_nbs)
    if is_main:
      features.save_any(kind, featurizer, workdir)
  val_items = features.items_any(kind, featurizer, val_nbs)
  logging.info("features: vocab %d, featurized in %.1fs", featurizer.vocab_size, time.time() - t_start)

  mesh = make_mesh()
  sched = batching.BatchSchedule(train_items, buckets=config.data.buckets,
                                 cells_per_batch=config.data.cells_per_batch,
                                 row_multiple=jax.device_count(), seed=config.data.seed)
  total = config.train.steps or config.train.epochs * sched.batches_per_epoch
  family = family_from_config(config, featurizer.vocab_size)
  tx, schedule = make_optimizer(config.optim, total)
  state, state_sh = create_state(family, tx, sched.batch(0).arrays, config.train.seed, mesh)
  data_sh = NamedSharding(mesh, P("data"))
  repl = NamedSharding(mesh, P())
  step_fn = jax.jit(functools.partial(train_step, family=family, schedule=schedule),
                    in_shardings=(state_sh, data_sh, repl), out_shardings=(state_sh, repl),
                    donate_argnums=0)
  predictor = Predictor(family, None, featurizer, config.data, mesh, features_kind=kind,
                        seed=config.train.seed)

  ckpt = checkpoint.Checkpointer(workdir, keep=config.train.keep_checkpoints)
  best_tau, wall_before = -math.inf, 0.0
  restored = restore_into(state, ckpt)
  if restored is not None:
    state, meta = restored
    best_tau, wall_before = meta.get("best_tau", best_tau), meta.get("wall_s", 0.0)
    logging.info("resumed from step %d (epoch %d, batch %d)", int(state.step),
                 *sched.position(int(state.step)))
  step = int(state.step)
  # rbg keys: dropout masks compile ~3x and run ~2x faster on CPU than threefry.
  rng = jax.random.key(config.train.seed, impl=config.train.rng_impl)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  rec.update_run(total_steps=total, n_params=int(n_params), batches_per_epoch=sched.batches_per_epoch)
  logging.info("model %s: %.2fM params; %d steps (%d per epoch) on %d devices", config.model.name,
               n_params / 1e6, total, sched.batches_per_epoch, jax.device_count())

  def save(best=False, **extra):
    epoch, idx = sched.position(step)
    meta = {"step": step, "epoch": epoch, "batch_in_epoch": idx, "best_tau": best_tau,
            "wall_s": wall_before + time.time() - t_start, **extra}
    ckpt.save(step, state_dict(state), meta, best=best)

  def validate():
    predictor.params = state.params
    preds = predictor.predict_items(val_nbs, val_items)
    table, per_nb = evaluate_predictions(val_nbs, preds)
    return table, per_nb, preds

  pending: list[dict] = []
  t_last, step_last = time.time(), step
  status = "done"
  while step < total:
    batch = sched.batch(step)
    state, aux = step_fn(state, shard_batch(batch.arrays, mesh), rng)
    step += 1
    pending.append(aux)
    if step % config.train.log_every == 0 or step == total:
      host = jax.device_get(pending)
      pending = []
      mean = {k: float(np.mean([h[k] for h in host])) for k in host[0]}
      if not all(math.isfinite(v) for v in mean.values()):
        raise FloatingPointError(
            f"non-finite training metrics at step {step} (epoch {sched.position(step)[0]}): {mean}. "
            f"Lower optim.lr or check the data; the last good checkpoint is step {ckpt.latest_step()}.")
      dt = time.time() - t_last
      rate = (step - step_last) / max(dt, 1e-9)
      t_last, step_last = time.time(), step
      rec.log(step, "train", dict(mean, steps_per_s=rate))
      logging.info("step %d/%d  loss %.4f  %.2f steps/s  ETA %s", step, total, mean["loss"], rate,
                   _fmt_eta((total - step) / max(rate, 1e-9)))
    if val_nbs and (step % config.train.eval_every == 0 or step == total):
      table, _, _ = validate()
      rec.log(step, "val", table)
      logging.info("step %d  val kendall_tau %.4f", step, table["kendall_tau"])
      if table["kendall_tau"] > best_tau:
        best_tau = table["kendall_tau"]
        save(best=True, val=table)
    saved = step % config.train.checkpoint_every == 0 or step == total
    if saved:
      save()
    if (should_stop is not None and step % config.train.stop_check_every == 0
        and agree(should_stop()) and step < total):
      if not saved:  # Orbax refuses a second save of the same step
        save()
      status = "preempted"
      logging.warning("stop requested: checkpointed step %d, exiting for requeue", step)
      break
  ckpt.wait()

  out: dict[str, Any] = {"status": status, "step": step}
  if status == "done":
    # Final evaluation with the best checkpoint (the newest when there is no validation).
    if val_nbs:
      state, _ = restore_into(state, ckpt, best=True) or (state, None)
      table, per_nb, preds = validate()
      rec.write_eval("val", table, per_nb)
      rec.write_predictions("val", preds)
      out["val"] = table
      logging.info("final val (best checkpoint): %s", json.dumps(table))
  ckpt.close()
  rec.update_run(status=status, steps=step, wall_s=wall_before + time.time() - t_start,
                 best_val_tau=best_tau if math.isfinite(best_tau) else None)
  if status == "done" and is_main:
    rec.make_plots()
  return out


def agree(flag: bool) -> bool:
  """True on every process if it is true on any (multi-host stop agreement)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(multihost_utils.process_allgather(np.array(flag)).any())


def _fmt_eta(s: float) -> str:
  s = int(s)
  return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"
