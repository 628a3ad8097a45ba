"""MLM pretraining: masking rule, HF export round trip, a tiny run stored and used by a ranker.
Pair fine-tuning (jaxrank.pair_finetune): pairs, batches, loss, a tiny run through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.configs import pair_finetune as pair_config
from jaxrank import hf as hf_io
from jaxrank import loop, pair_finetune, pretrain, store, train
from jaxrank.data import folds
from jaxrank.data.types import CODE, MARKDOWN, Notebook
from jaxrank.data import notebooks as nb_io
from jaxrank.data.notebooks import sample_data_dir
from jaxrank.models import roberta
from tests import helpers
from tests.conftest import REPO_ROOT, subprocess_env
from tests.tiny import tiny_pretrain_config


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
  back = hf_io.params_from_hf(hf_io.params_to_hf(params, cfg), cfg)
  for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(back), strict=True):
    np.testing.assert_array_equal(np.asarray(x), y)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  root = tmp_path_factory.mktemp("pre")
  ws = store.Workspace(root / "workspace").ensure()
  c = tiny_pretrain_config(400, **{"train.steps": 6, "train.batch_size": 8, "train.log_every": 1,
                                   "train.checkpoint_every": 3, "optim.warmup_steps": 1,
                                   "optim.lr": 3e-3})
  nbs = nb_io.load_split(sample_data_dir(), "train")[:20]
  out = pretrain.pretrain(c, ws, nbs, root / "run")
  return ws, c, out, root


def test_tiny_pretrain_learns_and_is_stored(pretrained):
  ws, c, out, root = pretrained
  assert out["steps"] == 6 and out["manifest"]["name"] == "rb-tiny"
  losses = [h["loss"] for h in out["history"]]
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]
  cfg, params, tok = hf_io.load_encoder(ws, "rb-tiny")  # re-hashes every file
  assert cfg.position_offset == tok.pad_token_id + 1 and cfg.vocab_size == len(tok)
  assert cfg.hidden_size == 32 and cfg.num_layers == 1
  # The stored weights are the trained ones: same as the last checkpoint's encoder.
  from jaxrank import checkpoint
  ck = checkpoint.restore_params(root / "run")
  for x, y in zip(jax.tree.leaves(ck["encoder"]), jax.tree.leaves(params), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=0)
  lines = (root / "run" / "pretrain_metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["step"] for l in lines] == list(range(1, 7))
  shown = helpers.tensorboard_scalars(root / "run" / "tb")["pretrain/loss"]
  assert shown == {h["step"]: pytest.approx(h["loss"], rel=1e-6) for h in out["history"]}


def test_a_ranker_starts_from_the_pretrained_encoder(pretrained, tmp_path):
  ws, _, _, _ = pretrained
  from tests.test_rankers import tiny_pointwise_config
  cfg = tiny_pointwise_config(ws, **{"features.tokenizer": "rb-tiny",
                                     "model.encoder_name": "rb-tiny", "train.steps": 2})
  out = train.train_and_evaluate(cfg, tmp_path)
  assert out["status"] == "done" and np.isfinite(out["val"]["kendall_tau"])
  # Step 0 of the ranker carries the stored weights (the hook replaced the random init).
  _, want, _ = hf_io.load_encoder(ws, "rb-tiny", check_hashes=False)
  nbs = train.load_notebooks(cfg.data)[:2]
  from jaxrank import features
  from jaxrank.data import batching
  f, items = features.fit_any(cfg.features, nbs)
  family = train.family_from_config(cfg, f.vocab_size)
  tx, _ = loop.make_optimizer(cfg.optim, 2)
  state, _ = train.create_state(family, tx, batching.collate(items[:1], 64), 0,
                                loop.make_mesh())
  for x, y in zip(jax.tree.leaves(state.params["encoder"]), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("offset,type_vocab", [(0, 2), (2, 1)])  # BERT, RoBERTa
def test_hf_export_config_round_trips_for_both_families(offset, type_vocab):
  cfg = roberta.EncoderConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
                              intermediate_size=32, max_position_embeddings=40,
                              type_vocab_size=type_vocab, pad_token_id=offset and 1,
                              position_offset=offset, layer_norm_eps=1e-12)
  tok = type("Tok", (), {"bos_token_id": None, "eos_token_id": None})()
  hf = hf_io.hf_config(cfg, tok)
  assert hf["model_type"] == ("bert" if offset == 0 else "roberta")
  assert roberta.EncoderConfig.from_hf(hf) == cfg
  params = roberta.init_params(cfg, jax.random.key(0))
  tensors = hf_io.params_to_hf(params, cfg)
  assert all(k.startswith(hf["model_type"] + ".") for k in tensors)
  back = hf_io.params_from_hf(tensors, cfg)
  for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(back), strict=True):
    np.testing.assert_array_equal(np.asarray(x), y)


def test_notebook_pairs_are_markdown_then_the_next_code_cell():
  # True order: m0 c0 c1 m1 m2 c2 m3 (file: code in order, markdown after).
  ids = ("c0", "c1", "c2", "m0", "m1", "m2", "m3")
  types = (CODE, CODE, CODE, MARKDOWN, MARKDOWN, MARKDOWN, MARKDOWN)
  nb = Notebook("nb1", ids, types, tuple(f"src {i}" for i in ids),
                order=("m0", "c0", "c1", "m1", "m2", "c2", "m3"))
  assert pair_finetune.notebook_pairs(nb) == [("src m0", "src c0"), ("src m2", "src c2")]
  unordered = Notebook("nb2", ids, types, tuple(ids), order=None)
  with pytest.raises(ValueError, match="notebook nb2: no true order"):
    pair_finetune.notebook_pairs(unordered)


def test_pair_batches_keep_notebooks_together_and_replay_by_step():
  rng = np.random.default_rng(0)
  owner = np.repeat(np.arange(6), [9, 3, 5, 1, 8, 6])  # 32 pairs
  md = rng.integers(5, 50, (32, 80)).astype(np.int32)
  md[:, 40:] = 0  # pad: real widths <= 40
  code = md.copy()
  code[:, 0] = np.arange(32)  # row identity
  b = pair_finetune.PairBatches(md, code, owner, batch_size=8, per_notebook=4, pad_id=0, seed=1)
  assert b.per_epoch == 4
  epoch = [b.batch(s)["ids"] for s in range(4)]
  assert all(x.shape == (16, 64) for x in epoch)  # 40 real tokens -> width 64 (multiple of 32)
  rows = np.concatenate([x[8:, 0] for x in epoch])
  np.testing.assert_array_equal(np.sort(rows), np.arange(32))  # every pair once per epoch
  for x in epoch:  # markdown half row i pairs with code half row i
    np.testing.assert_array_equal(x[:8, 1:], x[8:, 1:])
  # A notebook's pairs come in runs (chunks of <= 4): few notebook changes per epoch.
  changes = int((np.diff(owner[rows]) != 0).sum())
  assert changes <= 12, changes
  b.batch(7)  # another epoch, then back: pure function of the step
  np.testing.assert_array_equal(b.batch(2)["ids"], epoch[2])
  assert not np.array_equal(b.batch(4)["ids"], epoch[0])  # a new epoch reshuffles
  with pytest.raises(ValueError, match="fewer than train.batch_size=64"):
    pair_finetune.PairBatches(md, code, owner, batch_size=64, per_notebook=4, pad_id=0, seed=1)


def test_pair_loss_rewards_the_matching_code_cell():
  rng = np.random.default_rng(0)
  md = rng.standard_normal((8, 16)).astype(np.float32)
  good, good_acc = pair_finetune.pair_loss(np.concatenate([md, md + 0.01]), 0.05)
  bad, bad_acc = pair_finetune.pair_loss(np.concatenate([md, md[::-1]]), 0.05)
  assert float(good_acc) == 1.0 and float(bad_acc) == 0.0
  assert float(good) < 0.1 < float(bad)


def test_training_notebooks_leave_the_validation_fold_out():
  nbs = nb_io.load_split(sample_data_dir(), "train")
  c = pair_config.get_config()
  train_nbs = pair_finetune.training_notebooks(nbs, c.data)
  _, val = folds.split_train_val(nbs, fold=0, n_folds=5, seed=0)
  assert {nb.id for nb in train_nbs}.isdisjoint({nb.id for nb in val})
  assert len(train_nbs) + len(val) == len(nbs)
  c.data.fold = -1
  assert len(pair_finetune.training_notebooks(nbs, c.data)) == len(nbs)


def test_pair_finetune_cli_learns_and_stores_a_loadable_encoder(pretrained, tmp_path):
  """experiments.pretrain with the pair_finetune flagfile on the tiny stored
  RoBERTa: the in-batch loss falls, the stored model is the fine-tuned one
  (same config and tokenizer, other weights) and a featurizer can load it."""
  ws, _, _, _ = pretrained
  env = subprocess_env(2)
  args = [sys.executable, "-m", "experiments.pretrain",
          "--flagfile=experiments/flags/pair_finetune.flags",
          f"--config.data.data_dir={sample_data_dir()}", f"--workspace={ws.root}",
          f"--workdir={tmp_path / 'run'}", "--config.model.init_from=rb-tiny",
          "--config.model.save_as=rb-tiny-pairs", "--config.data.max_tokens=32",
          "--config.train.steps=30", "--config.train.batch_size=8",
          "--config.train.log_every=10", "--config.optim.lr=2e-3",
          "--config.optim.warmup_steps=2"]
  p = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "stored model 'rb-tiny-pairs'" in p.stdout
  hist = [json.loads(l) for l in
          (tmp_path / "run" / "pair_finetune_metrics.jsonl").read_text().splitlines()]
  assert [h["step"] for h in hist] == [10, 20, 30]
  assert hist[-1]["loss"] < hist[0]["loss"], hist
  cfg0, p0, tok0 = hf_io.load_encoder(ws, "rb-tiny")
  cfg1, p1, tok1 = hf_io.load_encoder(ws, "rb-tiny-pairs")
  assert cfg1 == cfg0 and tok1.get_vocab() == tok0.get_vocab()
  moved = [float(np.abs(np.asarray(a) - np.asarray(b)).max())
           for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(p1), strict=True)]
  assert min(moved) > 0
  # Fine-tuning only reads the training fold: the log names its notebook count.
  nbs = nb_io.load_split(sample_data_dir(), "train")
  n_train = len(folds.split_train_val(nbs, fold=0, n_folds=5, seed=0)[0])
  assert f"{n_train} notebooks ->" in p.stderr


def test_pair_finetune_stops_on_request_and_resumes(pretrained, tmp_path):
  """A stop request (SLURM's SIGUSR1 flag) checkpoints the step and stores
  nothing; running again resumes at that step and stores the model."""
  ws, _, _, _ = pretrained
  c = pair_config.get_config()
  c.model.init_from, c.model.save_as = "rb-tiny", "rb-tiny-resumed"
  c.data.max_tokens = 32
  c.train.steps, c.train.batch_size, c.train.log_every, c.train.checkpoint_every = 4, 8, 1, 100
  nbs = nb_io.load_split(sample_data_dir(), "train")[:40]
  calls = []

  def stop_at_two():
    calls.append(1)
    return len(calls) >= 2

  first = pair_finetune.finetune(c, ws, nbs, tmp_path / "run", should_stop=stop_at_two)
  assert (first["steps"], first["total"], first["manifest"]) == (2, 4, None)
  with pytest.raises(store.EntryNotFoundError):
    store.read_manifest(ws, "rb-tiny-resumed")
  second = pair_finetune.finetune(c, ws, nbs, tmp_path / "run")
  assert second["steps"] == 4 and [h["step"] for h in second["history"]] == [3, 4]
  assert sorted(helpers.tensorboard_scalars(tmp_path / "run" / "tb")["pair_finetune/loss"]) == [
      1, 2, 3, 4]
  assert second["manifest"]["name"] == "rb-tiny-resumed"


def test_training_notebooks_leave_held_out_repositories_out():
  nbs = nb_io.load_split(sample_data_dir(), "train")
  c = pair_config.get_config()
  c.data.data_dir = str(sample_data_dir())
  c.data.val_sources = "Kaggle/learntools,google/flax"
  repo_of = nb_io.read_sources(sample_data_dir())
  held = {nb.id for nb in nbs if repo_of[nb.id] in ("Kaggle/learntools", "google/flax")}
  train_nbs = pair_finetune.training_notebooks(nbs, c.data)
  assert held and not held & {nb.id for nb in train_nbs}
  assert len(train_nbs) == len(nbs) - len(held)  # the fold plays no part then
  c.data.val_sources = "no/such-repo"
  with pytest.raises(ValueError, match="no/such-repo"):
    pair_finetune.training_notebooks(nbs, c.data)
