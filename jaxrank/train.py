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
    markdown_belief(outputs, row, n_code, n_md, cfg) -> (gap probabilities or None, keys)
                                            # of one notebook's markdown; decoded here
                                            # (`markdown_keys`), averaged by ensembles
and optionally
    predict(model, params, batch, rng, cfg) -> outputs   # jit-able; default: a
                                                         # deterministic forward
    pretrained_params(params, cfg, weights) -> params    # puts a named stored
                                                         # encoder's weights in
pick one by name in MODELS. The config dataclass is built as
`Cfg(**config.model)` (less `name`, the family, and `workspace`, where named
weights live): an unknown key fails naming it. A `cfg.encoder_name` is resolved
here, not in the model: its EncoderConfig goes into `cfg.pretrained` and its
weights into the initial parameters. Features come from `jaxrank.features` by
`config.features.kind`. The loop machinery is `jaxrank.loop`'s.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pandas as pd
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxrank import (checkpoint, decode, ensemble, features, hf, loop, metrics, progress, results,
                     store, windows)
from jaxrank.data import batching, folds, notebooks as nb_io
from jaxrank.data.types import Notebook
from jaxrank.text import sections

# name -> (module, config class name)
MODELS = {"bow_mlp": ("jaxrank.models.bow_mlp", "BowMlpConfig"),
          "diffusion": ("jaxrank.models.diffusion", "DiffusionConfig"),
          "gap_diffusion": ("jaxrank.models.gap_diffusion", "GapDiffusionConfig"),
          "roberta_cells": ("jaxrank.models.rankers", "CellsConfig"),
          "roberta_pointwise": ("jaxrank.models.rankers", "PointwiseConfig")}


# --- model family -------------------------------------------------------------
# Keys of `config.model` the trainer reads itself (never passed to the dataclass).
TRAINER_KEYS = ("name", "workspace")


@dataclasses.dataclass(frozen=True)
class Family:
  module: Any
  cfg: Any
  workspace: str = ""  # where `cfg.encoder_name` lives

  def build(self) -> nn.Module:
    return self.module.build(self.cfg)

  def pretrained_weights(self):
    """The named stored encoder's params, or None (no name / no hook)."""
    name = getattr(self.cfg, "encoder_name", "")
    if not name or not hasattr(self.module, "pretrained_params"):
      return None
    _, params, _ = hf.load_encoder(store.Workspace(self.workspace), name, check_hashes=False)
    return params


def model_config(cls, model: Mapping[str, Any], **fields):
  """`cls(**model)` less TRAINER_KEYS, with `fields` added; an unknown key fails naming it."""
  kwargs = {k: v for k, v in model.items() if k not in TRAINER_KEYS}
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(kwargs) - known)
  if unknown:
    raise ValueError(f"config.model: unknown key(s) {unknown} for {cls.__name__} "
                     f"(model.name={model.get('name')!r})")
  if "dtype" in kwargs:
    kwargs["dtype"] = jnp.bfloat16 if kwargs["dtype"] == "bfloat16" else jnp.float32
  return cls(**kwargs, **fields)


def family_module(name: str) -> tuple[Any, type]:
  """(module, config dataclass) of the registered family `name` (MODELS)."""
  mod_name, cls_name = MODELS[name]
  module = importlib.import_module(mod_name)
  return module, getattr(module, cls_name)


def family_from_config(config, vocab_size: int) -> Family:
  name = config.model.name
  if name not in MODELS:
    raise ValueError(f"unknown model.name {name!r}; known: {sorted(MODELS)}")
  module, cls = family_module(name)
  cfg = model_config(cls, config.model, vocab_size=vocab_size)
  workspace = config.model.get("workspace", "")
  if getattr(cfg, "encoder_name", ""):
    if not workspace:
      raise ValueError(f"model.encoder_name={cfg.encoder_name!r} needs model.workspace "
                       "(the workspace root)")
    cfg = dataclasses.replace(cfg, pretrained=hf.encoder_config(store.Workspace(workspace),
                                                                cfg.encoder_name))
  return Family(module, cfg, workspace)


