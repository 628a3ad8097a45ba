r"""Contrastive fine-tuning of a stored encoder on (markdown, next code) pairs.

  python -m experiments.pretrain --flagfile=experiments/flags/pair_finetune.flags \
      --config.data.data_dir=../shared/data/nbcorpus --config.data.fold=0

reads only the training notebooks of fold `data.fold` (the validation fold's
orders stay unseen), fine-tunes `model.init_from` (jaxrank.pair_finetune) and
stores it as `model.save_as`; fill its vector cache and train a cells ranker
on it:

  python -m experiments.encode --data_dir=... --encoder=minilm-l6-pairs-f0
  python -m experiments.train --flagfile=experiments/flags/roberta_cells.flags \
      --config.features.encoder=minilm-l6-pairs-f0 ...

Defaults: one epoch of fold 0's ~10k pairs in bfloat16, about 10 min on 2 CPU cores.
"""

import ml_collections

from experiments.configs import common


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.objective = "pairs"

  c.model = ml_collections.ConfigDict()
  c.model.init_from = "minilm-l6"  # store model to start from (its tokenizer is kept)
  c.model.save_as = "minilm-l6-pairs-f0"  # store name of the result
  c.model.dtype = "bfloat16"  # compute dtype while training; stored weights are float32

  c.data = ml_collections.ConfigDict()
  c.data.data_dir = ""
  c.data.split = "train"
  c.data.cache_dir = ""
  c.data.max_notebooks = 0
  c.data.n_folds = 5  # ancestor-grouped folds, as the rankers' data.n_folds / data.fold
  c.data.fold = 0  # held out: its notebooks are not read (-1: use every notebook)
  c.data.seed = 0
  # Held out instead of the fold when set (comma-separated, as the rankers' keys): the
  # repositories of the folders' sources.csv, and ancestor ids.
  c.data.val_sources = ""
  c.data.val_ancestors = ""
  c.data.max_tokens = 64  # as the encoder featurizer (configs/common.py)
  c.data.max_chars = 2000
  # Markdown read without its HTML, CSS and URLs, as features.readable_markdown.
  c.data.readable_markdown = False

  c.optim = common.optim(lr=3e-5, final_lr_fraction=0.1, warmup_steps=30)

  c.train = ml_collections.ConfigDict()
  c.train.seed = 0
  c.train.epochs = 1.0
  c.train.steps = 0  # > 0 overrides epochs
  c.train.batch_size = 32  # pairs per step (64 sequences)
  c.train.pairs_per_notebook = 8  # a notebook's pairs stay together: hard negatives
  c.train.temperature = 0.05
  c.train.log_every = 20
  c.train.checkpoint_every = 100

  c.lock()
  return c
