"""The offline workspace and its store of models and tokenizers.

Compute nodes have no internet, so every artifact lives under one workspace root:

  ROOT/
    models/NAME/        an imported encoder (see below)
    tokenizers/NAME/    a tokenizer (`save_pretrained` files) + manifest.json
    runs/               training runs (checkpoints, results)
    data/               data caches

A stored model `models/NAME/` holds (`jaxrank.hf` writes and reads its files):

  manifest.json    name, kind, source, architecture, parameter count, sha256 and
                   size of every other file, created-at/-by, jaxrank version
  config.json      ours: {"architecture", "encoder": EncoderConfig fields}
  hf_config.json   the original Hugging Face config.json, byte for byte
  tokenizer/       the tokenizer's files (always with a tokenizer.json)
  params/          the encoder's parameters as an Orbax checkpoint

This module is the store itself: the workspace layout, entry names, manifests,
verification, listing and removal, and `add_entry`, which every writer of an
entry goes through. What an entry holds is `jaxrank.hf`'s business (importing
Hugging Face folders and pip packages, tokenizers, loading encoders by name).

Entries are built in a hidden temp folder beside their final place and renamed
into it, so a reader sees a complete entry or none. Two processes adding the
same name at once leave exactly one copy: the loser of the rename returns the
winner's manifest if both imported the *same source bytes* (same
`source_fingerprint`), and raises `EntryExistsError` otherwise. Adding a name
that already exists follows the same rule, which makes "import if missing" safe
to put at the top of every job script. To replace an entry, `remove` it first.

A process killed mid-import can leave a hidden `.NAME.*.tmp` folder; listings
ignore it, `stale_temp_dirs` finds such folders for deletion.

Only plain file operations: listing, verifying and removing entries import
neither jax nor transformers (~0.3 s for `experiments.store list`).
"""

from __future__ import annotations

import dataclasses
import datetime
import getpass
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import jaxrank
from jaxrank import io_utils

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ENV_HOME = "JAXRANK_HOME"
MODEL = "model"
TOKENIZER = "tokenizer"
KINDS = (MODEL, TOKENIZER)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

log = logging.getLogger(__name__)


class StoreError(Exception):
  """Base class of every error this module raises on purpose."""


class EntryExistsError(StoreError, FileExistsError):
  """The name is taken by a different entry."""


class EntryNotFoundError(StoreError, FileNotFoundError):
  """No entry of that name."""


class SourceError(StoreError, ValueError):
  """The folder / package to import from is unusable (missing or bad files; `jaxrank.hf`)."""


class CorruptEntryError(StoreError):
  """A stored entry's files do not match its manifest. `problems` lists each file."""

  def __init__(self, message: str, problems: list[str]):
    super().__init__(message)
    self.problems = problems