def loss_of(family: Family):
  """The family's loss as `loop.jit_step` wants it: (apply_fn, params, batch, rng) -> (loss, aux)."""
  def loss(apply_fn, params, batch, rng):
    out = apply_fn({"params": params}, batch, deterministic=False, rngs={"dropout": rng})
    return family.module.loss_fn(out, batch, family.cfg)
  return loss


def known_orders(nb: Notebook | None, cfg) -> list[list[int]]:
  """The chains of markdown cells of known order the config decodes with
  (`model.section_order`: `sections.known_orders` of `nb`'s markdown), or none."""
  if nb is None or not getattr(cfg, "section_order", False):
    return []
  return sections.notebook_orders(nb)


def markdown_keys(module, outputs, row: int, n_code: int, n_md: int, cfg,
                  nb: Notebook | None = None) -> np.ndarray:
  """Family `module`'s markdown belief of one notebook decoded into keys
  (`decode.keys_from_belief`, with the config's `crowding` where it has one, and
  with `section_order` the known orders of `nb`'s markdown cells)."""
  probs, keys = module.markdown_belief(outputs, row, n_code, n_md, cfg)
  return decode.keys_from_belief(probs, keys, getattr(cfg, "crowding", 0.0),
                                 known_orders(nb, cfg))


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
  """(train, val) as `data_cfg` chooses them (`folds.split_by_config`)."""
  return folds.split_by_config(nbs, data_cfg)


def fit_buckets(train_nbs, val_nbs, buckets) -> tuple[list[Notebook], list[Notebook]]:
  """Training notebooks longer than the largest bucket become runs of their true
  order that fit (`windows.split_known`); such validation notebooks are left out
  of the in-training validation (experiments.evaluate scores them in windows)."""
  limit = buckets[-1]
  long_val = [nb for nb in val_nbs if nb.n_cells > limit]
  if long_val:
    logging.warning("validation leaves out %d notebooks longer than the largest bucket (%d): %s",
                    len(long_val), limit, ", ".join(nb.id for nb in long_val[:10]))
  n_long = sum(nb.n_cells > limit for nb in train_nbs)
  if n_long:
    logging.info("training on %d notebooks longer than %d cells in windows", n_long, limit)
  return ([w for nb in train_nbs for w in windows.split_known(nb, limit)],
          [nb for nb in val_nbs if nb.n_cells <= limit])


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

  def predict(self, notebooks: Sequence[Notebook], cfg_override: Any = None, *,
              max_cells: int | None = None) -> dict[str, list[str]]:
    """An order for every notebook, whatever its size or content
    (`windows.predict_all`): notebooks longer than `max_cells` (default: the
    largest bucket) in windows; one that fails gets its given order."""
    def exact(nbs):
      items = features.items_any(self.features_kind, self.featurizer, nbs)
      return self.predict_items(nbs, items, cfg_override)
    return windows.predict_all(exact, notebooks, max_cells or self.data_cfg.buckets[-1])

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
      out = jax.device_get(fwd(self.params, loop.shard_batch(arrays, self.mesh), self.rng))
      for row, j in enumerate(b.nb_index):
        if j >= 0:
          yield j, out, row

  def predict_items(self, notebooks, items, cfg_override=None) -> dict[str, list[str]]:
    cfg = cfg_override or self.family.cfg
    preds: dict[str, list[str]] = {}
    prog = progress.Progress(len(items), "predicted", "notebooks",
                             logger=logging.getLogger(__name__))
    for j, out, row in self.outputs(items, cfg):
      nb = notebooks[j]
      keys = markdown_keys(self.family.module, out, row, nb.n_code, nb.n_markdown, cfg, nb)
      preds[nb.id] = decode.order_from_keys(nb, keys)
      prog.update()
    return preds


