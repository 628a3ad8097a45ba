"""Results recorded beside every run, as plain files that outlive any service.

A run's workdir (`WS/runs/NAME/`) holds:

  config.json                  resolved config
  code_version.json            jaxrank version + sha256 of all jaxrank/ and
                               experiments/ .py sources (clusters have no git)
  run.json                     model, data_dir, status (running | preempted |
                               done | failed), steps, wall time, start/finish
                               times, host, jax devices, argv, ...
  metrics.jsonl                one JSON object per line:
                               {"step", "split", "time", "metrics": {...}}
  tb/                          the same scalars as TensorBoard events (tags
                               split/metric; one file per process start)
  eval/{split}.json            final metrics of a split
  eval/{split}_per_notebook.csv  id, n_cells, n_markdown, tau
  predictions/{split}.csv      Kaggle `id,cell_order`
  plots/                       training curves, tau by notebook length
  checkpoints/                 Orbax (written by jaxrank.checkpoint)

Every write but the metrics log is atomic (temp file + rename). The log is
append-only: each line goes out in one `write(2)` on an O_APPEND descriptor, so
a `kill -9` leaves at most a torn last line, which readers skip with a warning
and the next writer terminates before it appends.

Typical use in a trainer:

  rec = RunRecorder(workdir, enabled=jax.process_index() == 0)
  rec.write_config(config.to_dict(), argv=sys.argv)
  rec.update_run(status="running", model=config.model.name)
  rec.open_tensorboard(purge_step=resumed_step + 1)   # log() writes events too
  ...
  rec.log(step, "train", {"loss": loss})
  rec.flush()                                # at each checkpoint
  ...
  rec.close()
  rec.update_run(status="preempted", steps=step)   # or "done" / "failed"
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import math
import os
import socket
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

import jaxrank
from jaxrank import io_utils, store, submission, tensorboard

if TYPE_CHECKING:
  import pandas as pd

TAU_KEY = "kendall_tau"
STATUSES = ("running", "preempted", "done", "failed")
# The split whose eval metrics go unprefixed into the results table.
PRIMARY_SPLITS = ("val", "valid", "test")

CONFIG_FILE = "config.json"
CODE_VERSION_FILE = "code_version.json"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
EVAL_DIR = "eval"
PREDICTIONS_DIR = "predictions"
PLOTS_DIR = "plots"
TB_DIR = tensorboard.TB_DIR
# Spelled here too so that reading run folders needs neither Orbax nor the featurizers
# (test_results checks they agree with jaxrank.checkpoint and jaxrank.features).
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
FEATURIZER_DIR = "featurizer"

_log = logging.getLogger(__name__)


def _now_iso() -> str:
  return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _to_float(value: Any) -> float:
  # Accepts python/numpy/jax scalars and 0-d arrays.
  return float(value)


def _to_plain(obj: Any) -> Any:
  """Turns a config (ConfigDict, FrozenConfigDict, dataclass, ...) into JSON-able data."""
  if hasattr(obj, "to_dict") and callable(obj.to_dict):
    obj = obj.to_dict()
  if isinstance(obj, Mapping):
    return {str(k): _to_plain(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_to_plain(v) for v in obj]
  if isinstance(obj, (str, int, float, bool)) or obj is None:
    return obj
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:
    return obj.item()  # numpy / jax scalar
  return str(obj)


def _source_root() -> Path:
  return Path(__file__).resolve().parent.parent


def code_version() -> dict:
  """Identifies the code without git: package version + hash of all sources.

  The hash covers every `.py` file under `jaxrank/` and `experiments/` (sorted
  relative paths and their bytes), so two runs with equal `source_sha256` ran
  the same library and entry points.
  """
  root = _source_root()
  h = hashlib.sha256()
  n_files = 0
  for pkg in ("jaxrank", "experiments"):
    pkg_dir = root / pkg
    if not pkg_dir.is_dir():
      continue
    for path in sorted(pkg_dir.rglob("*.py")):
      rel = path.relative_to(root).as_posix()
      if "__pycache__" in rel:
        continue
      data = path.read_bytes()
      # Length-prefix both parts so no two file sets can hash the same.
      h.update(f"{len(rel)}:{rel}\n{len(data)}:".encode())
      h.update(data)
      n_files += 1
  return {
      "jaxrank_version": jaxrank.__version__,
      "source_sha256": h.hexdigest(),
      "n_source_files": n_files,
  }


class RunRecorder:
  """Writes a run's result files into `workdir`.

  With `enabled=False` (the non-main processes of a multi-host job) every
  method does nothing, so callers need no `if process_index == 0` around it.
  """

  def __init__(self, workdir: str | os.PathLike, *, enabled: bool = True):
    self.workdir = Path(workdir)
    self.enabled = enabled
    self._log_checked = False
    self._tb: tensorboard.ScalarWriter | None = None
    if enabled:
      self.workdir.mkdir(parents=True, exist_ok=True)

  # -- config and run.json --------------------------------------------------

  def write_config(self, config: Any, argv: Sequence[str] | None = None) -> None:
    """Writes config.json and code_version.json (and argv into run.json)."""
    if not self.enabled:
      return
    io_utils.atomic_write_json(self.workdir / CONFIG_FILE, _to_plain(config))
    io_utils.atomic_write_json(self.workdir / CODE_VERSION_FILE, code_version())
    if argv is not None:
      self.update_run(argv=list(argv))

  def read_run(self) -> dict:
    return read_run(self.workdir)

  def update_run(self, **fields: Any) -> None:
    """Merges `fields` into run.json (atomic rewrite).

    `status="running"` from a new process starts a segment: keeps the first
    `started` time, sets `segment_started`, host and pid, counts `n_starts`.
    `status="done"|"failed"` sets `finished`.
    """
    if not self.enabled:
      return
    if "status" in fields and fields["status"] not in STATUSES:
      raise ValueError(
          f"{self.workdir / RUN_FILE}: status {fields['status']!r} is not one of {STATUSES}")
    try:
      run = self.read_run()
    except ValueError as e:  # damaged (a full disk, a bad copy): keep it aside, start afresh
      aside = self.workdir / f"{RUN_FILE}.broken-{time.strftime('%Y%m%d-%H%M%S')}"
      os.replace(self.workdir / RUN_FILE, aside)
      _log.warning("%s; moved it to %s and starting a new record", e, aside)
      run = {}
    now = _now_iso()
    status = fields.get("status")
    host = socket.gethostname()
    if status == "running" and (run.get("status") != "running" or run.get("pid") != os.getpid()
                                or run.get("host") != host):
      # A new segment of the run (first start, or resumed after a requeue).
      run.setdefault("started", now)
      run["segment_started"] = now
      run["n_starts"] = int(run.get("n_starts", 0) or 0) + 1
      run["host"] = host
      run["pid"] = os.getpid()
      run["finished"] = None
    elif status in ("done", "failed") and "finished" not in fields:
      run["finished"] = now
    run.update(_to_plain(fields))
    run["updated"] = now
    io_utils.atomic_write_json(self.workdir / RUN_FILE, run)

  # -- metrics log ----------------------------------------------------------

  def open_tensorboard(self, purge_step: int | None = None) -> None:
    """From now on `log` also writes its scalars as TensorBoard events in tb/.

    `purge_step`: the first step this process logs (a resumed run's checkpoint
    step + 1); TensorBoard hides earlier files' points from it on.
    """
    self.close()
    self._tb = tensorboard.ScalarWriter(self.workdir / TB_DIR, purge_step=purge_step,
                                        enabled=self.enabled)

  def flush(self) -> None:
    """Puts the TensorBoard events logged so far on disk (metrics.jsonl always is)."""
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    """Flushes and closes the TensorBoard events file, if one is open."""
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def log(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
    """Appends one line to metrics.jsonl (in the file when this returns) and, after
    `open_tensorboard`, the same scalars as events tagged `split/name`."""
    if not self.enabled:
      return
    values = {str(k): _to_float(v) for k, v in metrics.items()}
    if self._tb is not None:
      self._tb.write(step, split, values)
    record = {"step": int(step), "split": str(split), "time": round(time.time(), 3),
              "metrics": values}
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    path = self.workdir / METRICS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # less the umask
    try:
      if not self._log_checked:
        # A kill -9 may have left a torn last line: end it so the new line stays whole.
        self._log_checked = True
        size = os.fstat(fd).st_size
        if size:
          with open(path, "rb") as f:
            f.seek(size - 1)
            if f.read(1) != b"\n":
              line = b"\n" + line
      os.write(fd, line)  # one syscall: a reader never sees half of it (local fs)
    finally:
      os.close(fd)

  # -- evaluation, predictions, plots --------------------------------------

  def write_eval(self, split: str, metrics: Mapping[str, Any],
                 per_notebook: "pd.DataFrame | None" = None) -> None:
    """Writes eval/{split}.json and, if given, eval/{split}_per_notebook.csv."""
    if not self.enabled:
      return
    out = {"split": split, "written": _now_iso(),
           "metrics": {str(k): _to_float(v) for k, v in metrics.items()}}
    io_utils.atomic_write_json(self.workdir / EVAL_DIR / f"{split}.json", out)
    if per_notebook is not None:
      required = ("id", "n_cells", "n_markdown", "tau")
      missing = [c for c in required if c not in per_notebook.columns]
      if missing:
        raise ValueError(
            f"{self.workdir / EVAL_DIR}: per-notebook table for split {split!r} lacks "
            f"columns {missing} (has {list(per_notebook.columns)})")
      io_utils.atomic_write_text(self.workdir / EVAL_DIR / f"{split}_per_notebook.csv",
                                 per_notebook.to_csv(index=False))

  def write_predictions(self, split: str, preds: Mapping[str, Sequence[str]]) -> Path:
    """Writes predictions/{split}.csv in Kaggle format (`id,cell_order`)."""
    path = self.workdir / PREDICTIONS_DIR / f"{split}.csv"
    if not self.enabled:
      return path
    return Path(submission.write_submission(path, preds))

  def make_plots(self) -> list[Path]:
    """Draws plots/training_curves.png and plots/tau_by_length_{split}.png."""
    if not self.enabled:
      return []
    paths = []
    metrics = read_metrics(self.workdir)
    if len(metrics):
      paths.append(plot_training_curves(metrics, self.workdir / PLOTS_DIR / "training_curves.png",
                                        title=self.workdir.name))
    for csv in sorted((self.workdir / EVAL_DIR).glob("*_per_notebook.csv")):
      import pandas as pd  # pylint: disable=g-import-not-at-top

      split = csv.name[: -len("_per_notebook.csv")]
      table = pd.read_csv(csv)
      if len(table):
        paths.append(plot_tau_by_length(
            table, self.workdir / PLOTS_DIR / f"tau_by_length_{split}.png",
            title=f"{self.workdir.name} ({split})"))
    return paths


# -- readers ------------------------------------------------------------------


def load_json_object(path: str | os.PathLike) -> dict:
  """A JSON object file; ValueError naming the file and what is wrong with it."""
  path = Path(path)
  data = path.read_bytes()
  if not data.strip():
    raise ValueError(f"{path}: empty file")
  try:
    obj = json.loads(data.decode("utf-8"))
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                     f"{e.start})") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}; "
                     f"truncated?)") from None
  if not isinstance(obj, dict):
    raise ValueError(f"{path}: a JSON {type(obj).__name__}, expected an object")
  return obj


def read_run(workdir: str | os.PathLike) -> dict:
  """run.json ({} if absent); ValueError naming the file if it is damaged."""
  path = Path(workdir) / RUN_FILE
  if not path.exists():
    return {}
  return load_json_object(path)


def read_metrics(workdir: str | os.PathLike) -> "pd.DataFrame":
  """Reads metrics.jsonl into a frame with columns step, split, time, <metrics>.

  A resumed run re-logs the steps after its last checkpoint: the last line per
  (split, step) wins. Torn or garbled lines (kill -9) are skipped with a warning
  and counted in `df.attrs["skipped_lines"]`.
  """
  import pandas as pd  # pylint: disable=g-import-not-at-top

  path = Path(workdir) / METRICS_FILE
  rows, skipped = [], 0
  if path.exists():
    with open(path, "rb") as f:
      for lineno, raw in enumerate(f, 1):
        if not raw.strip():
          continue
        try:
          rec = json.loads(raw)
          row = {"step": int(rec["step"]), "split": str(rec["split"]),
                 "time": float(rec.get("time", math.nan))}
          row.update({k: float(v) for k, v in rec.get("metrics", {}).items()})
        except (ValueError, KeyError, TypeError, AttributeError) as e:
          _log.warning("%s:%d: skipping unreadable line (%s): %r", path, lineno, e, raw[:80])
          skipped += 1
          continue
        rows.append(row)
  if not rows:
    df = pd.DataFrame(columns=["step", "split", "time"])
  else:
    df = pd.DataFrame(rows)
    df = df.drop_duplicates(subset=["split", "step"], keep="last")
    df = df.sort_values(["split", "step"], kind="stable").reset_index(drop=True)
  df.attrs["skipped_lines"] = skipped
  return df


def read_eval(workdir: str | os.PathLike, problems: list[str] | None = None
              ) -> dict[str, dict[str, float]]:
  """Returns {split: metrics} from eval/*.json.

  A damaged file raises ValueError naming it, or, given a `problems` list, is
  skipped and described there.
  """
  out = {}
  for path in sorted((Path(workdir) / EVAL_DIR).glob("*.json")):
    try:
      data = load_json_object(path)
    except ValueError as e:
      if problems is None:
        raise
      problems.append(f"{EVAL_DIR}/{path.name}: {str(e).split(': ', 1)[-1]}")
      continue
    out[data.get("split", path.stem)] = dict(data.get("metrics", {}))
  return out


# The metrics a person reads first, in this order (`format_metrics`).
HEADLINE = (TAU_KEY, "tau_mean", "pairwise_accuracy", "markdown_placement_accuracy",
            "mean_abs_position_error", "n_notebooks")


def format_metrics(table: Mapping[str, Any], keys: Sequence[str] = HEADLINE) -> str:
  """`kendall_tau 0.6123 | tau_mean 0.5871 | ... | n_notebooks 40`: one short line."""
  parts = []
  for k in keys:
    if k in table:
      v = _to_float(table[k])
      parts.append(f"{k} {int(v)}" if float(v).is_integer() and abs(v) >= 1 else f"{k} {v:.4f}")
  return " | ".join(parts)


def _get(d: Mapping, dotted: str) -> Any:
  for key in dotted.split("."):
    if not isinstance(d, Mapping) or key not in d:
      return None
    d = d[key]
  return d


# Table column -> config key: what tells runs of one comparison apart.
HYPERPARAMETERS = {"fold": "data.fold", "n_folds": "data.n_folds", "lr": "optim.lr",
                   "seed": "train.seed", "epochs": "train.epochs", "max_steps": "train.steps",
                   "features": "features.kind", "encoder": "features.encoder",
                   "hidden_dim": "model.hidden_dim"}
# Keys that differ between the runs of one recipe (its folds and seeds) or only
# say where things are.
_NOT_RECIPE = ("data.fold", "data.seed", "train.seed", "data.cache_dir", "features.workspace",
               "model.workspace", "features.cache_dir")


def recipe_id(config: Mapping[str, Any]) -> str:
  """A short hash of the config without fold, seeds and paths: the folds and
  seeds of one recipe (or one point of a sweep) share it."""
  flat = {}

  def walk(d, prefix=""):
    for k, v in d.items():
      if isinstance(v, Mapping):
        walk(v, f"{prefix}{k}.")
      elif f"{prefix}{k}" not in _NOT_RECIPE:
        flat[f"{prefix}{k}"] = v
  walk(config)
  blob = json.dumps(flat, sort_keys=True, default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:8]


def group_runs(runs: "pd.DataFrame", metric: str = TAU_KEY) -> "pd.DataFrame":
  """One row per recipe with >= 1 scored run: its runs, folds, `metric` mean and std
  (std 0 for a single run), best mean first."""
  import pandas as pd  # pylint: disable=g-import-not-at-top

  cols = ["group", "model", "n_runs", "folds", "runs", f"{metric}_mean", f"{metric}_std"]
  if runs.empty or metric not in runs.columns or "recipe" not in runs.columns:
    return pd.DataFrame(columns=cols)
  rows = []
  for recipe, g in runs[runs[metric].notna()].groupby("recipe", sort=False):
    names = sorted(g["run"])
    prefix = os.path.commonprefix(names).rstrip("-_.") if len(names) > 1 else names[0]
    vals = g[metric].astype(float)
    rows.append({"group": prefix or recipe, "model": g["model"].iloc[0], "n_runs": len(g),
                 "folds": ",".join(str(int(f)) for f in sorted(g["fold"].dropna().unique()))
                 if "fold" in g else "",
                 "runs": " ".join(names), f"{metric}_mean": float(vals.mean()),
                 f"{metric}_std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0})
  df = pd.DataFrame(rows, columns=cols)
  return df.sort_values(f"{metric}_mean", ascending=False, kind="stable").reset_index(drop=True)


def collect_runs(workspace_root: str | os.PathLike) -> "pd.DataFrame":
  """One row per run folder under `workspace_root/runs/`, best Kendall tau first.

  Columns: run, model, data, status, steps, wall_time_s, n_starts, started,
  finished, source_sha256, eval_split, the primary split's metrics (val, else
  test, else the only one) unprefixed, other splits' metrics as `split/metric`,
  and `problems`: what is wrong with the run's record ("" if nothing). A damaged
  file (empty, truncated, not JSON, garbled metrics lines) never hides the
  table: the run is listed with what could be read and the problem named.
  """
  import pandas as pd  # pylint: disable=g-import-not-at-top

  runs_dir = store.Workspace(workspace_root).runs_dir
  rows = []
  if runs_dir.is_dir():
    for workdir in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
      if not any((workdir / f).exists() for f in (RUN_FILE, CONFIG_FILE, METRICS_FILE)):
        continue
      rows.append(_run_row(workdir))
  if not rows:
    return pd.DataFrame(columns=["run", "model", "data", "status", "steps", "wall_time_s",
                                 TAU_KEY])
  df = pd.DataFrame(rows)
  if TAU_KEY not in df.columns:
    df[TAU_KEY] = math.nan
  # Metric columns after the descriptive ones, tau first.
  fixed = ["run", "model", "data", "status", "steps", "wall_time_s", TAU_KEY]
  df = df[fixed + [c for c in df.columns if c not in fixed]]
  return df.sort_values(TAU_KEY, ascending=False, na_position="last",
                        kind="stable").reset_index(drop=True)


def _run_row(workdir: Path) -> dict:
  """One run's row; what cannot be read is skipped and described in `problems`."""
  problems: list[str] = []

  def read(name: str) -> dict:
    if not (workdir / name).exists():
      return {}
    try:
      return load_json_object(workdir / name)
    except (ValueError, OSError) as e:
      problems.append(f"{name}: {str(e).split(': ', 1)[-1]}")
      return {}

  run, config, code = read(RUN_FILE), read(CONFIG_FILE), read(CODE_VERSION_FILE)
  try:
    evals = read_eval(workdir, problems)
    m = read_metrics(workdir)
  except OSError as e:
    problems.append(str(e))
    evals, m = {}, None
  if m is not None and m.attrs.get("skipped_lines"):
    problems.append(f"{METRICS_FILE}: {m.attrs['skipped_lines']} unreadable line(s) skipped")
  steps = run.get("steps")
  if steps is None and m is not None and len(m):
    steps = int(m["step"].max())
  row = {
      "run": workdir.name,
      "model": run.get("model") or _get(config, "model.name"),
      "data": run.get("data_dir") or _get(config, "data.data_dir"),
      "status": run.get("status"),
      "steps": steps,
      "wall_time_s": run.get("wall_time_s", run.get("wall_s")),
      "n_starts": run.get("n_starts"),
      "started": run.get("started"),
      "finished": run.get("finished"),
      "source_sha256": (code.get("source_sha256") or "")[:12] or None,
      "problems": "; ".join(problems),
  }
  row.update({col: _get(config, key) for col, key in HYPERPARAMETERS.items()})
  row["recipe"] = recipe_id(config) if config else None
  primary = next((s for s in PRIMARY_SPLITS if s in evals), None)
  if primary is None and len(evals) == 1:
    primary = next(iter(evals))
  row["eval_split"] = primary
  if primary is not None:
    row.update(evals[primary])
  for split, metrics in evals.items():
    if split != primary:
      row.update({f"{split}/{k}": v for k, v in metrics.items()})
  return row


# -- export -----------------------------------------------------------------


def _is_checkpoint(path: Path) -> bool:
  """Orbax checkpoint folders: `checkpoints/`, or any step folder Orbax wrote."""
  return path.name == CHECKPOINTS_DIR or (path / "_CHECKPOINT_METADATA").exists()


def featurizer_jsons(run: Path) -> list[Path]:
  return sorted((run / FEATURIZER_DIR).glob("*.json"))


def store_entries(run: str | os.PathLike) -> list[tuple[tuple[str, ...], str]]:
  """(kinds to look in, name) of every store entry a run folder names: its featurizer's
  encoder / tokenizer (a tokenizer name may be a model's) and `model.encoder_name`."""
  run = Path(run)
  config = load_json_object(run / CONFIG_FILE)
  out: list[tuple[tuple[str, ...], str]] = []
  for path in featurizer_jsons(run):
    feat = load_json_object(path)
    out += [((store.MODEL,), feat.get("encoder")),
            ((store.TOKENIZER, store.MODEL), feat.get("tokenizer"))]
  feats = config.get("features") or {}
  if feats.get("kind") in ("encoder", "subword"):
    out += [((store.MODEL,), feats.get("encoder")),
            ((store.TOKENIZER, store.MODEL), feats.get("tokenizer"))]
  out.append(((store.MODEL,), (config.get("model") or {}).get("encoder_name")))
  return list(dict.fromkeys((kinds, n) for kinds, n in out if isinstance(n, str) and n))


def checkpoint_to_copy(run: Path) -> tuple[str, Path]:
  """(folder name, step folder) that prediction (`train.load_predictor(best=True)`)
  restores: the newest step of best/, else of checkpoints/."""
  for sub in (BEST_DIR, CHECKPOINTS_DIR):
    steps = [p for p in (run / sub).glob("*") if p.is_dir() and p.name.isdigit()]
    if steps:
      return sub, max(steps, key=lambda p: int(p.name))
  raise FileNotFoundError(f"{run}: no checkpoint (neither best/ nor checkpoints/ has a step): "
                          "train the run first")


def _prediction_files(ws: store.Workspace, run: Path) -> list[Path]:
  """The checkpoint prediction restores and the store entries a run names."""
  _, step = checkpoint_to_copy(run)
  files = [p for p in step.rglob("*") if p.is_file()]
  for kinds, name in store_entries(run):
    entry = next((ws.entry_dir(name, k) for k in kinds if ws.entry_dir(name, k).is_dir()), None)
    if entry is None:
      raise FileNotFoundError(f"run {run.name} names store entry {name!r}, which {ws.root} lacks")
    files += [p for p in entry.rglob("*") if p.is_file()]
  return files


def export(workspace: str | os.PathLike, out: Path, *, with_models: bool = False,
           runs: list[str] | None = None) -> tuple[Path, int]:
  """Packs runs/*/ minus checkpoints (and results/) into `out`; returns (out, n_files).

  `with_models`: also each run's best checkpoint and the store entries it names.
  """
  ws = store.Workspace(workspace)
  if not ws.runs_dir.is_dir():
    raise FileNotFoundError(f"{ws.runs_dir}: no runs to export")
  run_dirs = [ws.run_dir(r) for r in runs] if runs else sorted(
      p for p in ws.runs_dir.iterdir() if p.is_dir())
  members: list[Path] = []
  for run in run_dirs:
    if not run.is_dir():
      raise FileNotFoundError(f"no run {run.name!r} under {ws.runs_dir}")
    for root, dirs, files in os.walk(run):
      root_p = Path(root)
      dirs[:] = sorted(d for d in dirs if not _is_checkpoint(root_p / d))
      members += [root_p / f for f in sorted(files) if not f.startswith(".")]
    if with_models:
      members += _prediction_files(ws, run)
  if ws.results_dir.is_dir() and not runs:
    members += sorted(p for p in ws.results_dir.rglob("*") if p.is_file() and p != out)
  members = list(dict.fromkeys(members))  # a model two runs share goes in once
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(f".{out.name}.tmp")
  with tarfile.open(tmp, "w:gz") as tar:
    for path in members:
      tar.add(path, arcname=str(Path(ws.root.name) / path.relative_to(ws.root)),
              recursive=False)
  os.replace(tmp, out)  # atomic: never a half-written tarball under the final name
  return out, len(members)


# -- plots --------------------------------------------------------------------


def _save_figure(fig, path: Path) -> Path:
  buf = io.BytesIO()
  fig.tight_layout()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  plt.close(fig)
  return io_utils.atomic_write_bytes(path, buf.getvalue())


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  return plt


def plot_training_curves(metrics: "pd.DataFrame", path: str | os.PathLike,
                         title: str = "") -> Path:
  """One panel per metric: train loss and validation tau (and any others) vs step."""
  plt = _pyplot()
  names = [c for c in metrics.columns if c not in ("step", "split", "time")]
  have = [(split, name) for split in sorted(metrics["split"].unique()) for name in names
          if metrics.loc[metrics["split"] == split, name].notna().any()]
  preferred = [("train", "loss"), ("val", TAU_KEY), ("val", "loss"), ("train", "grad_norm"),
               ("train", "lr")]
  panels = [p for p in preferred if p in have]
  if len(panels) < 2:  # unknown metric names: show what there is
    panels += [p for p in have if p not in panels][:4 - len(panels)]
  fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.2 * max(len(panels), 1), 3.3),
                           squeeze=False)
  for ax, (split, name) in zip(axes[0], panels):
    sub = metrics[(metrics["split"] == split) & metrics[name].notna()]
    ax.plot(sub["step"], sub[name], marker="." if len(sub) < 50 else None)
    ax.set_xlabel("step")
    ax.set_title(f"{split} {name}")
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  return _save_figure(fig, Path(path))


def plot_tau_by_length(per_notebook: "pd.DataFrame", path: str | os.PathLike,
                       title: str = "") -> Path:
  """Kendall tau per notebook against its cell count, with binned means."""
  plt = _pyplot()
  df = per_notebook[per_notebook["tau"].notna()]
  fig, ax = plt.subplots(figsize=(6, 3.8))
  ax.scatter(df["n_cells"], df["tau"], s=6, alpha=0.35, label="notebook")
  if len(df):
    edges = np.unique(np.geomspace(max(df["n_cells"].min(), 1), df["n_cells"].max() + 1, 9)
                      .round().astype(int))
    if len(edges) >= 2:
      bins = np.digitize(df["n_cells"], edges[1:-1])
      centers, means = [], []
      for b in range(len(edges) - 1):
        sel = df[bins == b]
        if len(sel):
          centers.append(sel["n_cells"].median())
          means.append(sel["tau"].mean())
      ax.plot(centers, means, color="C3", marker="o", label="binned mean")
  ax.set_xscale("log")
  ax.set_xlabel("cells in notebook")
  ax.set_ylabel("Kendall tau")
  ax.grid(alpha=0.3)
  ax.legend(loc="lower left")
  if title:
    ax.set_title(title)
  return _save_figure(fig, Path(path))


def plot_comparison(runs: "pd.DataFrame", path: str | os.PathLike,
                    metric: str = TAU_KEY) -> Path:
  """Horizontal bars of `metric` per recipe (`group_runs`): the mean, with the std
  over its runs (folds, seeds) as error bars; the axis starts near the data."""
  plt = _pyplot()
  groups = group_runs(runs, metric)
  df = groups.sort_values(f"{metric}_mean")
  mean, std = df[f"{metric}_mean"], df[f"{metric}_std"]
  fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(df), 1) + 1.2))
  labels = [f"{r.group} ({r.model}, n={r.n_runs})" for r in df.itertuples()]
  if len(df):
    ax.barh(labels, mean, xerr=std, capsize=3, color="C0", ecolor="black")
    lo, hi = float((mean - std).min()), float((mean + std).max())
    pad = max(0.15 * (hi - lo), 0.01)
    ax.set_xlim(lo - pad, hi + 2 * pad)  # room for the labels
    for i, (m, e) in enumerate(zip(mean, std)):
      ax.text(m + e, i, f" {m:.4f}" + (f" ± {e:.4f}" if e else ""), va="center", fontsize=8)
  ax.set_xlabel(metric)
  ax.grid(axis="x", alpha=0.3)
  ax.set_title(f"{metric} by recipe (mean ± std over its runs)" if len(df)
               else f"no runs with {metric} yet")
  return _save_figure(fig, Path(path))


def plot_learning_curves(workspace_root: str | os.PathLike, runs: Sequence[str],
                         path: str | os.PathLike, metric: str = TAU_KEY) -> Path:
  """Validation `metric` against step, one line per run, in one plot."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7, 4))
  drawn = 0
  for name in runs:
    m = read_metrics(store.Workspace(workspace_root).runs_dir / name)
    if not len(m) or metric not in m.columns:
      continue
    val = m[(m["split"] == "val") & m[metric].notna()]
    if len(val):
      ax.plot(val["step"], val[metric], marker="." if len(val) < 30 else None, label=name)
      drawn += 1
  ax.set_xlabel("step")
  ax.set_ylabel(f"val {metric}")
  ax.grid(alpha=0.3)
  if drawn:
    ax.legend(fontsize=7, loc="lower right", ncol=1 + drawn // 12)
  ax.set_title(f"validation {metric} while training" if drawn else "no validation curves yet")
  return _save_figure(fig, Path(path))
