"""Reads and validates notebooks in the competition's file format.

A competition folder `D` holds, for a split such as "train" or "test":

  D/{split}/{id}.json          {"cell_type": {cell_id: "code"|"markdown"},
                                "source": {cell_id: text}}
  D/{split}_orders.csv         id,cell_order  (cell ids separated by spaces; optional)
  D/{split}_ancestors.csv      id,ancestor_id,parent_id  (optional)

Every problem found raises `DataError`, whose message names the file, the
notebook and the cell (when one is at fault) and says what is wrong.

Choices made here (documented because they are judgment calls):
  * Cells are kept in *file order*: the key order of the "cell_type" object.
  * A source may also be a list of strings, as in a raw .ipynb; the pieces are
    joined with "" exactly as nbformat does. Anything else is an error.
  * Cell text is kept whole, however long (some cells hold ~1.8M characters);
    truncation is the featurizer's job.
  * Notebooks with no markdown or no code cells are valid; an empty one is not.
  * Cell ids must be non-empty and hold no whitespace (the orders csv separates
    them with spaces, so such an id could never be ordered).
  * A lone UTF-16 surrogate in a source (a "\\udXXX" JSON escape without its
    pair) is replaced by U+FFFD: it is not text, and tokenizers reject it.
  * Extra top-level keys (besides "cell_type" and "source") are ignored.
  * When the true order is known, the code cells in the file must appear in
    that order (the competition's promise that decoders build on).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from jaxrank.data import cache as cache_lib
from jaxrank.data.types import CELL_TYPES, CODE, MARKDOWN, Notebook

log = logging.getLogger(__name__)

_ORDERS_HEADER = ("id", "cell_order")
_ANCESTORS_HEADERS = (("id", "ancestor_id", "parent_id"), ("id", "ancestor_id"))
_SPLIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_BAD_ID_RE = re.compile("[\\s\ud800-\udfff]")
# Interned so that every notebook shares the two strings (and `is` works).
_TYPE_OF = {CODE: CODE, MARKDOWN: MARKDOWN}


class DataError(ValueError):
  """Bad input data. The message names the file, notebook and cell at fault.

  Attributes `path`, `notebook_id` and `cell_id` hold the same facts (None when
  not relevant), for callers that want to act on them.
  """

  def __init__(self, message: str, *, path: str | os.PathLike | None = None,
               notebook_id: str | None = None, cell_id: str | None = None):
    parts = []
    if path is not None:
      parts.append(str(path))
    if notebook_id is not None:
      parts.append(f"notebook {notebook_id!r}")
    if cell_id is not None:
      parts.append(f"cell {cell_id!r}")
    super().__init__(": ".join(parts + [message]))
    self.path = None if path is None else str(path)
    self.notebook_id = notebook_id
    self.cell_id = cell_id
    self.reason = message


def sample_data_dir() -> Path:
  """The embedded sample: a small competition-format folder (train + test)."""
  return Path(__file__).resolve().parent / "sample"


# ---------------------------------------------------------------------------
# One notebook.


class _DupDict(dict):
  """A JSON object in which some keys appeared more than once."""
  dups: list[str]


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict:
  d = dict(pairs)
  if len(d) != len(pairs):
    # Python's json would silently keep the last value; remember the repeats.
    d = _DupDict(d)
    seen: set[str] = set()
    d.dups = [k for k, _ in pairs if k in seen or seen.add(k)]
  return d


def _source_text(value: Any, path, nb_id: str, cell_id: str) -> str:
  if isinstance(value, str):
    return value
  if isinstance(value, list) and all(isinstance(v, str) for v in value):
    return "".join(value)  # raw .ipynb style: lines with their own "\n"
  raise DataError(f"source is a {type(value).__name__}, expected a string "
                  "(or a list of strings)", path=path, notebook_id=nb_id, cell_id=cell_id)


def parse_notebook(data: bytes, notebook_id: str, path: str | os.PathLike = "<bytes>",
                   order: Sequence[str] | None = None,
                   ancestor_id: str | None = None) -> Notebook:
  """Parses and validates the bytes of one `{id}.json` file.

  Args:
    data: the file's bytes (UTF-8 JSON).
    notebook_id: the notebook's id (the file's stem).
    path: named in error messages.
    order: the true order of all cell ids, if known; it is checked against the
      cells (no missing, extra or repeated ids; code cells in file order).
    ancestor_id: stored on the notebook as is.

  Raises:
    DataError: on any problem.
  """
  def error(msg: str, cell_id: str | None = None) -> DataError:
    return DataError(msg, path=path, notebook_id=notebook_id, cell_id=cell_id)

  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise error(f"not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})") from None
  try:
    obj = json.loads(text, object_pairs_hook=_pairs_hook)
  except json.JSONDecodeError as e:
    raise error(f"bad JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
  except RecursionError:
    raise error("bad JSON: nested too deeply") from None
  if not isinstance(obj, dict):
    raise error(f"top level is a JSON {type(obj).__name__}, expected an object "
                'with keys "cell_type" and "source"')
  if isinstance(obj, _DupDict):
    raise error(f"top-level key {obj.dups[0]!r} appears more than once")
  for key in ("cell_type", "source"):
    if key not in obj:
      raise error(f'missing top-level key "{key}"')
    if not isinstance(obj[key], dict):
      raise error(f'"{key}" is a JSON {type(obj[key]).__name__}, expected an object '
                  "mapping cell ids to values")
    if isinstance(obj[key], _DupDict):
      raise error(f'cell id appears more than once in "{key}"', obj[key].dups[0])
  types: dict[str, Any] = obj["cell_type"]
  sources: dict[str, Any] = obj["source"]

  if not types and not sources:
    raise error("notebook has no cells")
  if types.keys() != sources.keys():
    only_t = [c for c in types if c not in sources]
    if only_t:
      raise error('cell is in "cell_type" but has no "source"', only_t[0])
    raise error('cell is in "source" but has no "cell_type"',
                next(c for c in sources if c not in types))
  cell_ids = tuple(types)
  if "" in types:
    raise error("empty cell id")
  joined_ids = "".join(cell_ids)
  if _BAD_ID_RE.search(joined_ids) or _SURROGATE_RE.search(notebook_id):
    if _SURROGATE_RE.search(notebook_id):
      raise error("notebook id (the file name) is not valid Unicode")
    bad = next(c for c in cell_ids if _BAD_ID_RE.search(c))
    raise error("cell id contains whitespace or a lone surrogate (\\udXXX escape)", bad)

  try:
    cell_types = tuple(_TYPE_OF[t] for t in types.values())
  except (KeyError, TypeError):
    cid, t = next((c, t) for c, t in types.items()
                  if not isinstance(t, str) or t not in _TYPE_OF)
    raise error(f"unknown cell type {t!r} (expected one of {list(CELL_TYPES)})", cid) from None
  srcs = [sources[c] for c in cell_ids]
  if not all(type(s) is str for s in srcs):
    srcs = [_source_text(s, path, notebook_id, c) for c, s in zip(cell_ids, srcs)]
  try:
    "".join(srcs).encode("utf-8")
  except UnicodeEncodeError:
    # A "\udXXX" escape without its pair decodes to a lone surrogate, which no
    # UTF-8 consumer (tokenizers, Arrow) accepts: make it U+FFFD.
    srcs = [_SURROGATE_RE.sub("\ufffd", s) for s in srcs]

  if order is not None:
    order = tuple(order)
    _check_order(order, cell_ids, cell_types, error)
  return Notebook(id=notebook_id, cell_ids=cell_ids, cell_types=cell_types,
                  sources=tuple(srcs), order=order, ancestor_id=ancestor_id)


def _check_order(order: tuple[str, ...], cell_ids: tuple[str, ...],
                 cell_types: tuple[str, ...], error) -> None:
  type_of = dict(zip(cell_ids, cell_types))
  if len(order) == len(cell_ids) and type_of.keys() == set(order):
    code_in_order = [c for c in order if type_of[c] is CODE]
    code_in_file = [c for c, t in zip(cell_ids, cell_types) if t is CODE]
    if code_in_order != code_in_file:
      k = next(i for i, (a, b) in enumerate(zip(code_in_order, code_in_file)) if a != b)
      raise error(f"code cells in the JSON are not in their true order: code cell #{k} "
                  f"of the file should be {code_in_order[k]!r}", code_in_file[k])
    return
  seen: set[str] = set()
  for c in order:
    if c in seen:
      raise error("cell appears more than once in the order", c)
    seen.add(c)
    if c not in type_of:
      raise error("the order names a cell that is not in the notebook", c)
  missing = next(c for c in cell_ids if c not in seen)
  raise error("the order leaves out a cell of the notebook", missing)


def read_notebook(path: str | os.PathLike, notebook_id: str | None = None) -> Notebook:
  """Reads and validates one `{id}.json` file; `order` is None.

  Args:
    path: the JSON file.
    notebook_id: defaults to the file name without ".json".

  Raises:
    DataError: unreadable file, bad JSON or any invalid content.
  """
  path = Path(path)
  nb_id = path.stem if notebook_id is None else notebook_id
  try:
    data = path.read_bytes()
  except OSError as e:
    raise DataError(f"cannot read file: {e.strerror or e}", path=path, notebook_id=nb_id) from None
  return parse_notebook(data, nb_id, path)


# ---------------------------------------------------------------------------
# CSV files.


def _read_csv(path: Path, data: bytes, headers: Sequence[tuple[str, ...]]
              ) -> tuple[tuple[str, ...], list[tuple[int, list[str]]]]:
  """Returns (header, [(line number, row)]); raises DataError on structure problems."""
  try:
    text = data.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise DataError(f"not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})",
                    path=path) from None
  reader = csv.reader(io.StringIO(text, newline=""), strict=True)
  try:
    header = tuple(h.strip() for h in next(reader, []))
    if header not in headers:
      want = " or ".join(",".join(h) for h in headers)
      raise DataError(f"malformed header {','.join(header)!r}, expected {want!r}", path=path)
    rows = []
    for row in reader:
      if not row or (len(row) == 1 and not row[0].strip()):
        continue  # blank line
      if len(row) != len(header):
        raise DataError(f"line {reader.line_num}: {len(row)} fields, expected {len(header)}",
                        path=path)
      rows.append((reader.line_num, row))
  except csv.Error as e:
    raise DataError(f"line {reader.line_num}: malformed CSV: {e}", path=path) from None
  return header, rows


def _index_rows(path: Path, rows: Iterable[tuple[int, list[str]]], bad: dict[str, str],
                raise_errors: bool) -> dict[str, list[str]]:
  """id -> row; an empty or repeated id is an error (or marks that notebook bad)."""
  out: dict[str, list[str]] = {}
  for line, row in rows:
    nb_id = row[0].strip()
    if not nb_id:
      raise DataError(f"line {line}: empty notebook id", path=path)
    if nb_id in out:
      err = DataError(f"line {line}: duplicate notebook id (first seen earlier in the file)",
                      path=path, notebook_id=nb_id)
      if raise_errors:
        raise err
      bad.setdefault(nb_id, str(err))
      continue
    out[nb_id] = row
  return out


# ---------------------------------------------------------------------------
# A whole split.


def _list_json(split_dir: Path) -> list[tuple[str, int, int]]:
  """[(notebook id, size, mtime_ns)] of the split's JSON files, sorted by id."""
  out = []
  with os.scandir(split_dir) as it:
    for e in it:
      if e.name.endswith(".json") and not e.name.startswith("."):
        st = e.stat()
        out.append((e.name[:-5], st.st_size, st.st_mtime_ns))
  out.sort()
  return out


