"""MLM pretraining: masking rule, HF export round trip, a tiny run stored and used by a ranker."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from experiments.configs import pretrain as pretrain_config
from jaxrank import pretrain, store, train
from jaxrank.data import notebooks as nb_io
from jaxrank.data.notebooks import sample_data_dir
from jaxrank.models import roberta


def test_mask_tokens_follows_the_80_10_10_rule_and_spares_specials():
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 1000, (64, 128)).astype(np.int32)
  ids[:, 0], ids[:, -10:] = 0, 1  # <s>, pads
  inputs, labels = pretrain.mask_tokens(ids, np.random.default_rng(1), vocab_size=1000,
                                        mask_id=4, special_ids=[0, 1, 2], rate=0.15)
  target = labels >= 0
  assert not target[:, 0].any() and not target[:, -10:].any()
  np.testing.assert_array_equal(labels[target], ids[target])
  assert 0.13 < target[:, 1:-10].mean() < 0.17
  masked = (inputs == 4) & target
  assert 0.75 < masked.sum() / target.sum() < 0.85
  np.testing.assert_array_equal(inputs[~target], ids[~target])


def test_hf_export_round_trips_through_params_from_hf():
  cfg = roberta.EncoderConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
                              intermediate_size=32, max_position_embeddings=40,
                              type_vocab_size=1, pad_token_id=1, position_offset=2)
  params = roberta.init_params(cfg, jax.random.key(0))
  back = roberta.params_from_hf(pretrain.params_to_hf(params, cfg), cfg)
  for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(back), strict=True):
    np.testing.assert_array_equal(np.asarray(x), y)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  root = tmp_path_factory.mktemp("pre")
  ws = store.Workspace(root / "workspace").ensure()
  c = pretrain_config.get_config()
  c.tokenizer.name, c.tokenizer.vocab_size = "bpe-tiny", 400
  c.model.save_as, c.model.hidden, c.model.layers, c.model.heads = "rb-tiny", 32, 1, 2
  c.model.intermediate, c.model.max_len = 64, 32
  c.train.steps, c.train.batch_size, c.train.log_every = 6, 8, 1
  c.train.checkpoint_every = 3
  c.optim.warmup_steps, c.optim.lr = 1, 3e-3
  nbs = nb_io.load_split(sample_data_dir(), "train")[:20]
  out = pretrain.pretrain(c, ws, nbs, root / "run")
  return ws, c, out, root


def test_tiny_pretrain_learns_and_is_stored(pretrained):
  ws, c, out, root = pretrained
  assert out["steps"] == 6 and out["manifest"]["name"] == "rb-tiny"
  losses = [h["loss"] for h in out["history"]]
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]
  cfg, params, tok = store.load_encoder(ws, "rb-tiny")  # re-hashes every file
  assert cfg.position_offset == tok.pad_token_id + 1 and cfg.vocab_size == len(tok)
  assert cfg.hidden_size == 32 and cfg.num_layers == 1
  # The stored weights are the trained ones: same as the last checkpoint's encoder.
  from jaxrank import checkpoint
  ck = checkpoint.restore_params(root / "run")
  for x, y in zip(jax.tree.leaves(ck["encoder"]), jax.tree.leaves(params), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=0)
  lines = (root / "run" / "pretrain_metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["step"] for l in lines] == list(range(1, 7))


def test_a_ranker_starts_from_the_pretrained_encoder(pretrained, tmp_path):
  ws, _, _, _ = pretrained
  from tests.test_rankers import tiny_pointwise_config
  cfg = tiny_pointwise_config(ws, **{"features.tokenizer": "rb-tiny",
                                     "model.encoder_name": "rb-tiny", "train.steps": 2})
  out = train.train_and_evaluate(cfg, tmp_path)
  assert out["status"] == "done" and np.isfinite(out["val"]["kendall_tau"])
  # Step 0 of the ranker carries the stored weights (the hook replaced the random init).
  _, want, _ = store.load_encoder(ws, "rb-tiny", check_hashes=False)
  nbs = train.load_notebooks(cfg.data)[:2]
  from jaxrank import features
  from jaxrank.data import batching
  f, items = features.fit_any(cfg.features, nbs)
  family = train.family_from_config(cfg, f.vocab_size)
  tx, _ = train.make_optimizer(cfg.optim, 2)
  state, _ = train.create_state(family, tx, batching.collate(items[:1], 64), 0,
                                train.make_mesh())
  for x, y in zip(jax.tree.leaves(state.params["encoder"]), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
