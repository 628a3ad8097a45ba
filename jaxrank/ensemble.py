"""Fold and run ensembles: several trained runs combined before decoding.

    predictor, config = train.load_predictor("runs/a,runs/b")   # or an ensemble run folder
    orders = predictor.predict(notebooks)

Every member states, per notebook, its *belief* about the markdown cells (the
model module's `markdown_belief`): a distribution over the n_code + 1 gaps
between code cells (gap-head families: bow_mlp, roberta_cells, diffusion with
the gap head) or only a key per cell on the shared key scale (pointwise ones).
The members are combined in the space they share and decoded once:

  * all pointwise: the keys are averaged and sorted (`decode.order_from_keys`);
  * any gap head: each pointwise member is turned into a one-hot distribution
    on the gap its key falls in (the gap its own decoding would pick), the
    distributions are averaged, and the mean is decoded as one model's would be
    (`decode.keys_from_gap_probs`: least expected misplaced pairs with the
    first gap-head member's `crowding`), ties broken by the mean key.

Averaging probabilities (not decoded orders) keeps each member's uncertainty:
two members unsure between neighbouring gaps agree on the gap both find
likely. An ensemble of one member decodes exactly as that run does.

An *ensemble run* is a folder holding `ensemble.json`
(`{"members": ["../best-m0", ...]}`, paths relative to that folder, so a moved
workspace keeps working); `jaxrank.train.load_predictor` accepts it wherever a
run folder is accepted, and members may themselves be ensemble runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxrank import decode, features, io_utils, windows
from jaxrank.data import folds, targets
from jaxrank.data.types import Notebook
from jaxrank.text import sections

ENSEMBLE_FILE = "ensemble.json"
# config.data fields that decide which notebooks are split (folds.split_fields: how).
_LOAD_FIELDS = ("data_dir", "split", "max_notebooks")


def is_ensemble_run(folder: str | os.PathLike) -> bool:
  return (Path(folder) / ENSEMBLE_FILE).is_file()


def member_dirs(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
  """The single-run folders named by `spec`: a folder, "A,B,C", or a list;
  ensemble runs are replaced by their members (recursively).

  Raises:
    FileNotFoundError: a name is neither a run folder nor an ensemble run.
    ValueError: no members, or an ensemble run that contains itself.
  """
  names = ([str(s) for s in spec] if isinstance(spec, (list, tuple))
           else [s for s in os.fspath(spec).split(",")])
  out: list[Path] = []

  def visit(path: Path, trail: tuple[Path, ...]) -> None:
    if is_ensemble_run(path):
      real = path.resolve()
      if real in trail:
        raise ValueError(f"{path / ENSEMBLE_FILE}: the ensemble contains itself")
      for m in read_members(path):
        visit(m, trail + (real,))
    elif (path / "config.json").is_file():
      out.append(path)
    else:
      raise FileNotFoundError(f"{path} is not a run folder (no config.json) nor an ensemble "
                              f"run (no {ENSEMBLE_FILE})")

  for name in names:
    if not name.strip():
      raise ValueError(f"empty run folder name in {spec!r}")
    visit(Path(name.strip()), ())
  if not out:
    raise ValueError(f"{spec!r} names no run")
  return out


def read_members(folder: str | os.PathLike) -> list[Path]:
  """The member folders listed in `folder/ensemble.json`, resolved against `folder`."""
  folder = Path(folder)
  path = folder / ENSEMBLE_FILE
  try:
    obj = json.loads(path.read_text())
    members = obj["members"]
    if not isinstance(members, list) or not members or not all(
        isinstance(m, str) and m for m in members):
      raise ValueError("'members' must be a non-empty list of paths")
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path}: not a valid ensemble file ({e}); expected "
                     '{"members": ["path/to/run", ...]}') from None
  return [Path(os.path.normpath(folder / m)) for m in members]


def write_ensemble_run(folder: str | os.PathLike, members: Sequence[str | os.PathLike],
                       **info: Any) -> Path:
  """Writes `folder/ensemble.json` atomically, listing `members` relative to `folder`.

  Every member must be a run folder or an ensemble run (checked first, so a
  written ensemble always loads). `info` is stored beside the list (e.g. the
  recipe that made it).
  """
  folder = Path(folder).absolute()
  if (folder / "config.json").exists():
    raise ValueError(f"{folder} is a single run's folder; pick another name for the ensemble")
  paths = [Path(m).absolute() for m in members]
  member_dirs(paths)  # raises on a folder that is not a run
  rel = [os.path.relpath(p, folder) for p in paths]
  return io_utils.atomic_write_json(folder / ENSEMBLE_FILE, {"members": rel, **info})


def _as_gap_probs(probs: np.ndarray | None, keys: np.ndarray, n_code: int) -> np.ndarray:
  """A member's gap distributions; a pointwise member's keys as one-hot rows on the
  gap each key falls in (markdown before code on a tie, as its own decoding)."""
  if probs is not None:
    return probs
  keys = np.asarray(keys, np.float64)
  one_hot = np.zeros((keys.size, n_code + 1))
  one_hot[np.arange(keys.size), np.searchsorted(targets.code_keys(n_code), keys, side="left")] = 1
  return one_hot


def _decode_mean(prob_sum: np.ndarray | None, key_sum: np.ndarray, n: int,
                 crowding: float, chains: Sequence[Sequence[int]] = ()) -> np.ndarray:
  return decode.keys_from_belief(None if prob_sum is None else prob_sum / n, key_sum / n,
                                 crowding, chains)


def combine(beliefs: Sequence[tuple[np.ndarray | None, np.ndarray]], n_code: int,
            crowding: float = 0.0, chains: Sequence[Sequence[int]] = ()) -> np.ndarray:
  """Markdown keys from the members' (gap probabilities or None, keys) of one notebook
  (`chains`: markdown cells of known order, `decode.keys_from_gap_probs`)."""
  if not beliefs:
    raise ValueError("no beliefs to combine")
  key_sum = np.sum([np.asarray(k, np.float64) for _, k in beliefs], axis=0)
  prob_sum = None
  if any(p is not None for p, _ in beliefs):
    prob_sum = np.sum([_as_gap_probs(p, k, n_code) for p, k in beliefs], axis=0)
  return _decode_mean(prob_sum, key_sum, len(beliefs), crowding, chains)


class EnsemblePredictor:
  """Several loaded runs (`jaxrank.train.Predictor`s) that predict as one."""

  def __init__(self, members: Sequence[Any], *, crowding: float | None = None,
               section_order: bool | None = None):
    if not members:
      raise ValueError("an ensemble needs at least one member")
    self.members = list(members)
    first = next((m.family.cfg for m in self.members if _has_gap_head(m)), None)
    if crowding is None:  # the first gap-head member's decoder
      crowding = float(getattr(first, "crowding", 0.0))
    if section_order is None:
      section_order = bool(getattr(first, "section_order", False))
    self.crowding, self.section_order = crowding, section_order

  def beliefs(self, member, notebooks: Sequence[Notebook]):
    """Yields (notebook index, gap probabilities or None, keys) of one member."""
    items = features.items_any(member.features_kind, member.featurizer, notebooks)
    module, cfg = member.family.module, member.family.cfg
    for j, out, row in member.outputs(items):
      nb = notebooks[j]
      probs, key = module.markdown_belief(out, row, nb.n_code, nb.n_markdown, cfg)
      yield j, probs, key

  def predict(self, notebooks: Sequence[Notebook], *,
              max_cells: int | None = None) -> dict[str, list[str]]:
    """An order for every notebook, whatever its size or content
    (`windows.predict_all`): notebooks longer than `max_cells` (default: the
    smallest of the members' largest buckets) in windows; one that fails gets
    its given order."""
    max_cells = max_cells or min(m.data_cfg.buckets[-1] for m in self.members)
    return windows.predict_all(self.predict_exact, notebooks, max_cells)

  def predict_exact(self, notebooks: Sequence[Notebook]) -> dict[str, list[str]]:
    """Full orders; members run one after another, their beliefs summed as they come
    (memory: one running sum per notebook, whatever the number of members)."""
    any_gap = any(_has_gap_head(m) for m in self.members)
    key_sum: list = [None] * len(notebooks)
    prob_sum: list = [None] * len(notebooks)
    seen = np.zeros(len(notebooks), np.int64)
    for m in self.members:
      for j, probs, key in self.beliefs(m, notebooks):
        key_sum[j] = key if key_sum[j] is None else key_sum[j] + key
        if any_gap:
          p = _as_gap_probs(probs, key, notebooks[j].n_code)
          prob_sum[j] = p if prob_sum[j] is None else prob_sum[j] + p
        seen[j] += 1
    preds = {}
    for j, nb in enumerate(notebooks):
      if seen[j] != len(self.members):
        raise RuntimeError(f"notebook {nb.id}: {seen[j]} of {len(self.members)} members "
                           "predicted it")
      chains = sections.notebook_orders(nb) if self.section_order else []
      keys = _decode_mean(prob_sum[j], key_sum[j], len(self.members), self.crowding, chains)
      preds[nb.id] = decode.order_from_keys(nb, keys)
    return preds


def _has_gap_head(predictor) -> bool:
  cfg = predictor.family.cfg
  return (getattr(cfg, "decode", "gap") != "pointwise" and getattr(cfg, "head", "gap") == "gap"
          and hasattr(cfg, "crowding"))


def shared_config(configs: Sequence[Any]) -> Any:
  """The config of an ensemble whose members have `configs`: the first member's
  when all validated on the same notebooks (same `config.data` split fields),
  else None."""
  def split_of(c):
    fields = _LOAD_FIELDS + folds.split_fields(c.data)
    return tuple((f, json.dumps(c.data.get(f), default=str)) for f in fields)

  return configs[0] if all(split_of(c) == split_of(configs[0]) for c in configs) else None