def _read_optional(path: Path) -> bytes | None:
  try:
    return path.read_bytes()
  except FileNotFoundError:
    return None
  except OSError as e:
    raise DataError(f"cannot read file: {e.strerror or e}", path=path) from None


def data_dirs(data_dir: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
  """The folders named by a `data_dir` value: one path, "A,B,C", or a list/tuple.

  A path that exists as a folder is one folder even if its name holds a comma.
  """
  if isinstance(data_dir, (list, tuple)):
    parts = [str(d) for d in data_dir]
  else:
    text = os.fspath(data_dir)
    parts = [text] if "," not in text or Path(text).is_dir() else text.split(",")
  parts = [p.strip() for p in parts]
  if not parts or any(not p for p in parts):
    raise ValueError(f"data_dir {data_dir!r}: empty folder name in the list")
  dirs = [Path(p) for p in parts]
  seen: set[Path] = set()
  for d in dirs:
    if d.resolve() in seen:
      raise ValueError(f"data_dir {data_dir!r}: folder {d} is listed twice")
    seen.add(d.resolve())
  return dirs


def folder_labels(dirs: Sequence[Path]) -> list[str]:
  """Names that tell the folders apart: their base names, index-prefixed on a clash."""
  names = [d.resolve().name or str(i) for i, d in enumerate(dirs)]
  if len(set(names)) == len(names):
    return names
  return [f"{i}-{n}" for i, n in enumerate(names)]


def load_split(data_dir: str | os.PathLike | Sequence[str | os.PathLike], split: str = "train",
               *, cache_dir: str | os.PathLike | None = None, on_error: str = "raise",
               max_notebooks: int | None = None) -> list[Notebook]:
  """Loads and validates one split of a competition-format folder (or of several).

  Args:
    data_dir: the folder D holding D/{split}/*.json and optional
      D/{split}_orders.csv and D/{split}_ancestors.csv. Several folders ("A,B" or
      a list) are read as one set: each is loaded (and cached) on its own, every
      ancestor id is namespaced by its folder ("nbcorpus2/89f593f7", see
      `folder_labels`) so groups never merge across folders, and a notebook id
      found in two folders is a DataError naming both.
    split: "train", "test", or any other folder name.
    cache_dir: if given, the validated split is cached there (an Arrow IPC file) under a
      fingerprint of the files (names, sizes, mtimes of the JSON files and the
      contents of the csv files); a later call with unchanged files reads the
      cache instead of the JSON. Any change makes a new entry.
    on_error: "raise" stops at the first problem with a DataError; "skip" drops
      each bad notebook and logs a warning that lists them with their reasons.
      Problems with a csv file as a whole (bad header, malformed row) always raise.
    max_notebooks: load only the first N notebooks (by id).

  Returns:
    The notebooks sorted by id, with `order` set when the orders file exists and
    `ancestor_id` set when the ancestors file lists the notebook.

  Raises:
    DataError: on bad data (see above).
    ValueError: on bad arguments.
  """
  dirs = data_dirs(data_dir)
  if len(dirs) > 1:
    return _load_folders(dirs, split, cache_dir=cache_dir, on_error=on_error,
                         max_notebooks=max_notebooks)
  data_dir = dirs[0]
  if on_error not in ("raise", "skip"):
    raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
  if not _SPLIT_RE.match(split):
    raise ValueError(f"bad split name {split!r}")
  if max_notebooks is not None and max_notebooks < 0:
    raise ValueError(f"max_notebooks must be >= 0, got {max_notebooks}")
  raise_errors = on_error == "raise"
  data_dir = Path(data_dir)
  split_dir = data_dir / split
  if not split_dir.is_dir():
    raise DataError(f"no folder for split {split!r} (expected {split}/*.json)", path=split_dir)
  entries = _list_json(split_dir)
  if not entries:
    raise DataError("no .json files in the folder", path=split_dir)
  all_ids = {e[0] for e in entries}
  all_entries = entries
  if max_notebooks is not None:
    entries = entries[:max_notebooks]
  orders_path = data_dir / f"{split}_orders.csv"
  ancestors_path = data_dir / f"{split}_ancestors.csv"
  orders_bytes = _read_optional(orders_path)
  ancestors_bytes = _read_optional(ancestors_path)

  cache_file = None
  if cache_dir is not None:
    fp = cache_lib.fingerprint(split=split, entries=all_entries, max_notebooks=max_notebooks,
                               blobs={"orders": orders_bytes, "ancestors": ancestors_bytes})
    cache_file = cache_lib.cache_path(cache_dir, split, fp)
    hit = cache_lib.read(cache_file)
    if hit is not None:
      notebooks, skipped = hit
      log.info("Loaded %d notebooks of %s/%s from cache %s", len(notebooks), data_dir, split,
               cache_file)
      if skipped and raise_errors:
        raise DataError(skipped[0][1])
      _warn_skipped(skipped, data_dir, split)
      return notebooks

  bad: dict[str, str] = {}  # notebook id -> reason
  orders: dict[str, list[str]] | None = None
  if orders_bytes is not None:
    _, rows = _read_csv(orders_path, orders_bytes, [_ORDERS_HEADER])
    orders = _index_rows(orders_path, rows, bad, raise_errors)
    for nb_id in sorted(orders.keys() - all_ids):
      err = DataError(f"listed in the orders file but there is no {split}/{nb_id}.json",
                      path=orders_path, notebook_id=nb_id)
      if raise_errors:
        raise err
      bad[nb_id] = str(err)
  ancestors: dict[str, list[str]] = {}
  if ancestors_bytes is not None:
    _, rows = _read_csv(ancestors_path, ancestors_bytes, _ANCESTORS_HEADERS)
    ancestors = _index_rows(ancestors_path, rows, bad, raise_errors)

  notebooks = []
  for nb_id, _, _ in entries:
    if nb_id in bad:
      continue
    path = split_dir / f"{nb_id}.json"
    try:
      order = None
      if orders is not None:
        if nb_id not in orders:
          raise DataError(f"has no row in {orders_path.name}", path=path, notebook_id=nb_id)
        order = orders[nb_id][1].split()
      anc = None
      if nb_id in ancestors:
        anc = ancestors[nb_id][1].strip()
        if not anc:
          raise DataError("empty ancestor_id", path=ancestors_path, notebook_id=nb_id)
      try:
        data = path.read_bytes()
      except OSError as e:
        raise DataError(f"cannot read file: {e.strerror or e}", path=path,
                        notebook_id=nb_id) from None
      notebooks.append(parse_notebook(data, nb_id, path, order=order, ancestor_id=anc))
    except DataError as e:
      if raise_errors:
        raise
      bad[nb_id] = str(e)

  skipped = sorted(bad.items())
  _warn_skipped(skipped, data_dir, split)
  if cache_file is not None:
    cache_lib.write(cache_file, notebooks, skipped)
  return notebooks


def _warn_skipped(skipped: list[tuple[str, str]], data_dir: Path, split: str) -> None:
  if skipped:
    lines = "\n".join(f"  {nb_id}: {reason}" for nb_id, reason in skipped)
    log.warning("Skipped %d bad notebooks of %s/%s:\n%s", len(skipped), data_dir, split, lines)


def _load_folders(dirs: Sequence[Path], split: str, *, cache_dir, on_error: str,
                  max_notebooks: int | None) -> list[Notebook]:
  """`load_split` of several folders: merged, ancestors namespaced, sorted by id."""
  if max_notebooks is not None and max_notebooks < 0:
    raise ValueError(f"max_notebooks must be >= 0, got {max_notebooks}")
  folder_of: dict[str, Path] = {}
  merged: list[Notebook] = []
  for label, d in zip(folder_labels(dirs), dirs):
    for nb in load_split(d, split, cache_dir=cache_dir, on_error=on_error):
      if nb.id in folder_of:
        raise DataError(f"notebook id is in two folders: {folder_of[nb.id] / split} and "
                        f"{d / split}; ids must be unique across data_dir folders",
                        notebook_id=nb.id)
      folder_of[nb.id] = d
      if nb.ancestor_id is not None:
        nb = dataclasses.replace(nb, ancestor_id=f"{label}/{nb.ancestor_id}")
      merged.append(nb)
  merged.sort(key=lambda nb: nb.id)
  return merged[:max_notebooks] if max_notebooks is not None else merged


def read_sources(data_dir: str | os.PathLike | Sequence[str | os.PathLike]) -> dict[str, str]:
  """notebook id -> source repository, from each folder's optional `sources.csv`.

  The file (nbcorpus, nbcorpus2, the sample) has a header with at least the
  columns `id` and `repo`; folders without it contribute nothing.
  """
  out: dict[str, str] = {}
  for d in data_dirs(data_dir):
    path = d / "sources.csv"
    data = _read_optional(path)
    if data is None:
      continue
    try:
      text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
      raise DataError(f"not valid UTF-8 (offset {e.start})", path=path) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not {"id", "repo"} <= set(reader.fieldnames or ()):
      raise DataError(f"header {reader.fieldnames} lacks the columns 'id' and 'repo'", path=path)
    try:
      for row in reader:
        if row["id"]:
          out[row["id"].strip()] = (row["repo"] or "").strip()
    except csv.Error as e:
      raise DataError(f"line {reader.line_num}: malformed CSV: {e}", path=path) from None
  return out