# ----------------------------------------------------------------------------------------
# Workspace.
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Workspace:
  """The one root every artifact lives under. Pass it explicitly; nothing reads env vars."""

  root: Path

  def __post_init__(self):
    object.__setattr__(self, "root", Path(self.root).expanduser().absolute())

  @property
  def models_dir(self) -> Path:
    return self.root / "models"

  @property
  def tokenizers_dir(self) -> Path:
    return self.root / "tokenizers"

  @property
  def runs_dir(self) -> Path:
    return self.root / "runs"

  @property
  def data_dir(self) -> Path:
    return self.root / "data"

  @property
  def notebook_cache_dir(self) -> Path:
    """Parsed competition splits (`jaxrank.data.cache`)."""
    return self.data_dir / "cache"

  @property
  def encoder_cache_dir(self) -> Path:
    """Frozen-encoder cell vectors (`jaxrank.text.encoder_features`)."""
    return self.data_dir / "encoder_cache"

  @property
  def launch_dir(self) -> Path:
    """Frozen flags of submitted SLURM jobs (launch/submit.sh)."""
    return self.root / "launch"

  @property
  def results_dir(self) -> Path:
    """The runs table, its plots and exports (`experiments.results`)."""
    return self.root / "results"

  def run_dir(self, name: str) -> Path:
    return self.runs_dir / validate_name(name)

  def path(self, what: str, name: str | None = None) -> Path:
    """`what` is one of PATHS; with `name`, the entry below it (`path("runs", "bow")`)."""
    if what not in PATHS:
      raise StoreError(f"unknown workspace path {what!r}; known: {', '.join(PATHS)}")
    base = getattr(self, PATHS[what])
    return base / validate_name(name) if name else base

  # Run configs and featurizers name store entries and caches by path. They are
  # saved with this root replaced by WORKSPACE_TOKEN and resolved against the
  # workspace in use when loaded, so a run copied to another workspace (or
  # machine) finds that workspace's models and caches.
  def portable(self, tree: Any) -> Any:
    """`tree` (JSON-like) with every path at or under this root as `$WORKSPACE[/rel]`."""
    return portable(tree, [self.root])

  def resolve(self, tree: Any) -> Any:
    """Inverse of `portable`, against this root."""
    return resolve(tree, self.root)

  def fill_run_config(self, config: Any) -> None:
    """Points a run config's empty store fields (`features.workspace`,
    `model.workspace`) and notebook cache (`data.cache_dir`) at this workspace.
    `config` is a (possibly locked) ConfigDict or a dict of dicts."""
    data = config["data"]
    if not data.get("cache_dir"):
      data["cache_dir"] = str(self.notebook_cache_dir)
    for name in ("features", "model"):
      group = config.get(name) or {}
      if "workspace" in group and not group["workspace"]:
        group["workspace"] = str(self.root)

  def ensure(self) -> Workspace:
    """Creates the four folders if missing; returns self."""
    for d in (self.models_dir, self.tokenizers_dir, self.runs_dir, self.data_dir):
      d.mkdir(parents=True, exist_ok=True)
    return self

  def entry_dir(self, name: str, kind: str = MODEL) -> Path:
    _check_kind(kind)
    return (self.models_dir if kind == MODEL else self.tokenizers_dir) / validate_name(name)


WORKSPACE_TOKEN = "$WORKSPACE"
# Workspace.path names -> attributes (the shell scripts ask for these through
# `python -m experiments.workspace path NAME`, so the layout is spelled once).
PATHS = {"root": "root", "models": "models_dir", "tokenizers": "tokenizers_dir",
         "runs": "runs_dir", "data": "data_dir", "launch": "launch_dir",
         "results": "results_dir", "cache": "notebook_cache_dir",
         "encoder_cache": "encoder_cache_dir"}


