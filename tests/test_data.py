"""Tests of the data layer: reading, validation, folds, cache, embedded sample."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from jaxrank.data import (CODE, MARKDOWN, DataError, Notebook, ancestor_folds, load_split,
                          read_notebook, sample_data_dir, split_train_val)
from jaxrank.data import cache as cache_lib
from jaxrank.data import notebooks as nb_lib

REPO = Path(__file__).resolve().parents[1]

# A valid notebook: code cells first (true order), markdown after (shuffled).
GOOD_CELLS = [("c1", CODE, "import os"), ("c2", CODE, "print(1)"),
              ("m1", MARKDOWN, "# Title"), ("m2", MARKDOWN, "Some text")]
GOOD_ORDER = ["m1", "c1", "m2", "c2"]


def nb_json(cells) -> str:
  return json.dumps({"cell_type": {c: t for c, t, _ in cells},
                     "source": {c: s for c, _, s in cells}})


def write_csv(path: Path, header, rows) -> None:
  with open(path, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)


def make_folder(root: Path, notebooks: dict[str, str | bytes], orders: dict[str, list[str]] | None,
                ancestors: dict[str, str] | None = None, split: str = "train") -> Path:
  """Writes a competition folder: {split}/{id}.json (+ orders/ancestors csv)."""
  (root / split).mkdir(parents=True, exist_ok=True)
  for nb_id, content in notebooks.items():
    data = content if isinstance(content, bytes) else content.encode("utf-8")
    (root / split / f"{nb_id}.json").write_bytes(data)
  if orders is not None:
    write_csv(root / f"{split}_orders.csv", ["id", "cell_order"],
              [[i, " ".join(o)] for i, o in orders.items()])
  if ancestors is not None:
    write_csv(root / f"{split}_ancestors.csv", ["id", "ancestor_id", "parent_id"],
              [[i, a, ""] for i, a in ancestors.items()])
  return root


def good_folder(root: Path, n: int = 3) -> Path:
  ids = [f"nb{i}" for i in range(n)]
  return make_folder(root, {i: nb_json(GOOD_CELLS) for i in ids}, {i: GOOD_ORDER for i in ids},
                     {i: f"anc{i}" for i in ids})


def expect_error(root: Path, *needles: str, split: str = "train") -> DataError:
  with pytest.raises(DataError) as info:
    load_split(root, split)
  msg = str(info.value)
  for needle in needles:
    assert needle in msg, f"{needle!r} not in {msg!r}"
  return info.value


# ---------------------------------------------------------------------------
# Reading valid data.


def test_load_good_folder(tmp_path):
  root = good_folder(tmp_path)
  nbs = load_split(root)
  assert [nb.id for nb in nbs] == ["nb0", "nb1", "nb2"]
  nb = nbs[0]
  assert nb.cell_ids == ("c1", "c2", "m1", "m2")
  assert nb.cell_types == (CODE, CODE, MARKDOWN, MARKDOWN)
  assert nb.sources == ("import os", "print(1)", "# Title", "Some text")
  assert nb.order == tuple(GOOD_ORDER)
  assert [n.ancestor_id for n in nbs] == ["ancnb0", "ancnb1", "ancnb2"]


def test_results_sorted_by_id(tmp_path):
  ids = ["ff", "0a", "b3"]
  root = make_folder(tmp_path, {i: nb_json(GOOD_CELLS) for i in ids}, {i: GOOD_ORDER for i in ids})
  assert [nb.id for nb in load_split(root)] == sorted(ids)


def test_test_split_without_orders(tmp_path):
  root = make_folder(tmp_path, {"t1": nb_json(GOOD_CELLS)}, None, split="test")
  [nb] = load_split(root, "test")
  assert nb.order is None and nb.ancestor_id is None and nb.n_cells == 4


def test_read_notebook(tmp_path):
  path = tmp_path / "abc123.json"
  path.write_text(nb_json(GOOD_CELLS))
  nb = read_notebook(path)
  assert nb.id == "abc123" and nb.order is None and nb.n_code == 2 and nb.n_markdown == 2
  assert read_notebook(path, notebook_id="other").id == "other"


def test_huge_cell_kept_whole(tmp_path):
  big = "x = 1  # " + "y" * 2_000_000
  cells = [("c1", CODE, big), ("m1", MARKDOWN, "hi")]
  root = make_folder(tmp_path, {"big": nb_json(cells)}, {"big": ["m1", "c1"]})
  [nb] = load_split(root)
  assert nb.sources[0] == big


def test_no_markdown_or_no_code_is_valid(tmp_path):
  only_code = [("c1", CODE, "a"), ("c2", CODE, "b")]
  only_md = [("m1", MARKDOWN, "a")]
  root = make_folder(tmp_path, {"a": nb_json(only_code), "b": nb_json(only_md)},
                     {"a": ["c1", "c2"], "b": ["m1"]})
  a, b = load_split(root)
  assert (a.n_code, a.n_markdown, b.n_code, b.n_markdown) == (2, 0, 0, 1)


def test_list_source_is_joined(tmp_path):
  path = tmp_path / "n.json"
  path.write_text(json.dumps({"cell_type": {"c1": "code"},
                              "source": {"c1": ["import os\n", "print(os)"]}}))
  assert read_notebook(path).sources == ("import os\nprint(os)",)


def test_lone_surrogate_replaced(tmp_path):
  path = tmp_path / "n.json"
  path.write_text('{"cell_type": {"c1": "code"}, "source": {"c1": "a\\ud800b \\ud83d\\ude00"}}')
  assert read_notebook(path).sources == ("a\ufffdb \U0001F600",)


def test_max_notebooks(tmp_path):
  root = good_folder(tmp_path, n=5)
  assert [nb.id for nb in load_split(root, max_notebooks=2)] == ["nb0", "nb1"]


# ---------------------------------------------------------------------------
# Every kind of bad input names the file, notebook and cell.


@pytest.mark.parametrize("content, needles", [
    (b'{"cell_type": {"c1": "code"}, "source": {"c1": "x"', ["bad JSON"]),
    (b"[1, 2]", ["top level is a JSON list"]),
    (b'{"source": {"c1": "x"}}', ['missing top-level key "cell_type"']),
    (b'{"cell_type": {"c1": "code"}}', ['missing top-level key "source"']),
    (b'{"cell_type": ["c1"], "source": {"c1": "x"}}', ['"cell_type" is a JSON list']),
    (b'{"cell_type": {}, "source": {}}', ["no cells"]),
    (b'{"cell_type": {"c1": "code"}, "source": {"c1": "caf\xe9"}}', ["not valid UTF-8",
                                                                     "offset"]),
    (b'{"cell_type": {"c1": "code"}, "source": {"c1": "x"}, "source": {"c1": "y"}}',
     ["top-level key 'source' appears more than once"]),
])
def test_bad_json_file(tmp_path, content, needles):
  root = make_folder(tmp_path, {"bad1": content}, None)
  err = expect_error(root, str(root / "train" / "bad1.json"), "notebook 'bad1'", *needles)
  assert err.notebook_id == "bad1" and isinstance(err, ValueError)


@pytest.mark.parametrize("content, cell, needles", [
    ('{"cell_type": {"c1": "code", "c2": "code"}, "source": {"c1": "x"}}', "c2",
     ['in "cell_type" but has no "source"']),
    ('{"cell_type": {"c1": "code"}, "source": {"c1": "x", "c9": "y"}}', "c9",
     ['in "source" but has no "cell_type"']),
    ('{"cell_type": {"c1": "code", "r1": "raw"}, "source": {"c1": "x", "r1": "y"}}', "r1",
     ["unknown cell type 'raw'"]),
    ('{"cell_type": {"c1": "code", "c2": 3}, "source": {"c1": "x", "c2": "y"}}', "c2",
     ["unknown cell type 3"]),
    ('{"cell_type": {"c1": "code"}, "source": {"c1": 42}}', "c1", ["source is a int"]),
    ('{"cell_type": {"c1": "code"}, "source": {"c1": ["a", 1]}}', "c1", ["source is a list"]),
    ('{"cell_type": {"c1": "code"}, "source": {"c1": null}}', "c1", ["source is a NoneType"]),
    ('{"cell_type": {"c1": "code", "c1": "markdown"}, "source": {"c1": "x"}}', "c1",
     ['appears more than once in "cell_type"']),
    ('{"cell_type": {"c1": "code"}, "source": {"c1": "x", "c1": "y"}}', "c1",
     ['appears more than once in "source"']),
    ('{"cell_type": {"c 1": "code"}, "source": {"c 1": "x"}}', "c 1", ["whitespace"]),
])
def test_bad_cell(tmp_path, content, cell, needles):
  root = make_folder(tmp_path, {"bad2": content}, None)
  err = expect_error(root, "bad2.json", "notebook 'bad2'", f"cell {cell!r}", *needles)
  assert err.cell_id == cell


def test_unreadable_file(tmp_path):
  root = make_folder(tmp_path, {"ok": nb_json(GOOD_CELLS)}, None)
  (root / "train" / "dir1.json").mkdir()  # reading a folder fails even as root
  expect_error(root, "dir1.json", "notebook 'dir1'", "cannot read file")
  with pytest.raises(DataError, match="cannot read file"):
    read_notebook(tmp_path / "missing.json")


def test_missing_or_empty_split_folder(tmp_path):
  expect_error(tmp_path, "no folder for split 'train'")
  (tmp_path / "train").mkdir()
  expect_error(tmp_path, str(tmp_path / "train"), "no .json files")


@pytest.mark.parametrize("order, cell, needle", [
    (["m1", "c1", "m2", "c2", "zz"], "zz", "names a cell that is not in the notebook"),
    (["m1", "c1", "m2"], "c2", "leaves out a cell"),
    (["m1", "c1", "m1", "m2", "c2"], "m1", "more than once in the order"),
    (["m1", "c1", "m1", "c2"], "m1", "more than once in the order"),
    (["m1", "c2", "m2", "c1"], "c1", "code cells in the JSON are not in their true order"),
])
def test_bad_order(tmp_path, order, cell, needle):
  root = make_folder(tmp_path, {"nb": nb_json(GOOD_CELLS)}, {"nb": order})
  expect_error(root, "nb.json", "notebook 'nb'", f"cell {cell!r}", needle)


def test_orders_row_without_json(tmp_path):
  root = make_folder(tmp_path, {"nb": nb_json(GOOD_CELLS)}, {"nb": GOOD_ORDER, "ghost": ["a"]})
  expect_error(root, "train_orders.csv", "notebook 'ghost'", "no train/ghost.json")


def test_json_without_orders_row(tmp_path):
  root = make_folder(tmp_path, {"nb": nb_json(GOOD_CELLS), "lone": nb_json(GOOD_CELLS)},
                     {"nb": GOOD_ORDER})
  expect_error(root, "lone.json", "notebook 'lone'", "no row in train_orders.csv")


def test_duplicate_ids_in_csv(tmp_path):
  root = make_folder(tmp_path, {"nb": nb_json(GOOD_CELLS)}, None)
  write_csv(root / "train_orders.csv", ["id", "cell_order"],
            [["nb", " ".join(GOOD_ORDER)], ["nb", " ".join(GOOD_ORDER)]])
  expect_error(root, "train_orders.csv", "notebook 'nb'", "line 3", "duplicate notebook id")
  (root / "train_orders.csv").unlink()
  write_csv(root / "train_ancestors.csv", ["id", "ancestor_id", "parent_id"],
            [["nb", "a", ""], ["nb", "b", ""]])
  expect_error(root, "train_ancestors.csv", "notebook 'nb'", "duplicate notebook id")


@pytest.mark.parametrize("name, header", [
    ("train_orders.csv", ["id", "order"]),
    ("train_orders.csv", ["cell_order", "id"]),
    ("train_ancestors.csv", ["id", "ancestor"]),
])
def test_malformed_csv_header(tmp_path, name, header):
  root = make_folder(tmp_path, {"nb": nb_json(GOOD_CELLS)}, None)
  write_csv(root / name, header, [["nb", "x"]])
  expect_error(root, name, "malformed header")


def test_malformed_csv_rows(tmp_path):
  root = make_folder(tmp_path, {"nb": nb_json(GOOD_CELLS)}, None)
  (root / "train_orders.csv").write_text("id,cell_order\nnb,a,b\n")
  expect_error(root, "train_orders.csv", "line 2", "3 fields, expected 2")
  (root / "train_orders.csv").write_bytes(b"id,cell_order\nnb,\xff\n")
  expect_error(root, "train_orders.csv", "not valid UTF-8")
  (root / "train_orders.csv").unlink()
  (root / "train_ancestors.csv").write_text("id,ancestor_id,parent_id\nnb,,\n")
  expect_error(root, "train_ancestors.csv", "notebook 'nb'", "empty ancestor_id")


def test_on_error_skip_skips_exactly_the_bad(tmp_path, caplog):
  good = {f"ok{i}": nb_json(GOOD_CELLS) for i in range(3)}
  bad = {"bad_json": "{", "bad_type": nb_json([("c1", "raw", "x")]),
         "bad_order": nb_json(GOOD_CELLS), "no_order": nb_json(GOOD_CELLS)}
  orders = {i: GOOD_ORDER for i in good} | {"bad_json": ["c1"], "bad_type": ["c1"],
                                            "bad_order": ["c1"], "ghost": ["c1"]}
  root = make_folder(tmp_path, good | bad, orders)
  with caplog.at_level(logging.WARNING, logger="jaxrank.data.notebooks"):
    nbs = load_split(root, on_error="skip")
  assert [nb.id for nb in nbs] == sorted(good)
  warning = "\n".join(r.getMessage() for r in caplog.records)
  assert "Skipped 5 bad notebooks" in warning
  for nb_id, reason in [("bad_json", "bad JSON"), ("bad_type", "unknown cell type"),
                        ("bad_order", "leaves out a cell"), ("no_order", "no row in"),
                        ("ghost", "no train/ghost.json")]:
    assert f"{nb_id}: " in warning and reason in warning
  with pytest.raises(ValueError, match="on_error"):
    load_split(root, on_error="ignore")


# ---------------------------------------------------------------------------
# Cache.


def test_cache_hit_equal_and_skips_json(tmp_path, monkeypatch):
  root = good_folder(tmp_path / "d")
  cache_dir = tmp_path / "cache"
  first = load_split(root, cache_dir=cache_dir)
  assert len(list(cache_dir.glob("train-*/notebooks.arrow"))) == 1

  def no_parse(*args, **kwargs):
    raise AssertionError("JSON parsed on a cache hit")

  monkeypatch.setattr(nb_lib, "parse_notebook", no_parse)
  second = load_split(root, cache_dir=cache_dir)
  assert second == first and second[0].cell_types[0] is CODE


def test_cache_keeps_none_fields_and_unicode(tmp_path):
  cells = [("c1", CODE, "print('héllo ✓ 😀')"), ("m1", MARKDOWN, ""), ("m2", MARKDOWN, "x" * 70_000)]
  root = make_folder(tmp_path / "d", {"a": nb_json(cells), "b": nb_json(GOOD_CELLS)}, None,
                     split="test")
  write_csv(root / "test_ancestors.csv", ["id", "ancestor_id", "parent_id"], [["b", "anc", ""]])
  first = load_split(root, "test", cache_dir=tmp_path / "c")
  assert first[0].ancestor_id is None and first[1].ancestor_id == "anc"
  assert load_split(root, "test", cache_dir=tmp_path / "c") == first


@pytest.mark.parametrize("change", ["json", "orders", "ancestors", "new_file"])
def test_cache_invalidated_by_changed_file(tmp_path, change):
  root = good_folder(tmp_path / "d")
  cache_dir = tmp_path / "cache"
  load_split(root, cache_dir=cache_dir)
  if change == "json":
    path = root / "train" / "nb1.json"
    path.write_text(nb_json([(c, t, s + " changed") for c, t, s in GOOD_CELLS]))
    os.utime(path, ns=(1, 1))  # even with an old mtime, the size differs
  elif change == "orders":
    write_csv(root / "train_orders.csv", ["id", "cell_order"],
              [[f"nb{i}", " ".join(["c1", "m1", "c2", "m2"])] for i in range(3)])
  elif change == "ancestors":
    write_csv(root / "train_ancestors.csv", ["id", "ancestor_id", "parent_id"],
              [[f"nb{i}", "same", ""] for i in range(3)])
  else:
    (root / "train" / "nb3.json").write_text(nb_json(GOOD_CELLS))
    with open(root / "train_orders.csv", "a") as f:
      f.write(f"nb3,{' '.join(GOOD_ORDER)}\n")
  cached = load_split(root, cache_dir=cache_dir)
  assert cached == load_split(root)  # what a fresh parse gives
  assert len(list(cache_dir.glob("train-*"))) == 2


def test_cache_corrupt_entry_falls_back(tmp_path, caplog):
  root = good_folder(tmp_path / "d")
  cache_dir = tmp_path / "cache"
  first = load_split(root, cache_dir=cache_dir)
  [entry] = cache_dir.glob("train-*/notebooks.arrow")
  entry.write_bytes(b"not arrow")
  with caplog.at_level(logging.WARNING):
    assert load_split(root, cache_dir=cache_dir) == first
  assert "Ignoring unreadable notebook cache" in caplog.text
  assert cache_lib.read(entry) is not None  # rewritten


def test_cache_remembers_skipped(tmp_path):
  root = good_folder(tmp_path / "d")
  (root / "train" / "nb1.json").write_text("{")
  cache_dir = tmp_path / "cache"
  assert [nb.id for nb in load_split(root, cache_dir=cache_dir, on_error="skip")] == ["nb0", "nb2"]
  assert [nb.id for nb in load_split(root, cache_dir=cache_dir, on_error="skip")] == ["nb0", "nb2"]
  with pytest.raises(DataError, match="nb1.json.*bad JSON"):
    load_split(root, cache_dir=cache_dir)  # a hit must still raise in "raise" mode


# ---------------------------------------------------------------------------
# Folds.


def synthetic(n_groups: int, per_group: int = 3, seed: int = 0) -> list[Notebook]:
  rng = np.random.default_rng(seed)
  out = []
  for g in range(n_groups):
    for k in range(int(rng.integers(1, per_group + 1))):
      n = int(rng.integers(2, 60))
      ids = tuple(f"c{i}" for i in range(n))
      out.append(Notebook(id=f"g{g}n{k}", cell_ids=ids, cell_types=(CODE,) * n,
                          sources=("x",) * n, ancestor_id=f"anc{g}"))
  return out


def test_folds_keep_ancestors_together_and_balance():
  nbs = synthetic(200)
  folds = ancestor_folds(nbs, n_folds=5, seed=0)
  assert folds.shape == (len(nbs),) and set(folds.tolist()) == set(range(5))
  fold_of_anc: dict[str, int] = {}
  for nb, f in zip(nbs, folds):
    assert fold_of_anc.setdefault(nb.ancestor_id, int(f)) == f
  cells = np.bincount(folds, weights=[nb.n_cells for nb in nbs])
  biggest_group = max(sum(n.n_cells for n in nbs if n.ancestor_id == a) for a in fold_of_anc)
  assert cells.max() - cells.min() <= biggest_group


def test_folds_deterministic_and_seeded():
  nbs = synthetic(200)
  a = ancestor_folds(nbs, seed=1)
  np.testing.assert_array_equal(a, ancestor_folds(nbs, seed=1))
  assert not np.array_equal(a, ancestor_folds(nbs, seed=2))
  # Independent of the order of the list.
  perm = np.random.default_rng(0).permutation(len(nbs))
  np.testing.assert_array_equal(ancestor_folds([nbs[i] for i in perm], seed=1), a[perm])


def test_folds_without_ancestor_and_errors():
  nbs = [dataclasses.replace(nb, ancestor_id=None) for nb in synthetic(3)]
  folds = ancestor_folds(nbs, n_folds=len(nbs))  # each notebook is its own group
  assert sorted(folds.tolist()) == list(range(len(nbs)))
  with pytest.raises(ValueError, match="ancestor groups cannot fill"):
    ancestor_folds(synthetic(3), n_folds=5)
  with pytest.raises(ValueError, match="n_folds"):
    ancestor_folds(nbs, n_folds=1)


def test_split_train_val_partitions():
  nbs = synthetic(50)
  seen = []
  for fold in range(5):
    train, val = split_train_val(nbs, fold=fold, n_folds=5, seed=3)
    assert len(train) + len(val) == len(nbs) and val
    assert not {n.ancestor_id for n in train} & {n.ancestor_id for n in val}
    seen += [n.id for n in val]
  assert sorted(seen) == sorted(n.id for n in nbs)
  with pytest.raises(ValueError, match="fold"):
    split_train_val(nbs, fold=5)


# ---------------------------------------------------------------------------
# The embedded sample and its builder.


def test_sample_loads():
  root = sample_data_dir()
  train = load_split(root, "train")
  test = load_split(root, "test")
  assert 200 <= len(train) <= 300 and 15 <= len(test) <= 30
  assert all(nb.order is not None and nb.ancestor_id for nb in train)
  assert all(nb.order is None for nb in test)
  assert not {nb.id for nb in train} & {nb.id for nb in test}
  assert len({nb.ancestor_id for nb in train}) >= 5
  train_part, val_part = split_train_val(train, fold=0)
  assert train_part and val_part
  size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
  assert size < 6e6


def test_sample_attribution_and_licences():
  from experiments import make_sample  # pylint: disable=import-outside-toplevel
  root = sample_data_dir()
  with open(root / "sources.csv", newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  ids = {p.stem for p in root.glob("*/*.json")}
  assert {r["id"] for r in rows} == ids and len(rows) == len(ids)
  for r in rows:
    assert make_sample.PERMISSIVE[r["repo"]] == r["license"], r
    assert (root / r["split"] / f"{r['id']}.json").is_file()
  assert "Licences" in (root / "README.md").read_text()


def test_sample_files_are_package_data():
  config = tomllib.loads((REPO / "pyproject.toml").read_text())
  patterns = config["tool"]["setuptools"]["package-data"]["*"]
  for path in sample_data_dir().rglob("*"):
    if path.is_file():
      assert any(path.match(p) for p in patterns), f"{path} not covered by {patterns}"


def test_make_sample_is_deterministic(tmp_path):
  # Rebuild a small sample from the embedded one, once via the CLI, once in process.
  from experiments import make_sample  # pylint: disable=import-outside-toplevel
  out_cli = tmp_path / "cli"
  subprocess.run([sys.executable, "-m", "experiments.make_sample", f"--src={sample_data_dir()}",
                  f"--out={out_cli}", "--n_train=14", "--n_test=4", "--seed=5"],
                 cwd=REPO, check=True, capture_output=True)
  out_lib = tmp_path / "lib"
  make_sample.build(sample_data_dir(), out_lib, n_train=14, n_test=4, seed=5, max_bytes=60_000)
  files = sorted(p.relative_to(out_cli) for p in out_cli.rglob("*") if p.is_file())
  assert files == sorted(p.relative_to(out_lib) for p in out_lib.rglob("*") if p.is_file())
  for f in files:
    assert (out_cli / f).read_bytes() == (out_lib / f).read_bytes(), f
  train = load_split(out_cli, "train")
  assert len(train) == 14 and len(load_split(out_cli, "test")) == 4
  assert len({nb.ancestor_id for nb in train}) == 7  # round robin reaches every repository
