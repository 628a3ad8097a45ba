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


# --- the fast path (jaxrank/text/word_counts.py) against scikit-learn's own ----------------
def _sample_texts():
  from jaxrank import features  # pylint: disable=g-import-not-at-top
  from jaxrank.data import notebooks as nb_io  # pylint: disable=g-import-not-at-top
  nbs = nb_io.load_split(nb_io.sample_data_dir(), "train")
  return nbs, features.cell_texts(nbs)


def test_fast_path_gives_scikit_learns_vocabulary_idf_and_matrices_on_the_sample():
  _, texts = _sample_texts()
  for cfg in [bow.BowConfig(),  # the BOW-MLP's: 1-2 grams, 30k terms (max_features bites)
              bow.BowConfig(word_ngrams=(1, 3), word_vocab=5_000, min_df=3, max_chars=300)]:
    plain, x_plain = bow.BowFeaturizer.fit_transform(texts, cfg, fast=False)
    fast, x_fast = bow.BowFeaturizer.fit_transform(texts, cfg)
    vp, vf = plain.vectorizers["word"], fast.vectorizers["word"]
    assert len(vp.vocabulary_) == len(vf.vocabulary_) > 1000
    assert {k: int(i) for k, i in vp.vocabulary_.items()} == vf.vocabulary_
    assert vp.idf_.dtype == vf.idf_.dtype and np.array_equal(vp.idf_, vf.idf_)
    # Bitwise equal, entry order included (x_fast is canonical; bags need no re-sort).
    assert x_fast.has_sorted_indices and x_fast.dtype == np.float32
    assert (x_plain != x_fast).nnz == 0
    new = texts[::7] + ["never seen tokens zzqx", "", "plt . plot ( x )"]
    y_plain, y_fast = plain.transform(new, fast=False), fast.transform(new)
    y_plain.sort_indices()
    for a in ("indptr", "indices", "data"):
      np.testing.assert_array_equal(getattr(y_plain, a), getattr(y_fast, a))


def test_fast_path_of_a_loaded_featurizer_and_char_ngrams_falls_back(tmp_path):
  _, texts = _sample_texts()
  cfg = bow.BowConfig(char_ngrams=(2, 3), char_vocab=300, max_terms=16)
  f, x = bow.BowFeaturizer.fit_transform(texts, cfg)
  _, x_plain = bow.BowFeaturizer.fit_transform(texts, cfg, fast=False)
  assert (x != x_plain).nnz == 0 and x.shape[1] == f.vocab_size
  f.save(tmp_path)
  g = bow.BowFeaturizer.load(tmp_path)
  y, y_plain = g.transform(texts), g.transform(texts, fast=False)
  y_plain.sort_indices()
  assert (y != x).nnz == 0 and (y != y_plain).nnz == 0


def test_vectorized_bags_equal_the_row_loop_with_its_tie_breaks():
  from benchmarks import featurize_reference  # pylint: disable=g-import-not-at-top
  _, texts = _sample_texts()
  f, x = bow.BowFeaturizer.fit_transform(texts, bow.BowConfig(max_terms=8))
  rows = np.diff(x.indptr)
  assert (rows > 8).any() and (rows <= 8).any() and (rows == 0).any()
  for a, b in zip(bow.csr_to_bags(x.copy(), 8), featurize_reference.csr_to_bags(x.copy(), 8)):
    np.testing.assert_array_equal(a, b)


def test_items_of_the_fast_path_match_the_old_path():
  from benchmarks import featurize_reference  # pylint: disable=g-import-not-at-top
  from experiments.configs import bow_mlp  # pylint: disable=g-import-not-at-top
  from jaxrank.features import bow as features_bow  # pylint: disable=g-import-not-at-top
  nbs, _ = _sample_texts()
  nbs = nbs[:120]
  cfg = bow_mlp.get_config().features
  _, new = features_bow.fit_items(cfg, nbs)
  _, old = featurize_reference.fit_items(cfg, nbs)
  assert len(new) == len(old) == len(nbs)
  for a, b in zip(new, old):
    assert a.keys() == b.keys()
    for k in a:
      if k == "sim":  # one BLAS thread now: the same cosines up to float32 summation order
        np.testing.assert_allclose(a[k].astype(np.float32), b[k].astype(np.float32),
                                   atol=1e-3, rtol=0)
      else:
        np.testing.assert_array_equal(a[k], b[k])


