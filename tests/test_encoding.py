"""Encoding speed work: head-first tokenization, length-bucketed batches, bf16 switch.

`jaxrank.features.subword.tokenize` must give exactly the ids of the tokenizer
reading whole texts, and `EncoderFeaturizer.vectors` the vectors of the loop it
replaced (`benchmarks.encode_reference.legacy_vectors`), so caches written before
stay valid. Real tokenizers (MiniLM's WordPiece when its package is installed, a
byte-level BPE trained here) on the embedded sample; a tiny random BERT for the
vectors, plus real MiniLM on a few hundred sample cells.
"""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest

from benchmarks import encode_reference
from jaxrank import hf, store
from jaxrank.data import notebooks as nb_io
from jaxrank.features import encoder as ef
from jaxrank.features import subword as sw
from tests.test_roberta import MINILM_DIST, make_roberta_tokenizer, tiny_store_workspace


def _sample_texts(n: int = 1500) -> list[str]:
  nbs = nb_io.load_split(nb_io.sample_data_dir(), "train")
  return list(dict.fromkeys(s for nb in nbs for s in nb.sources))[:n]


# Texts whose head cut falls in awkward places: whitespace runs, a word longer
# than WordPiece's 100-character limit, accents and combining marks, CJK, empty.
_ODD = ["", " ", "x" * 500, "word " * 200, "a" * 150 + " b" * 100, "  \n\t" * 120 + "end",
        "é" * 300, "e\u0301" * 200, "数据" * 300, "import numpy as np\n" * 40,
        ("w" * 40 + " ") * 20, "(" * 400, "a" * (3 * 64 - 1) + " " + "b" * 300]


@pytest.fixture(scope="module")
def texts() -> list[str]:
  return _sample_texts() + _ODD


@pytest.fixture(scope="module")
def tokenizers_under_test(tmp_path_factory, texts):
  out = {"bpe": make_roberta_tokenizer(tmp_path_factory.mktemp("bpe"), texts[:300])}
  try:
    importlib.metadata.distribution(MINILM_DIST)
    ws = store.Workspace(tmp_path_factory.mktemp("ws"))
    hf.import_model(ws, MINILM_DIST, "minilm")
    out["minilm"] = hf.load_tokenizer(ws, "minilm", check_hashes=False)
  except importlib.metadata.PackageNotFoundError:
    pass
  return out


@pytest.mark.parametrize("name", ["bpe", "minilm"])
@pytest.mark.parametrize("max_tokens", [16, 64])
def test_head_first_tokenize_equals_tokenizing_whole_texts(tokenizers_under_test, texts, name,
                                                           max_tokens):
  if name not in tokenizers_under_test:
    pytest.skip(f"{MINILM_DIST} is not installed")
  tok = tokenizers_under_test[name]
  got = sw.tokenize(tok, texts, max_tokens, 2000)
  want = encode_reference.legacy_tokenize(tok, texts, max_tokens, 2000)
  np.testing.assert_array_equal(got, want)
  # The heads did the work for most long texts (else the speed-up is gone).
  head = sw.head_chars(max_tokens)[-1]
  long_texts = [t for t in texts if len(t) > head]
  assert long_texts
  backend = sw._truncating_backend(tok, max_tokens)
  encs = backend.encode_batch([t[:head] for t in long_texts])
  assert np.mean([sw._head_suffices(e) for e in encs]) > 0.8


def test_bucket_widths_are_few_and_cover_the_longest_row():
  widths = {ef.bucket_width(n, 64) for n in range(1, 65)}
  assert widths == set(range(8, 65, 8))
  assert all(ef.bucket_width(n, 64) >= n for n in range(1, 65))
  assert ef.bucket_width(20, 16) == 16


@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory) -> store.Workspace:
  root = tmp_path_factory.mktemp("tiny")
  return tiny_store_workspace(root)