def evaluate_predictions(notebooks: Sequence[Notebook], preds) -> tuple[dict, Any]:
  gt = {nb.id: list(nb.order) for nb in notebooks}
  types = {nb.id: dict(zip(nb.cell_ids, nb.cell_types)) for nb in notebooks}
  table = metrics.evaluate_orders(gt, preds, types)
  per_nb = metrics.per_notebook_tau(gt, preds)
  df = pd.DataFrame({"id": [nb.id for nb in notebooks],
                     "n_cells": [nb.n_cells for nb in notebooks],
                     "n_markdown": [nb.n_markdown for nb in notebooks],
                     "tau": [per_nb[nb.id] for nb in notebooks]})
  return table, df


# --- state ------------------------------------------------------------------------------
def create_state(family: Family, tx, example: Mapping[str, np.ndarray], seed: int, mesh, *,
                 pretrained: bool = True):
  """Initialises a replicated TrainState; shardings come from eval_shape first.

  With `pretrained`, a named stored encoder's weights (`Family.pretrained_weights`)
  go in through the family's `pretrained_params` hook; a state about to be
  overwritten by a checkpoint restore skips it (no store read).
  """
  model = family.build()
  example = {k: v[:1] for k, v in example.items() if not k.startswith("target_")}
  state, shardings = loop.init_state(
      lambda rng: model.init({"params": rng}, example, deterministic=True)["params"],
      model.apply, tx, seed, mesh)
  weights = family.pretrained_weights() if pretrained else None
  if weights is not None:
    params = family.module.pretrained_params(state.params, family.cfg, weights)
    state, shardings = loop.state_from_params(params, model.apply, tx, mesh)
  return state, shardings


def read_config(workdir: str | Path, workspace: store.Workspace | None = None):
  """A run's config.json as a ConfigDict, its `$WORKSPACE` paths resolved against
  `workspace` (the one in use; default: the run's own, `run_workspace`)."""
  workdir = Path(workdir)
  cfg_path = workdir / "config.json"
  if not cfg_path.exists():
    raise FileNotFoundError(f"{workdir} is not a run folder: no config.json")
  ws = workspace or run_workspace(workdir)
  return ml_collections.ConfigDict(ws.resolve(json.loads(cfg_path.read_text())))


def run_workspace(workdir: str | Path) -> store.Workspace:
  """The workspace a run belongs to: WS for a run folder WS/runs/NAME (wherever WS
  was copied or moved to), else the workspace it was trained with (run.json)."""
  workdir = Path(workdir).absolute()
  recorded = results.read_run(workdir).get("workspace") if workdir.is_dir() else None
  parent = store.Workspace(workdir.parent.parent)
  if workdir.parent == parent.runs_dir or not recorded:
    return parent
  return store.Workspace(recorded)


def load_predictor(spec: str | os.PathLike | Sequence[str | os.PathLike], *, best: bool = True,
                   workspace: store.Workspace | None = None) -> tuple[Any, Any]:
  """(predictor, config) for a run folder, "A,B,C", a list of run folders or an
  ensemble run folder (`jaxrank.ensemble`).

  A plain run folder gives its `Predictor` (`load_run`) and config; several runs
  an `ensemble.EnsemblePredictor` and `ensemble.shared_config` of theirs.
  """
  single = not isinstance(spec, (list, tuple)) and "," not in os.fspath(spec)
  if single and not ensemble.is_ensemble_run(spec):
    return load_run(spec, best=best, workspace=workspace)
  loaded = [load_run(d, best=best, workspace=workspace) for d in ensemble.member_dirs(spec)]
  return (ensemble.EnsemblePredictor([p for p, _ in loaded]),
          ensemble.shared_config([c for _, c in loaded]))


