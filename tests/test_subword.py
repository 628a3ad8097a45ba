"""Tests for jaxrank/text/subword.py and experiments/train_tokenizer.py.

Tiny vocabularies (500) trained on a few hundred cells of the embedded sample;
held-out text is the sample's validation fold (other repositories).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import transformers

from jaxrank import hf, store
from jaxrank.data import folds, notebooks
from jaxrank.data.types import Notebook
from jaxrank.text import subword
from tests.conftest import subprocess_env

REPO = Path(__file__).resolve().parents[1]
VOCAB = 500
N_TRAIN_CELLS = 500
N_HELD_OUT_CELLS = 300
KINDS = subword.KINDS

# What each kind must look like: (specials in id order, first, last token).
EXPECTED = {
    "bpe": (subword.ROBERTA_SPECIALS, "<s>", "</s>"),
    "unigram": (subword.ROBERTA_SPECIALS, "<s>", "</s>"),
    "wordpiece": (subword.BERT_SPECIALS, "[CLS]", "[SEP]"),
}


@pytest.fixture(scope="module")
def cells() -> tuple[list[str], list[str]]:
  """(train, held-out) cell texts from the sample, split by repository."""
  nbs = notebooks.load_split(notebooks.sample_data_dir(), "train")
  train, val = folds.split_train_val(nbs, fold=0)
  train_texts = list(subword.iter_cell_texts(train))[:N_TRAIN_CELLS]
  held_out = list(subword.iter_cell_texts(val))[:N_HELD_OUT_CELLS]
  assert len(train_texts) == N_TRAIN_CELLS and len(held_out) == N_HELD_OUT_CELLS
  return train_texts, held_out


@pytest.fixture(scope="module")
def trained(cells) -> dict[str, transformers.PreTrainedTokenizerFast]:
  return {kind: subword.train_tokenizer(cells[0], kind, VOCAB) for kind in KINDS}


def _unk_rate(tok, texts: list[str]) -> float:
  ids = tok(texts, add_special_tokens=False).input_ids
  return sum(i == tok.unk_token_id for row in ids for i in row) / sum(map(len, ids))


# ---------------------------------------------------------------------------
# iter_cell_texts


def test_iter_cell_texts_cuts_keeps_order_and_skips_empty():
  nb1 = Notebook("a", ("c1", "c2", "m1"), ("code", "code", "markdown"), ("x" * 10, "", "# hi"))
  nb2 = Notebook("b", ("c1",), ("code",), ("y = 2",))
  assert list(subword.iter_cell_texts([nb1, nb2], max_chars=4)) == ["xxxx", "# hi", "y = "]
  assert list(subword.iter_cell_texts([nb1], max_chars=100)) == ["x" * 10, "# hi"]
  with pytest.raises(ValueError, match="max_chars"):
    list(subword.iter_cell_texts([nb1], max_chars=0))


def test_iter_cell_texts_names_the_cell_with_a_bad_source():
  nb = Notebook("nb7", ("c1", "c9"), ("code", "code"), ("ok", None))  # type: ignore[arg-type]
  with pytest.raises(TypeError, match="notebook nb7 cell c9"):
    list(subword.iter_cell_texts([nb]))


# ---------------------------------------------------------------------------
# The trained tokenizers


@pytest.mark.parametrize("kind", KINDS)
def test_special_tokens_ids_and_markers(trained, kind):
  tok = trained[kind]
  specials, first, last = EXPECTED[kind]
  assert len(tok) == VOCAB
  assert [tok.convert_tokens_to_ids(t) for t in specials] == list(range(5))
  assert tok.model_max_length == 512
  assert (tok.cls_token, tok.sep_token) == (first, last)
  for role in ("pad", "mask", "unk", "cls", "sep"):
    token, token_id = getattr(tok, f"{role}_token"), getattr(tok, f"{role}_token_id")
    assert token in specials and 0 <= token_id < len(tok), role
  assert len({tok.pad_token_id, tok.mask_token_id, tok.unk_token_id, tok.cls_token_id,
              tok.sep_token_id}) == 5
  assert tok.pad_token_id == (0 if kind == "wordpiece" else 1)
  tokens = tok.convert_ids_to_tokens(tok("import numpy as np").input_ids)
  assert tokens[0] == first and tokens[-1] == last and len(tokens) > 2
  assert first not in tokens[1:-1] and last not in tokens[1:-1]


@pytest.mark.parametrize("kind", KINDS)
def test_pairs_and_padding(trained, kind):
  tok = trained[kind]
  _, first, last = EXPECTED[kind]
  enc = tok("x = 1", "print(x)")
  tokens = tok.convert_ids_to_tokens(enc.input_ids)
  assert tokens[0] == first and tokens[-1] == last
  assert tokens.count(last) == (3 if kind != "wordpiece" else 2)  # RoBERTa: </s></s>
  batch = tok(["a", "a much longer cell = 1"], padding=True)
  assert len(batch.input_ids[0]) == len(batch.input_ids[1])
  assert batch.input_ids[0][-1] == tok.pad_token_id and batch.attention_mask[0][-1] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_whitespace_and_newlines_stay_distinguishable(trained, kind):
  tok = trained[kind]
  variants = ["if x:\n    y = 1", "if x: y = 1", "if x:\ny = 1", "if x:\n  y = 1"]
  encodings = {tuple(tok(v).input_ids) for v in variants}
  assert len(encodings) == len(variants)


@pytest.mark.parametrize("kind", KINDS)
def test_decode_gives_back_the_held_out_text(trained, cells, kind):
  tok = trained[kind]
  checked = 0
  for text, ids in zip(cells[1], tok(cells[1]).input_ids):
    if tok.unk_token_id in ids:
      continue  # an unknown character cannot come back
    want = text if kind == "bpe" else unicodedata.normalize("NFKC", text)
    assert tok.decode(ids, skip_special_tokens=True) == want
    checked += 1
  assert checked >= 0.9 * len(cells[1])


def test_markdown_headings_are_not_wordpiece_continuations(cells):
  # `##`/`###` are words here, never the continuation marker.
  tok = subword.train_tokenizer(cells[0] + ["## Title\n### Part two\n#### x"] * 5,
                                "wordpiece", VOCAB)
  text = "## Title\n### Part two"
  assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text
  assert not any(t.startswith("##") for t in tok.get_vocab())


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_rate_on_held_out_text_is_low(trained, cells, kind):
  rate = _unk_rate(trained[kind], cells[1])
  if kind == "bpe":
    assert rate == 0.0  # every byte is in the alphabet
  else:
    assert rate < 0.01


@pytest.mark.parametrize("kind", KINDS)
def test_case_is_kept_unless_lowercase(trained, cells, kind):
  assert trained[kind]("Import NumPy").input_ids != trained[kind]("import numpy").input_ids
  lower = subword.train_tokenizer(cells[0], kind, VOCAB, lowercase=True)
  assert lower("Import NumPy").input_ids == lower("import numpy").input_ids


# ---------------------------------------------------------------------------
# Determinism


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_same_input_gives_the_same_tokenizer(trained, cells, kind):
  again = subword.train_tokenizer(list(cells[0]), kind, VOCAB)
  assert again.get_vocab() == trained[kind].get_vocab()
  assert again.backend_tokenizer.to_str() == trained[kind].backend_tokenizer.to_str()


def test_unigram_is_nearly_deterministic(trained, cells):
  # tokenizers' Unigram trainer sums EM statistics in hash-map order (an
  # upstream limit, see train_tokenizer's docstring): scores wobble in the 4th
  # decimal. Pieces are numbered in string order, so the same pieces get the
  # same ids; a few cells may still split differently.
  again = subword.train_tokenizer(list(cells[0]), "unigram", VOCAB)
  first = trained["unigram"]
  assert len(set(again.get_vocab()) ^ set(first.get_vocab())) <= VOCAB // 100
  if set(again.get_vocab()) == set(first.get_vocab()):  # the usual case
    assert again.get_vocab() == first.get_vocab()
  same = sum(first.tokenize(t) == again.tokenize(t) for t in cells[1])
  assert same >= 0.9 * len(cells[1])


# ---------------------------------------------------------------------------
# Bad input


def test_bad_arguments_raise_clear_errors(cells):
  with pytest.raises(ValueError, match="unknown tokenizer kind 'sentencepiece'"):
    subword.train_tokenizer(cells[0], "sentencepiece", VOCAB)
  with pytest.raises(ValueError, match="too small"):
    subword.train_tokenizer(cells[0], "bpe", 100)
  with pytest.raises(ValueError, match="min_frequency"):
    subword.train_tokenizer(cells[0], "bpe", VOCAB, min_frequency=-1)
  for kind in KINDS:
    with pytest.raises(ValueError, match="no training texts"):
      subword.train_tokenizer(iter([]), kind, VOCAB)
    with pytest.raises(TypeError, match="training text #2 is bytes"):
      subword.train_tokenizer(["a b", "c d", b"e"], kind, VOCAB)


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_alphabet_larger_than_vocab_is_an_error(kind):
  # 600 distinct CJK characters cannot fit in 300 tokens.
  texts = ["".join(chr(0x4E00 + i + j) for j in range(6)) + " x y" for i in range(0, 600, 6)]
  with pytest.raises(ValueError, match="raise vocab_size"):
    subword.train_tokenizer(texts * 2, kind, 300)


# ---------------------------------------------------------------------------
# Saving and the store


def test_save_tokenizer_writes_a_new_folder_once(trained, tmp_path):
  tok = trained["bpe"]
  folder = subword.save_tokenizer(tok, tmp_path / "tok", metadata={"data": "sample"})
  assert (folder / "tokenizer.json").is_file()
  config = json.loads((folder / "tokenizer_config.json").read_text())
  assert config[subword.METADATA_KEY]["kind"] == "bpe"
  assert config[subword.METADATA_KEY]["data"] == "sample"
  assert "data" not in tok.init_kwargs[subword.METADATA_KEY]  # `tok` left as it was
  with pytest.raises(FileExistsError):
    subword.save_tokenizer(tok, folder)
  assert [p.name for p in tmp_path.iterdir()] == ["tok"]  # no temp folder left behind


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_through_the_store_by_name(trained, cells, tmp_path, kind):
  assert os.environ.get("HF_HUB_OFFLINE") == "1"  # conftest: no hub
  tok = trained[kind]
  ws = store.Workspace(tmp_path / "ws")
  folder = subword.save_tokenizer(tok, tmp_path / "staged")
  manifest = hf.import_tokenizer(ws, folder, f"nb-{kind}")
  assert manifest["tokenizer_size"] == VOCAB
  loaded = hf.load_tokenizer(ws, f"nb-{kind}")
  assert isinstance(loaded, transformers.PreTrainedTokenizerFast)
  _, first, last = EXPECTED[kind]
  tokens = loaded.convert_ids_to_tokens(loaded("import numpy as np").input_ids)
  assert tokens[0] == first and tokens[-1] == last
  for attr in ("pad_token_id", "mask_token_id", "unk_token_id", "cls_token_id",
               "sep_token_id", "model_max_length"):
    assert getattr(loaded, attr) == getattr(tok, attr), attr
  assert loaded(cells[1]).input_ids == tok(cells[1]).input_ids
  assert loaded.init_kwargs[subword.METADATA_KEY]["kind"] == kind
  # Same bytes under the same name: reused, not an error.
  assert hf.import_tokenizer(ws, folder, f"nb-{kind}") == manifest


def test_bpe_first_word_keeps_its_prefix_space_after_reload(trained, tmp_path):
  # transformers resets ByteLevel's add_prefix_space unless told: a cell's first
  # word must tokenize as in training, before and after a reload.
  tok = trained["bpe"]
  assert tok.tokenize("import x")[0] == "Ġimport"
  folder = subword.save_tokenizer(tok, tmp_path / "t")
  assert transformers.AutoTokenizer.from_pretrained(folder).tokenize("import x")[0] == "Ġimport"


# ---------------------------------------------------------------------------
# The entry point, as a real process


def test_entry_point_trains_and_stores_by_name(tmp_path):
  ws_root = tmp_path / "ws"
  cmd = [sys.executable, "-m", "experiments.train_tokenizer",
         f"--data_dir={notebooks.sample_data_dir()}", "--kind=bpe", f"--vocab_size={VOCAB}",
         "--name=nb-bpe-tiny", f"--workspace={ws_root}", "--max_notebooks=40"]
  env = subprocess_env(None)
  done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "stored tokenizer 'nb-bpe-tiny'" in done.stdout

  ws = store.Workspace(ws_root)
  tok = hf.load_tokenizer(ws, "nb-bpe-tiny")
  tokens = tok.convert_ids_to_tokens(tok("x = 1").input_ids)
  assert (tokens[0], tokens[-1]) == ("<s>", "</s>")
  assert len(tok) == VOCAB and tok.pad_token == "<pad>" and tok.mask_token == "<mask>"
  meta = tok.init_kwargs[subword.METADATA_KEY]
  assert meta["kind"] == "bpe" and meta["fold"] == 0 and meta["max_notebooks"] == 40
  assert 0 < meta["n_notebooks"] < 40  # the validation fold was held out

  again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert again.returncode != 0
  assert "already exists" in again.stderr
