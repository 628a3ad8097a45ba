"""benchmarks/baselines.py: the no-training rows give valid orders that use the text."""

from __future__ import annotations

from benchmarks import baselines
from jaxrank import submission
from jaxrank.data import notebooks as nb_io


def test_lexical_nearest_code_is_valid_and_beats_the_file_order():
  nbs = nb_io.load_split(nb_io.sample_data_dir(), "train")[:80]
  preds = baselines.lexical_nearest_code([], nbs)
  scored = submission.score_submission(preds, nbs)  # validates every order first
  given = submission.score_submission(baselines.order_as_given([], nbs), nbs)
  assert scored["kendall_tau"] > given["kendall_tau"] + 0.1
