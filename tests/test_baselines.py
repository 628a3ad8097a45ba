"""benchmarks/baselines.py end to end: the no-training rows give valid, useful orders.

Run as a subprocess: the module defines absl flags that other entry points
imported by tests define too.
"""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

from jaxrank.data import notebooks as nb_io
from tests.conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[1]


def test_lexical_nearest_code_row_beats_the_file_order(tmp_path):
  out = tmp_path / "table.json"
  p = subprocess.run(
      [sys.executable, "-m", "benchmarks.baselines", f"--data_dir={nb_io.sample_data_dir()}",
       "--only=order_as_given,lexical_nearest_code", "--nobow_mlp", f"--out={out}"],
      cwd=ROOT, env=subprocess_env(None), capture_output=True, text=True,
      timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  rows = json.loads(out.read_text())["rows"]
  assert set(rows) == {"order_as_given", "lexical_nearest_code"}
  # score_submission validated every order; the text evidence must help a lot.
  assert rows["lexical_nearest_code"]["kendall_tau"] > rows["order_as_given"]["kendall_tau"] + 0.1
  assert "lexical_nearest_code" in p.stdout
