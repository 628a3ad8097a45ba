"""Helpers the benchmark scripts share (no absl flags here: several scripts import it)."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def literal(text: str) -> Any:
  """A Python literal ("4", "(1, 2)", "False"), else the text itself (a string value)."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def overrides(items: Sequence[str]) -> dict[str, Any]:
  """["optim.lr=3e-3", "model.head=gap"] -> {"optim.lr": 0.003, "model.head": "gap"}."""
  return {k: literal(v) for k, v in (item.split("=", 1) for item in items)}


def summarize_folds(paths: Sequence[str]) -> str:
  """bench_diffusion --summarize: mean +- std over folds (one bench_diffusion.json each) of
  every model and sampling point scored in all of them. Here, not in bench_diffusion, so
  that tests import it without that module's absl flags."""
  runs = [json.loads(Path(p).read_text()) for p in paths]
  key = lambda r: (r["model"], str(r["K"]), str(r["S"]), str(r["t_start"]), str(r["avg"]))
  taus: dict[tuple, list[float]] = {}
  for run in runs:
    for r in run["rows"]:
      if r["tau"] is not None:
        taus.setdefault(key(r), []).append(r["tau"])
  lines = [f"{len(runs)} folds: " + ", ".join(
      f"{r.get('val_sources') or 'fold %s' % r['fold']} ({r['n_val_used']} notebooks)"
      for r in runs),
           f"{'model':<22} {'K':>3} {'S':>3} {'t0':>5} {'avg':>3} {'tau mean':>8} "
           f"{'+- std':>7}  per fold"]
  for k, v in taus.items():
    if len(v) == len(runs):
      lines.append(f"{k[0]:<22} {k[1]:>3} {k[2]:>3} {k[3]:>5} {k[4]:>3} {np.mean(v):>8.4f} "
                   f"{np.std(v):>7.4f}  " + " ".join(f"{x:.4f}" for x in v))
  return "\n".join(lines)
