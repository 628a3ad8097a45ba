"""jaxrank/text/cell_shape.py: each cell's form, from its raw source."""

from __future__ import annotations

import numpy as np

from jaxrank.data.types import CODE, MARKDOWN
from jaxrank.text import cell_shape as cs


def _on(source: str, kind: str) -> set[int]:
  v = cs.cell_shape(source, kind)
  assert v.shape == (cs.SHAPE_DIM,) and v.dtype == np.float32
  assert ((v >= 0) & (v <= 1)).all()
  return {int(i) for i in np.flatnonzero(v[:22])}  # the 0/1 slots set


def test_markdown_form():
  assert _on("# Titanic: a first model", MARKDOWN) == {0, 6}
  assert _on("  ### Training\nwe fit", MARKDOWN) == {2, 6}
  assert _on("#notaheading", MARKDOWN) == set()
  assert _on("Intro\n\n## Later heading", MARKDOWN) == {6}
  assert _on("- one\n- two", MARKDOWN) == {9}
  assert _on("1. first\n2) second", MARKDOWN) == {9}
  assert _on("![plot](a.png) see [docs](http://x)", MARKDOWN) == {7, 8}
  assert _on("The loss $L = x^2$ is", MARKDOWN) == {10}
  assert _on("<div class='alert'>Note</div>", MARKDOWN) == {11}
  assert _on("Let us look at the data:", MARKDOWN) == {12}


def test_code_form():
  assert _on("import numpy as np\nfrom os import path", CODE) == {13, 20}
  assert _on("import numpy as np\nx = 1", CODE) == {13}
  assert _on("def f(x):\n  return x", CODE) == {14}
  assert _on("plt.plot(x)\nplt.show()", CODE) == {15}
  assert _on("!pip install lightgbm", CODE) == {16, 21}
  assert _on("df.head()", CODE) == {17, 21}
  assert _on("model.fit(X, y)\npred = model.predict(T)", CODE) == {18}
  assert _on("df = pd.read_csv('train.csv')\nprint(df.shape)", CODE) == {17, 19}


def test_sizes_grow_with_the_cell_and_saturate():
  short, long_, huge = (cs.cell_shape(s, MARKDOWN) for s in ("hi", "word " * 200, "w\n" * 10**4))
  assert short[22] < long_[22] < huge[22] == 1.0
  assert short[23] == long_[23] < huge[23] == 1.0
  assert cs.shapes([], []).shape == (0, cs.SHAPE_DIM)
  both = cs.shapes(["# T", "x = 1"], [MARKDOWN, CODE])
  np.testing.assert_array_equal(both[1], cs.cell_shape("x = 1", CODE))
