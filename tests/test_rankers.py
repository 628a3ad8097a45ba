"""Rankers on the Flax encoder: featurizers, cached vectors, train -> resume, store weights.

Tiny everything: a 2-layer, 32-wide random BERT imported into a temporary store
(tests/test_roberta.py builds the Hugging Face folder), 40 sample notebooks,
3 steps.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import roberta_cells, roberta_pointwise
from jaxrank import decode, ensemble, features, hf, loop, store, train
from jaxrank.data import notebooks as nb_io
from jaxrank.data.notebooks import sample_data_dir
from jaxrank.data.types import MARKDOWN, Notebook
from jaxrank.models import layers, pairs, rankers, roberta
from jaxrank.text import bow, cell_shape, markup, sections
from jaxrank.features import encoder as ef
from jaxrank.features import subword as sw
from tests import helpers
from tests.conftest import subprocess_env
from tests.test_roberta import tiny_store_workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> store.Workspace:
  root = tmp_path_factory.mktemp("ws")
  return tiny_store_workspace(root)


def _set(c, overrides):
  c.update_from_flattened_dict(overrides)
  return c


def _common(c, ws):
  return _set(c, {
      "data.data_dir": str(sample_data_dir()), "data.max_notebooks": 40, "data.n_folds": 3,
      "data.buckets": (128,), "data.cells_per_batch": 256,
      "features.workspace": str(ws.root), "model.workspace": str(ws.root),
      "features.max_tokens": 16, "train.steps": 3, "train.log_every": 1,
      "train.eval_every": 1000, "train.checkpoint_every": 1000})


def tiny_cells_config(ws, **overrides):
  c = _common(roberta_cells.get_config(), ws)
  _set(c, {"features.encoder": "tiny", "model.hidden_dim": 32, "model.num_layers": 1,
           "model.num_heads": 2})
  return _set(c, overrides)


def tiny_pointwise_config(ws, **overrides):
  c = _common(roberta_pointwise.get_config(), ws)
  _set(c, {"features.tokenizer": "tiny", "model.encoder_name": "tiny", "model.md_tokens": 12,
           "model.code_cells": 4, "model.code_tokens": 4, "model.hidden_dim": 16})
  return _set(c, overrides)


# ----------------------------------------------------------------------------------------
# Featurizers.
# ----------------------------------------------------------------------------------------
def test_encoder_vectors_are_cached_and_equal_a_direct_encoding(ws, tmp_path):
  nbs = nb_io.load_split(sample_data_dir(), "train")[:5]
  cfg = {"kind": "encoder", "workspace": str(ws.root), "encoder": "tiny", "max_tokens": 16,
         "cache_dir": str(tmp_path / "cache")}
  f, items = features.fit_any(cfg, nbs)
  shards = sorted((tmp_path / "cache" / "tiny" / "L16").glob("shard-*.npz"))
  assert shards and f.vocab_size == 32
  n_unique = len({sw.clean_text(s, f.max_chars) for nb in nbs for s in nb.sources})
  assert len(ef.VectorCache(f.cache_folder)) == n_unique
  # A second featurizer finds everything cached: no new shard, same vectors.
  f2, items2 = features.fit_any(cfg, nbs)
  assert sorted(f.cache_folder.glob("shard-*.npz")) == shards
  for a, b in zip(items, items2):
    np.testing.assert_array_equal(a["vec"], b["vec"])
  # The cached vector is the mean-pooled encoder output of the cell's tokens.
  enc_cfg, params, tok = hf.load_encoder(ws, "tiny", check_hashes=False)
  nb = nbs[0]
  text = nb.sources[int(items[0]["cell_index"][0])]
  ids = sw.tokenize(tok, [text], 16, 2000)
  mask = ids != tok.pad_token_id
  want = roberta.mean_pool(roberta.Encoder(enc_cfg).apply({"params": params}, ids, mask), mask)
  np.testing.assert_allclose(items[0]["vec"][0].astype(np.float32), np.asarray(want)[0],
                             rtol=1e-2, atol=1e-2)
  # Cell-cell cosine, code-first layout, unit diagonal.
  sim = items[0]["sim"].astype(np.float32)
  assert sim.shape == (nb.n_cells, nb.n_cells)
  np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-2)
  assert "sim_lex" not in items[0]  # off unless asked for


def test_encoder_items_carry_the_lexical_similarity_in_layout_order(ws, tmp_path):
  nbs = nb_io.load_split(sample_data_dir(), "train")[:3]
  cfg = {"kind": "encoder", "workspace": str(ws.root), "encoder": "tiny", "max_tokens": 16,
         "cache_dir": str(tmp_path / "cache"), "lexical_sim": True}
  f, items = features.fit_any(cfg, nbs)
  assert f.lexical_sim and ef.load(_saved(f, tmp_path)).lexical_sim
  for nb, it in zip(nbs, items):
    perm = it["cell_index"]
    want = bow.lexical_sim(nb.sources)[np.ix_(perm, perm)]
    np.testing.assert_allclose(it["sim_lex"].astype(np.float32), want, atol=2e-3)


def test_encoder_items_carry_each_cells_form_when_asked(ws, tmp_path):
  nbs = nb_io.load_split(sample_data_dir(), "train")[:3]
  cfg = {"kind": "encoder", "workspace": str(ws.root), "encoder": "tiny", "max_tokens": 16,
         "cache_dir": str(tmp_path / "cache"), "cell_shape": True}
  f, items = features.fit_any(cfg, nbs)
  assert ef.load(_saved(f, tmp_path)).cell_shape
  for nb, it in zip(nbs, items):
    perm = it["cell_index"]
    want = cell_shape.shapes([nb.sources[i] for i in perm], [nb.cell_types[i] for i in perm])
    np.testing.assert_allclose(it["shape"].astype(np.float32), want, atol=1e-3)


def test_encoder_items_read_markdown_without_its_markup_when_asked(ws, tmp_path):
  nbs = nb_io.load_split(sample_data_dir(), "train")[:2]
  # Dress every markdown cell of the first notebook in Kaggle-style HTML.
  nb0 = nbs[0]
  dressed = tuple(f"<h2 style='color:#660000'><b>{s}</b></h2><a href='#top'>top</a>"
                  if t == MARKDOWN else s for s, t in zip(nb0.sources, nb0.cell_types))
  nbs = [dataclasses.replace(nb0, sources=dressed), nbs[1]]
  cfg = {"kind": "encoder", "workspace": str(ws.root), "encoder": "tiny", "max_tokens": 16,
         "cache_dir": str(tmp_path / "cache"), "lexical_sim": True, "cell_shape": True,
         "readable_markdown": True}
  f, items = features.fit_any(cfg, nbs)
  assert ef.load(_saved(f, tmp_path)).readable_markdown
  plain, plain_items = features.fit_any({**cfg, "readable_markdown": False}, nbs)
  for nb, it, it_plain in zip(nbs, items, plain_items):
    perm = it["cell_index"]
    read = [markup.readable(nb.sources[i]) if nb.cell_types[i] == MARKDOWN else nb.sources[i]
            for i in perm]
    np.testing.assert_array_equal(it["vec"], f.vectors(read))
    want = bow.lexical_sim(read)
    np.testing.assert_allclose(it["sim_lex"].astype(np.float32), want, atol=2e-3)
    # The cell form still reads the source (its html flag, its length).
    np.testing.assert_array_equal(it["shape"], it_plain["shape"])
  is_md = np.asarray([nb0.cell_types[i] == MARKDOWN for i in items[0]["cell_index"]])
  assert is_md.any()
  assert not np.array_equal(items[0]["vec"][is_md], plain_items[0]["vec"][is_md])
  np.testing.assert_array_equal(items[0]["vec"][~is_md], plain_items[0]["vec"][~is_md])


def test_encoder_items_carry_section_numbers_in_layout_order(ws, tmp_path):
  nb = nb_io.load_split(sample_data_dir(), "train")[0]
  md = [i for i, t in enumerate(nb.cell_types) if t == MARKDOWN]
  numbered = list(nb.sources)
  for k, i in enumerate(md):  # numbered backwards: the last markdown cell is section 1
    numbered[i] = f"## {len(md) - k}. " + numbered[i]
  nb = dataclasses.replace(nb, sources=tuple(numbered))
  cfg = {"kind": "encoder", "workspace": str(ws.root), "encoder": "tiny", "max_tokens": 16,
         "cache_dir": str(tmp_path / "cache"), "section_numbers": True}
  f, items = features.fit_any(cfg, [nb])
  assert ef.load(_saved(f, tmp_path)).section_numbers
  perm = items[0]["cell_index"]
  want = sections.section_features(nb.sources, nb.cell_types)[perm]
  np.testing.assert_allclose(items[0]["section"].astype(np.float32), want, atol=1e-3)
  assert want[:, 0].sum() == len(md) >= 2


def _saved(featurizer, tmp_path):
  ef.save(featurizer, tmp_path / "run")
  return tmp_path / "run"


def test_gap_similarity_features_read_the_code_cells_around_each_gap():
  # One notebook: 3 code cells (rows 0-2), one markdown cell (row 3) most
  # similar to code cell 2; padding row 4.
  C = 5
  sim = np.zeros((1, C, C), np.float32)
  sim[0, 3, :3] = [0.1, 0.2, 0.3]
  code = np.array([[True, True, True, False, False]])
  f = pairs.gap_similarity_features(jnp.asarray(sim), jnp.asarray(code), jnp.asarray([3]))
  f = [np.asarray(a)[0, 3] for a in f]
  nxt, prv, nxt_best, prv_best, z_nxt, z_prv, _, is_best, rank, nxt2, prv2, _ = f
  assert len(f) == 12 and all(a.shape == (C + 1,) for a in f)
  np.testing.assert_allclose(nxt, [0.1, 0.2, 0.3, 0, 0, 0])  # gap 3 = the end: no next
  np.testing.assert_allclose(prv, [0, 0.1, 0.2, 0.3, 0, 0])  # gap 0 = the start: no previous
  np.testing.assert_allclose(nxt_best[:3], [-0.2, -0.1, 0.0], atol=1e-6)
  np.testing.assert_allclose(prv_best[1:4], [-0.2, -0.1, 0.0], atol=1e-6)
  assert z_nxt[2] > 0 > z_nxt[0] and z_prv[3] > 0 > z_prv[1]
  np.testing.assert_array_equal(is_best, [0, 0, 1, 0, 0, 0])
  np.testing.assert_allclose(rank[:3], [2 / 8, 1 / 8, 0])
  np.testing.assert_allclose(nxt2, [0.2, 0.3, 0, 0, 0, 0])  # one code cell further on
  np.testing.assert_allclose(prv2, [0, 0, 0.1, 0.2, 0, 0])


@pytest.mark.parametrize("overrides", [
    {"model.key_mlp": False},  # no transformer at all: the BOW-MLP recipe on vectors
    {"model.use_bilinear": True, "model.use_lexical": False},
    {"features.cell_shape": True},  # the cells' form features feed transformer and key
    {"features.section_numbers": True}])  # so do the headings' section numbers
def test_cells_variants_build_and_give_gap_distributions(ws, overrides):
  cfg = tiny_cells_config(ws, **overrides)
  nbs = train.load_notebooks(cfg.data)[:4]
  f, items = features.fit_any(cfg.features, nbs)
  fam = train.family_from_config(cfg, f.vocab_size)
  from jaxrank.data import batching
  arrays = {k: jnp.asarray(v) for k, v in batching.collate(items, 128).items()
            if not k.startswith("target_")}
  model = fam.build()
  params = model.init({"params": jax.random.key(0)}, arrays)["params"]
  assert ("cells" in params) == bool(cfg.model.key_mlp or cfg.model.use_bilinear)
  assert ("gap_query" in params) == bool(cfg.model.use_bilinear)
  assert ("shape_key" in params) == ("shape" in arrays) == bool(cfg.features.cell_shape)
  assert (("section_key" in params) == ("section" in arrays)
          == bool(cfg.features.section_numbers))
  out = model.apply({"params": params}, arrays)
  probs = np.asarray(jax.nn.softmax(out["gap_logits"], -1))
  for row, nb in enumerate(nbs):
    np.testing.assert_allclose(probs[row, :nb.n_cells, :nb.n_code + 1].sum(-1), 1, atol=1e-5)
    assert probs[row, :nb.n_cells, nb.n_code + 1:].max() < 1e-6


def test_encode_entry_point_fills_the_cache_the_runs_read(ws):
  root = Path(__file__).resolve().parents[1]
  env = subprocess_env(1)
  p = subprocess.run([sys.executable, "-m", "experiments.encode", f"--data_dir={sample_data_dir()}",
                      "--split=test", "--encoder=tiny", "--max_tokens=16",
                      f"--workspace={ws.root}"], cwd=root, env=env, capture_output=True,
                     text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  nbs = nb_io.load_split(sample_data_dir(), "test")
  f = ef.from_config({"workspace": str(ws.root), "encoder": "tiny", "max_tokens": 16})
  n_unique = len({sw.clean_text(s, f.max_chars) for nb in nbs for s in nb.sources})
  assert len(ef.VectorCache(f.cache_folder)) >= n_unique
  assert f"cached vectors: {len(ef.VectorCache(f.cache_folder))}" in p.stdout
  # A run's featurizer now finds every vector: nothing is encoded again.
  shards = sorted(f.cache_folder.glob("shard-*.npz"))
  f.vectors([s for nb in nbs for s in nb.sources])
  assert sorted(f.cache_folder.glob("shard-*.npz")) == shards


def test_subword_items_hold_padded_token_ids(ws):
  nbs = nb_io.load_split(sample_data_dir(), "train")[:3]
  cfg = {"kind": "subword", "workspace": str(ws.root), "tokenizer": "tiny", "max_tokens": 16}
  f, items = features.fit_any(cfg, nbs)
  tok = hf.load_tokenizer(ws, "tiny", check_hashes=False)
  for nb, it in zip(nbs, items):
    assert it["tokens"].shape == (nb.n_cells, 16) and it["tokens"].dtype == np.int32
    first = nb.sources[int(it["cell_index"][0])]
    want = tok(first, truncation=True, max_length=16)["input_ids"]
    assert list(it["tokens"][0, :len(want)]) == want
    assert (it["tokens"][0, len(want):] == tok.pad_token_id).all()


def test_missing_workspace_is_a_clear_error():
  with pytest.raises(ValueError, match="features.workspace is empty"):
    features.fit_any({"kind": "encoder", "encoder": "x", "workspace": ""}, [])


# ----------------------------------------------------------------------------------------
# Pointwise sequences.
# ----------------------------------------------------------------------------------------
def test_sampled_code_rows_spread_evenly_and_mark_short_notebooks():
  rows, valid = rankers.sampled_code_rows(jnp.array([10, 3, 0]), 4)
  np.testing.assert_array_equal(rows[0], [0, 3, 6, 9])
  np.testing.assert_array_equal(valid[0], [True] * 4)
  np.testing.assert_array_equal(rows[1, :3], [0, 1, 2])
  np.testing.assert_array_equal(valid[1], [True, True, True, False])
  assert not np.asarray(valid[2]).any()


def test_pointwise_sequence_is_markdown_then_code_with_padding_squeezed_out():
  pad = 1
  cfg = rankers.PointwiseConfig(md_tokens=4, code_cells=2, code_tokens=2)
  # One notebook: two code cells (rows 0, 1), one markdown cell (row 2). <s>=0, </s>=2.
  tokens = np.array([[[0, 10, 11, 12, 2], [0, 20, 2, pad, pad], [0, 30, 2, pad, pad]]])
  seq = np.asarray(rankers.pointwise_sequences(jnp.array(tokens), jnp.array([2]), cfg, pad))
  assert seq.shape == (1, 3, 8)
  # markdown row: its tokens, then code 0's first 2 (after <s>), then code 1's.
  np.testing.assert_array_equal(seq[0, 2], [0, 30, 2, 10, 11, 20, 2, pad])


# ----------------------------------------------------------------------------------------
# Train -> resume, per family; encoder weights from the store.
# ----------------------------------------------------------------------------------------
def test_cells_on_cached_vectors_resume_and_predict(ws, tmp_path):
  cfg = tiny_cells_config(ws)
  out = helpers.stop_resume_equals_uninterrupted(cfg, tmp_path)
  predictor, config = train.load_predictor(tmp_path / "a")
  nbs = train.load_notebooks(config.data)
  _, val = train.split_data(nbs, config.data)
  table, _ = train.evaluate_predictions(val, predictor.predict(val))
  assert table["kendall_tau"] == pytest.approx(out["val"]["kendall_tau"], abs=1e-9)


def test_cells_fine_tuning_the_store_encoder_starts_from_its_weights(ws, tmp_path):
  cfg = tiny_cells_config(ws, **{"features.kind": "subword", "features.tokenizer": "tiny",
                                 "model.cell_input": "tokens", "model.encoder_name": "tiny",
                                 "data.cells_per_batch": 128, "data.n_folds": 1,
                                 "data.max_notebooks": 12})
  nbs = train.load_notebooks(cfg.data)[:4]
  f, items = features.fit_any(cfg.features, nbs)
  family = train.family_from_config(cfg, f.vocab_size)
  from jaxrank.data import batching
  example = batching.collate(items[:1], 64)
  tx, _ = loop.make_optimizer(cfg.optim, 10)
  state, _ = train.create_state(family, tx, example, 0, loop.make_mesh())
  _, want, _ = hf.load_encoder(ws, "tiny", check_hashes=False)
  for x, y in zip(jax.tree.leaves(state.params["encoder"]), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow  # the shared loop's exact resume: tests/test_train.py, test_kill_resume.py
def test_cells_fine_tuning_the_store_encoder_resumes_exactly(ws, tmp_path):
  cfg = tiny_cells_config(ws, **{"features.kind": "subword", "features.tokenizer": "tiny",
                                 "model.cell_input": "tokens", "model.encoder_name": "tiny",
                                 "data.cells_per_batch": 128, "data.n_folds": 1,
                                 "data.max_notebooks": 12})
  helpers.stop_resume_equals_uninterrupted(cfg, tmp_path)


@pytest.mark.slow  # the shared loop's exact resume: tests/test_train.py, test_kill_resume.py
def test_pointwise_resume(ws, tmp_path):
  # No validation here (the cell-level test covers evaluation): one compiled shape.
  cfg = tiny_pointwise_config(ws, **{"data.n_folds": 1, "data.max_notebooks": 12})
  helpers.stop_resume_equals_uninterrupted(cfg, tmp_path)


@pytest.mark.parametrize("flagfile,model_flags", [
    ("roberta_cells", ["--config.model.hidden_dim=16", "--config.model.num_layers=1",
                       "--config.model.num_heads=2"]),
    ("diffusion_minilm", ["--config.model.hidden_dim=16", "--config.model.mlp_dim=16",
                          "--config.model.tf_layers=1", "--config.model.num_heads=2",
                          "--config.model.sample_steps=2", "--config.model.num_samples=2"]),
    ("gap_diffusion", ["--config.model.hidden_dim=16", "--config.model.num_layers=1",
                       "--config.model.num_heads=2"])])
def test_encoder_flagfiles_under_jaxrank_home_train_and_predict(ws, tmp_path, flagfile,
                                                                 model_flags):
  """The cluster path: no --workspace, $JAXRANK_HOME names the store; the run's
  config records it, and predict writes a valid submission."""
  root = Path(__file__).resolve().parents[1]
  env = subprocess_env(1, JAXRANK_HOME=str(ws.root))
  wd = tmp_path / "run"
  tiny = ["--config.data.max_notebooks=20", "--config.data.n_folds=2", "--config.train.steps=2",
          "--config.data.buckets=(128,1024)", "--config.features.encoder=tiny",
          "--config.features.max_tokens=16", *model_flags]
  run = lambda *a: subprocess.run([sys.executable, "-m", *a], cwd=root, env=env,
                                  capture_output=True, text=True, timeout=600)
  p = run("experiments.train", f"--flagfile=experiments/flags/{flagfile}.flags",
          f"--config.data.data_dir={sample_data_dir()}", f"--workdir={wd}", *tiny)
  assert p.returncode == 0, p.stderr[-3000:]
  cfg = json.loads((wd / "config.json").read_text())
  assert cfg["features"]["workspace"] == "$WORKSPACE"  # resolved against the one in use
  if flagfile == "gap_diffusion":  # the flagfile's variant: self-conditioned, K = 4
    assert cfg["model"]["self_condition"] == 0.5 and cfg["model"]["sample_steps"] == 4
  assert json.loads((wd / "run.json").read_text())["workspace"] == str(ws.root)
  out = tmp_path / "submission.csv"
  p = run("experiments.predict", f"--workdir={wd}", f"--data_dir={sample_data_dir()}",
          "--split=test", f"--output={out}")
  assert p.returncode == 0, p.stderr[-3000:]
  from jaxrank import submission
  test_nbs = nb_io.load_split(sample_data_dir(), "test")
  submission.validate_submission(submission.read_submission(out), test_nbs)  # raises if bad


def test_a_copied_workspace_predicts_without_the_original(ws, tmp_path):
  """A run names store models and caches relative to its workspace: copy the
  workspace elsewhere and delete the original, and the copy predicts the same;
  so does a `results export --with_models` tarball unpacked on its own."""
  import shutil
  import tarfile
  from jaxrank import results
  a = store.Workspace(tmp_path / "a")
  shutil.copytree(ws.root, a.root)
  cfg = tiny_cells_config(a, **{"train.steps": 2, "data.cache_dir": str(a.notebook_cache_dir)})
  train.train_and_evaluate(cfg, a.run_dir("cells"))
  for f in ("config.json", "featurizer/encoder_features.json"):
    text = (a.run_dir("cells") / f).read_text()
    assert str(a.root) not in text and "$WORKSPACE" in text, text
  test_nbs = [nb for nb in nb_io.load_split(sample_data_dir(), "test") if nb.n_cells <= 128][:6]
  want = train.load_predictor(a.run_dir("cells"))[0].predict(test_nbs)
  tarball, _ = results.export(a.root, tmp_path / "cells.tar.gz", with_models=True,
                                  runs=["cells"])

  b = store.Workspace(tmp_path / "b")
  shutil.copytree(a.root, b.root)
  shutil.rmtree(a.root)
  predictor, config = train.load_predictor(b.run_dir("cells"))
  assert config.features.workspace == str(b.root)
  assert config.data.cache_dir == str(b.notebook_cache_dir)
  assert predictor.predict(test_nbs) == want

  with tarfile.open(tarball) as tar:
    tar.extractall(tmp_path / "c", filter="data")
  c = store.Workspace(tmp_path / "c" / "a")
  assert [m["name"] for m in store.list_models(c)] == ["tiny"]  # the model the run names
  assert not (c.run_dir("cells") / "checkpoints").exists()  # only the best one travels
  assert train.load_predictor(c.run_dir("cells"), workspace=c)[0].predict(test_nbs) == want


def test_gap_loss_size_power_weighs_markdown_cells_by_notebook_length():
  """size_power=0 is the plain mean over markdown cells; p > 0 weighs each one
  ((n_code + 1) / SIZE_UNIT)^p, over the same count (not renormalised per batch)."""
  rng = np.random.default_rng(0)
  B, C, G = 2, 6, 5
  batch = {"cell_mask": jnp.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]], bool),
           "is_code": jnp.array([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]], bool),
           "n_code": jnp.array([2, 4]),
           "target_key": jnp.asarray(rng.uniform(size=(B, C)), jnp.float32),
           "target_gap": jnp.array([[-1, -1, 0, 2, 1, -1], [-1, -1, -1, -1, 3, 4]])}
  out = {"key": jnp.asarray(rng.uniform(size=(B, C)), jnp.float32),
         "gap_logits": jnp.asarray(rng.normal(size=(B, C, G)), jnp.float32)}
  kw = dict(key_weight=1.0, gap_weight=0.0, emd_weight=0.0)
  l1 = np.abs(np.asarray(out["key"]) - np.asarray(batch["target_key"]))
  md = [(0, 2), (0, 3), (0, 4), (1, 4), (1, 5)]
  plain, aux = layers.gap_loss(out, batch, **kw)
  np.testing.assert_allclose(plain, np.mean([l1[r, c] for r, c in md]), rtol=1e-6)
  w = {0: (3 / layers.SIZE_UNIT), 1: (5 / layers.SIZE_UNIT)}
  weighted, aux_w = layers.gap_loss(out, batch, size_power=1.0, **kw)
  np.testing.assert_allclose(weighted, sum(w[r] * l1[r, c] for r, c in md) / 5, rtol=1e-6)
  assert aux_w["n_markdown"] == aux["n_markdown"] == 5
  # All three terms are weighted; the accuracy is not.
  full = dict(key_weight=1.0, gap_weight=1.0, emd_weight=1.0)
  a0 = layers.gap_loss(out, batch, **full)[1]
  a2 = layers.gap_loss(out, batch, size_power=2.0, **full)[1]
  assert a0["gap_acc"] == a2["gap_acc"]
  assert all(a2[k] < a0[k] for k in ("key_l1", "gap_nll", "gap_emd"))  # weights < 1 here


def test_bench_predict_encodes_into_an_empty_cache_and_extrapolates(ws):
  """benchmarks.bench_predict on a cells run: its cold pass encodes every cell into
  a temporary cache (the run's own cache is not touched) and its last line is the
  Kaggle extrapolation."""
  run = ws.runs_dir / "bench-cells"
  train.train_and_evaluate(tiny_cells_config(ws, **{"train.steps": 1}), run, workspace=ws)
  cache = Path(ws.encoder_cache_dir)
  before = sorted(p.name for p in cache.rglob("*"))
  p = subprocess.run([sys.executable, "-m", "benchmarks.bench_predict", f"--workdir={run}",
                      f"--data_dir={sample_data_dir()}", "--split=test", "--max_notebooks=4"],
                     cwd=Path(__file__).resolve().parents[1], env=subprocess_env(1),
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  last = dict(kv.split("=") for kv in p.stdout.strip().splitlines()[-1].split())
  assert set(last) == {"kaggle_20k_min_cold", "kaggle_20k_min_warm", "peak_rss_gb",
                       "nb_per_s_cold"}
  assert float(last["kaggle_20k_min_cold"]) > float(last["kaggle_20k_min_warm"]) > 0
  assert 0 < float(last["peak_rss_gb"]) < 64
  assert "empty encoder cache" in p.stdout
  assert sorted(p.name for p in cache.rglob("*")) == before


def test_decoding_keeps_the_order_the_markdown_text_says():
  # Two code cells; three numbered markdown cells that the model believes in the
  # reverse order of their numbers.
  nb = Notebook("n", ("c0", "c1", "m3", "m1", "m2"), ("code",) * 2 + (MARKDOWN,) * 3,
                ("x = 1", "y = 2", "## 3. End", "## 1. Start", "## 2. Middle"))
  logits = np.full((1, 5, 3), -9.0, np.float32)
  logits[0, 2, 0] = logits[0, 3, 2] = logits[0, 4, 1] = 0.0  # 3. first, 1. last
  outputs = {"gap_logits": logits, "key": np.array([[0, 0, 0.1, 0.9, 0.5]], np.float32)}

  def order(cfg):
    keys = train.markdown_keys(rankers, outputs, 0, 2, 3, cfg, nb)
    return [c for c in decode.order_from_keys(nb, keys) if c.startswith("m")]

  assert order(rankers.CellsConfig(section_order=False)) == ["m3", "m2", "m1"]
  assert order(rankers.CellsConfig()) == ["m1", "m2", "m3"]
  # The ensemble decodes the same way (its first gap-head member's setting).
  probs, key = rankers.markdown_belief(outputs, 0, 2, 3, rankers.CellsConfig())
  keys = ensemble.combine([(probs, key)], 2, 2.0, sections.notebook_orders(nb))
  assert [c for c in decode.order_from_keys(nb, keys) if c.startswith("m")] == ["m1", "m2", "m3"]
