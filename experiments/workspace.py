r"""The workspace layout for shell scripts, and the checks a job gets before the queue.

  python -m experiments.workspace path runs NAME     # -> $JAXRANK_HOME/runs/NAME
  python -m experiments.workspace path launch        # models, tokenizers, runs, data, ...
  python -m experiments.workspace check --module=experiments.train [--sweep=FILE] \
      -- --flagfile=F [FLAGS...]

`path` prints where the workspace (--workspace, else $JAXRANK_HOME, else
./workspace) keeps a thing (`jaxrank.store.PATHS`), so launch/*.sh never
re-spell the layout. `check` does what a job would do first, in a second: it
parses the entry point's flags with every override (each line of a sweep file
in turn), so an unknown flag or config key fails with a "did you mean"; it
checks that the data folder and split exist and that the store models and
tokenizers the config names are in the workspace. One line per problem on
stderr, exit 2; on success it prints `workdir_flag=1` when the module takes
--workdir (launch/train.sbatch appends it only then). launch/submit.sh and
launch/sweep.sh run it before every `sbatch` (and for `--dry_run`).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import shlex
import sys
from pathlib import Path

from absl import flags

from jaxrank import store

# Config keys people guess from other code bases -> ours.
_ALIASES = {"learning_rate": "lr", "num_epochs": "epochs", "batch_size": "cells_per_batch",
            "num_steps": "steps", "train_steps": "steps"}


class CheckError(Exception):
  pass


def _flatten(d, prefix="config."):
  out = []
  for k, v in d.items():
    if hasattr(v, "items"):
      out += _flatten(v, f"{prefix}{k}.")
    else:
      out.append(f"{prefix}{k}")
  return out


def _suggest(bad: str, known: list[str]) -> str:
  leaf = bad.rsplit(".", 1)[-1]
  leaf = _ALIASES.get(leaf, leaf)
  hits = ([k for k in known if k.rsplit(".", 1)[-1] == leaf]
          or difflib.get_close_matches(bad, known, n=2, cutoff=0.75))
  return f" (did you mean {' or '.join('--' + h for h in hits[:3])}?)" if hits else ""


def _config_keys(argv: list[str]) -> list[str]:
  """Every `config.*` flag of the --config file named in `argv` (flagfiles expanded)."""
  path = next((a.split("=", 1)[1] for a in reversed(argv) if a.startswith("--config=")), None)
  if not path or not Path(path).is_file():
    return []
  spec = importlib.util.spec_from_file_location("_checked_config", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return _flatten(mod.get_config())


def parse(module: str, argv: list[str]) -> flags.FlagValues:
  """The module's flags parsed from `argv` (as its job would); CheckError on a bad one."""
  importlib.import_module(module)
  fv = flags.FLAGS
  fv.unparse_flags()
  for name in [n for n in fv if n.startswith("config.")]:  # overrides of the last parse
    delattr(fv, name)
  expanded = lambda: fv.read_flags_from_files(["prog", *argv], force_gnu=False)
  sys.argv = ["prog", *argv]  # config_flags finds the `config.*` overrides in sys.argv
  try:
    rest = fv(["prog", *argv], known_only=False)
  except flags.UnrecognizedFlagError as e:
    known = [f for f in fv] + _config_keys(expanded())
    raise CheckError(f"unknown flag --{e.flagname}{_suggest(e.flagname, known)}") from None
  except (AttributeError, KeyError) as e:  # config_flags: no such key in the config
    known = _config_keys(expanded())
    bad = [a[2:].split("=", 1)[0] for a in expanded()
           if a.startswith("--config.") and a[2:].split("=", 1)[0] not in known]
    if not bad:
      raise CheckError(f"bad config override: {e}") from None
    raise CheckError(f"unknown config key --{bad[0]}{_suggest(bad[0], known)}") from None
  except flags.Error as e:
    raise CheckError(str(e).splitlines()[0]) from None
  if len(rest) > 1:
    raise CheckError(f"unexpected arguments {rest[1:]}")
  return fv


def _check_data(data_dir: str, split: str, what: str) -> None:
  if not data_dir:
    raise CheckError(f"{what} is not set (a competition-format folder)")
  d = Path(data_dir)
  if not d.is_dir():
    raise CheckError(f"{what}={data_dir}: no such folder")
  if split and not (d / split).is_dir():
    have = sorted(p.name for p in d.iterdir() if p.is_dir())
    raise CheckError(f"{what}={data_dir} has no split {split!r} (folders: {', '.join(have)})")


