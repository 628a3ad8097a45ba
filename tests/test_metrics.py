"""Tests for jaxrank.metrics against brute force and hand-computed examples."""

from __future__ import annotations

import math

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from jaxrank import metrics


def brute_inversions(a) -> int:
  return sum(a[i] > a[j] for i in range(len(a)) for j in range(i + 1, len(a)))


def brute_pooled_tau(gts, preds) -> float:
  s = sum(brute_inversions([g.index(c) for c in p]) for g, p in zip(gts, preds))
  pairs2 = sum(len(g) * (len(g) - 1) for g in gts)
  return 1 - 4 * s / pairs2


@st.composite
def order_pairs(draw, max_len: int = 25):
  n = draw(st.integers(1, max_len))
  gt = [f"cell{i}" for i in draw(st.permutations(list(range(n))))]
  pred = list(draw(st.permutations(gt)))
  return gt, pred


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-5, 5), max_size=40))
def test_count_inversions_matches_brute_force_with_ties(a):
  assert metrics.count_inversions(a) == brute_inversions(a)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 60).flatmap(lambda n: st.permutations(list(range(n)))))
def test_count_inversions_permutations(perm):
  assert metrics.count_inversions(perm) == brute_inversions(perm)


def test_count_inversions_edge_cases():
  assert metrics.count_inversions([]) == 0
  assert metrics.count_inversions([7]) == 0
  assert metrics.count_inversions([2, 1]) == 1
  assert metrics.count_inversions(list(range(500, 0, -1))) == 500 * 499 // 2
  assert metrics.count_inversions([0.5, -1.0, 2.0]) == 1
  with pytest.raises(ValueError, match="NaN"):
    metrics.count_inversions([1.0, float("nan")])


@settings(max_examples=200, deadline=None)
@given(st.lists(order_pairs(), min_size=1, max_size=6))
def test_kendall_tau_matches_brute_force(pairs):
  gts, preds = zip(*pairs)
  if all(len(g) < 2 for g in gts):
    assert metrics.kendall_tau(gts, preds) == 1.0
  else:
    assert metrics.kendall_tau(gts, preds) == pytest.approx(brute_pooled_tau(gts, preds), abs=1e-12)


def test_long_notebooks_use_the_exact_path(monkeypatch):
  # Force the O(n log n) path for anything longer than 3 cells; results must agree.
  rng = np.random.default_rng(0)
  gts = [[f"c{i}" for i in range(n)] for n in (2, 3, 5, 40, 41)]
  preds = [[g[k] for k in rng.permutation(len(g))] for g in gts]
  expected = brute_pooled_tau(gts, preds)
  assert metrics.kendall_tau(gts, preds) == pytest.approx(expected, abs=1e-12)
  monkeypatch.setattr(metrics, "_BROADCAST_MAX_LEN", 3)
  assert metrics.kendall_tau(gts, preds) == pytest.approx(expected, abs=1e-12)


def test_identical_and_reversed():
  gt = [list("abcdefg"), list("xy")]
  assert metrics.kendall_tau(gt, gt) == 1.0
  assert metrics.kendall_tau(gt, [g[::-1] for g in gt]) == -1.0


def test_pooled_weighting_by_hand():
  # Notebook A (2 cells) reversed: S=1, n(n-1)=2. Notebook B (4 cells) correct: S=0, 12.
  gt = [["a1", "a2"], ["b1", "b2", "b3", "b4"]]
  pred = [["a2", "a1"], ["b1", "b2", "b3", "b4"]]
  assert metrics.kendall_tau(gt, pred) == pytest.approx(1 - 4 * 1 / 14)  # 5/7, not the mean 0
  res = metrics.evaluate_orders({"A": gt[0], "B": gt[1]}, {"A": pred[0], "B": pred[1]})
  assert res["kendall_tau"] == pytest.approx(5 / 7)
  assert res["tau_mean"] == pytest.approx(0.0)
  assert res["pairwise_accuracy"] == pytest.approx(1 - 1 / 7)  # 1 of 1 + 6 pairs wrong
  assert res["exact_order_rate"] == 0.5
  assert math.isnan(res["markdown_placement_accuracy"])  # no cell types given
  assert res["n_notebooks"] == 2 and res["n_cells"] == 6


def test_every_metric_on_a_hand_example():
  # True: a(md) b(code) c(md) d(code). Predicted: b a c d.
  gt = {"nb": ["a", "b", "c", "d"]}
  pred = {"nb": ["b", "a", "c", "d"]}
  types = {"nb": {"a": "markdown", "b": "code", "c": "markdown", "d": "code"}}
  res = metrics.evaluate_orders(gt, pred, types)
  assert res["kendall_tau"] == pytest.approx(1 - 4 * 1 / 12)
  assert res["tau_mean"] == res["tau_median"] == res["tau_p10"] == res["tau_p90"] == pytest.approx(2 / 3)
  # d = predicted position - true rank = (-1, +1, 0, 0): rho = 1 - 6*2 / (4*15).
  assert res["spearman"] == pytest.approx(0.8)
  assert res["pairwise_accuracy"] == pytest.approx(5 / 6)
  assert res["exact_order_rate"] == 0.0
  assert res["mean_abs_position_error"] == pytest.approx((1 / 4 + 1 / 4) / 4)
  # a: true next code b, predicted next code d -> wrong. c: d and d -> right.
  assert res["markdown_placement_accuracy"] == pytest.approx(0.5)
  assert metrics.per_notebook_tau(gt, pred) == {"nb": pytest.approx(2 / 3)}


