"""Tests for jaxrank.decode: the key convention and gap decoding."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from jaxrank import decode
from jaxrank.data import targets
from jaxrank.data.types import CODE, MARKDOWN, Notebook


def make_notebook(true_types: list[str], md_file_perm: list[int] | None = None,
                  nb_id: str = "nb") -> Notebook:
  """A notebook whose true order has the given cell types; markdown shuffled in the file."""
  ids = [f"c{i:03d}" for i in range(len(true_types))]
  code = [c for c, t in zip(ids, true_types) if t == CODE]
  md = [c for c, t in zip(ids, true_types) if t == MARKDOWN]
  if md_file_perm is not None:
    md = [md[i] for i in md_file_perm]
  return Notebook(
      id=nb_id,
      cell_ids=tuple(code + md),
      cell_types=(CODE,) * len(code) + (MARKDOWN,) * len(md),
      sources=tuple("" for _ in ids),
      order=tuple(ids),
  )


@st.composite
def notebooks(draw, max_cells: int = 30) -> Notebook:
  types = draw(st.lists(st.sampled_from([CODE, MARKDOWN]), min_size=0, max_size=max_cells))
  n_md = sum(t == MARKDOWN for t in types)
  perm = draw(st.permutations(list(range(n_md))))
  return make_notebook(types, list(perm))


def md_true_keys(nb: Notebook) -> np.ndarray:
  return targets.true_keys(nb)[targets.markdown_positions(nb)]


def test_code_keys():
  np.testing.assert_allclose(targets.code_keys(3), [0.25, 0.5, 0.75])
  assert targets.code_keys(0).shape == (0,)
  with pytest.raises(ValueError):
    targets.code_keys(-1)


def test_true_keys_and_gaps_by_hand():
  # True order m0 c0 m1 m2 c1 (file order: c0 c1 then markdown m2, m0, m1).
  nb = Notebook(
      id="hand", cell_ids=("c0", "c1", "m2", "m0", "m1"),
      cell_types=(CODE, CODE, MARKDOWN, MARKDOWN, MARKDOWN),
      sources=("",) * 5, order=("m0", "c0", "m1", "m2", "c1"))
  keys = dict(zip(nb.cell_ids, targets.true_keys(nb)))
  assert keys["c0"] == pytest.approx(1 / 3)
  assert keys["c1"] == pytest.approx(2 / 3)
  assert keys["m0"] == pytest.approx((0 + 1 / 2) / 3)
  assert keys["m1"] == pytest.approx((1 + 1 / 3) / 3)
  assert keys["m2"] == pytest.approx((1 + 2 / 3) / 3)
  np.testing.assert_array_equal(targets.true_gaps(nb), [1, 0, 1])  # m2, m0, m1


def test_markdown_after_last_code_is_in_last_gap():
  nb = make_notebook([CODE, MARKDOWN, MARKDOWN])
  np.testing.assert_array_equal(targets.true_gaps(nb), [1, 1])
  np.testing.assert_allclose(md_true_keys(nb), [(1 + 1 / 3) / 2, (1 + 2 / 3) / 2])


@settings(max_examples=200, deadline=None)
@given(notebooks())
def test_true_keys_decode_to_true_order(nb):
  keys = targets.true_keys(nb)
  assert ((keys > 0) & (keys < 1)).all()
  assert len(set(keys.tolist())) == nb.n_cells  # distinct: the order is unambiguous
  assert decode.order_from_keys(nb, md_true_keys(nb)) == list(nb.order)
  # Gaps agree with keys: gap g means g code keys below the markdown key.
  gaps = targets.true_gaps(nb)
  below = np.searchsorted(targets.code_keys(nb.n_code), md_true_keys(nb))
  np.testing.assert_array_equal(gaps, below)


@settings(max_examples=100, deadline=None)
@given(notebooks(), st.data())
def test_code_order_kept_for_any_keys(nb, data):
  md_keys = data.draw(st.lists(
      st.floats(min_value=-5, max_value=5) | st.sampled_from([np.inf, -np.inf]),
      min_size=nb.n_markdown, max_size=nb.n_markdown))
  order = decode.order_from_keys(nb, md_keys)
  assert sorted(order) == sorted(nb.cell_ids)
  code_set = set(nb.code_ids)
  assert tuple(c for c in order if c in code_set) == nb.code_ids


def test_order_from_keys_ties_and_errors():
  nb = make_notebook([CODE, MARKDOWN, MARKDOWN, CODE])  # file: c000 c003 c001 c002
  # Markdown keyed exactly at code 1's key goes before it; equal markdown keys keep md order.
  assert decode.order_from_keys(nb, [2 / 3, 2 / 3]) == ["c000", "c001", "c002", "c003"]
  assert decode.order_from_keys(nb, [-1.0, 7.0]) == ["c001", "c000", "c003", "c002"]
  with pytest.raises(ValueError, match=r"notebook nb: key of markdown cell c002 is NaN"):
    decode.order_from_keys(nb, [0.5, float("nan")])
  with pytest.raises(ValueError, match="shape"):
    decode.order_from_keys(nb, [0.5])


def test_true_keys_errors():
  nb = make_notebook([CODE, MARKDOWN])
  with pytest.raises(ValueError, match="no true order"):
    targets.true_keys(Notebook(nb.id, nb.cell_ids, nb.cell_types, nb.sources, None))
  swapped = Notebook("bad", ("a", "b"), (CODE, CODE), ("", ""), order=("b", "a"))
  with pytest.raises(ValueError, match="notebook bad: code cells"):
    targets.true_gaps(swapped)
  missing = Notebook("miss", ("a", "b"), (CODE, MARKDOWN), ("", ""), order=("a",))
  with pytest.raises(ValueError, match="notebook miss: order is not a permutation"):
    targets.true_keys(missing)


def test_median_gap_on_hand_distributions():
  probs = np.array([
      [0.1, 0.2, 0.7],   # mass at the end -> gap 2
      [0.3, 0.3, 0.4],   # median is gap 1 although the mode is gap 2
      [0.5, 0.5, 0.0],   # exact split: smallest median
      [0.0, 0.0, 1.0],
      [4.0, 1.0, 1.0],   # unnormalised rows are normalised
  ])
  np.testing.assert_array_equal(decode.median_gaps(probs), [2, 1, 0, 2, 0])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=8).filter(lambda p: sum(p) > 1e-3))
def test_median_gap_minimises_expected_misplaced_pairs(p):
  probs = np.array([p])
  g = int(decode.median_gaps(probs)[0])
  gaps = np.arange(len(p))
  cost = [np.dot(probs[0], np.abs(gaps - h)) for h in gaps]  # E|g - t| = misplaced md-code pairs
  assert cost[g] <= min(cost) + 1e-9


def test_keys_from_gap_probs_places_cells_in_their_gaps_ordered_by_tiebreak():
  # 2 code cells -> 3 gaps; md0 and md2 share gap 1, md1 in gap 0.
  probs = np.array([[0.1, 0.8, 0.1], [0.9, 0.1, 0.0], [0.0, 0.6, 0.4]])
  keys = decode.keys_from_gap_probs(probs, tiebreak=[0.9, 0.0, 0.1])
  code = targets.code_keys(2)
  np.testing.assert_array_equal(np.searchsorted(code, keys), [1, 0, 1])
  assert keys[2] < keys[0]  # tiebreak puts md2 first inside gap 1
  np.testing.assert_allclose(keys, [(1 + 2 / 3) / 3, (0 + 1 / 2) / 3, (1 + 1 / 3) / 3])
  # Default tiebreak: expected gap (md0: 1.0, md2: 1.4) -> md0 first.
  keys = decode.keys_from_gap_probs(probs)
  assert keys[0] < keys[2]


def test_keys_from_gap_probs_errors_and_empty():
  assert decode.keys_from_gap_probs(np.zeros((0, 4))).shape == (0,)
  with pytest.raises(ValueError, match="sums to 0"):
    decode.keys_from_gap_probs(np.array([[0.0, 0.0]]))
  with pytest.raises(ValueError, match="non-negative"):
    decode.keys_from_gap_probs(np.array([[-0.1, 1.0]]))
  with pytest.raises(ValueError, match="gaps must be in"):
    decode.keys_from_gaps([3], n_code=2)


def _crowded_cost(probs, gaps, crowding):
  p = probs / probs.sum(1, keepdims=True)
  h = np.arange(p.shape[1])
  expected = sum(float(p[i] @ np.abs(h - g)) for i, g in enumerate(gaps))
  counts = np.bincount(gaps, minlength=p.shape[1])
  return expected + crowding * float((counts * (counts - 1) / 2).sum())


def test_crowded_gaps_spreads_cells_that_compete_for_one_gap():
  # Both cells like gap 1; md1 is nearly as happy in gap 2.
  probs = np.array([[0.05, 0.9, 0.05], [0.0, 0.55, 0.45]])
  np.testing.assert_array_equal(decode.median_gaps(probs), [1, 1])
  np.testing.assert_array_equal(decode.crowded_gaps(probs, 0.0), [1, 1])
  np.testing.assert_array_equal(decode.crowded_gaps(probs, 0.5), [1, 2])
  # A tiny price does not move a cell that would lose more than it saves.
  np.testing.assert_array_equal(decode.crowded_gaps(probs, 0.05), [1, 1])
  keys = decode.keys_from_gap_probs(probs, crowding=0.5)
  np.testing.assert_array_equal(np.searchsorted(targets.code_keys(2), keys), [1, 2])
  assert decode.crowded_gaps(np.zeros((0, 3)), 2.0).shape == (0,)
  with pytest.raises(ValueError, match="crowding must be >= 0"):
    decode.crowded_gaps(probs, -1.0)
  with pytest.raises(ValueError, match="non-negative"):
    decode.crowded_gaps(np.array([[-0.1, 1.0]]), 1.0)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.floats(0.0, 3.0), st.integers(0, 10_000))
def test_crowded_gaps_is_the_cheapest_joint_assignment(m, n_gaps, crowding, seed):
  """Against brute force over all n_gaps^m assignments: expected misplaced
  pairs plus crowding * (k choose 2) for a gap holding k cells."""
  import itertools
  probs = np.random.default_rng(seed).dirichlet(np.ones(n_gaps) * 0.5, size=m) + 1e-9
  got = decode.crowded_gaps(probs, crowding)
  best = min(_crowded_cost(probs, np.array(a), crowding)
             for a in itertools.product(range(n_gaps), repeat=m))
  assert _crowded_cost(probs, got, crowding) <= best + 1e-9


def test_keys_from_scores_puts_code_back_in_order():
  nb = make_notebook([MARKDOWN, CODE, MARKDOWN, CODE, CODE])  # file: c001 c003 c004 c000 c002
  # Code scores out of order; md c000 scores lowest, md c002 between the 2nd and 3rd code scores.
  code_scores = [0.5, 0.2, 0.9]
  md_scores = [0.1, 0.6]
  keys = decode.keys_from_scores(code_scores, md_scores)
  assert decode.order_from_keys(nb, keys) == ["c000", "c001", "c003", "c002", "c004"]


def test_many_random_notebooks_round_trip():
  # A fixed-seed sweep beside the hypothesis property, on larger notebooks.
  rng = np.random.default_rng(0)
  for _ in range(50):
    n = int(rng.integers(1, 200))
    types = [CODE if x else MARKDOWN for x in rng.random(n) < 0.6]
    n_md = types.count(MARKDOWN)
    nb = make_notebook(types, list(rng.permutation(n_md)))
    assert decode.order_from_keys(nb, md_true_keys(nb)) == list(nb.order)
    # Decoding the true gaps through one-hot distributions also recovers the order
    # when the true within-gap order is the tiebreak.
    probs = np.eye(nb.n_code + 1)[targets.true_gaps(nb)]
    keys = decode.keys_from_gap_probs(probs, tiebreak=md_true_keys(nb))
    assert decode.order_from_keys(nb, keys) == list(nb.order)


# ----------------------------------------------------------------------------------------
# Markdown cells of known order (decode.monotone_gaps, keys_from_gap_probs's chains).
# ----------------------------------------------------------------------------------------
def _expected_cost(p, gaps):
  h = np.arange(p.shape[1])
  return float(sum(p[k] @ np.abs(h - g) for k, g in enumerate(gaps)))


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 4), n_gaps=st.integers(1, 5), seed=st.integers(0, 10**6))
def test_monotone_gaps_is_the_cheapest_non_decreasing_placement(k, n_gaps, seed):
  import itertools  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  p = rng.dirichlet(np.full(n_gaps, 0.3), size=k)
  gaps = decode.monotone_gaps(p)
  assert np.all(np.diff(gaps) >= 0) and gaps.min() >= 0 and gaps.max() < n_gaps
  best = min(_expected_cost(p, g) for g in itertools.combinations_with_replacement(
      range(n_gaps), k))
  assert _expected_cost(p, gaps) == pytest.approx(best)


def test_chains_place_cells_of_known_order_in_that_order():
  # Three markdown cells, 4 gaps. The model puts cell 0 late and cell 2 early; the
  # text says 0, 1, 2 (e.g. sections 1, 2, 3).
  p = np.array([[0.05, 0.05, 0.3, 0.6],
                [0.1, 0.3, 0.4, 0.2],
                [0.7, 0.2, 0.05, 0.05]])
  free = decode.keys_from_gap_probs(p, tiebreak=[0.9, 0.5, 0.1])
  assert list(np.argsort(free)) == [2, 1, 0]
  keys = decode.keys_from_gap_probs(p, tiebreak=[0.9, 0.5, 0.1], chains=[[0, 1, 2]])
  assert list(np.argsort(keys)) == [0, 1, 2]
  # A chain of one cell, or none, changes nothing; cells outside a chain keep their gap.
  np.testing.assert_array_equal(decode.keys_from_gap_probs(p, chains=[[1]]),
                                decode.keys_from_gap_probs(p))
  part = decode.keys_from_gap_probs(p, tiebreak=[0.9, 0.5, 0.1], chains=[[2, 0]])
  assert part[2] < part[0] and part[1] == free[1]
  with pytest.raises(ValueError, match="distinct markdown indices"):
    decode.keys_from_gap_probs(p, chains=[[0, 0]])
  with pytest.raises(ValueError, match="distinct markdown indices"):
    decode.keys_from_gap_probs(p, chains=[[0, 3]])
