"""Very long notebooks as windows of at most `max_cells` cells, and fallbacks.

The models see a notebook whole ([n, n] cell-cell features, attention over
cells), so memory grows with n^2 and a notebook longer than the largest
bucket does not fit at all. A long notebook is cut instead into windows (the
1st-place AI4Code solution predicted 128-cell chunks):

* its code cells, whose order is known, into contiguous runs, one per window;
* each markdown cell into the window whose code shares most of its words
  (per-notebook word TF-IDF, `jaxrank.text.bow.lexical_vectors`, compared with
  each window's code centroid: [n_markdown, n_windows] numbers, not [n, n]),
  the most confident cells first, none into a full window.

Each window is predicted as a notebook of its own; the order of the whole is
the windows' orders one after the other, so code keeps its order and every
cell appears once. Memory is linear in the cells: windows are ~max_cells long
and there are ~n / max_cells of them.

`given_order` is the fallback for a notebook whose prediction fails: its cells
as given (code in order, then markdown) — a valid line of the submission.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from jaxrank.data.types import CODE, Notebook
from jaxrank.text import bow

log = logging.getLogger(__name__)

# Windows are filled to about this share of max_cells, leaving markdown room to
# follow its code.
FILL = 0.8


def given_order(nb: Notebook) -> list[str]:
  """Code cells in their order, then markdown cells in file order."""
  return list(nb.code_ids) + list(nb.markdown_ids)


def split(nb: Notebook, max_cells: int) -> list[Notebook]:
  """`nb` itself if it has at most `max_cells` cells, else its windows (in order)."""
  if nb.n_cells <= max_cells:
    return [nb]
  if max_cells < 2:
    raise ValueError(f"max_cells must be at least 2, got {max_cells}")
  is_code = np.array([t == CODE for t in nb.cell_types])
  code, md = np.flatnonzero(is_code), np.flatnonzero(~is_code)
  n_win = max(1, math.ceil(nb.n_cells / (FILL * max_cells)))
  n_win = min(n_win, max(1, len(code)))  # no window without code (unless no code at all)
  if len(code) == 0:
    chunks = [md[i::n_win] for i in range(n_win)]  # nothing to anchor to: any split
    return [_window(nb, k, c) for k, c in enumerate(chunks) if len(c)]
  code_chunks = np.array_split(code, n_win)
  # Markdown -> window: cosine of its words with each window's code centroid.
  x = bow.lexical_vectors(nb.sources)
  owner = np.zeros(len(code), np.int64)
  for k, c in enumerate(code_chunks):
    owner[np.searchsorted(code, c)] = k
  assign = sp.csr_matrix((np.ones(len(code), np.float32), (owner, np.arange(len(code)))),
                         shape=(n_win, len(code)))
  centroids = assign @ x[code]  # [n_win, V], sums of unit rows
  scores = np.asarray((x[md] @ centroids.T).todense(), np.float32)  # [n_md, n_win]
  scores /= np.maximum(np.sqrt(np.asarray(centroids.multiply(centroids).sum(1)).ravel()), 1e-12)
  room = np.array([max_cells - len(c) for c in code_chunks])
  chosen = np.full(len(md), -1)
  # Most confident markdown first; a tie (e.g. no words) goes to the emptiest window.
  for j in np.argsort(-scores.max(1), kind="stable"):
    pref = np.lexsort((-room, -scores[j]))
    k = next(int(k) for k in pref if room[k] > 0)
    chosen[j] = k
    room[k] -= 1
  return [_window(nb, k, np.sort(np.concatenate([c, md[chosen == k]])))
          for k, c in enumerate(code_chunks)]


def _window(nb: Notebook, k: int, idx: np.ndarray) -> Notebook:
  return Notebook(f"{nb.id}#window{k}", tuple(nb.cell_ids[i] for i in idx),
                  tuple(nb.cell_types[i] for i in idx), tuple(nb.sources[i] for i in idx))


def split_known(nb: Notebook, max_cells: int) -> list[Notebook]:
  """A notebook with a known order as consecutive runs of that order, each at
  most `max_cells` cells: training examples that fit the largest bucket."""
  if nb.n_cells <= max_cells or nb.order is None:
    return [nb]
  where = {c: i for i, c in enumerate(nb.cell_ids)}
  out = []
  for k, s in enumerate(range(0, nb.n_cells, max_cells)):
    part = nb.order[s:s + max_cells]
    idx = np.sort([where[c] for c in part])  # file order: code (in order), then markdown
    w = _window(nb, k, idx)
    out.append(dataclasses.replace(w, order=tuple(part), ancestor_id=nb.ancestor_id))
  return out


def join(orders: Sequence[Sequence[str]]) -> list[str]:
  """The whole notebook's order from its windows' orders (in window order)."""
  return [c for order in orders for c in order]


def predict_all(predict_fn: Callable[[Sequence[Notebook]], dict[str, list[str]]],
                notebooks: Sequence[Notebook], max_cells: int) -> dict[str, list[str]]:
  """An order for every notebook, whatever its size or content.

  `predict_fn(notebooks) -> {id: order}` is a model's plain prediction, which
  may raise. Notebooks longer than `max_cells` go to it as windows (`split`);
  a notebook whose windowing, featurizing, forward pass or decoding fails is
  named in a warning and gets its given order: one strange notebook never
  costs the submission. If every notebook fails (more than one), that is not a
  strange notebook but a broken model or featurizer: RuntimeError.
  """
  parts: dict[str, list[Notebook]] = {}
  for nb in notebooks:
    try:
      parts[nb.id] = split(nb, max_cells)
    except Exception as e:  # pylint: disable=broad-except
      _fallback_warning(nb.id, "splitting into windows", e)
  flat = [w for ws in parts.values() for w in ws]
  part_preds = _isolated(predict_fn, flat)
  preds, failed = {}, []
  for nb in notebooks:
    ws = parts.get(nb.id, [])
    if ws and all(w.id in part_preds for w in ws):
      preds[nb.id] = join([part_preds[w.id] for w in ws])
    else:
      preds[nb.id] = given_order(nb)
      failed.append(nb.id)
  if len(failed) > 1 and len(failed) == len(notebooks):
    raise RuntimeError(f"prediction failed for all {len(failed)} notebooks (see the warnings)")
  return preds


def _isolated(predict_fn, notebooks: Sequence[Notebook]) -> dict[str, list[str]]:
  """predict_fn over `notebooks`; on an error, halves the group until the
  failing notebooks are alone, which are then left out with a warning."""
  if not notebooks:
    return {}
  try:
    return predict_fn(notebooks)
  except Exception as e:  # pylint: disable=broad-except
    if len(notebooks) == 1:
      _fallback_warning(notebooks[0].id, "prediction", e)
      return {}
  mid = len(notebooks) // 2
  return {**_isolated(predict_fn, notebooks[:mid]), **_isolated(predict_fn, notebooks[mid:])}


def _fallback_warning(nb_id: str, what: str, e: BaseException) -> None:
  log.warning("notebook %s: %s failed (%s: %s); using its given order (code, then markdown)",
              nb_id.split("#window")[0], what, type(e).__name__, str(e)[:300])
