"""Several competition folders read as one training set (`data_dir="A,B"`)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import ml_collections
import pytest

from experiments.configs import common
from jaxrank import train
from jaxrank.data import folds, notebooks as nb_io
from jaxrank.data.notebooks import sample_data_dir


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def split_sample(root: Path, parts: int = 2) -> list[Path]:
  """The sample's train split dealt round-robin into `parts` competition folders
  (its own orders, ancestors and sources.csv each): ancestors recur across them."""
  src = sample_data_dir()
  ids = sorted(p.stem for p in (src / "train").glob("*.json"))
  out = []
  for k in range(parts):
    d = root / f"corpus{k}"
    (d / "train").mkdir(parents=True)
    mine = set(ids[k::parts])
    for i in mine:
      shutil.copy(src / "train" / f"{i}.json", d / "train" / f"{i}.json")
    for name in ("train_orders.csv", "train_ancestors.csv", "sources.csv"):
      header, rows = _rows(src / name)
      with open(d / name, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(r for r in rows if r[0] in mine)
    out.append(d)
  return out


@pytest.fixture(scope="module")
def two(tmp_path_factory):
  return split_sample(tmp_path_factory.mktemp("multi"))


def test_two_folders_read_as_one_with_distinct_ancestor_groups(two, tmp_path, monkeypatch):
  a, b = two
  one_a, one_b = nb_io.load_split(a), nb_io.load_split(b)
  cache = tmp_path / "cache"
  both = nb_io.load_split(f"{a},{b}", cache_dir=cache)
  assert [nb.id for nb in both] == sorted(nb.id for nb in one_a + one_b)
  assert nb_io.load_split([str(a), b]) == both  # a list reads the same
  # Every ancestor is namespaced by its folder; the same id in both stays two groups.
  anc = {nb.id: nb.ancestor_id for nb in both}
  for nb in one_a:
    assert anc[nb.id] == f"corpus0/{nb.ancestor_id}"
  for nb in one_b:
    assert anc[nb.id] == f"corpus1/{nb.ancestor_id}"
  shared = {nb.ancestor_id for nb in one_a} & {nb.ancestor_id for nb in one_b}
  assert shared, "the split should put one ancestor in both folders"
  n_groups = len({nb.ancestor_id for nb in one_a}) + len({nb.ancestor_id for nb in one_b})
  assert len(set(anc.values())) == n_groups
  # Content other than the ancestor is untouched.
  by_id = {nb.id: nb for nb in both}
  assert all(by_id[nb.id].order == nb.order and by_id[nb.id].sources == nb.sources
             for nb in one_a + one_b)
  # Folds stay ancestor-grouped across the merged set.
  f = folds.ancestor_folds(both, n_folds=3)
  for g in set(anc.values()):
    assert len({int(x) for nb, x in zip(both, f) if nb.ancestor_id == g}) == 1
  # One cache entry per folder, and the second load is served from them.
  entries = sorted(p.name for p in cache.iterdir())
  assert len(entries) == 2 and all(e.startswith("train-") for e in entries)
  # They are the folders' own entries: loading one folder alone adds none.
  nb_io.load_split(b, cache_dir=cache)
  assert sorted(p.name for p in cache.iterdir()) == entries
  # And the merged load reads them instead of parsing JSON.
  def no_parsing(*args, **kw):
    raise AssertionError("parsed JSON despite the cache")
  monkeypatch.setattr(nb_io, "parse_notebook", no_parsing)
  assert nb_io.load_split(f"{a},{b}", cache_dir=cache) == both


def test_a_notebook_in_two_folders_is_an_error_naming_both(two, tmp_path):
  a, _ = two
  c = tmp_path / "c"
  shutil.copytree(a, c)
  with pytest.raises(nb_io.DataError, match=r"in two folders: .*corpus0/train and .*c/train"):
    nb_io.load_split(f"{a},{c}")
  with pytest.raises(ValueError, match="listed twice"):
    nb_io.load_split(f"{a},{a}/")


def test_same_base_name_folders_get_index_labels(two, tmp_path):
  a, _ = two
  other = tmp_path / "x" / "corpus0"
  other.mkdir(parents=True)
  shutil.copytree(sample_data_dir() / "test", other / "train")
  nbs = nb_io.load_split([a, other])
  assert {nb.ancestor_id.split("/")[0] for nb in nbs if nb.ancestor_id} == {"0-corpus0"}


def _data_cfg(data_dir, **kw) -> ml_collections.ConfigDict:
  d = common.data(data_dir=data_dir, n_folds=3)
  d.update(kw)
  return d


def test_validation_on_chosen_sources_and_ancestors(two):
  a, b = two
  dirs = f"{a},{b}"
  nbs = nb_io.load_split(dirs)
  repo = nb_io.read_sources(dirs)
  assert set(repo) == {nb.id for nb in nbs}
  tr, val = train.split_data(nbs, _data_cfg(dirs, val_sources="Kaggle/learntools"))
  kaggle = {i for i, r in repo.items() if r == "Kaggle/learntools"}
  assert kaggle and kaggle <= {nb.id for nb in val}
  assert len(tr) + len(val) == len(nbs)
  assert not {nb.ancestor_id for nb in tr} & {nb.ancestor_id for nb in val}
  # A bare ancestor id picks its group in every folder; a namespaced one, one folder.
  anc = nbs[0].ancestor_id.split("/")[1]
  _, val_all = train.split_data(nbs, _data_cfg(dirs, val_ancestors=anc))
  assert {nb.ancestor_id for nb in val_all} == {f"corpus0/{anc}", f"corpus1/{anc}"}
  _, val_one = train.split_data(nbs, _data_cfg(dirs, val_ancestors=f"corpus1/{anc}"))
  assert {nb.ancestor_id for nb in val_one} == {f"corpus1/{anc}"}
  with pytest.raises(ValueError, match="no notebook of .* comes from \\['nope/repo'\\]"):
    train.split_data(nbs, _data_cfg(dirs, val_sources="nope/repo"))
  with pytest.raises(ValueError, match="'zzz' matches no notebook"):
    train.split_data(nbs, _data_cfg(dirs, val_ancestors="zzz"))
