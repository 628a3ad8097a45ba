"""Kaggle submission bundles: trained runs and what they need, in one folder.

AI4Code was a code competition: the submission runs in a Kaggle notebook with no
internet. A bundle is one folder to upload as a Kaggle dataset:

  B/
    bundle.json        what is inside: member runs, store entries, code version, Python
    predict.py         python B/predict.py --data_dir=D --split=test --output=submission.csv
    submit.ipynb       the Kaggle notebook: a venv from B/wheels, then predict.py
    wheels/            jaxrank's own wheel and every wheel it needs (pip --no-index)
    workspace/
      models/NAME/     store entries the runs name (manifests kept: `store.verify` works)
      tokenizers/NAME/
      runs/NAME/       config.json, run.json, featurizer/, one checkpoint (best, else newest)

`pack` (library side of `experiments.bundle`) fills `workspace/` from one run,
several (A,B,C) or an ensemble run (flattened into its member runs, which
predict exactly as the ensemble did). Paths the runs' configs and featurizers
hold under their workspace are saved as `$WORKSPACE/...`, and vector caches
always as `$WORKSPACE/data/...`.

The bundle is read-only on Kaggle (`/kaggle/input/...`), and predicting writes
(encoder vector caches, Orbax's folders), so `materialize` builds a writable
workspace in a scratch folder: models/ and tokenizers/ and each run's
checkpoint folders are symlinks into the bundle, the small run files are
copied with `$WORKSPACE` resolved against the scratch folder, data/ is fresh.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from jaxrank import checkpoint, ensemble, features, io_utils, results, store

BUNDLE_FILE = "bundle.json"
FORMAT_VERSION = 1
WORKSPACE = "workspace"
WHEELS = "wheels"
TOKEN = store.WORKSPACE_TOKEN  # a path relative to the workspace in use
CHECKPOINT_DIRS = (results.BEST_DIR, results.CHECKPOINTS_DIR)  # in the order predict restores
_RUN_FILES = ("config.json", "run.json")


class BundleError(ValueError):
  """A run or store entry cannot be bundled, or a folder is not a usable bundle."""


# ----------------------------------------------------------------------------------------
# Path rewriting.
# ----------------------------------------------------------------------------------------
portable = store.portable  # (tree, roots): paths under the roots as `$WORKSPACE/...`
resolve = store.resolve  # (tree, root): the inverse


# ----------------------------------------------------------------------------------------
# What a run needs.
# ----------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise BundleError(f"{path}: cannot read it ({e})") from None


def _run_jsons(run: Path) -> list[Path]:
  return [run / name for name in _RUN_FILES if (run / name).is_file()]


def _run_roots(run: Path) -> list[str]:
  """The workspace roots a run's config / featurizer name (`$WORKSPACE`: the run's own)."""
  run = run.absolute()
  own = str(run.parent.parent)
  tree = [_read_json(run / "config.json")] + [_read_json(p) for p in results.featurizer_jsons(run)]
  roots = [own] if run.parent.name == "runs" else []

  def visit(t):
    if isinstance(t, Mapping):
      for k, v in t.items():
        if k == "workspace" and isinstance(v, str) and v:
          roots.append(own if v.startswith(TOKEN) else v)
        else:
          visit(v)
  visit(tree)
  return list(dict.fromkeys(roots))


def _copy_tree(src: Path, dst: Path) -> None:
  """Files and folders of `src` into `dst` with fresh permissions (the umask's), so a
  copy of a read-only bundle is writable."""
  dst.mkdir(parents=True, exist_ok=True)
  for entry in sorted(src.iterdir()):
    if entry.is_dir():
      _copy_tree(entry, dst / entry.name)
    else:
      shutil.copyfile(entry, dst / entry.name)


def _rewrite_json(path: Path, fn: Callable[[Any], Any]) -> None:
  io_utils.atomic_write_json(path, fn(_read_json(path)))


def _bundle_paths(tree: Any, roots: Sequence[str]) -> Any:
  """A config / featurizer made portable; caches always in the bundle's workspace."""
  tree = portable(tree, roots)
  if isinstance(tree, dict):
    if tree.get("cache_dir"):  # encoder featurizer: vectors are computed on the spot
      tree["cache_dir"] = f"{TOKEN}/data/encoder_cache"
    for group, default in (("data", "data/cache"), ("features", "data/encoder_cache")):
      if isinstance(tree.get(group), dict) and tree[group].get("cache_dir"):
        tree[group]["cache_dir"] = f"{TOKEN}/{default}"
  return tree


def _pack_run(run: Path, dst: Path) -> None:
  roots = _run_roots(run)
  for name in _RUN_FILES:
    if (run / name).is_file():
      shutil.copyfile(run / name, dst / name)
  if (run / features.FOLDER).is_dir():
    _copy_tree(run / features.FOLDER, dst / features.FOLDER)
  for path in [*_run_jsons(dst), *results.featurizer_jsons(dst)]:  # run.json: its "workspace"
    _rewrite_json(path, lambda t: _bundle_paths(t, roots))
  sub, step = results.checkpoint_to_copy(run)
  _copy_tree(step, dst / sub / step.name)
  try:  # the copy restores (no model code needed), or the bundle is not written
    checkpoint.restore_params(dst, step=int(step.name), best=sub == results.BEST_DIR)
  except Exception as e:  # pylint: disable=broad-except  # Orbax raises many kinds
    why = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    raise BundleError(f"run {run}: its checkpoint {sub}/{step.name} does not restore "
                      f"({why}); retrain it or bundle another run") from None


def _pack_entry(src_roots: Sequence[str], kinds: Sequence[str], name: str, ws: store.Workspace,
                run: Path) -> dict[str, Any]:
  for root in src_roots:
    src = store.Workspace(root)
    for kind in kinds:
      if src.entry_dir(name, kind).is_dir():
        manifest = store.read_manifest(src, name, kind)
        dst = ws.entry_dir(name, kind)
        if dst.exists():
          have = store.read_manifest(ws, name, kind)
          if have.get("source_fingerprint") != manifest.get("source_fingerprint"):
            raise BundleError(f"two runs name different {kind}s called {name!r} (one in "
                              f"{src.root}); the bundle can hold only one")
        else:
          _copy_tree(src.entry_dir(name, kind), dst)
          store.verify(ws, name, kind)  # the copy is whole (every file's sha256)
        return {"kind": kind, "name": name,
                "source_fingerprint": manifest.get("source_fingerprint")}
  raise BundleError(f"run {run} names store {'/'.join(kinds)} {name!r}, which none of "
                    f"{', '.join(src_roots)} holds")


def pack(spec: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike,
         **info: Any) -> dict[str, Any]:
  """Copies the runs named by `spec` (a run, "A,B,C", an ensemble run) and the store
  entries they name into `out/workspace/`; writes `out/bundle.json`. `info` goes into
  bundle.json. Returns its contents.
  """
  out = Path(out)
  ws = store.Workspace(out / WORKSPACE).ensure()
  members, entries, names = [], [], set()
  for run in ensemble.member_dirs(spec):
    name = base = run.absolute().name
    i = 1
    while name in names:  # runs/a of two workspaces
      i += 1
      name = f"{base}-{i}"
    names.add(name)
    dst = ws.runs_dir / name
    dst.mkdir()
    _pack_run(run, dst)
    for kinds, entry in results.store_entries(run):
      got = _pack_entry(_run_roots(run), kinds, entry, ws, run)
      if got not in entries:
        entries.append(got)
    members.append({"run": f"runs/{name}", "source": str(run.absolute())})
  manifest = {"format": FORMAT_VERSION, "members": members, "store": entries,
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                  timespec="seconds"), **info}
  io_utils.atomic_write_json(out / BUNDLE_FILE, manifest)
  return manifest


