r"""Builds the embedded sample (jaxrank/data/sample/) from nbcorpus.

Only notebooks from permissively licensed repositories are taken (each checked
against both its repository and the licence recorded in sources.csv), smaller
than --max_bytes, spread evenly over the repositories (round robin, random
inside a repository) so that every repository, hence every ancestor group, is
present. The output is a pure function of the source files and the flags.

  .venv/bin/python -m experiments.make_sample \
    --src=../shared/data/nbcorpus --out=jaxrank/data/sample --overwrite
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

from experiments import common
from jaxrank import io_utils
from jaxrank.data import notebooks as nb_lib

# repository -> the licence sources.csv must name for it.
PERMISSIVE = {
    "Kaggle/learntools": "Apache-2.0",
    "ageron/handson-ml2": "Apache-2.0",
    "dair-ai/ML-Notebooks": "Apache-2.0",
    "fchollet/deep-learning-with-python-notebooks": "MIT",
    "google/flax": "Apache-2.0",
    "mGalarnyk/Python_Tutorials": "MIT",
    "rasbt/machine-learning-book": "MIT",
}

_SRC = flags.DEFINE_string("src", None, "nbcorpus folder (train/, *_orders.csv, sources.csv).",
                           required=True)
_OUT = flags.DEFINE_string("out", str(nb_lib.sample_data_dir()), "Output folder.")
_N_TRAIN = flags.DEFINE_integer("n_train", 250, "Notebooks in train/.")
_N_TEST = flags.DEFINE_integer("n_test", 20, "Notebooks in test/ (no orders file).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the selection.")
_MAX_BYTES = flags.DEFINE_integer("max_bytes", 60_000, "Largest JSON file taken.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --out if it exists.")


def _read_csv(path: Path) -> tuple[list[str], dict[str, list[str]]]:
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
  return rows[0], {r[0]: r for r in rows[1:]}


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(header)
  w.writerows(rows)
  return buf.getvalue()


def select(pool: dict[str, list[str]], n: int, seed: int) -> list[str]:
  """Round robin over repositories (sorted), each shuffled by `seed`; n ids."""
  rng = np.random.default_rng(seed)
  queues = [list(rng.permutation(sorted(pool[r]))) for r in sorted(pool)]
  picked: list[str] = []
  while len(picked) < n and any(queues):
    for q in queues:
      if q and len(picked) < n:
        picked.append(str(q.pop(0)))
  if len(picked) < n:
    raise ValueError(f"only {len(picked)} eligible notebooks, asked for {n}")
  return picked


def _readme(counts: dict[str, dict[str, int]], sizes: dict[str, int], argv: str) -> str:
  table = "\n".join(
      f"| {repo} | {PERMISSIVE[repo]} | {counts['train'].get(repo, 0)} | "
      f"{counts['test'].get(repo, 0)} |" for repo in sorted(PERMISSIVE))
  return f"""# Embedded sample of nbcorpus (competition format)

A small folder laid out like the Kaggle "Google AI4Code" data, for tests, demos
and smoke runs with no other data: `jaxrank.data.sample_data_dir()` returns it
and `jaxrank.data.load_split(sample_data_dir(), "train")` reads it.

| file | content |
| --- | --- |
| `train/{{id}}.json` | {sizes['train']} notebooks: `{{"cell_type": {{cell_id: type}}, "source": {{cell_id: text}}}}`, code cells first in true order, then markdown shuffled |
| `train_orders.csv` | `id,cell_order`: the true order |
| `train_ancestors.csv` | `id,ancestor_id,parent_id`: ancestor_id = one group per source repository |
| `test/{{id}}.json` | {sizes['test']} other notebooks, with no orders file, like Kaggle's test |
| `sources.csv` | `id,repo,path,commit,license,split`: where every notebook comes from |

## Licences

Every notebook here comes from a permissively licensed repository and stays under
that repository's licence (attribution: `sources.csv`, one row per notebook, with
the repository, file path and commit). Notebooks from repositories with an
unknown, non-commercial, no-derivatives, all-rights-reserved or mixed licence were
left out.

| repository | licence | train | test |
| --- | --- | ---: | ---: |
{table}

## How it was made

Copied byte for byte from nbcorpus (`../shared/data/nbcorpus`) by
`experiments/make_sample.py` with `{argv}`: JSON files under the size limit from the
repositories above, spread round robin over the repositories (random within one,
seeded), test first, then train. Rerunning the command gives the same files.
"""


def build(src: Path, out: Path, n_train: int, n_test: int, seed: int, max_bytes: int) -> None:
  """Writes the sample folder at `out` (which must not exist)."""
  src_header, sources = _read_csv(src / "sources.csv")
  anc_header, ancestors = _read_csv(src / "train_ancestors.csv")
  orders_header, orders = _read_csv(src / "train_orders.csv")
  # Everything taken must pass the loader's validation.
  valid = {nb.id: nb for nb in nb_lib.load_split(src, "train")}
  pool: dict[str, list[str]] = {}
  for nb_id, row in sources.items():
    rec = dict(zip(src_header, row))
    if (PERMISSIVE.get(rec["repo"]) == rec["license"] and nb_id in valid
        and (src / "train" / f"{nb_id}.json").stat().st_size <= max_bytes):
      pool.setdefault(rec["repo"], []).append(nb_id)
  picked = select(pool, n_test + n_train, seed)
  split_ids = {"test": sorted(picked[:n_test]), "train": sorted(picked[n_test:])}
  repo_of = {i: dict(zip(src_header, sources[i]))["repo"] for i in picked}

  with io_utils.atomic_dir(out) as tmp:
    for split, ids in split_ids.items():
      (tmp / split).mkdir()
      for nb_id in ids:
        shutil.copyfile(src / "train" / f"{nb_id}.json", tmp / split / f"{nb_id}.json")
    train = split_ids["train"]
    io_utils.atomic_write_text(tmp / "train_orders.csv",
                               _csv_text(orders_header, [orders[i] for i in train]))
    io_utils.atomic_write_text(tmp / "train_ancestors.csv",
                               _csv_text(anc_header, [ancestors[i] for i in train]))
    io_utils.atomic_write_text(tmp / "sources.csv", _csv_text(
        src_header + ["split"],
        [sources[i] + [s] for s, ids in sorted(split_ids.items(), reverse=True) for i in ids]))
    counts = {s: {} for s in split_ids}
    for s, ids in split_ids.items():
      for i in ids:
        counts[s][repo_of[i]] = counts[s].get(repo_of[i], 0) + 1
    argv = (f"--n_train={n_train} --n_test={n_test} --seed={seed} --max_bytes={max_bytes}")
    io_utils.atomic_write_text(tmp / "README.md", _readme(
        counts, {s: len(ids) for s, ids in split_ids.items()}, argv))


def main(argv: Sequence[str]) -> None:
  del argv
  out = Path(_OUT.value)
  if out.exists() and not _OVERWRITE.value:
    raise app.UsageError(f"{out} exists; pass --overwrite to replace it")
  # Build beside `out`, then swap, so a failure leaves the old sample intact.
  new = out.with_name(out.name + ".new")
  shutil.rmtree(new, ignore_errors=True)
  build(Path(_SRC.value), new, _N_TRAIN.value, _N_TEST.value, _SEED.value, _MAX_BYTES.value)
  if out.exists():
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(out, old)
    os.rename(new, out)
    shutil.rmtree(old)
  else:
    os.rename(new, out)
  n = sum(1 for _ in out.rglob("*.json"))
  size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
  logging.info("Wrote %s: %d notebooks, %.2f MB", out, n, size / 1e6)


if __name__ == "__main__":
  common.run(main)
