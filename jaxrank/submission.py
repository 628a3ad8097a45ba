"""Kaggle submission files: `id,cell_order`, one row per notebook, ids space-separated.

Writing is atomic and sorted by notebook id, so two runs with the same
predictions give byte-identical files. Reading and validation refuse anything
Kaggle would refuse (or silently mis-score) with an error naming the notebook
and the cell.
"""

from __future__ import annotations

import collections
import csv
import io
import os
from pathlib import Path
from typing import Mapping, Sequence

from jaxrank import io_utils
from jaxrank import metrics
from jaxrank.data.types import Notebook

HEADER = ("id", "cell_order")
# Show at most this many problems in one error message.
_MAX_LISTED = 10


class SubmissionError(ValueError):
  """A submission that is malformed or does not match the notebooks."""


def _check_token(kind: str, token: str, where: str) -> None:
  if not token or any(ch.isspace() or ch in ',"' for ch in token):
    raise SubmissionError(
        f"{where}: {kind} {token!r} is empty or holds whitespace, a comma or a quote")


def write_submission(path: str | os.PathLike, preds: Mapping[str, Sequence[str]]) -> Path:
  """Writes `preds` (notebook id -> ordered cell ids) as a Kaggle submission."""
  lines = [",".join(HEADER)]
  for nb_id in sorted(preds):
    _check_token("notebook id", nb_id, f"notebook {nb_id!r}")
    cells = list(preds[nb_id])
    for c in cells:
      _check_token("cell id", c, f"notebook {nb_id}")
    lines.append(f"{nb_id},{' '.join(cells)}")
  return io_utils.atomic_write_text(path, "\n".join(lines) + "\n")


def read_submission(path: str | os.PathLike) -> dict[str, list[str]]:
  """Reads a submission file into notebook id -> ordered cell ids."""
  path = Path(path)
  try:
    text = path.read_text(encoding="utf-8")
  except UnicodeDecodeError as e:
    raise SubmissionError(f"{path}: not UTF-8 text ({e})") from None
  # A 50,000-cell notebook is a ~450 KB field; csv's default limit is 128 KB.
  csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
  rows = csv.reader(io.StringIO(text))
  header = next(rows, None)
  if header is None or tuple(h.strip().lstrip("\ufeff") for h in header) != HEADER:
    raise SubmissionError(f"{path}: header must be {','.join(HEADER)!r}, got {header!r}")
  preds: dict[str, list[str]] = {}
  for row in rows:
    line = rows.line_num
    if not row or (len(row) == 1 and not row[0].strip()):
      continue  # blank line (e.g. at the end)
    if len(row) != 2:
      raise SubmissionError(f"{path}, line {line}: expected 2 fields (id,cell_order), got {len(row)}")
    nb_id, order = row[0].strip(), row[1]
    if not nb_id:
      raise SubmissionError(f"{path}, line {line}: empty notebook id")
    if nb_id in preds:
      raise SubmissionError(f"{path}, line {line}: notebook {nb_id} appears twice")
    preds[nb_id] = order.split()
  return preds


def validate_submission(preds: Mapping[str, Sequence[str]], notebooks: Sequence[Notebook]) -> None:
  """Raises SubmissionError unless `preds` orders exactly the cells of exactly `notebooks`."""
  problems: list[str] = []
  by_id = {nb.id: nb for nb in notebooks}
  if len(by_id) != len(notebooks):
    dup = [k for k, v in collections.Counter(nb.id for nb in notebooks).items() if v > 1]
    raise ValueError(f"notebooks given twice: {dup[:_MAX_LISTED]}")
  for nb_id in by_id:
    if nb_id not in preds:
      problems.append(f"notebook {nb_id}: missing from the submission")
  for nb_id in preds:
    if nb_id not in by_id:
      problems.append(f"notebook {nb_id}: not a notebook of this set")
  for nb_id, order in preds.items():
    nb = by_id.get(nb_id)
    if nb is None:
      continue
    counts = collections.Counter(order)
    if len(counts) == len(order) and len(order) == nb.n_cells and counts.keys() == set(nb.cell_ids):
      continue  # the common case: a permutation
    cells = set(nb.cell_ids)
    for c in nb.cell_ids:
      if c not in counts:
        problems.append(f"notebook {nb_id}: cell {c} is missing")
    for c, k in counts.items():
      if c not in cells:
        problems.append(f"notebook {nb_id}: cell {c} is not in the notebook")
      elif k > 1:
        problems.append(f"notebook {nb_id}: cell {c} appears {k} times")
  if problems:
    more = f" (and {len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
    raise SubmissionError(
        f"invalid submission, {len(problems)} problem(s){more}:\n  "
        + "\n  ".join(problems[:_MAX_LISTED]))


def score_submission(submission: str | os.PathLike | Mapping[str, Sequence[str]],
                     notebooks: Sequence[Notebook]) -> dict[str, float]:
  """Validates a submission (file or dict) and returns `metrics.evaluate_orders`."""
  preds = read_submission(submission) if isinstance(submission, (str, os.PathLike)) else submission
  validate_submission(preds, notebooks)
  no_truth = [nb.id for nb in notebooks if nb.order is None]
  if no_truth:
    raise ValueError(f"cannot score: no true order for notebook(s) {no_truth[:_MAX_LISTED]}")
  gt = {nb.id: nb.order for nb in notebooks}
  types = {nb.id: dict(zip(nb.cell_ids, nb.cell_types)) for nb in notebooks}
  return metrics.evaluate_orders(gt, {k: preds[k] for k in gt}, types)