# ----------------------------------------------------------------------------------------
# Using a bundle.
# ----------------------------------------------------------------------------------------
def read(bundle_dir: str | os.PathLike) -> dict[str, Any]:
  path = Path(bundle_dir) / BUNDLE_FILE
  if not path.is_file():
    raise BundleError(f"{bundle_dir} is not a jaxrank bundle (no {BUNDLE_FILE}); make one with "
                      "python -m experiments.bundle")
  manifest = _read_json(path)
  if manifest.get("format") != FORMAT_VERSION or not manifest.get("members"):
    raise BundleError(f"{path}: format {manifest.get('format')!r} with "
                      f"{len(manifest.get('members') or [])} members; this jaxrank reads "
                      f"format {FORMAT_VERSION} with at least one member")
  return manifest


def _link(link: Path, target: Path) -> None:
  if link.is_symlink() or link.is_file():
    link.unlink()
  elif link.is_dir():
    shutil.rmtree(link)
  link.symlink_to(target.absolute(), target_is_directory=True)


def materialize(bundle_dir: str | os.PathLike, scratch: str | os.PathLike) -> str:
  """Builds a writable workspace in `scratch` from the (maybe read-only) bundle and
  returns the `--workdir` spec of its runs ("S/runs/a" or "S/runs/a,S/runs/b").

  Run again on the same `scratch` it rebuilds the runs and links and keeps data/
  (the vector caches of an earlier call).
  """
  bundle_dir, scratch = Path(bundle_dir).absolute(), Path(scratch).absolute()
  manifest = read(bundle_dir)
  src = store.Workspace(bundle_dir / WORKSPACE)
  ws = store.Workspace(scratch)
  ws.root.mkdir(parents=True, exist_ok=True)
  ws.data_dir.mkdir(exist_ok=True)
  for sub in (src.models_dir, src.tokenizers_dir):
    _link(ws.root / sub.name, sub)
  runs = []
  for m in manifest["members"]:
    run_src, run = bundle_dir / WORKSPACE / m["run"], ws.root / m["run"]
    if not (run_src / "config.json").is_file():
      raise BundleError(f"{bundle_dir / BUNDLE_FILE} lists {m['run']}, which the bundle lacks")
    if run.exists():
      shutil.rmtree(run)
    run.mkdir(parents=True)
    for entry in sorted(run_src.iterdir()):
      if entry.name in CHECKPOINT_DIRS:
        _link(run / entry.name, entry)
      elif entry.is_dir():
        _copy_tree(entry, run / entry.name)
      else:
        shutil.copyfile(entry, run / entry.name)
    for path in [*_run_jsons(run), *results.featurizer_jsons(run)]:
      _rewrite_json(path, lambda t: resolve(t, ws.root))
    runs.append(str(run))
  return ",".join(runs)