def test_vectors_equal_the_previous_loop_and_read_its_cache(tiny_ws, tmp_path):
  texts = _sample_texts()
  f = ef.EncoderFeaturizer(str(tiny_ws.root), "tiny", str(tmp_path / "new"), 16, 2000, 64)
  got = f.vectors(texts, save_every=1000)
  cfg, tok, encode = f._model()
  clean = [sw.clean_text(t, 2000) for t in texts]
  order = np.argsort([len(t) for t in clean], kind="stable")
  legacy = encode_reference.legacy_vectors(tok, encode, clean, 16, 2000, 64)
  want = np.empty_like(legacy)
  want[order] = legacy
  # float32 outputs agree to rounding; the float16 cache differs at most by one float16 step.
  ids = sw.tokenize(tok, clean, 16, 2000)
  np.testing.assert_allclose(ef.encode_bucketed(encode, ids, tok.pad_token_id), want,
                             rtol=0, atol=1e-6)
  np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float16).astype(np.float32),
                             rtol=2 ** -10, atol=1e-7)
  assert got.dtype == np.float16 and got.shape == (len(texts), cfg.hidden_size)
  # A cache written the old way (same keys, same folder) is found whole: no new shard.
  old = ef.VectorCache(tmp_path / "old" / "tiny" / "L16")
  old.add([ef.text_key("tiny", 16, t) for t in clean], want)
  f_old = ef.EncoderFeaturizer(str(tiny_ws.root), "tiny", str(tmp_path / "old"), 16, 2000, 64)
  shards = sorted(f_old.cache_folder.glob("shard-*.npz"))
  np.testing.assert_array_equal(f_old.vectors(texts), want.astype(np.float16))
  assert sorted(f_old.cache_folder.glob("shard-*.npz")) == shards
  assert f_old._state is None  # the model was never loaded


def test_duplicate_cells_are_encoded_once(tiny_ws, tmp_path):
  texts = _sample_texts()[:100]
  f = ef.EncoderFeaturizer(str(tiny_ws.root), "tiny", str(tmp_path), 16, 2000, 64)
  out = f.vectors(texts + texts[::-1] + texts[:7])
  assert len(f.cache()) == len(set(texts))
  np.testing.assert_array_equal(out[:100], out[100:200][::-1])


def test_bfloat16_vectors_have_their_own_cache_and_stay_close(tiny_ws, tmp_path):
  texts = _sample_texts()[:300]
  f32 = ef.EncoderFeaturizer(str(tiny_ws.root), "tiny", str(tmp_path), 16, 2000, 64)
  bf16 = ef.from_config({"workspace": str(tiny_ws.root), "encoder": "tiny", "max_tokens": 16,
                         "cache_dir": str(tmp_path), "encode_dtype": "bfloat16"})
  assert bf16.cache_folder.name == "L16-bfloat16" and f32.cache_folder.name == "L16"
  ef.save(bf16, tmp_path / "run")
  assert ef.load(tmp_path / "run").dtype == "bfloat16"
  a = f32.vectors(texts).astype(np.float64)
  b = bf16.vectors(texts).astype(np.float64)
  assert not np.array_equal(a, b)  # bfloat16 compute really ran
  cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
  assert cos.min() > 0.99, cos.min()
  with pytest.raises(ValueError, match="dtype must be one of"):
    ef.EncoderFeaturizer(str(tiny_ws.root), "tiny", str(tmp_path), dtype="float16")


@pytest.fixture(scope="module")
def minilm_ws(tmp_path_factory):
  try:
    importlib.metadata.distribution(MINILM_DIST)
  except importlib.metadata.PackageNotFoundError:
    pytest.skip(f"{MINILM_DIST} is not installed")
  ws = store.Workspace(tmp_path_factory.mktemp("mws"))
  hf.import_model(ws, MINILM_DIST, "minilm-l6")
  return ws


def test_minilm_bucketed_float32_matches_the_previous_loop_and_bf16_agrees(minilm_ws):
  # 96 cells at 32 tokens (4 compiled widths per dtype): the numerics at real scale, quickly.
  texts = [sw.clean_text(t, 2000) for t in _sample_texts()[:96]]
  f = ef.EncoderFeaturizer(str(minilm_ws.root), "minilm-l6", "unused", 32, 2000, 32)
  _, tok, encode = f._model()
  order = np.argsort([len(t) for t in texts], kind="stable")
  want = np.empty((len(texts), 384), np.float32)
  want[order] = encode_reference.legacy_vectors(tok, encode, texts, 32, 2000, 32)
  ids = sw.tokenize(tok, texts, 32, 2000)
  got = ef.encode_bucketed(encode, ids, tok.pad_token_id)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
  fb = ef.EncoderFeaturizer(str(minilm_ws.root), "minilm-l6", "unused", 32, 2000, 32,
                            dtype="bfloat16")
  _, _, encode_bf16 = fb._model()
  cos = encode_reference.cosines(ef.encode_bucketed(encode_bf16, ids, tok.pad_token_id), got)
  assert cos["mean"] > 0.995 and cos["min"] > 0.98, cos
