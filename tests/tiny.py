"""Tiny configs on the embedded sample, for fast tests."""

from __future__ import annotations

from experiments.configs import bow_mlp
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
  c.train.steps = 3
  c.train.log_every = 1
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  c.update_from_flattened_dict(overrides)
  return c