def load_run(workdir: str | Path, *, best: bool = True,
             workspace: store.Workspace | None = None) -> tuple[Predictor, Any]:
  """Rebuilds a run's model from its config.json, featurizer and checkpoint.

  Store models and caches the run names are looked up in `workspace` (the one
  in use; default: `run_workspace`), so a copied or moved run works where it is.
  Only the parameters are restored, from the newest checkpoint that restores
  (best/ first with `best`, then checkpoints/; damaged ones are skipped with a
  warning); checkpoint.CheckpointError if none does.
  """
  workdir = Path(workdir)
  ws = workspace or run_workspace(workdir)
  config = read_config(workdir, ws)
  kind, featurizer = features.load_any(workdir, ws)
  family = family_from_config(config, featurizer.vocab_size)
  mesh = loop.make_mesh()
  example = batching.collate([_dummy_item(kind, featurizer)], config.data.buckets[0])
  example = {k: v for k, v in example.items() if not k.startswith("target_")}
  model = family.build()
  abstract = jax.eval_shape(
      lambda rng: model.init({"params": rng}, example, deterministic=True)["params"],
      jax.random.key(config.train.seed))
  repl = NamedSharding(mesh, P())
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), abstract)
  params = checkpoint.restore_params(workdir, best=best, abstract_params=abstract, fallback=True)
  return Predictor(family, params, featurizer, config.data, mesh, features_kind=kind,
                   seed=config.train.seed), config


def _dummy_item(kind, featurizer):
  nb = Notebook("dummy", ("a", "b"), ("code", "markdown"), ("x", "y"), ("a", "b"))
  return features.items_any(kind, featurizer, [nb])[0]


# --- the loop ------------------------------------------------------------------------------
class ConfigChangedError(ValueError):
  """Resuming a run with a config that differs from the one it was started with."""


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = ""
                   ) -> list[tuple[str, Any, Any]]:
  """(dotted key, old value, new value) for every leaf that differs."""
  out = []
  for k in sorted(set(old) | set(new), key=str):
    a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
    if isinstance(a, Mapping) and isinstance(b, Mapping):
      out += config_changes(a, b, f"{prefix}{k}.")
    elif a != b:
      out.append((f"{prefix}{k}", a, b))
  return out


# Non-model config keys added since runs began, with the value that keeps the old
# behaviour (model.* keys are checked against the model dataclass's defaults).
_ADDED_KEYS = {"features.cell_shape": False, "features.encode_dtype": "float32",
               "features.readable_markdown": False, "features.section_numbers": False}
# Keys that set speed, not results (cells per encoder call): a resume may change them.
_SPEED_KEYS = frozenset({"features.batch_rows"})


def _added_key_at_old_value(key: str, old: Any, new: Any, config_json: Mapping[str, Any]
                            ) -> bool:
  """Whether `key` is a `model.*` field the run's config.json predates, set to the
  model dataclass's default (or a key of `_ADDED_KEYS` at its old-behaviour value):
  code that added a field keeps the old behaviour at its default, so a run started
  before it resumes."""
  if old == "<absent>" and key in _ADDED_KEYS:
    return new == _ADDED_KEYS[key]
  model = config_json.get("model", {})
  if old != "<absent>" or not key.startswith("model.") or model.get("name") not in MODELS:
    return False
  fields = {f.name: f for f in dataclasses.fields(family_module(model["name"])[1])}
  f = fields.get(key[len("model."):])
  return f is not None and f.default is not dataclasses.MISSING and f.default == new