def _check_store(ws: store.Workspace, name: str, what: str, kinds=(store.MODEL,)) -> None:
  if not name:
    return
  for kind in kinds:
    if (ws.entry_dir(name, kind) / store.MANIFEST).is_file():
      return
  have = [m["name"] for kind in kinds for m in store.list_entries(ws, kind)]
  close = difflib.get_close_matches(name, have, n=1)
  hint = f" (did you mean {close[0]!r}?)" if close else f" (available: {', '.join(have) or 'none'})"
  raise CheckError(f"{what}={name!r}: no such {'/'.join(kinds)} in {ws.root}{hint}")


def check_values(fv: flags.FlagValues, ws: store.Workspace) -> None:
  """Data folders and store entries named by parsed flags (and their config)."""
  names = set(fv)
  if "config" in names and fv["config"].value is not None:
    c = fv["config"].value
    data = c.get("data", {})
    _check_data(data.get("data_dir", ""), data.get("split", ""), "--config.data.data_dir")
    feats, model = c.get("features", {}), c.get("model", {})
    if feats.get("kind") in ("encoder", "subword"):
      _check_store(ws, feats.get("encoder", ""), "--config.features.encoder")
      _check_store(ws, feats.get("tokenizer", ""), "--config.features.tokenizer",
                   (store.TOKENIZER, store.MODEL))
    _check_store(ws, model.get("encoder_name", ""), "--config.model.encoder_name")
    _check_store(ws, model.get("init_from", ""), "--config.model.init_from")
  if "data_dir" in names:
    split = fv["split"].value if "split" in names else ""
    _check_data(fv["data_dir"].value or "", split or "", "--data_dir")
  if "encoder" in names:
    _check_store(ws, fv["encoder"].value, "--encoder")


def check(module: str, argv: list[str], sweep_lines: list[str], workdir: str = "") -> bool:
  """True if the module takes --workdir (the job appends `--workdir=WORKDIR` then).
  Raises CheckError naming the sweep line."""
  importlib.import_module(module)
  if workdir and "workdir" in flags.FLAGS:
    argv = [*argv, f"--workdir={workdir}"]
  variants = [(None, argv)] + [(i, argv + shlex.split(line)) for i, line in enumerate(sweep_lines)]
  if sweep_lines:
    variants = variants[1:]
  takes_workdir = False
  for i, args in variants:
    where = f"sweep line {i + 1}: " if i is not None else ""
    try:
      fv = parse(module, args)
      ws = store.Workspace(store.default_workspace_root(
          fv["workspace"].value if "workspace" in fv else None, os.environ))
      check_values(fv, ws)
    except CheckError as e:
      raise CheckError(where + str(e)) from None
    takes_workdir = "workdir" in fv
  return takes_workdir


def main(argv: list[str]) -> int:
  usage = ("usage: python -m experiments.workspace path WHAT [NAME] | "
           "check --module=M [--sweep=FILE] [--workdir=W] -- FLAGS...")
  if len(argv) >= 2 and argv[0] == "path":
    ws = store.Workspace(store.default_workspace_root(None, os.environ))
    try:
      print(ws.path(argv[1], argv[2] if len(argv) > 2 else None))
    except store.StoreError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    return 0
  if argv and argv[0] == "check":
    module, sweep, workdir, rest = "experiments.train", None, "", argv[1:]
    while rest and rest[0] != "--":
      opt = rest.pop(0)
      if opt.startswith("--module="):
        module = opt.split("=", 1)[1]
      elif opt.startswith("--sweep="):
        sweep = opt.split("=", 1)[1]
      elif opt.startswith("--workdir="):
        workdir = opt.split("=", 1)[1]
      else:
        print(usage, file=sys.stderr)
        return 2
    flag_args = rest[1:]
    lines = []
    if sweep:
      lines = [l for l in Path(sweep).read_text().splitlines()
               if l.strip() and not l.lstrip().startswith("#")]
    try:
      takes_workdir = check(module, flag_args, lines, workdir)
    except CheckError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    print(f"workdir_flag={int(takes_workdir)}")
    return 0
  print(usage, file=sys.stderr)
  return 2


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
