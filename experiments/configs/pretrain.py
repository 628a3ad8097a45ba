r"""MLM pretraining of a small RoBERTa on notebook cells with our own BPE tokenizer.

  python -m experiments.pretrain --flagfile=experiments/flags/pretrain.flags \
      --config.data.data_dir=../shared/data/nbcorpus

trains (or reuses) the tokenizer `tokenizer.name`, pretrains, and stores the
encoder as `model.save_as`; then start a ranker from it:

  python -m experiments.train --flagfile=experiments/flags/roberta_pointwise.flags \
      --config.model.encoder_name=roberta-nb --config.features.tokenizer=roberta-nb ...
"""

import ml_collections

from experiments.configs import common


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.objective = "mlm"  # experiments/configs/pair_finetune.py: "pairs"

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.name = "bpe-nb-8k"  # store tokenizer; trained on the data if missing
  c.tokenizer.kind = "bpe"
  c.tokenizer.vocab_size = 8000
  c.tokenizer.min_frequency = 2

  c.model = ml_collections.ConfigDict()
  c.model.save_as = "roberta-nb"  # store model name
  c.model.hidden = 256
  c.model.layers = 4
  c.model.heads = 4
  c.model.intermediate = 1024
  c.model.max_len = 128
  c.model.dropout = 0.1
  c.model.dtype = "float32"  # or "bfloat16"

  c.data = ml_collections.ConfigDict()
  c.data.data_dir = ""
  c.data.split = "train"
  c.data.cache_dir = ""
  c.data.max_notebooks = 0
  c.data.max_chars = 2000
  c.data.seed = 0

  c.optim = common.optim(lr=5e-4, warmup_steps=200, b2=0.98)

  c.train = ml_collections.ConfigDict()
  c.train.seed = 0
  c.train.steps = 2000
  c.train.batch_size = 64
  c.train.mask_rate = 0.15
  c.train.log_every = 20
  c.train.checkpoint_every = 200

  c.lock()
  return c