def _check_resume_config(rec: results.RunRecorder, config_json: dict, ws: store.Workspace,
                         allow_change: bool) -> None:
  """Refuses (ConfigChangedError) to resume with a different config unless allowed;
  an allowed change is recorded in run.json under `config_changes`."""
  path = rec.workdir / results.CONFIG_FILE
  if not path.exists():
    return
  try:
    old = ws.portable(ws.resolve(results.load_json_object(path)))
  except ValueError:
    return  # a damaged config.json: the run's own files say what it was (results' problems)
  changes = [c for c in config_changes(old, config_json)
             if c[0] not in _SPEED_KEYS and not _added_key_at_old_value(*c, config_json)]
  if not changes:
    return
  listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes)
  if not allow_change:
    raise ConfigChangedError(
        f"{rec.workdir} was started with another config ({listed}): resume with its flags, "
        "use a new --name, or pass --allow_config_change (recorded in run.json)")
  logging.warning("config changed on resume (allowed): %s", listed)
  history = rec.read_run().get("config_changes", [])
  history.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "changes": [{"key": k, "old": a, "new": b} for k, a, b in changes]})
  rec.update_run(config_changes=history)


def train_and_evaluate(config, workdir: str | Path, *,
                       should_stop: Callable[[], bool] | None = None,
                       workspace: store.Workspace | None = None,
                       allow_config_change: bool = False) -> dict[str, Any]:
  """Trains (or resumes) the run in `workdir`; see `_train_and_evaluate`.

  `workspace` (default: `run_workspace(workdir)`) is the root that the run's
  config.json and featurizer name store models and caches relative to. A
  resumed run whose config differs from its config.json raises
  ConfigChangedError unless `allow_config_change`.
  Marks the run "failed" in run.json (with the error) if anything raises.
  """
  try:
    return _train_and_evaluate(config, workdir, should_stop=should_stop,
                               workspace=workspace or run_workspace(workdir),
                               allow_config_change=allow_config_change)
  except ConfigChangedError:
    raise  # the run itself is fine: it resumes with its own flags
  except BaseException as e:
    results.RunRecorder(workdir, enabled=jax.process_index() == 0).update_run(
        status="failed", error=repr(e)[:2000])
    raise


