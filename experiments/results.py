r"""Compares all runs of a workspace; packs their results to carry off the cluster.

  python -m experiments.results --workspace=W      # table -> stdout, W/results/
  python -m experiments.results export --workspace=W --out=results.tar.gz
  python -m experiments.results export --runs=cells-f0 --with_models --out=cells.tar.gz

The table has one row per run folder under W/runs/ (model, data, status, steps,
wall time, Kendall tau and the other final metrics), best tau first; it is also
written as W/results/runs.csv and W/results/runs.md, with a bar plot of tau per
run in W/results/kendall_tau.png. `export` packs every run's small files (all
but Orbax checkpoints) into one tarball; with --with_models it also holds what
prediction needs (best checkpoint, store models): unpacked anywhere it is a
workspace to predict in. Workspace: --workspace, else
$JAXRANK_HOME, else ./workspace.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from absl import app, flags

from experiments import common
from jaxrank import io_utils, results, store

_OUT = flags.DEFINE_string("out", None, "export: the tarball to write "
                           "(default: WORKSPACE/results/results.tar.gz).")
_SORT_BY = flags.DEFINE_string("sort_by", results.TAU_KEY, "Column to sort the table by (desc).")
_WITH_MODELS = flags.DEFINE_bool(
    "with_models", False, "export: also what prediction needs: each run's best checkpoint "
    "(else its newest) and the store models/tokenizers its config names, so the tarball "
    "unpacked anywhere is a workspace that `experiments.predict --name=RUN` runs in.")
_RUNS = flags.DEFINE_list("runs", None, "export: only these runs (names under WORKSPACE/runs).")

# Columns shown on the terminal (all columns go to the CSV).
_SHOWN = ("run", "model", "data", "status", "steps", "wall_time", results.TAU_KEY)
_SHOWN_CONFIG = ("fold", "n_folds", "lr", "seed", "features")
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
  cols = [c for c in (*_SHOWN, *_SHOWN_CONFIG, *_SHOWN_METRICS) if c in df.columns]
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
  out_dir = store.Workspace(workspace).results_dir
  io_utils.atomic_write_text(out_dir / "runs.csv", table.to_csv(index=False))
  io_utils.atomic_write_text(out_dir / "runs.md", to_markdown(display_table(table)))
  groups = results.group_runs(table)
  io_utils.atomic_write_text(out_dir / "groups.csv", groups.to_csv(index=False))
  io_utils.atomic_write_text(out_dir / "groups.md", to_markdown(display_groups(groups)))
  results.plot_comparison(table, out_dir / f"{results.TAU_KEY}.png")
  results.plot_learning_curves(workspace, table["run"].tolist(), out_dir / "learning_curves.png")
  return table


def display_groups(groups):
  """Recipes (folds / seeds / sweep points of one config) with tau as mean ± std."""
  df = groups.copy()
  m, sd = f"{results.TAU_KEY}_mean", f"{results.TAU_KEY}_std"
  df[results.TAU_KEY] = [f"{a:.4f} ± {b:.4f}" for a, b in zip(df[m], df[sd])]
  return df[["group", "model", "n_runs", "folds", results.TAU_KEY, "runs"]]


def main(argv):
  if len(argv) > 2 or (len(argv) == 2 and argv[1] != "export"):
    raise app.UsageError(f"usage: results [export] [--workspace=W] [--out=F]; got {argv[1:]}")
  workspace = common.workspace_root()
  if len(argv) == 2:
    out = Path(_OUT.value or store.Workspace(workspace).results_dir / "results.tar.gz")
    try:
      out, n = results.export(workspace, out.absolute(), with_models=_WITH_MODELS.value,
                              runs=_RUNS.value)
    except (FileNotFoundError, ValueError) as e:
      raise app.UsageError(str(e)) from None
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
    groups = results.group_runs(table)
    if (groups["n_runs"] > 1).any():
      print("\nruns of one recipe (folds, seeds), best first:")
      print(display_groups(groups).to_string(index=False))
  for run, problem in zip(table["run"], table.get("problems", [""] * len(table))):
    if isinstance(problem, str) and problem:
      print(f"warning: run {run}: {problem}", file=sys.stderr)
  print(f"\nwrote {workspace / 'results'}/runs.csv, runs.md, groups.csv, groups.md, "
        f"{results.TAU_KEY}.png, learning_curves.png", file=sys.stderr)


if __name__ == "__main__":
  common.run(main)
