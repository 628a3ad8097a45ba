"""Hugging Face BERT/RoBERTa folders <-> our encoder (`jaxrank.models.roberta`).

Reading (what `jaxrank.store.import_model` does with a folder): `inspect_hf_folder`
checks config, architecture, weights and tokenizer files; `load_hf_tensors` reads
the weights (safetensors or Flax msgpack; a PyTorch pickle only when allowed);
`params_from_hf` turns a state dict into `Encoder` params. Writing (pretraining
and pair fine-tuning export their encoder this way): `params_to_hf`, `hf_config`,
`write_folder`. Nothing here touches the network or the store.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
from flax import serialization, traverse_util
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from jaxrank import io_utils
from jaxrank.models import roberta

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
)
# Weight files, in order of preference.
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
FLAX_MSGPACK = "flax_model.msgpack"
PYTORCH_BIN = "pytorch_model.bin"
PYTORCH_BIN_INDEX = "pytorch_model.bin.index.json"



class SourceError(ValueError):
  """An unusable Hugging Face folder or weights file (the store raises it as its own
  `store.SourceError`)."""


# ----------------------------------------------------------------------------------------
# Reading a folder.
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class HFFolder:
  """What an importable Hugging Face model folder holds (validated, nothing loaded yet)."""

  folder: Path
  hf_config: dict[str, Any]
  encoder_config: roberta.EncoderConfig
  weights_format: str  # "safetensors" | "flax_msgpack" | "pytorch_pickle"
  weight_files: tuple[Path, ...]
  tokenizer_files: tuple[Path, ...]


def inspect_hf_folder(folder: Path, allow_pickle: bool = False) -> HFFolder:
  """Checks config, architecture, weights and tokenizer files exist; raises SourceError."""
  folder = Path(folder)
  cfg_path = folder / "config.json"
  if not cfg_path.is_file():
    raise SourceError(f"{folder}: no config.json (not a Hugging Face model folder)")
  try:
    hf_config = json.loads(cfg_path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise SourceError(f"{cfg_path}: not valid JSON ({e})") from None
  if not isinstance(hf_config, dict):
    raise SourceError(f"{cfg_path}: expected a JSON object")
  try:
    enc_cfg = roberta.EncoderConfig.from_hf(hf_config)
  except ValueError as e:
    raise SourceError(f"{cfg_path}: {e}") from None
  fmt, weights = _find_weights(folder, allow_pickle)
  tok_files = tuple(folder / n for n in TOKENIZER_FILES if (folder / n).is_file())
  if not tok_files:
    raise SourceError(f"{folder}: no tokenizer files (expected tokenizer.json, or vocab.txt, "
                      "or vocab.json + merges.txt)")
  return HFFolder(folder, hf_config, enc_cfg, fmt, weights, tok_files)


def _find_weights(folder: Path, allow_pickle: bool) -> tuple[str, tuple[Path, ...]]:
  def sharded(index_name: str) -> tuple[Path, ...]:
    index = folder / index_name
    try:
      weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise SourceError(f"{index}: not a valid shard index ({e!r})") from None
    names = sorted(set(weight_map.values()))
    bad = [s for s in names if not isinstance(s, str) or Path(s).name != s or s.startswith(".")]
    if bad:
      raise SourceError(f"{index}: shard names must be plain file names, got {bad[:3]}")
    shards = tuple(folder / s for s in names)
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
      raise SourceError(f"{index} names shards that are missing: {missing}")
    return (index,) + shards

  if (folder / SAFETENSORS).is_file():
    return "safetensors", (folder / SAFETENSORS,)
  if (folder / SAFETENSORS_INDEX).is_file():
    return "safetensors", sharded(SAFETENSORS_INDEX)
  if (folder / FLAX_MSGPACK).is_file():
    return "flax_msgpack", (folder / FLAX_MSGPACK,)
  has_bin = (folder / PYTORCH_BIN).is_file() or (folder / PYTORCH_BIN_INDEX).is_file()
  if has_bin and not allow_pickle:
    raise SourceError(
        f"{folder}: only {PYTORCH_BIN} weights, a Python pickle: loading a pickle can run "
        "arbitrary code. Convert it to safetensors, or pass allow_pickle=True "
        "(--allow_pickle) if you trust where it came from (needs torch).")
  if has_bin:
    if (folder / PYTORCH_BIN).is_file():
      return "pytorch_pickle", (folder / PYTORCH_BIN,)
    return "pytorch_pickle", sharded(PYTORCH_BIN_INDEX)
  present = sorted(p.name for p in folder.iterdir())
  raise SourceError(f"{folder}: no weights found (expected {SAFETENSORS}, {SAFETENSORS_INDEX}, "
                    f"{FLAX_MSGPACK} or, with allow_pickle, {PYTORCH_BIN}); the folder holds "
                    f"{present}")


def load_hf_tensors(src: HFFolder) -> dict[str, np.ndarray]:
  """Reads all weight tensors of `src` as numpy arrays (float32 for floating point)."""
  tensors: dict[str, np.ndarray] = {}
  for path in src.weight_files:
    if path.name.endswith(".index.json"):
      continue
    if src.weights_format == "safetensors":
      part = _read_safetensors(path)
    elif src.weights_format == "flax_msgpack":
      part = _read_flax_msgpack(path)
    else:
      part = _read_torch_pickle(path)
    dup = set(part) & set(tensors)
    if dup:
      raise SourceError(f"{path}: tensor {sorted(dup)[0]!r} also appears in another shard")
    tensors.update(part)
  return tensors


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
  try:
    # numpy framework: no torch, no pickle; bfloat16 comes back via ml_dtypes.
    with safe_open(str(path), framework="numpy") as f:
      return {key: _widen(f.get_tensor(key)) for key in f.keys()}
  except SafetensorError as e:
    raise SourceError(f"{path}: cannot read safetensors ({e}); the file is truncated or "
                      "not a safetensors file") from None


def _read_flax_msgpack(path: Path) -> dict[str, np.ndarray]:
  try:
    tree = serialization.msgpack_restore(path.read_bytes())
  except Exception as e:  # msgpack raises several unrelated types
    raise SourceError(f"{path}: cannot read Flax msgpack ({e})") from None
  if not isinstance(tree, dict):
    raise SourceError(f"{path}: expected a dict of parameters")
  if set(tree) == {"params"}:
    tree = tree["params"]
  flat = traverse_util.flatten_dict(tree, sep=".")
  return {k: _widen(np.asarray(v)) for k, v in flat.items()}


def _read_torch_pickle(path: Path) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top  # optional, heavy: only for pickles
  except ImportError:
    raise SourceError(f"{path}: reading {PYTORCH_BIN} needs torch, which is not installed "
                      "here; convert it to safetensors where torch is available") from None
  try:
    state = torch.load(str(path), map_location="cpu", weights_only=True)
  except Exception as e:
    raise SourceError(f"{path}: torch.load failed ({e})") from None
  return {k: _widen((v.float() if v.is_floating_point() else v).numpy())
          for k, v in state.items()}


def _widen(a: np.ndarray) -> np.ndarray:
  return a.astype(np.float32) if a.dtype.kind == "f" or a.dtype.name == "bfloat16" else a


# ----------------------------------------------------------------------------------------
# Hugging Face weights -> our params.
# ----------------------------------------------------------------------------------------

# Leading prefixes of task models (BertForMaskedLM, RobertaForSequenceClassification, ...).
_PREFIXES = ("bert.", "roberta.")
# Tensors of heads and buffers an encoder does not use.
_IGNORED = re.compile(r"^(pooler\.|cls\.|lm_head\.|classifier\.|qa_outputs\.|"
                      r"embeddings\.position_ids$|embeddings\.token_type_ids$)")
# Old TF-converted BERT checkpoints name LayerNorm params gamma/beta; Flax uses scale.
_LEAF_ALIASES = {"gamma": "weight", "beta": "bias", "scale": "weight"}


def _canonical(name: str) -> str:
  for p in _PREFIXES:
    if name.startswith(p):
      return name[len(p):]
  return name


def params_from_hf(tensors: Mapping[str, np.ndarray], cfg: roberta.EncoderConfig) -> roberta.Params:
  """Converts a Hugging Face BERT/RoBERTa state dict to `Encoder` params.

  Accepts PyTorch naming (`...dense.weight` stored `[out, in]`, as in
  `model.safetensors` from torch) and Flax naming (`...dense.kernel` `[in, out]`,
  `LayerNorm.scale`, `...embeddings.embedding`, as transformers' Flax
  `save_pretrained` writes), with or without a `bert.`/`roberta.` prefix; heads
  (pooler, MLM, classifier) are ignored. Every tensor's shape is checked against
  `cfg`; a missing or misshapen tensor raises ValueError naming it.
  Returns float32 numpy arrays in the tree `Encoder(cfg).init` makes.
  """
  # Normalise names: strip prefixes, drop heads, leaf -> weight|bias|kernel|embedding.
  flat: dict[str, np.ndarray] = {}
  for raw, value in tensors.items():
    name = _canonical(raw)
    if _IGNORED.match(name):
      continue
    stem, _, leaf = name.rpartition(".")
    leaf = _LEAF_ALIASES.get(leaf, leaf)
    key = f"{stem}.{leaf}"
    if key in flat:
      raise ValueError(f"tensor {raw!r} duplicates another tensor after name normalisation")
    flat[key] = np.asarray(value)
  used: set[str] = set()

  def take(stem: str, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """kind: 'linear' (kernel [in,out]), 'embed' (table), 'vector' (bias/LN)."""
    if kind == "linear":
      candidates = [(f"{stem}.kernel", False), (f"{stem}.weight", True)]
    elif kind == "embed":
      candidates = [(f"{stem}.embedding", False), (f"{stem}.weight", False)]
    else:
      candidates = [(stem, False)]
    for key, transpose in candidates:
      if key in flat:
        arr = flat[key]
        if transpose:
          arr = arr.T
        if tuple(arr.shape) != tuple(shape):
          want = tuple(shape)[::-1] if transpose else tuple(shape)  # in the file's layout
          raise ValueError(f"tensor {key!r} has shape {tuple(flat[key].shape)}; the config "
                           f"implies {want}")
        used.add(key)
        return np.asarray(arr, dtype=np.float32)
    raise ValueError(f"missing tensor {candidates[0][0]!r} (or {candidates[-1][0]!r})")

  h, inter = cfg.hidden_size, cfg.intermediate_size

  def layer_norm(stem):
    return {"scale": take(f"{stem}.weight", (h,), "vector"),
            "bias": take(f"{stem}.bias", (h,), "vector")}

  def linear(stem, n_in, n_out):
    return {"kernel": take(stem, (n_in, n_out), "linear"),
            "bias": take(f"{stem}.bias", (n_out,), "vector")}

  e = "embeddings"
  params: roberta.Params = {"embeddings": {
      "word": {"embedding": take(f"{e}.word_embeddings", (cfg.vocab_size, h), "embed")},
      "position": {"embedding": take(f"{e}.position_embeddings",
                                     (cfg.max_position_embeddings, h), "embed")},
      "token_type": {"embedding": take(f"{e}.token_type_embeddings",
                                       (cfg.type_vocab_size, h), "embed")},
      "norm": layer_norm(f"{e}.LayerNorm"),
  }}
  for i in range(cfg.num_layers):
    p = f"encoder.layer.{i}"
    q, k, v = (linear(f"{p}.attention.self.{n}", h, h) for n in ("query", "key", "value"))
    params[f"layer_{i}"] = {
        "attention": {
            "qkv": {"kernel": np.concatenate([q["kernel"], k["kernel"], v["kernel"]], axis=1),
                    "bias": np.concatenate([q["bias"], k["bias"], v["bias"]])},
            "out": linear(f"{p}.attention.output.dense", h, h),
        },
        "attention_norm": layer_norm(f"{p}.attention.output.LayerNorm"),
        "mlp_in": linear(f"{p}.intermediate.dense", h, inter),
        "mlp_out": linear(f"{p}.output.dense", inter, h),
        "mlp_norm": layer_norm(f"{p}.output.LayerNorm"),
    }
  extra = sorted(set(flat) - used)
  extra_layers = [k for k in extra if re.match(r"encoder\.layer\.\d+\.", k)]
  if extra_layers:
    raise ValueError(f"the weights have more layers than the config's num_layers="
                     f"{cfg.num_layers}: e.g. {extra_layers[0]!r}")
  if extra:
    raise ValueError(f"unexpected tensors (not a plain BERT/RoBERTa encoder?): {extra[:5]}")
  return params


# ----------------------------------------------------------------------------------------
# Hugging Face export (inverse of params_from_hf).
# ----------------------------------------------------------------------------------------
def hf_model_type(cfg: roberta.EncoderConfig) -> str:
  """"roberta" (positions offset past the pad id) or "bert" (positions from 0)."""
  return "bert" if cfg.position_offset == 0 else "roberta"


def params_to_hf(params: Mapping[str, Any], cfg: roberta.EncoderConfig) -> dict[str, np.ndarray]:
  """Encoder params -> a BERT/RoBERTa state dict in PyTorch layout (`bert.`/`roberta.` names,
  [out, in]); the family follows `cfg.position_offset`."""
  p = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
  out: dict[str, np.ndarray] = {}
  prefix = hf_model_type(cfg)
  e = f"{prefix}.embeddings"
  out[f"{e}.word_embeddings.weight"] = p["embeddings"]["word"]["embedding"]
  out[f"{e}.position_embeddings.weight"] = p["embeddings"]["position"]["embedding"]
  out[f"{e}.token_type_embeddings.weight"] = p["embeddings"]["token_type"]["embedding"]
  out[f"{e}.LayerNorm.weight"] = p["embeddings"]["norm"]["scale"]
  out[f"{e}.LayerNorm.bias"] = p["embeddings"]["norm"]["bias"]
  h = cfg.hidden_size

  def linear(stem, d):
    out[f"{stem}.weight"] = np.ascontiguousarray(d["kernel"].T)
    out[f"{stem}.bias"] = d["bias"]

  def norm(stem, d):
    out[f"{stem}.weight"], out[f"{stem}.bias"] = d["scale"], d["bias"]

  for i in range(cfg.num_layers):
    lp, s = p[f"layer_{i}"], f"{prefix}.encoder.layer.{i}"
    qkv = lp["attention"]["qkv"]
    for j, n in enumerate(("query", "key", "value")):
      linear(f"{s}.attention.self.{n}", {"kernel": qkv["kernel"][:, j * h:(j + 1) * h],
                                         "bias": qkv["bias"][j * h:(j + 1) * h]})
    linear(f"{s}.attention.output.dense", lp["attention"]["out"])
    norm(f"{s}.attention.output.LayerNorm", lp["attention_norm"])
    linear(f"{s}.intermediate.dense", lp["mlp_in"])
    linear(f"{s}.output.dense", lp["mlp_out"])
    norm(f"{s}.output.LayerNorm", lp["mlp_norm"])
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


def hf_config(cfg: roberta.EncoderConfig, tok) -> dict[str, Any]:
  model_type = hf_model_type(cfg)
  return {
      "model_type": model_type,
      "architectures": ["RobertaForMaskedLM" if model_type == "roberta" else "BertModel"],
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
      "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
      "intermediate_size": cfg.intermediate_size,
      "max_position_embeddings": cfg.max_position_embeddings,
      "type_vocab_size": cfg.type_vocab_size, "layer_norm_eps": cfg.layer_norm_eps,
      "hidden_act": cfg.hidden_act, "pad_token_id": cfg.pad_token_id,
      "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
      "hidden_dropout_prob": cfg.hidden_dropout,
      "attention_probs_dropout_prob": cfg.attention_dropout,
      "initializer_range": cfg.initializer_range, "position_embedding_type": "absolute",
  }


def write_folder(folder: Path, params, cfg: roberta.EncoderConfig, tok) -> Path:
  """A Hugging Face folder for `params`: config.json, model.safetensors, tokenizer files."""
  folder.mkdir()
  io_utils.atomic_write_json(folder / "config.json", hf_config(cfg, tok))
  save_file(params_to_hf(params, cfg), str(folder / SAFETENSORS), metadata={"format": "pt"})
  tok.save_pretrained(str(folder))
  return folder
