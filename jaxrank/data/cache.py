"""On-disk cache of a parsed and validated split (Arrow IPC file, no pickle).

An entry is the folder `{cache_dir}/{split}-{fingerprint}/` holding
`notebooks.arrow` (Arrow IPC file format, lz4). The folder appears atomically
(`io_utils.atomic_dir`), so a reader never sees half an entry and two writers
racing leave one. The
fingerprint covers everything the result depends on (file names, sizes and
mtimes of the JSON files, the bytes of the csv files, the arguments, and
`FORMAT_VERSION`), so a changed input simply misses and a new entry is written.
Old entries are left in place; delete the folder to reclaim the space.

Arrow IPC rather than parquet: on nbcorpus (34 MB of JSON) the lz4 IPC file is
17 MB and decodes in ~0.04 s, zstd parquet is 12 MB but takes ~0.15 s.

Layout, one row per notebook: `id`, `ancestor_id` ("" if unknown), `has_order`,
and list columns `cell_ids`, `is_code`, `sources`, `order_pos` (the true order
as positions into the cells). Arrays are built from and read into raw buffers
(flat values + offsets): far faster than nested Python lists, and it keeps
pandas (which `pa.array` would import, ~1 s) out of the process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from jaxrank import io_utils
from jaxrank.data.types import CODE, MARKDOWN, Notebook

log = logging.getLogger(__name__)

# Bump when the validation rules or the layout change: old entries then miss.
FORMAT_VERSION = 1
_FILE = "notebooks.arrow"
_META_KEY = b"jaxrank"


def fingerprint(*, split: str, entries: Iterable[tuple[str, int, int]],
                blobs: Mapping[str, bytes | None], max_notebooks: int | None) -> str:
  """Hex digest of the inputs of `load_split`.

  Args:
    split: split name.
    entries: (notebook id, size, mtime_ns) of every JSON file of the split.
    blobs: name -> bytes of each csv file (None when absent).
    max_notebooks: the argument of `load_split`.
  """
  h = hashlib.sha256()
  h.update(json.dumps([FORMAT_VERSION, split, max_notebooks]).encode())
  for name in sorted(blobs):
    blob = blobs[name]
    h.update(f"\n{name}:{'absent' if blob is None else len(blob)}\n".encode())
    if blob is not None:
      h.update(blob)
  h.update(b"\nfiles\n")
  h.update("\n".join(f"{i} {s} {m}" for i, s, m in entries).encode())
  return h.hexdigest()[:32]


def cache_path(cache_dir: str | os.PathLike, split: str, fp: str) -> Path:
  return Path(cache_dir) / f"{split}-{fp}" / _FILE


def _strings(pa, values: Sequence[str]):
  """A large_string array built from raw buffers.

  Not `pa.array(list)`: that imports pandas (~1 s) to check the input's type.
  """
  # One encode of the whole text; per-string byte lengths only where not ASCII.
  data = "".join(values).encode("utf-8")
  offsets = np.zeros(len(values) + 1, np.int64)
  np.cumsum([len(v) if v.isascii() else len(v.encode("utf-8")) for v in values],
            out=offsets[1:])
  return pa.LargeStringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(data))


def _numbers(pa, values: np.ndarray):
  values = np.ascontiguousarray(values)
  return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values),
                               [None, pa.py_buffer(values)])


def _lists(pa, offsets: np.ndarray, child):
  return pa.LargeListArray.from_buffers(pa.large_list(child.type), len(offsets) - 1,
                                        [None, pa.py_buffer(offsets)], children=[child])


def write(path: Path, notebooks: Sequence[Notebook], skipped: Sequence[tuple[str, str]]) -> None:
  """Writes one cache entry at `path` (see `cache_path`); never raises on a race."""
  import pyarrow as pa

  offsets = np.zeros(len(notebooks) + 1, np.int64)
  np.cumsum([nb.n_cells for nb in notebooks], out=offsets[1:])
  n_cells = int(offsets[-1])
  is_code = np.fromiter((t == CODE for nb in notebooks for t in nb.cell_types), np.int8,
                        count=n_cells)
  # The order is stored as positions into the notebook's cells (a validated
  # order is a permutation of them): ints decode much faster than strings.
  order_pos = np.zeros(n_cells, np.int32)
  for nb, a in zip(notebooks, offsets):
    if nb.order is not None:
      pos = {c: i for i, c in enumerate(nb.cell_ids)}
      order_pos[a:a + nb.n_cells] = [pos[c] for c in nb.order]
  columns = {
      "id": _strings(pa, [nb.id for nb in notebooks]),
      # "" for None: validation never lets an empty ancestor_id through.
      "ancestor_id": _strings(pa, [nb.ancestor_id or "" for nb in notebooks]),
      "has_order": _numbers(pa, np.array([nb.order is not None for nb in notebooks], np.int8)),
      "cell_ids": _lists(pa, offsets, _strings(pa, [c for nb in notebooks for c in nb.cell_ids])),
      "is_code": _lists(pa, offsets, _numbers(pa, is_code)),
      "sources": _lists(pa, offsets, _strings(pa, [s for nb in notebooks for s in nb.sources])),
      "order_pos": _lists(pa, offsets, _numbers(pa, order_pos)),
  }
  meta = {"format_version": FORMAT_VERSION, "skipped": [list(s) for s in skipped]}
  table = pa.Table.from_arrays(list(columns.values()), names=list(columns),
                               metadata={_META_KEY: json.dumps(meta).encode()})
  try:
    with io_utils.atomic_dir(path.parent) as tmp:
      options = pa.ipc.IpcWriteOptions(compression="lz4")
      with pa.OSFile(str(tmp / path.name), "wb") as f, \
          pa.ipc.new_file(f, table.schema, options=options) as writer:
        writer.write_table(table)
  except FileExistsError:
    pass  # another process wrote the same entry first; it holds the same data
  except OSError as e:
    log.warning("Could not write the notebook cache %s: %s", path, e)


def _column(table, name: str):
  col = table[name]
  return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def _to_numpy(arr, dtype) -> np.ndarray:
  """A primitive array's values (no nulls are ever written) without pandas."""
  return np.frombuffer(arr.buffers()[1], dtype, count=len(arr) + arr.offset)[arr.offset:]


