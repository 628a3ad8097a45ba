"""jaxrank/text/markup.py: markdown cells as a reader sees them."""

import numpy as np
import pytest

from jaxrank.data.types import CODE, MARKDOWN
from jaxrank.text import markup, sections


@pytest.mark.parametrize("source, want", [
    # A Kaggle-style heading: the style attributes go, the section number and words stay.
    ("### <b><span style='color:#DEB078'>12.1 |</span><span style='color:#660000'> Setup"
     "</span></b>  ", "### 12.1 | Setup"),
    ('<font size="+2" color="grey"><b>5.1 PCA </b></font><br><a id="5.1"></a>', "5.1 PCA"),
    # An anchor names its section: the words of its id stay.
    ("### <a id='salvador_years'>8.5 Loans by year:</a>", "### salvador years 8.5 Loans by year:"),
    ("<a name=\"dataOverview\"></a>", "dataOverview"),
    # Links keep their text; a bare URL keeps the words of its host and path.
    ("See the [Intermediate ML](https://www.kaggle.com/learn/intermediate-ml) course.",
     "See the Intermediate ML course."),
    ("Reference : https://web.stanford.edu/class/cs224n/reports/final.pdf",
     "Reference : web stanford edu class cs reports final pdf"),
    # Images: the alt text, else "image" and the words of the file's URL.
    ('<img src="https://example.org/figs/unet_generator.png" width=300>',
     "image example figs unet generator png"),
    ('<img alt="loss curve" src="x.png">', "loss curve"),
    ("![](data:image/png;base64,iVBORw0KGgo=)", "image"),
    ("![confusion matrix](cm.png)", "confusion matrix"),
    # Style and script bodies, comments and entities.
    ("<style>.x{color:red}</style>\n\n# Title\n\n\ntext <!-- hidden -->", "# Title\ntext"),
    ("Tom &amp; Jerry&nbsp;here", "Tom & Jerry here"),
    # Text that only looks like markup is left alone.
    ("if a < b and c > d: x<y", "if a < b and c > d: x<y"),
    ("Plain prose, no markup at all.", "Plain prose, no markup at all."),
    ("", ""),
])
def test_readable_keeps_what_a_reader_sees(source, want):
  assert markup.readable(source) == want


def test_readable_is_idempotent_on_real_looking_cells():
  for s in ['<div style="background:#111;padding:25px"><h2 style="margin:0">Data '
            'Overview</h2></div>', "## **<span style=\"color:#e76f51;\">Model</span>**"]:
    once = markup.readable(s)
    assert markup.readable(once) == once
    assert "style" not in once and "<" not in once


def test_markdown_readable_leaves_code_cells_as_written():
  code = "html = '<b>bold</b>'  # https://example.com"
  md = "<b>bold</b> text"
  assert markup.markdown_readable([code, md], [CODE, MARKDOWN]) == [code, "bold text"]


# ----------------------------------------------------------------------------------------
# Section numbers (jaxrank/text/sections.py).
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("source, want", [
    ("## 3. Data Analysis", (3,)),
    ("### <b><span style='color:#DEB078'>12.1 |</span> Setup</b>", (12, 1)),
    ("### <a id='salvador_years'>8.5 Loans by year:</a>", (8, 5)),
    ("(2) Tokenizers", (2,)),
    ("> # **5.Time Series Assumptions**", (5,)),
    ("Step 4: fit the model", (4,)),
    ("**3.2.1 Subsection**", (3, 2, 1)),
    ("# Title\n## 1. not on the first line", None),
    ("2020 was a year", None),  # a year, not a section
    ("## Model_3", None),
])
def test_section_number_reads_the_first_line(source, want):
  assert sections.section_number(source) == want


def test_section_features_rank_numbers_within_the_notebook():
  sources = ["import x", "## 2. Model", "## 1. Data", "text", "## 1.1 Load", "## 2. Again"]
  types = [CODE, MARKDOWN, MARKDOWN, MARKDOWN, MARKDOWN, MARKDOWN]
  f = sections.section_features(sources, types)
  assert f.shape == (6, sections.N_FEATURES)
  np.testing.assert_array_equal(f[[0, 3]], 0.0)  # code, unnumbered markdown
  np.testing.assert_array_equal(f[[1, 2, 4, 5], 0], 1.0)
  # Distinct numbers 1 < 1.1 < 2 ranked over [0, 1]; equal numbers share a rank.
  np.testing.assert_allclose(f[[2, 4, 1, 5], 1], [0.0, 0.5, 1.0, 1.0])
  np.testing.assert_allclose(f[[2, 4], 2], [0.25, 0.5])
  # A code cell that opens like a heading is not a section.
  assert not sections.section_features(["# 1. setup"], [CODE]).any()


def test_a_table_of_contents_ranks_the_sections_it_links_to():
  toc = ("# Contents\n1. [Load the data](#load)\n2. [Explore](#Explore-the-data)\n"
         "3. <a href='#model'>Model</a>\n4. [Nowhere](#missing)")
  sources = ["import x", "<a id='model'></a>\n## Fit a model", toc, "## Explore the data",
             "plain text", "<a name='load'></a>", "see [the model](#model) below"]
  types = [CODE] + [MARKDOWN] * 6
  assert sections.toc_links(toc) == ["load", "explore-the-data", "model", "missing"]
  assert sections.anchors(sources[3]) == {"explore-the-data"}  # Jupyter's own anchor
  f = sections.section_features(sources, types)
  # Found: load (entry 0), explore (1), model (2); ranked over [0, 1] in the toc's order.
  np.testing.assert_array_equal(f[:, 3], [0, 1, 0, 1, 0, 1, 0])
  np.testing.assert_allclose(f[[5, 3, 1], 4], [0.0, 0.5, 1.0])
  # The contents cell itself and a cell with one link are not sections; fewer than three
  # links make no table of contents.
  assert not f[[2, 6], 3:].any()
  two_links = sources[:2] + [toc.split("3.")[0]] + sources[3:]
  assert not sections.section_features(two_links, types)[:, 3:].any()


def test_known_orders_are_the_numbered_cells_and_the_contents_entries():
  toc = "Contents: [Data](#data) [Model](#model) [End](#end)"
  md = ["## 2. Model <a id='model'></a>", toc, "## 1. Data <a id='data'></a>", "text",
        "## 3. End"]
  # Numbers: cells 2 (1.), 0 (2.), 4 (3.); contents: data (2), model (0), end (4: Jupyter's
  # own anchor of "## 3. End" is "3.-end", not "end").
  assert sections.known_orders(md) == [[2, 0, 4], [2, 0]]
  # Repeated numbers (a list restarting at 1.) say no order.
  assert sections.known_orders(["1. a", "1. b", "2. c"]) == []
  assert sections.known_orders(["## 1. only one"]) == []


def test_pathological_cells_take_linear_time():
  # Unclosed tags, links and comments by the thousand: bounded patterns and MAX_CHARS keep
  # each cell to milliseconds (an unbounded "<a [^>]*?" took minutes on the second one).
  import time  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  for s in ["<style " * 20000, "<a " * 50000, "[" * 50000 + "](", "![" * 30000,
            "<a id=x " * 20000, "# " + " #" * 50000, "[a](" * 20000]:
    markup.readable(s)
    sections.known_orders([s, s])
  assert time.perf_counter() - t0 < 10  # generous: ~0.1 s here
  assert markup.readable("x" * (markup.MAX_CHARS + 10) + "<b>y</b>") == "x" * markup.MAX_CHARS