def test_markdown_placement_counts_end_of_notebook():
  gt = {"nb": ["x", "y"]}
  types = {"nb": {"x": "code", "y": "markdown"}}
  assert metrics.evaluate_orders(gt, {"nb": ["x", "y"]}, types)["markdown_placement_accuracy"] == 1.0
  assert metrics.evaluate_orders(gt, {"nb": ["y", "x"]}, types)["markdown_placement_accuracy"] == 0.0
  # Two markdown cells swapped inside one gap are both still placed right.
  gt = {"nb": ["c1", "m1", "m2", "c2"]}
  types = {"nb": {"c1": "code", "m1": "markdown", "m2": "markdown", "c2": "code"}}
  res = metrics.evaluate_orders(gt, {"nb": ["c1", "m2", "m1", "c2"]}, types)
  assert res["markdown_placement_accuracy"] == 1.0
  assert res["kendall_tau"] < 1.0


def test_tau_distribution_statistics():
  # Three notebooks of 3 cells with 0, 1 and 3 inversions: taus 1, 1/3, -1.
  gt = {k: ["a", "b", "c"] for k in "xyz"}
  pred = {"x": ["a", "b", "c"], "y": ["b", "a", "c"], "z": ["c", "b", "a"]}
  res = metrics.evaluate_orders(gt, pred)
  taus = [1.0, 1 / 3, -1.0]
  assert res["tau_mean"] == pytest.approx(np.mean(taus))
  assert res["tau_median"] == pytest.approx(1 / 3)
  assert res["tau_p10"] == pytest.approx(np.percentile(taus, 10))
  assert res["tau_p90"] == pytest.approx(np.percentile(taus, 90))
  assert res["exact_order_rate"] == pytest.approx(1 / 3)
  assert res["kendall_tau"] == pytest.approx(1 - 4 * 4 / 18)


def test_single_cell_notebooks():
  assert metrics.kendall_tau([["a"]], [["a"]]) == 1.0
  res = metrics.evaluate_orders({"one": ["a"], "two": ["a", "b"]}, {"one": ["a"], "two": ["b", "a"]})
  assert res["kendall_tau"] == -1.0  # the 1-cell notebook adds no pairs
  assert res["tau_mean"] == 0.0      # per-notebook taus 1 and -1


@settings(max_examples=100, deadline=None)
@given(st.lists(order_pairs(max_len=12), min_size=1, max_size=5), st.data())
def test_evaluate_orders_against_per_notebook_brute_force(pairs, data):
  gt = {f"nb{i}": g for i, (g, _) in enumerate(pairs)}
  pred = {f"nb{i}": p for i, (_, p) in enumerate(pairs)}
  types = {k: {c: data.draw(st.sampled_from(["code", "markdown"])) for c in g} for k, g in gt.items()}
  res = metrics.evaluate_orders(gt, pred, types)
  md_total = md_hit = 0
  for k, g in gt.items():
    p = pred[k]
    t = types[k]
    for c in g:
      if t[c] != "markdown":
        continue
      def next_code(order, cell):
        after = order[order.index(cell) + 1:]
        return next((x for x in after if t[x] == "code"), None)
      md_total += 1
      md_hit += next_code(g, c) == next_code(p, c)
  if md_total:
    assert res["markdown_placement_accuracy"] == pytest.approx(md_hit / md_total)
  else:
    assert math.isnan(res["markdown_placement_accuracy"])
  cells = [(abs(p.index(c) - g.index(c)) / len(g)) for g, p in zip(gt.values(), pred.values()) for c in g]
  assert res["mean_abs_position_error"] == pytest.approx(np.mean(cells))
  rhos = []
  for g, p in zip(gt.values(), pred.values()):
    n = len(g)
    rhos.append(1.0 if n < 2 else 1 - 6 * sum((p.index(c) - g.index(c)) ** 2 for c in g) / (n * (n * n - 1)))
  assert res["spearman"] == pytest.approx(np.mean(rhos))