def _map_strings(tree: Any, fn: Callable[[str], str]) -> Any:
  if isinstance(tree, Mapping):
    return {k: _map_strings(v, fn) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [_map_strings(v, fn) for v in tree]
  return fn(tree) if isinstance(tree, str) else tree


def portable(tree: Any, roots: Iterable[str | os.PathLike]) -> Any:
  """`tree` with every path equal to or under one of `roots` written as `$WORKSPACE[/rel]`."""
  roots = sorted({os.path.normpath(os.fspath(r)) for r in roots if r}, key=len, reverse=True)

  def one(v: str) -> str:
    for root in roots:
      if v == root:
        return WORKSPACE_TOKEN
      if v.startswith(root + os.sep):
        return f"{WORKSPACE_TOKEN}/{Path(v).relative_to(root).as_posix()}"
    return v
  return _map_strings(tree, one)


def resolve(tree: Any, root: str | os.PathLike) -> Any:
  """Inverse of `portable`: `$WORKSPACE[/rel]` as paths under `root`."""
  root = Path(root)

  def one(v: str) -> str:
    if v == WORKSPACE_TOKEN:
      return str(root)
    if v.startswith(WORKSPACE_TOKEN + "/"):
      return str(root / v[len(WORKSPACE_TOKEN) + 1:])
    return v
  return _map_strings(tree, one)


def default_workspace_root(flag_value: str | None, environ: Mapping[str, str]) -> Path:
  """The root an entry point should use: --workspace, else $JAXRANK_HOME, else ./workspace."""
  for value in (flag_value, environ.get(ENV_HOME)):
    if value:
      return Path(value).expanduser().absolute()
  return Path("workspace").absolute()


def validate_name(name: str) -> str:
  """Entry names are folder names: letters, digits, '.', '_', '-'; no leading dot/dash."""
  if not isinstance(name, str) or not _NAME_RE.match(name):
    raise StoreError(f"invalid store name {name!r}: use 1-100 of [A-Za-z0-9._-], "
                     "starting with a letter or digit")
  return name


def _check_kind(kind: str) -> None:
  if kind not in KINDS:
    raise StoreError(f"kind must be one of {KINDS}, got {kind!r}")


# ----------------------------------------------------------------------------------------
# Hashing and manifests.
# ----------------------------------------------------------------------------------------


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(chunk):
      h.update(block)
  return h.hexdigest()


def _walk_files(folder: Path) -> list[str]:
  """Relative POSIX paths of every file below `folder`, manifest excluded, sorted."""
  out = []
  for p in folder.rglob("*"):
    if p.is_file() or p.is_symlink():
      rel = p.relative_to(folder).as_posix()
      if rel != MANIFEST:
        out.append(rel)
  return sorted(out)


def _hash_tree(folder: Path) -> dict[str, dict[str, Any]]:
  return {rel: {"sha256": sha256_file(folder / rel), "bytes": (folder / rel).stat().st_size}
          for rel in _walk_files(folder)}


def source_fingerprint(kind: str, files: Mapping[str, Path]) -> str:
  """sha256 over (role, sha256) of the source files: equal iff the same bytes were imported."""
  h = hashlib.sha256(f"jaxrank-store-v{FORMAT_VERSION}:{kind}\n".encode())
  for role in sorted(files):
    h.update(f"{role}\t{sha256_file(files[role])}\n".encode())
  return h.hexdigest()


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _created_by() -> dict[str, Any]:
  try:
    user = getpass.getuser()
  except Exception:  # no passwd entry in some containers
    user = None
  return {"host": socket.gethostname(), "pid": os.getpid(), "user": user}


def read_manifest(ws: Workspace, name: str, kind: str = MODEL) -> dict[str, Any]:
  """The manifest of entry `name`; EntryNotFoundError (listing what exists) if absent."""
  d = ws.entry_dir(name, kind)
  path = d / MANIFEST
  if not d.is_dir():
    have = [m["name"] for m in list_entries(ws, kind)]
    raise EntryNotFoundError(f"no {kind} named {name!r} in {d.parent} "
                             f"(available: {', '.join(have) or 'none'})")
  try:
    manifest = json.loads(path.read_text())
  except FileNotFoundError:
    raise CorruptEntryError(f"{kind} {name!r}: {path} is missing", [f"{MANIFEST}: missing"])
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CorruptEntryError(f"{kind} {name!r}: {path} is not valid JSON ({e})",
                            [f"{MANIFEST}: unreadable"]) from None
  if manifest.get("kind") != kind or manifest.get("name") != name:
    raise CorruptEntryError(
        f"{path}: manifest says kind={manifest.get('kind')!r} name={manifest.get('name')!r}, "
        f"expected {kind!r} {name!r}", [f"{MANIFEST}: wrong kind/name"])
  return manifest


def verify(ws: Workspace, name: str, kind: str = MODEL) -> dict[str, Any]:
  """Re-hashes every file of entry `name` against its manifest; returns the manifest.

  Raises CorruptEntryError whose message and `.problems` name each missing,
  unexpected or altered file.
  """
  manifest = read_manifest(ws, name, kind)
  d = ws.entry_dir(name, kind)
  expected: dict[str, dict[str, Any]] = manifest.get("files", {})
  actual = set(_walk_files(d))
  problems = [f"{rel}: missing" for rel in sorted(set(expected) - actual)]
  problems += [f"{rel}: not in the manifest" for rel in sorted(actual - set(expected))]
  for rel in sorted(set(expected) & actual):
    size = (d / rel).stat().st_size
    if size != expected[rel]["bytes"]:
      problems.append(f"{rel}: size {size} bytes, manifest says {expected[rel]['bytes']}")
      continue
    digest = sha256_file(d / rel)
    if digest != expected[rel]["sha256"]:
      problems.append(f"{rel}: sha256 {digest[:12]}..., manifest says "
                      f"{expected[rel]['sha256'][:12]}...")
  if problems:
    raise CorruptEntryError(f"{kind} {name!r} in {d} is corrupt: " + "; ".join(problems),
                            problems)
  return manifest


def list_entries(ws: Workspace, kind: str = MODEL) -> list[dict[str, Any]]:
  """Manifests of every entry of `kind`, by name. Unreadable ones: {"name", "problem"}."""
  _check_kind(kind)
  parent = ws.models_dir if kind == MODEL else ws.tokenizers_dir
  if not parent.is_dir():
    return []
  out = []
  for d in sorted(parent.iterdir()):
    if d.name.startswith(".") or not d.is_dir():
      continue  # temp folders of in-flight or killed imports
    try:
      out.append(read_manifest(ws, d.name, kind))
    except StoreError as e:
      out.append({"name": d.name, "kind": kind, "problem": str(e)})
  return out


def list_models(ws: Workspace) -> list[dict[str, Any]]:
  return list_entries(ws, MODEL)


def stale_temp_dirs(ws: Workspace) -> list[Path]:
  """Hidden temp folders left by killed imports / removals (safe to delete when no import runs)."""
  out = []
  for parent in (ws.models_dir, ws.tokenizers_dir):
    if parent.is_dir():
      out += sorted(p for p in parent.iterdir() if p.name.startswith(".") and p.is_dir())
  return out


def remove(ws: Workspace, name: str, kind: str = MODEL) -> None:
  """Deletes entry `name`: renamed to a hidden folder first, so no reader sees half of it."""
  d = ws.entry_dir(name, kind)
  if not d.is_dir():
    read_manifest(ws, name, kind)  # raises EntryNotFoundError listing what exists
  trash = Path(tempfile.mkdtemp(prefix=f".{name}.removing.", suffix=".tmp", dir=d.parent))
  os.rename(d, trash / name)
  shutil.rmtree(trash)


# ----------------------------------------------------------------------------------------
# Adding an entry.
# ----------------------------------------------------------------------------------------


def add_entry(ws: Workspace, name: str, kind: str, fingerprint: str,
              fill: Callable[[Path], Mapping[str, Any]]) -> dict[str, Any]:
  """Adds entry `name` of `kind`: `fill(folder)` writes its files into a hidden temp
  folder and returns the manifest's own fields (`source`, ...); the manifest (with
  every file's sha256) is added and the folder renamed into place.

  `fingerprint` (see `source_fingerprint`) names the source bytes: when `name` exists
  already, or another process wins the race for it, that entry's manifest is
  returned if it was made from the same bytes (nothing is written, `fill` may not
  run), else EntryExistsError.
  """
  validate_name(name)
  dest = ws.entry_dir(name, kind)
  if dest.exists():
    return _existing_if_identical(ws, name, kind, fingerprint)
  try:
    with io_utils.atomic_dir(dest) as tmp:
      fields = fill(tmp)
      manifest = {"format_version": FORMAT_VERSION, "kind": kind, "name": name,
                  "source_fingerprint": fingerprint, **fields, "created_at": _now(),
                  "created_by": _created_by(), "jaxrank_version": jaxrank.__version__,
                  "files": _hash_tree(tmp)}
      io_utils.atomic_write_json(tmp / MANIFEST, manifest)
  except FileExistsError:
    # Lost a race for `name`: fine if the winner added the same bytes.
    return _existing_if_identical(ws, name, kind, fingerprint)
  log.info("added %s %r (from %s) to %s", kind, name, fields.get("source"), dest)
  return manifest


def _existing_if_identical(ws: Workspace, name: str, kind: str, fingerprint: str):
  manifest = read_manifest(ws, name, kind)
  if manifest.get("source_fingerprint") != fingerprint:
    raise EntryExistsError(
        f"a different {kind} named {name!r} already exists in {ws.entry_dir(name, kind)} "
        f"(from {manifest.get('source')}); remove it first or pick another name")
  log.info("%s %r already holds this import; reusing it", kind, name)
  return manifest