def test_parallel_counts_in_spawned_processes_equal_one_process():
  from jaxrank.text import word_counts  # pylint: disable=g-import-not-at-top
  _, texts = _sample_texts()
  f, _ = bow.BowFeaturizer.fit_transform(texts, bow.BowConfig())
  v = f.vectorizers["word"]
  lookup = word_counts.Lookup(v.vocabulary_, v.ngram_range)
  one = word_counts.counts(v, texts, lookup)
  two = word_counts.parallel_counts(v, texts, lookup, workers=2, chunk=997, min_texts=0)
  assert two.has_sorted_indices and two.shape == one.shape
  for a in ("indptr", "indices", "data"):
    np.testing.assert_array_equal(getattr(two, a), getattr(one, a))


def test_vocabulary_from_a_sample_idf_from_every_cell():
  from sklearn.feature_extraction.text import TfidfVectorizer  # pylint: disable=g-import-not-at-top
  _, texts = _sample_texts()
  cfg = bow.BowConfig(word_vocab=2_000, fit_cells=len(texts) // 3)
  fast, x_fast = bow.BowFeaturizer.fit_transform(texts, cfg)
  plain, x_plain = bow.BowFeaturizer.fit_transform(texts, cfg, fast=False)
  vf, vp = fast.vectorizers["word"], plain.vectorizers["word"]
  assert vf.vocabulary_ == {k: int(i) for k, i in vp.vocabulary_.items()}
  assert len(vf.vocabulary_) == 2_000
  # scikit-learn on the seeded sample chooses the same terms ...
  pick = np.sort(np.random.default_rng(0).choice(len(texts), cfg.fit_cells, replace=False))
  ref = TfidfVectorizer(token_pattern=bow.TOKEN_PATTERN, ngram_range=(1, 2), max_features=2_000,
                        min_df=2, sublinear_tf=True, dtype=np.float32)
  ref.fit([texts[i][:cfg.max_chars] for i in pick])
  assert set(ref.vocabulary_) == set(vf.vocabulary_)
  # ... and the idf is every cell's, not the sample's.
  whole = TfidfVectorizer(token_pattern=bow.TOKEN_PATTERN, ngram_range=(1, 2), sublinear_tf=True,
                          vocabulary=vf.vocabulary_, dtype=np.float32)
  whole.fit([t[:cfg.max_chars] for t in texts])
  np.testing.assert_array_equal(vf.idf_, whole.idf_)
  assert not np.array_equal(vf.idf_, ref.idf_[[ref.vocabulary_[t] for t in sorted(
      vf.vocabulary_, key=vf.vocabulary_.get)]])
  x_plain.sort_indices()
  assert (x_plain != x_fast).nnz == 0


def test_parallel_counts_survive_a_failing_worker(monkeypatch, caplog):
  from jaxrank.text import word_counts  # pylint: disable=g-import-not-at-top
  _, texts = _sample_texts()
  texts = texts[:3000]
  f, _ = bow.BowFeaturizer.fit_transform(texts, bow.BowConfig())
  v = f.vectorizers["word"]
  lookup = word_counts.Lookup(v.vocabulary_, v.ngram_range)
  one = word_counts.counts(v, texts, lookup)
  for exe in ("/bin/false", "/no/such/python"):  # dies at once / cannot start
    monkeypatch.setattr(word_counts.sys, "executable", exe)
    with caplog.at_level("WARNING"):
      got = word_counts.parallel_counts(v, texts, lookup, workers=2, chunk=1000, min_texts=0)
    assert "word count worker failed" in caplog.text
    assert (got != one).nnz == 0 and got.shape == one.shape
    caplog.clear()