def _train_and_evaluate(config, workdir: str | Path, *, should_stop, workspace: store.Workspace,
                        allow_config_change: bool) -> dict[str, Any]:
  """Trains (or resumes) the run in `workdir`; returns its final status and metrics.

  `should_stop` is polled after every step (e.g. a SIGUSR1 flag set by the
  entry point): when it turns true the state is checkpointed and the function
  returns with status "preempted"; running again resumes.
  """
  workdir = Path(workdir)
  is_main = jax.process_index() == 0
  rec = results.RunRecorder(workdir, enabled=is_main)
  t_start = time.time()
  config_json = workspace.portable(json.loads(json.dumps(config.to_dict(), default=str)))
  if is_main:
    _check_resume_config(rec, config_json, workspace, allow_config_change)
  rec.write_config(config_json)
  rec.update_run(status="running", model=config.model.name, workspace=str(workspace.root), data_dir=str(config.data.data_dir),
                 devices=[str(d) for d in jax.devices()], process_count=jax.process_count())

  # Data and features. Features are refit only when none are saved yet.
  nbs = load_notebooks(config.data)
  train_nbs, val_nbs = fit_buckets(*split_data(nbs, config.data), config.data.buckets)
  logging.info("data: %d train / %d validation notebooks", len(train_nbs), len(val_nbs))
  kind = config.features.kind
  try:
    _, featurizer = features.load_any(workdir, workspace)
    train_items = features.items_any(kind, featurizer, train_nbs)
  except FileNotFoundError:
    featurizer, train_items = features.fit_any(config.features, train_nbs)
    if is_main:
      features.save_any(kind, featurizer, workdir, workspace)
  val_items = features.items_any(kind, featurizer, val_nbs)
  logging.info("features: vocab %d, featurized in %.1fs", featurizer.vocab_size, time.time() - t_start)

  mesh = loop.make_mesh()
  sched = batching.BatchSchedule(train_items, buckets=config.data.buckets,
                                 cells_per_batch=config.data.cells_per_batch,
                                 row_multiple=jax.device_count(), seed=config.data.seed)
  total = config.train.steps or config.train.epochs * sched.batches_per_epoch
  family = family_from_config(config, featurizer.vocab_size)
  tx, schedule = loop.make_optimizer(config.optim, total)
  state, state_sh = create_state(family, tx, sched.batch(0).arrays, config.train.seed, mesh)
  step_fn = loop.jit_step(loss_of(family), schedule, state_sh, mesh)
  predictor = Predictor(family, None, featurizer, config.data, mesh, features_kind=kind,
                        seed=config.train.seed)

  ckpt = checkpoint.Checkpointer(workdir, keep=config.train.keep_checkpoints)
  best_tau, wall_before = -math.inf, 0.0
  restored = loop.restore_into(state, ckpt)
  if restored is not None:
    state, meta = restored
    best_tau, wall_before = meta.get("best_tau", best_tau), meta.get("wall_s", 0.0)
    logging.info("resumed from step %d (epoch %d, batch %d)", int(state.step),
                 *sched.position(int(state.step)))
  rec.open_tensorboard(purge_step=int(state.step) + 1)
  # rbg keys: dropout masks compile ~3x and run ~2x faster on CPU than threefry.
  rng = jax.random.key(config.train.seed, impl=config.train.rng_impl)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  rec.update_run(total_steps=total, n_params=int(n_params), batches_per_epoch=sched.batches_per_epoch)
  logging.info("model %s: %.2fM params; %d steps (%d per epoch) on %d devices", config.model.name,
               n_params / 1e6, total, sched.batches_per_epoch, jax.device_count())

  def meta(step, **extra):
    epoch, idx = sched.position(step)
    return {"step": step, "epoch": epoch, "batch_in_epoch": idx, "best_tau": best_tau,
            "wall_s": wall_before + time.time() - t_start, **extra}

  def validate(params):
    predictor.params = params
    preds = predictor.predict_items(val_nbs, val_items)
    table, per_nb = evaluate_predictions(val_nbs, preds)
    return table, per_nb, preds

  def on_log(step, mean, rate):
    rec.log(step, "train", dict(mean, steps_per_s=rate))
    logging.info("step %d/%d  loss %.4f  %.2f steps/s  ETA %s", step, total, mean["loss"], rate,
                 progress.fmt_eta((total - step) / max(rate, 1e-9)))

  def after_step(state, step):
    nonlocal best_tau
    if val_nbs and (step % config.train.eval_every == 0 or step == total):
      table, _, _ = validate(state.params)
      rec.log(step, "val", table)
      logging.info("step %d  val kendall_tau %.4f", step, table["kendall_tau"])
      if table["kendall_tau"] > best_tau:
        best_tau = table["kendall_tau"]
        ckpt.save(step, loop.state_dict(state), meta(step, val=table), best=True)

  try:
    state, step, status = loop.run(
        state, step_fn, lambda step: sched.batch(step).arrays, rng, mesh=mesh, total=total,
        ckpt=ckpt, meta=meta, log_every=config.train.log_every,
        checkpoint_every=config.train.checkpoint_every, on_log=on_log, after_step=after_step,
        should_stop=should_stop, stop_check_every=config.train.stop_check_every,
        on_save=lambda _: rec.flush())
  finally:
    rec.close()
  ckpt.wait()

  out: dict[str, Any] = {"status": status, "step": step}
  if status == "done":
    # Final evaluation with the best checkpoint (the newest when there is no validation).
    if val_nbs:
      state, _ = loop.restore_into(state, ckpt, best=True) or (state, None)
      table, per_nb, preds = validate(state.params)
      rec.write_eval("val", table, per_nb)
      rec.write_predictions("val", preds)
      out["val"] = table
      logging.info("final val (best checkpoint): %s", results.format_metrics(table))
  ckpt.close()
  rec.update_run(status=status, steps=step, wall_s=wall_before + time.time() - t_start,
                 best_val_tau=best_tau if math.isfinite(best_tau) else None)
  if status == "done" and is_main:
    rec.make_plots()
  return out