def _list_parts(arr) -> tuple[object, np.ndarray]:
  """(flat child array, offsets from 0) of a large_list array."""
  offsets = _to_numpy(arr.offsets, np.int64)
  return arr.values.slice(offsets[0], offsets[-1] - offsets[0]), offsets - offsets[0]


def read(path: Path) -> tuple[list[Notebook], list[tuple[str, str]]] | None:
  """Reads a cache entry: (notebooks, skipped); None when absent or unreadable."""
  if not path.is_file():
    return None
  import pyarrow as pa

  try:
    with pa.OSFile(str(path), "rb") as f:
      table = pa.ipc.open_file(f).read_all()
    meta = json.loads(table.schema.metadata[_META_KEY])
    if meta["format_version"] != FORMAT_VERSION:
      return None
    ids = _column(table, "id").to_pylist()
    ancestors = _column(table, "ancestor_id").to_pylist()
    has_order = _to_numpy(_column(table, "has_order"), np.int8)
    cell_ids_arr, off = _list_parts(_column(table, "cell_ids"))
    cell_ids = np.array(cell_ids_arr.to_pylist(), dtype=object)
    is_code_arr, _ = _list_parts(_column(table, "is_code"))
    types = np.array([MARKDOWN, CODE], dtype=object)[_to_numpy(is_code_arr, np.int8)].tolist()
    sources = _list_parts(_column(table, "sources"))[0].to_pylist()
    order_arr, order_off = _list_parts(_column(table, "order_pos"))
    if not (len(ids) == len(off) - 1 and len(cell_ids) == len(sources) == len(types)
            and np.array_equal(off, order_off)):
      raise ValueError("columns disagree in length")
    # Positions -> ids, for all notebooks at once.
    first_cell = np.repeat(off[:-1], np.diff(off))
    order_ids = cell_ids[_to_numpy(order_arr, np.int32) + first_cell].tolist()
    cell_ids = cell_ids.tolist()
  except Exception as e:  # pylint: disable=broad-except
    # A damaged entry must not break loading: drop it and parse the JSON again.
    log.warning("Ignoring unreadable notebook cache %s: %s", path, e)
    shutil.rmtree(path.parent, ignore_errors=True)
    return None
  notebooks = []
  for i, nb_id in enumerate(ids):
    a, b = off[i], off[i + 1]
    notebooks.append(Notebook(id=nb_id, cell_ids=tuple(cell_ids[a:b]),
                              cell_types=tuple(types[a:b]), sources=tuple(sources[a:b]),
                              order=tuple(order_ids[a:b]) if has_order[i] else None,
                              ancestor_id=ancestors[i] or None))
  return notebooks, [tuple(s) for s in meta["skipped"]]
