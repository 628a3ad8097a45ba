"""The config groups every model shares (`config.data`, `.optim`, `.train`).

Each builder returns the defaults the trainer (`jaxrank/train.py`) reads; a
model config passes only the values it changes, e.g. `common.optim(lr=5e-3)`.
"""

import ml_collections


def data(**overrides) -> ml_collections.ConfigDict:
  d = ml_collections.ConfigDict()
  d.data_dir = ""  # required: a competition-format folder, or several: "A,B"
  d.split = "train"
  d.cache_dir = ""  # parsed-notebook cache; entry points default it into the workspace
  d.n_folds = 5  # validation = one ancestor-grouped fold; 1 = no validation
  d.fold = 0
  # A chosen validation set instead of the fold (comma-separated; ancestor-grouped):
  d.val_ancestors = ""  # ancestor ids ("89f593f7", or "nbcorpus2/89f593f7" for one folder)
  d.val_sources = ""  # repositories named in the folders' sources.csv ("adgirish/kaggleScape")
  d.seed = 0
  d.max_notebooks = 0  # 0 = all
  d.buckets = (16, 32, 64, 128, 256, 512, 1024, 2048)
  d.cells_per_batch = 2048
  d.update(overrides)
  return d


def optim(**overrides) -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  o.lr = 1e-3
  o.final_lr_fraction = 0.05
  o.warmup_steps = 50
  o.weight_decay = 0.01
  o.b1 = 0.9
  o.b2 = 0.999
  o.clip_norm = 1.0
  o.grad_accum = 1
  o.update(overrides)
  return o


def train(**overrides) -> ml_collections.ConfigDict:
  t = ml_collections.ConfigDict()
  t.seed = 0
  t.epochs = 20
  t.steps = 0  # > 0 overrides epochs
  t.log_every = 20
  t.eval_every = 200
  t.checkpoint_every = 100
  t.keep_checkpoints = 2
  t.stop_check_every = 1
  t.rng_impl = "unsafe_rbg"  # dropout keys; "threefry2x32" is jax's default
  t.update(overrides)
  return t


def bow_features(**overrides) -> ml_collections.ConfigDict:
  """TF-IDF n-gram bags (`jaxrank.text.bow`) and their cell-cell cosine `sim`."""
  f = ml_collections.ConfigDict()
  f.kind = "bow"
  f.word_ngrams = (1, 2)
  f.word_vocab = 30_000
  f.char_ngrams = (0, 0)  # (0, 0) = off; e.g. (3, 5)
  f.char_vocab = 20_000
  f.min_df = 2
  f.max_chars = 5_000  # huge cells are truncated for features, never dropped
  f.max_terms = 48
  f.update(overrides)
  return f


def encoder_features(**overrides) -> ml_collections.ConfigDict:
  """Cached frozen store-encoder cell vectors `vec`, their cosine `sim` and `sim_lex`."""
  f = ml_collections.ConfigDict()
  f.kind = "encoder"  # or "subword" (token ids, for models that run the encoder)
  f.workspace = ""  # store root; "" = the entry point's --workspace
  f.encoder = "minilm-l6"  # store model for the frozen vectors
  f.tokenizer = ""  # subword: store tokenizer/model (default: features.encoder)
  f.cache_dir = ""  # default WORKSPACE/data/encoder_cache
  f.max_tokens = 64
  f.max_chars = 2000
  f.batch_rows = 32  # encoder calls of ~batch_rows x 64 tokens (2k; any max_tokens)
  f.encode_dtype = "float32"  # or "bfloat16" (vectors cached apart; experiments.encode --dtype)
  f.lexical_sim = True  # adds batch["sim_lex"], the per-notebook word TF-IDF cosine
  f.cell_shape = False  # adds batch["shape"], each cell's form (jaxrank.text.cell_shape)
  # Markdown read without its HTML, CSS and URLs (jaxrank.text.markup.readable).
  f.readable_markdown = False
  # adds batch["section"]: markdown headings' section numbers ranked (jaxrank.text.sections)
  f.section_numbers = False
  f.update(overrides)
  return f


def encoder_model(model: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
  """Adds the encoder block of the transformer rankers (`rankers.EncoderFields`) to `model`:
  a store model by name (resolved by the trainer from `workspace`), or with no name a
  fresh encoder of the `enc_*` sizes."""
  model.encoder_name = ""  # store model; "" = a fresh encoder from enc_*
  model.workspace = ""  # store root; "" = the entry point's --workspace
  model.enc_hidden = 64
  model.enc_layers = 2
  model.enc_heads = 4
  model.enc_max_len = 512
  model.enc_dropout = 0.1
  model.pad_id = 1  # RoBERTa-style tokenizers of jaxrank.text.subword; BERT's is 0
  model.update(overrides)
  return model
