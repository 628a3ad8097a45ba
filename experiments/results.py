r"""Compares all runs of a workspace; packs their results to carry off the cluster.

  python -m experiments.results --workspace=W      # table -> stdout, W/results/
  python -m experiments.results export --workspace=W --out=results.tar.gz

The table has one row per run folder under W/runs/ (model, data, status, steps,
wall time, Kendall tau and the other final metrics), best tau first; it is also
written as W/results/runs.csv and W/results/runs.md, with a bar plot of tau per
run in W/results/kendall_tau.png. `export` packs every run's small files (all
but Orbax checkpoints) into one tarball. Workspace: --workspace, else
$JAXRANK_HOME, else ./workspace.
"""

from __future__ import annotations

import math
import os
import sys
import tarfile
from pathlib import Path

from absl import app, flags

from experiments import common
from jaxrank import io_utils, results

_OUT = flags.DEFINE_string("out", None, "export: the tarball to write "
                           "(default: WORKSPACE/results/results.tar.gz).")
_SORT_BY = flags.DEFINE_string("sort_by", results.TAU_KEY, "Column to sort the table by (desc).")

# Columns shown on the terminal (all columns go to the CSV).
_SHOWN = ("run", "model", "data", "status", "steps", "wall_time", results.TAU_KEY)
_SHOWN_METRICS = ("tau_mean", "pairwise_accuracy", "spearman", "mean_abs_position_error",
                  "markdown_placement_accuracy", "n_notebooks")


def _fmt_duration(seconds) -> str:
  if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
    return ""
  s = int(round(float(seconds)))
  return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _short_data(path) -> str:
  if not isinstance(path, str) or not path:
    return ""
  return Path(path.rstrip("/")).name


def display_table(table):
  """The columns worth a glance, formatted for people."""
  df = table.copy()
  df["wall_time"] = [_fmt_duration(v) for v in df.get("wall_time_s", [None] * len(df))]
  df["data"] = [_short_data(v) for v in df["data"]]
  cols = [c for c in _SHOWN if c in df.columns] + [c for c in _SHOWN_METRICS if c in df.columns]
  if "problems" in df.columns and df["problems"].fillna("").astype(bool).any():
    cols.append("problems")
  return df[cols]


def to_markdown(df) -> str:
  """A GitHub-style Markdown table (no tabulate dependency)."""
  def cell(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
      return ""
    if isinstance(v, float):
      return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v).replace("|", "\\|")

  cols = list(df.columns)
  lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
  for row in df.itertuples(index=False):
    lines.append("| " + " | ".join(cell(v) for v in row) + " |")
  return "\n".join(lines) + "\n"


def write_table(workspace: Path, sort_by: str = results.TAU_KEY):
  """Collects the runs, writes results/runs.{csv,md} and the plot; returns the table."""
  table = results.collect_runs(workspace)
  if sort_by != results.TAU_KEY:
    if sort_by not in table.columns:
      raise app.UsageError(f"--sort_by={sort_by}: no such column; have {list(table.columns)}")
    table = table.sort_values(sort_by, ascending=False, na_position="last",
                              kind="stable").reset_index(drop=True)
  out_dir = workspace / "results"
  io_utils.atomic_write_text(out_dir / "runs.csv", table.to_csv(index=False))
  io_utils.atomic_write_text(out_dir / "runs.md", to_markdown(display_table(table)))
  results.plot_comparison(table, out_dir / f"{results.TAU_KEY}.png")
  return table


def _is_checkpoint(path: Path) -> bool:
  """Orbax checkpoint folders: `checkpoints/`, or any step folder Orbax wrote."""
  return path.name == results.CHECKPOINTS_DIR or (path / "_CHECKPOINT_METADATA").exists()


def export(workspace: Path, out: Path) -> tuple[Path, int]:
  """Packs runs/*/ minus checkpoints (and results/) into `out`; returns (out, n_files)."""
  runs_dir = workspace / "runs"
  if not runs_dir.is_dir():
    raise app.UsageError(f"{runs_dir}: no runs to export")
  members: list[Path] = []
  for root, dirs, files in os.walk(runs_dir):
    root_p = Path(root)
    dirs[:] = sorted(d for d in dirs if not _is_checkpoint(root_p / d))
    members += [root_p / f for f in sorted(files) if not f.startswith(".")]
  results_dir = workspace / "results"
  if results_dir.is_dir():
    members += sorted(p for p in results_dir.rglob("*") if p.is_file() and p != out)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(f".{out.name}.tmp")
  with tarfile.open(tmp, "w:gz") as tar:
    for path in members:
      tar.add(path, arcname=str(Path(workspace.name) / path.relative_to(workspace)),
              recursive=False)
  os.replace(tmp, out)  # atomic: never a half-written tarball under the final name
  return out, len(members)


def main(argv):
  if len(argv) > 2 or (len(argv) == 2 and argv[1] != "export"):
    raise app.UsageError(f"usage: results [export] [--workspace=W] [--out=F]; got {argv[1:]}")
  workspace = common.workspace_root()
  if len(argv) == 2:
    out = Path(_OUT.value) if _OUT.value else workspace / "results" / "results.tar.gz"
    out, n = export(workspace, out.absolute())
    print(f"wrote {out} ({n} files, {out.stat().st_size / 1e6:.2f} MB)")
    return
  table = write_table(workspace, _SORT_BY.value)
  if table.empty:
    print(f"no runs under {workspace / 'runs'}")
    return
  import pandas as pd  # pylint: disable=g-import-not-at-top

  with pd.option_context("display.max_columns", None, "display.width", 200,
                         "display.max_colwidth", 80, "display.float_format", "{:.4f}".format):
    print(display_table(table).to_string(index=False))
  for run, problem in zip(table["run"], table.get("problems", [""] * len(table))):
    if isinstance(problem, str) and problem:
      print(f"warning: run {run}: {problem}", file=sys.stderr)
  print(f"\nwrote {workspace / 'results'}/runs.csv, runs.md, {results.TAU_KEY}.png",
        file=sys.stderr)


if __name__ == "__main__":
  common.run(main)
