"""Tiny configs on the embedded sample, for fast tests."""

from __future__ import annotations

from experiments.configs import bow_mlp, diffusion, pretrain
from jaxrank.data.notebooks import sample_data_dir


def tiny_bow_config(**overrides):
  """The real BOW-MLP config shrunk: 60 sample notebooks, dim 16-32, 3 steps."""
  c = bow_mlp.get_config()
  c.data.data_dir = str(sample_data_dir())
  c.data.max_notebooks = 60
  c.data.n_folds = 3
  c.data.buckets = (64, 256, 1024)
  c.data.cells_per_batch = 512
  c.features.word_vocab = 2000
  c.features.max_terms = 16
  c.model.embed_dim = 16
  c.model.hidden_dim = 32
  return _short_training(c, overrides)


def _short_training(c, overrides):
  """3 steps, a log line each, no periodic evaluation or checkpoint; then `overrides`."""
  c.train.steps = 3
  c.train.log_every = 1
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  c.update_from_flattened_dict(overrides)
  return c


def tiny_diffusion_config(**overrides):
  """The real diffusion config shrunk: sample notebooks, dim 16, 1 block, 3 steps."""
  c = diffusion.get_config()
  c.data.data_dir = str(sample_data_dir())
  c.data.max_notebooks = 40
  c.data.n_folds = 2
  c.data.buckets = (128, 1024)  # the first 40 sample notebooks all fit 128: one shape
  c.data.cells_per_batch = 512
  c.features.word_vocab = 1000
  c.features.max_terms = 8
  c.model.embed_dim = 8
  c.model.hidden_dim = 16
  c.model.mlp_dim = 16
  c.model.num_heads = 2
  c.model.tf_layers = 1
  c.model.sample_steps = 2
  c.model.num_samples = 2
  c.model.self_condition = True  # the fuller path; the loss test covers it off too
  return _short_training(c, overrides)


def tiny_pretrain_config(vocab_size: int, **fields):
  """The real MLM pretraining config shrunk to a RoBERTa "rb-tiny" (hidden 32, 1 layer)
  with a BPE "bpe-tiny" of `vocab_size`; `fields` (dotted keys) override the rest."""
  c = pretrain.get_config()
  c.tokenizer.name, c.tokenizer.vocab_size = "bpe-tiny", vocab_size
  c.model.save_as, c.model.hidden, c.model.layers, c.model.heads = "rb-tiny", 32, 1, 2
  c.model.intermediate, c.model.max_len = 64, 32
  c.update_from_flattened_dict(fields)
  return c
