"""Tests for jaxrank.submission: file round trip, refusals, scoring."""

from __future__ import annotations

import pytest

from jaxrank import metrics
from jaxrank import submission
from jaxrank.data.types import CODE, MARKDOWN, Notebook
from jaxrank.submission import SubmissionError


def _nb(nb_id: str, order: list[str], types: dict[str, str]) -> Notebook:
  code = [c for c in order if types[c] == CODE]
  md = sorted(c for c in order if types[c] == MARKDOWN)  # "shuffled": sorted by id
  ids = tuple(code + md)
  return Notebook(id=nb_id, cell_ids=ids, cell_types=tuple(types[c] for c in ids),
                  sources=tuple(f"src {c}" for c in ids), order=tuple(order))


@pytest.fixture
def notebooks() -> list[Notebook]:
  return [
      _nb("ffff01", ["m1", "c1", "c2", "m2"], {"m1": MARKDOWN, "c1": CODE, "c2": CODE, "m2": MARKDOWN}),
      _nb("0a0a02", ["c1", "m9", "c3"], {"c1": CODE, "m9": MARKDOWN, "c3": CODE}),
  ]


def test_round_trip_sorted_and_atomic(tmp_path, notebooks):
  preds = {nb.id: list(nb.cell_ids) for nb in notebooks}
  path = submission.write_submission(tmp_path / "sub" / "submission.csv", preds)
  text = path.read_text()
  assert text == "id,cell_order\n0a0a02,c1 c3 m9\nffff01,c1 c2 m1 m2\n"
  assert submission.read_submission(path) == preds
  assert sorted(p.name for p in path.parent.iterdir()) == ["submission.csv"]  # no temp left
  # Rewriting with the same predictions gives the same bytes.
  submission.write_submission(path, dict(reversed(list(preds.items()))))
  assert path.read_text() == text


def test_write_refuses_ids_that_break_the_format(tmp_path):
  with pytest.raises(SubmissionError, match=r"notebook nb1: cell id 'a b'"):
    submission.write_submission(tmp_path / "s.csv", {"nb1": ["a b", "c"]})
  with pytest.raises(SubmissionError, match=r"notebook id 'x,y'"):
    submission.write_submission(tmp_path / "s.csv", {"x,y": ["a"]})
  assert not (tmp_path / "s.csv").exists()


def test_read_refuses_bad_header_duplicates_and_bad_rows(tmp_path):
  p = tmp_path / "s.csv"
  p.write_text("id,order\nnb1,a b\n")
  with pytest.raises(SubmissionError, match=r"s.csv: header must be 'id,cell_order'"):
    submission.read_submission(p)
  p.write_text("")
  with pytest.raises(SubmissionError, match="header"):
    submission.read_submission(p)
  p.write_text("id,cell_order\nnb1,a b\nnb2,c\nnb1,b a\n")
  with pytest.raises(SubmissionError, match=r"s.csv, line 4: notebook nb1 appears twice"):
    submission.read_submission(p)
  p.write_text("id,cell_order\nnb1,a b,extra\n")
  with pytest.raises(SubmissionError, match=r"line 2: expected 2 fields"):
    submission.read_submission(p)
  # Quoted fields, CRLF line ends and a trailing blank line are fine.
  p.write_bytes(b'id,cell_order\r\n"nb1","a b"\r\n\r\n')
  assert submission.read_submission(p) == {"nb1": ["a", "b"]}


def test_validate_accepts_permutations(notebooks):
  submission.validate_submission({nb.id: list(nb.order) for nb in notebooks}, notebooks)
  submission.validate_submission({nb.id: list(nb.cell_ids)[::-1] for nb in notebooks}, notebooks)


@pytest.mark.parametrize("change, message", [
    (lambda p: p.pop("0a0a02"), r"notebook 0a0a02: missing from the submission"),
    (lambda p: p.update(beef00=["x"]), r"notebook beef00: not a notebook of this set"),
    (lambda p: p["ffff01"].remove("c2"), r"notebook ffff01: cell c2 is missing"),
    (lambda p: p["ffff01"].append("zz"), r"notebook ffff01: cell zz is not in the notebook"),
    (lambda p: p["0a0a02"].append("m9"), r"notebook 0a0a02: cell m9 appears 2 times"),
])
def test_validate_refusals_name_notebook_and_cell(notebooks, change, message):
  preds = {nb.id: list(nb.order) for nb in notebooks}
  change(preds)
  with pytest.raises(SubmissionError, match=message):
    submission.validate_submission(preds, notebooks)


def test_validate_lists_several_problems(notebooks):
  preds = {"ffff01": ["m1", "m1", "c1"]}
  with pytest.raises(SubmissionError) as e:
    submission.validate_submission(preds, notebooks)
  msg = str(e.value)
  for part in ("0a0a02: missing", "ffff01: cell c2 is missing", "ffff01: cell m2 is missing",
               "ffff01: cell m1 appears 2 times"):
    assert part in msg


def test_score_submission_from_file_and_dict(tmp_path, notebooks):
  preds = {nb.id: list(nb.cell_ids) for nb in notebooks}  # order as given
  path = submission.write_submission(tmp_path / "submission.csv", preds)
  from_file = submission.score_submission(path, notebooks)
  from_str = submission.score_submission(str(path), notebooks)
  from_dict = submission.score_submission(preds, notebooks)
  assert from_file == from_str == from_dict
  gt = {nb.id: nb.order for nb in notebooks}
  assert from_file["kendall_tau"] == metrics.kendall_tau(list(gt.values()), [preds[k] for k in gt])
  # ffff01: true m1 c1 c2 m2, pred c1 c2 m1 m2 -> 2 inversions of 12/2; 0a0a02: c1 c3 m9 -> 1 of 3.
  assert from_file["kendall_tau"] == pytest.approx(1 - 4 * 3 / (12 + 6))
  # m1 (next code c1, predicted m2... then none -> end): wrong; m2 (end, end): right; m9 (c3 vs end): wrong.
  assert from_file["markdown_placement_accuracy"] == pytest.approx(1 / 3)
  perfect = submission.score_submission({nb.id: list(nb.order) for nb in notebooks}, notebooks)
  assert perfect["kendall_tau"] == 1.0 and perfect["markdown_placement_accuracy"] == 1.0


def test_score_refuses_invalid_submission_and_missing_truth(tmp_path, notebooks):
  with pytest.raises(SubmissionError, match="missing from the submission"):
    submission.score_submission({}, notebooks)
  test_nb = Notebook("t1", ("a",), (CODE,), ("x",), order=None)
  with pytest.raises(ValueError, match=r"no true order for notebook\(s\) \['t1'\]"):
    submission.score_submission({"t1": ["a"]}, [test_nb])
