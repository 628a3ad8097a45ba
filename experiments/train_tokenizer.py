r"""Trains a subword tokenizer on notebook cells and stores it under a name.

  python -m experiments.train_tokenizer --data_dir=../shared/data/nbcorpus \
      --kind=bpe --vocab_size=16000 --name=nb-bpe-16k [--workspace=W]

Trains on the code and markdown cells of the *training* folds of D/train
(`--fold` is held out, as the models hold it out; `--fold=-1` uses every
notebook), then imports the tokenizer into the workspace store, from where it
loads offline by name:

  hf.load_tokenizer(store.Workspace(W), "nb-bpe-16k")   # a PreTrainedTokenizerFast

Workspace: --workspace, else $JAXRANK_HOME, else ./workspace.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from absl import app, flags, logging

from experiments import common  # defines --workspace
from jaxrank import hf, store
from jaxrank.data import folds, notebooks
from jaxrank.text import subword

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Competition-format folder D (reads D/train).")
_KIND = flags.DEFINE_enum("kind", None, subword.KINDS, "Tokenizer model.")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 16_000, "Vocabulary size, specials included.")
_NAME = flags.DEFINE_string("name", None, "Store name (default: nb-<kind>-<vocab_size>).")
_FOLD = flags.DEFINE_integer("fold", 0, "Validation fold left out of training; -1: train on all.")
_N_FOLDS = flags.DEFINE_integer("n_folds", 5, "Folds (grouped by ancestor_id).")
_SEED = flags.DEFINE_integer("seed", 0, "Fold assignment seed.")
_MIN_FREQUENCY = flags.DEFINE_integer("min_frequency", 2, "Min pair count to merge (bpe, wordpiece).")
_LOWERCASE = flags.DEFINE_bool("lowercase", False, "Lowercase text first.")
_MAX_CHARS = flags.DEFINE_integer("max_chars", 4096, "Cut each cell to this many characters.")
_MAX_LENGTH = flags.DEFINE_integer("model_max_length", 512, "Tokenizer's model_max_length.")
_MAX_NOTEBOOKS = flags.DEFINE_integer("max_notebooks", None, "Read only the first N notebooks.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  ws = store.Workspace(store.default_workspace_root(common.WORKSPACE.value, os.environ))
  name = store.validate_name(_NAME.value or f"nb-{_KIND.value}-{_VOCAB_SIZE.value}")
  if ws.entry_dir(name, store.TOKENIZER).exists():  # fail before minutes of training
    raise app.UsageError(f"tokenizer {name!r} already exists in {ws.tokenizers_dir}; "
                         "pick another --name or remove it (store.remove)")

  nbs = notebooks.load_split(_DATA_DIR.value, "train", max_notebooks=_MAX_NOTEBOOKS.value)
  if _FOLD.value >= 0:
    nbs, _ = folds.split_train_val(nbs, fold=_FOLD.value, n_folds=_N_FOLDS.value,
                                   seed=_SEED.value)
  texts = list(subword.iter_cell_texts(nbs, max_chars=_MAX_CHARS.value))
  logging.info("training %s (vocab %d) on %d cells of %d notebooks", _KIND.value,
               _VOCAB_SIZE.value, len(texts), len(nbs))
  start = time.perf_counter()
  tok = subword.train_tokenizer(texts, _KIND.value, _VOCAB_SIZE.value,
                                min_frequency=_MIN_FREQUENCY.value,
                                lowercase=_LOWERCASE.value,
                                model_max_length=_MAX_LENGTH.value)
  train_s = time.perf_counter() - start

  # Provenance, saved in tokenizer_config.json (and so hashed by the store).
  metadata = {"data_dir": str(Path(_DATA_DIR.value).absolute()), "split": "train",
              "fold": _FOLD.value, "n_folds": _N_FOLDS.value, "seed": _SEED.value,
              "max_chars": _MAX_CHARS.value, "max_notebooks": _MAX_NOTEBOOKS.value,
              "n_notebooks": len(nbs)}  # no timings: a rerun must give the same bytes
  with tempfile.TemporaryDirectory(prefix="tokenizer.") as tmp:
    folder = subword.save_tokenizer(tok, Path(tmp) / name, metadata=metadata)
    manifest = hf.import_tokenizer(ws, folder, name)
  print(f"stored tokenizer {name!r} ({_KIND.value}, {manifest['tokenizer_size']} tokens, "
        f"{len(texts)} cells, trained in {train_s:.1f}s) in {ws.entry_dir(name, store.TOKENIZER)}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["data_dir", "kind"])
  common.run(main)