def test_refusals_name_notebook_and_cell():
  gt = {"nb1": ["a", "b", "c"]}
  with pytest.raises(ValueError, match=r"no prediction .*nb1"):
    metrics.evaluate_orders(gt, {})
  with pytest.raises(ValueError, match=r"unknown notebook.*nb9"):
    metrics.evaluate_orders(gt, {"nb1": ["a", "b", "c"], "nb9": []})
  with pytest.raises(ValueError, match=r"notebook nb1: predicted order .*has cell zz not in the notebook"):
    metrics.evaluate_orders(gt, {"nb1": ["a", "b", "zz"]})
  with pytest.raises(ValueError, match=r"notebook nb1: predicted order is missing cell c"):
    metrics.evaluate_orders(gt, {"nb1": ["a", "b"]})
  with pytest.raises(ValueError, match=r"notebook nb1: predicted order is missing cell c; repeats cell b"):
    metrics.evaluate_orders(gt, {"nb1": ["a", "b", "b"]})
  with pytest.raises(ValueError, match=r"notebook nb1: predicted order repeats cell b"):
    metrics.evaluate_orders(gt, {"nb1": ["a", "b", "b", "c"]})
  with pytest.raises(ValueError, match=r"notebook nb1: true order repeats cell a"):
    metrics.evaluate_orders({"nb1": ["a", "a"]}, {"nb1": ["a", "a"]})
  with pytest.raises(ValueError, match=r"notebook nb1: no cell type for cell c"):
    metrics.evaluate_orders(gt, gt, {"nb1": {"a": "code", "b": "code"}})
  with pytest.raises(ValueError, match=r"notebook nb1: cell b has type 'raw'"):
    metrics.evaluate_orders(gt, gt, {"nb1": {"a": "code", "b": "raw", "c": "code"}})
  with pytest.raises(ValueError, match=r"no notebooks"):
    metrics.evaluate_orders({}, {})
  with pytest.raises(ValueError, match=r"2 true orders but 1 predicted"):
    metrics.kendall_tau([["a"], ["b"]], [["a"]])


def _reference_gap_oracles(gt, pred, types):
  """(pred gaps + true order within a gap, true gaps + predicted order within a gap),
  built cell by cell: a markdown cell's gap is the number of code cells before it."""
  def gaps(order):
    out, k = {}, 0
    for c in order:
      if types[c] == "code":
        k += 1
      else:
        out[c] = k
    return out

  code = [c for c in gt if types[c] == "code"]
  true_gap, pred_gap = gaps(gt), gaps(pred)
  true_pos, pred_pos = {c: i for i, c in enumerate(gt)}, {c: i for i, c in enumerate(pred)}

  def build(gap, rank):
    out = []
    for k in range(len(code) + 1):
      out += sorted((c for c in gap if gap[c] == k), key=rank.__getitem__)
      out += code[k:k + 1]
    return out

  return build(pred_gap, true_pos), build(true_gap, pred_pos)


def test_gap_oracle_taus_by_hand():
  # True: a c0 b c1 d; predicted: c0 b a d c1 (a one gap late, d one gap early).
  types = {"c0": "code", "c1": "code", "a": "markdown", "b": "markdown", "d": "markdown"}
  gt = {"nb": ["a", "c0", "b", "c1", "d"]}
  res = metrics.evaluate_orders(gt, {"nb": ["c0", "b", "a", "d", "c1"]}, {"nb": types})
  # Predicted gaps kept, true order inside them: c0 a b d c1 (a-c0, d-c1 wrong).
  assert res["tau_true_within_gap"] == pytest.approx(1 - 4 * 2 / 20)
  # True gaps, predicted order inside them: a c0 b c1 d, the truth.
  assert res["tau_true_gaps"] == 1.0
  assert res["kendall_tau"] == pytest.approx(1 - 4 * 3 / 20)  # a-c0, a-b, d-c1 wrong
  # An empty notebook, first or last, changes nothing.
  pred = {"nb": ["c0", "b", "a", "d", "c1"], "e": []}
  for gts in ({"e": [], **gt}, {**gt, "e": []}):
    with_empty = metrics.evaluate_orders(gts, pred, {"nb": types, "e": {}})
    assert with_empty["tau_true_within_gap"] == res["tau_true_within_gap"]
    assert with_empty["tau_true_gaps"] == res["tau_true_gaps"]
  # Without cell types there are no gaps.
  assert math.isnan(metrics.evaluate_orders(gt, {"nb": gt["nb"]})["tau_true_gaps"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(order_pairs(max_len=12), st.lists(st.booleans(), min_size=12,
                                                            max_size=12)),
                min_size=1, max_size=6))
def test_gap_oracle_taus_match_a_cell_by_cell_reference(notebooks):
  gt, pred, types, want_a, want_b = {}, {}, {}, [], []
  for i, ((g, p), code_flags) in enumerate(notebooks):
    t = {c: "code" if code_flags[k] else "markdown" for k, c in enumerate(g)}
    gt[f"n{i}"], pred[f"n{i}"], types[f"n{i}"] = g, p, t
    a, b = _reference_gap_oracles(g, p, t)
    want_a.append(a)
    want_b.append(b)
  res = metrics.evaluate_orders(gt, pred, types)
  gts = list(gt.values())
  if not any(len(g) > 1 for g in gts):  # no pair anywhere: tau 1 by convention
    assert res["tau_true_within_gap"] == res["tau_true_gaps"] == 1.0
    return
  assert res["tau_true_within_gap"] == pytest.approx(brute_pooled_tau(gts, want_a))
  assert res["tau_true_gaps"] == pytest.approx(brute_pooled_tau(gts, want_b))
