"""Notebooks of any length get a prediction, in memory linear in cells; one that
fails gets its given order, the others are unharmed."""

import json
import logging
import subprocess
import sys

import pytest

from jaxrank import features, metrics, submission, train, windows
from jaxrank.data import notebooks
from tests.conftest import REPO_ROOT, subprocess_env
from tests.long_notebooks import long_notebook
from tests.tiny import tiny_bow_config


def _code_order_kept(nb, order):
  code = set(nb.code_ids)
  return [c for c in order if c in code] == list(nb.code_ids)


def test_windows_partition_the_cells_within_the_size_and_keep_code_order():
  nb = long_notebook(2500)
  assert nb.n_cells == 2500
  parts = windows.split(nb, 256)
  assert len(parts) > 2500 / 256 and all(w.n_cells <= 256 for w in parts)
  ids = [c for w in parts for c in w.cell_ids]
  assert sorted(ids) == sorted(nb.cell_ids)
  for w in parts:  # each a valid competition notebook: code first, in order
    assert w.cell_types == tuple(sorted(w.cell_types))
  joined = windows.join([windows.given_order(w) for w in parts])
  assert sorted(joined) == sorted(nb.cell_ids) and _code_order_kept(nb, joined)
  # Markdown follows the code it talks about: far more often in the window of
  # its true neighbours than chance (1 / number of windows).
  code_rank = {c: i for i, c in enumerate(nb.code_ids)}
  gap, seen = {}, 0
  for c in nb.order:
    if c in code_rank:
      seen += 1
    else:
      gap[c] = seen  # code cells before it
  hits = 0
  for w in parts:
    ranks = [code_rank[c] for c in w.code_ids]
    hits += sum(min(ranks) <= gap[c] <= max(ranks) + 1 for c in w.markdown_ids)
  rate = hits / nb.n_markdown
  print(f"markdown in the window of its true neighbours: {rate:.2f} (chance {1 / len(parts):.2f})")
  assert rate > 3 / len(parts)
  short = [notebooks.load_split(notebooks.sample_data_dir(), "test")[0]]
  assert windows.split(short[0], 256) == short
  known = windows.split_known(nb, 256)
  assert [c for w in known for c in w.order] == list(nb.order)
  assert all(w.n_cells <= 256 and sorted(w.order) == sorted(w.cell_ids) for w in known)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A tiny BOW-MLP run whose largest bucket is 128 cells (its longer training
  notebooks are cut into runs of their true order)."""
  wd = tmp_path_factory.mktemp("run")
  cfg = tiny_bow_config(**{"data.buckets": (64, 128), "data.cells_per_batch": 1024,
                           "train.steps": 6, "data.n_folds": 1})
  train.train_and_evaluate(cfg, wd)
  return wd


def test_long_notebook_gets_a_model_prediction_and_a_failing_one_its_given_order(
    run_dir, monkeypatch, caplog):
  predictor, _ = train.load_predictor(run_dir)
  long = long_notebook(2500)
  test = notebooks.load_split(notebooks.sample_data_dir(), "test")
  bad = test[0]  # 35 cells: one window
  real_items = features.items_any

  def items_any(kind, featurizer, nbs):  # one notebook that breaks featurizing, for any reason
    if any(nb.id == bad.id for nb in nbs):
      raise MemoryError("simulated")
    return real_items(kind, featurizer, nbs)

  monkeypatch.setattr(features, "items_any", items_any)
  with caplog.at_level(logging.WARNING):
    preds = predictor.predict([long, *test])
  submission.validate_submission(preds, [long, *test])  # complete and valid
  warned = [r.getMessage() for r in caplog.records if "using its given order" in r.getMessage()]
  assert len(warned) == 1 and warned[0].startswith(f"notebook {bad.id}: prediction failed")
  assert preds[bad.id] == windows.given_order(bad)
  others = {nb.id: preds[nb.id] for nb in test if nb is not bad}
  monkeypatch.setattr(features, "items_any", real_items)
  assert predictor.predict([nb for nb in test if nb is not bad]) == others  # unharmed
  # The 2,500-cell notebook: the model's order, better than the given one.
  assert _code_order_kept(long, preds[long.id])
  tau = metrics.kendall_tau([long.order], [preds[long.id]])
  given = metrics.kendall_tau([long.order], [windows.given_order(long)])
  print(f"2500-cell notebook: tau {tau:.4f} (given order {given:.4f})")
  assert tau > given + 0.02


def _predict_peak_rss_kb(run_dir, data_dir, out, *extra) -> int:
  """experiments.predict as a user runs it; returns its peak resident memory."""
  code = ("import atexit, resource, runpy, sys; atexit.register(lambda: print('PEAK_RSS_KB', "
          "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)); "
          "runpy.run_module('experiments.predict', run_name='__main__', alter_sys=True)")
  env = subprocess_env(1)
  p = subprocess.run([sys.executable, "-c", code, f"--workdir={run_dir}",
                      f"--data_dir={data_dir}", "--split=test", f"--output={out}", *extra],
                     cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  return int(p.stderr.split("PEAK_RSS_KB")[-1].split()[0])


def _write_split(folder, nbs):
  (folder / "test").mkdir(parents=True)
  for nb in nbs:
    (folder / "test" / f"{nb.id}.json").write_text(json.dumps({
        "cell_type": dict(zip(nb.cell_ids, nb.cell_types)),
        "source": dict(zip(nb.cell_ids, nb.sources))}))


def test_20000_cell_notebook_beside_normal_ones_gives_a_complete_submission(run_dir, tmp_path):
  test = notebooks.load_split(notebooks.sample_data_dir(), "test")[:6]
  huge = long_notebook(20_000, "huge")
  _write_split(tmp_path / "small", test)
  _write_split(tmp_path / "big", [huge, *test])
  base = _predict_peak_rss_kb(run_dir, tmp_path / "small", tmp_path / "small.csv")
  peak = _predict_peak_rss_kb(run_dir, tmp_path / "big", tmp_path / "big.csv")
  sub = submission.read_submission(tmp_path / "big.csv")
  submission.validate_submission(sub, notebooks.load_split(tmp_path / "big", "test"))
  assert _code_order_kept(huge, sub["huge"]) and sub["huge"] != windows.given_order(huge)
  small = submission.read_submission(tmp_path / "small.csv")
  assert all(sub[nb.id] == small[nb.id] for nb in test)  # the big one changes nothing else
  print(f"peak RSS: {peak / 1024:.0f} MB with the 20,000-cell notebook, "
        f"{base / 1024:.0f} MB without")
  # A dense [n, n] float32 block alone would be 1.6 GB.
  assert peak - base < 600 * 1024


def test_training_cuts_long_notebooks_into_runs_of_their_true_order():
  long = long_notebook(300)
  short = notebooks.load_split(notebooks.sample_data_dir(), "test")[0]
  train_nbs, val_nbs = train.fit_buckets([long, short], [long, short], (64, 128))
  assert [nb.n_cells for nb in train_nbs] == [128, 128, 44, short.n_cells]
  assert [c for nb in train_nbs[:3] for c in nb.order] == list(long.order)
  assert val_nbs == [short]  # scored whole or not at all
