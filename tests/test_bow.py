"""TF-IDF featurizer: bags, truncation, save/load round trip (no pickle)."""

import numpy as np
import scipy.sparse as sp

from jaxrank.text import bow

TEXTS = ["import numpy as np", "# Plot the data\nWe plot it.", "plt.plot(x, y)",
         "df = pd.read_csv('data.csv')", "## Load the data", "x" * 100_000]


def test_bags_are_top_k_of_tfidf_rows():
  f = bow.BowFeaturizer.fit(TEXTS, bow.BowConfig(min_df=1, max_terms=3))
  dense = f.transform(TEXTS).toarray()
  ids, w = f.bags(TEXTS)
  assert ids.shape == (len(TEXTS), 3) and w.shape == ids.shape
  for r in range(len(TEXTS)):
    kept = w[r] > 0
    np.testing.assert_allclose(dense[r, ids[r, kept]], w[r, kept], rtol=1e-6)
    top = np.sort(dense[r])[::-1][: kept.sum()]
    np.testing.assert_allclose(np.sort(w[r, kept])[::-1], top, rtol=1e-6)
  assert (dense[:, 0] == 0).all()  # id 0 is padding


def test_code_and_markdown_share_terms():
  f = bow.BowFeaturizer.fit(TEXTS, bow.BowConfig(min_df=1))
  vocab = f.vectorizers["word"].vocabulary_
  assert "plot" in vocab and "read_csv" in vocab


def test_huge_cell_is_truncated_not_fatal():
  f = bow.BowFeaturizer.fit(TEXTS, bow.BowConfig(min_df=1, max_chars=50))
  ids, w = f.bags(["y" * 2_000_000])
  assert ids.shape == (1, f.config.max_terms)


def test_save_load_round_trip_gives_identical_features(tmp_path):
  cfg = bow.BowConfig(min_df=1, char_ngrams=(2, 3), char_vocab=50, max_terms=8)
  f = bow.BowFeaturizer.fit(TEXTS, cfg)
  f.save(tmp_path)
  assert not list(tmp_path.glob("*.pkl"))
  g = bow.BowFeaturizer.load(tmp_path)
  assert g.vocab_size == f.vocab_size and g.config == f.config
  _, x_fit = bow.BowFeaturizer.fit_transform(TEXTS, cfg)
  x_loaded = g.transform(TEXTS)  # what a resumed run computes
  assert x_fit.dtype == x_loaded.dtype and (x_fit != x_loaded).nnz == 0
  for a, b in zip(bow.csr_to_bags(x_fit, cfg.max_terms), g.bags(TEXTS)):  # same tie-breaks
    np.testing.assert_array_equal(a, b)
  new = ["plot the numpy data", "completely unseen words here"]
  a, b = f.transform(new), g.transform(new)
  assert (a != b).nnz == 0
  np.testing.assert_array_equal(f.bags(new)[0], g.bags(new)[0])


def test_csr_to_bags_pads_short_rows():
  m = sp.csr_matrix(np.array([[0, 0.5, 0, 0.2], [0, 0, 0, 0]], np.float32))
  ids, w = bow.csr_to_bags(m, 3)
  assert ids[0].tolist() == [1, 3, 0] and w[0].tolist() == [0.5, np.float32(0.2), 0]
  assert (ids[1] == 0).all() and (w[1] == 0).all()


def test_lexical_sim_splits_identifiers_and_weighs_words_by_the_notebook_idf():
  texts = ["## Train the RandomForest model", "model = RandomForestClassifier()\nmodel.fit(X_tr)",
           "plt.plot(history['loss'])", "", "Plot the training loss"]
  assert bow.words("trainLoss_2 = the model.fit(X)") == ["train", "loss", "model", "fit"]
  s = bow.lexical_sim(texts)
  assert s.shape == (5, 5) and s.dtype == np.float32
  np.testing.assert_allclose(s, s.T, atol=1e-6)
  np.testing.assert_allclose(np.diag(s)[[0, 1, 2, 4]], 1.0, atol=1e-6)
  assert s[3].max() == 0  # an empty cell is similar to nothing
  assert s[0, 1] > 0.3 and s[0, 2] == 0  # "random forest model" is in cell 1, not cell 2
  assert s[4, 2] > s[4, 1]  # "plot ... loss" goes with plt.plot(history['loss'])
  # Stateless: a cell's row depends only on its own notebook.
  np.testing.assert_allclose(bow.lexical_sim(texts[:2]), bow.lexical_sim(texts[:2]))
  assert bow.lexical_sim(["", ""]).max() == 0
