"""Masked-language-model pretraining of a small RoBERTa on notebook cells, saved into the store.

    pretrain(config, ws) -> manifest of the stored model

1. The tokenizer: `config.tokenizer.name` from the store if present, else a
   byte-level BPE (`jaxrank.text.subword`) trained on the training notebooks'
   cells and imported into the store under that name.
2. The data: every cell (cut to `max_chars`) tokenized to at most `max_len`
   tokens; batches group cells of similar length (few pad tokens).
3. The model: `jaxrank.models.roberta.Encoder` (RoBERTa positions, pad id from
   the tokenizer) + the usual MLM head (dense, gelu, LayerNorm, decoder tied to
   the word embeddings). Dynamic masking, BERT's 80/10/10 rule, as a pure
   function of (seed, step), so a resumed run sees the same masks.
4. Training: `jaxrank.loop` (AdamW with warmup + cosine and clipping,
   batches sharded over the "data" mesh axis, params replicated); Orbax
   checkpoints in the workdir, auto-resume.
5. Saving: the encoder is written as a Hugging Face RoBERTa folder (`jaxrank.hf`:
   config.json, model.safetensors in PyTorch layout, tokenizer files) and imported with
   `jaxrank.hf.import_model`, so it loads like any other stored model
   (`hf.load_encoder(ws, name)`) and the rankers start from it by name.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrank import hf, loop, store
from jaxrank.models import roberta
from jaxrank.text import subword

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------
# Model.
# ----------------------------------------------------------------------------------------
class MaskedLM(nn.Module):
  """Encoder + MLM head with the decoder tied to the word embeddings."""

  cfg: roberta.EncoderConfig

  @nn.compact
  def __call__(self, ids_BxL, deterministic: bool = True):
    cfg = self.cfg
    mask = (ids_BxL != cfg.pad_token_id).astype(jnp.int32)
    enc = roberta.Encoder(cfg, name="encoder")
    h = enc(ids_BxL, mask, deterministic=deterministic)
    h = nn.Dense(cfg.hidden_size, dtype=cfg.dtype, name="head_dense")(h)
    h = roberta.ACTIVATIONS[cfg.hidden_act](h)
    h = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, name="head_norm")(h)
    table = enc.variables["params"]["embeddings"]["word"]["embedding"]
    bias = self.param("head_bias", nn.initializers.zeros, (cfg.vocab_size,))
    return jnp.einsum("blh,vh->blv", h, table.astype(h.dtype)).astype(jnp.float32) + bias


def encoder_config(tok, cfg: Mapping[str, Any]) -> roberta.EncoderConfig:
  pad = int(tok.pad_token_id)
  return roberta.EncoderConfig(
      vocab_size=len(tok), hidden_size=cfg["hidden"], num_layers=cfg["layers"],
      num_heads=cfg["heads"], intermediate_size=cfg.get("intermediate") or 4 * cfg["hidden"],
      max_position_embeddings=cfg["max_len"] + pad + 1, type_vocab_size=1,
      layer_norm_eps=1e-5, hidden_act="gelu", pad_token_id=pad, position_offset=pad + 1,
      dtype=cfg.get("dtype", "float32"), hidden_dropout=cfg.get("dropout", 0.1),
      attention_dropout=0.0)


def mask_tokens(ids_BxL: np.ndarray, rng: np.random.Generator, *, vocab_size: int,
                mask_id: int, special_ids: Sequence[int], rate: float = 0.15
                ) -> tuple[np.ndarray, np.ndarray]:
  """BERT masking: `rate` of real tokens are targets; 80% -> mask, 10% random, 10% kept.

  Returns (inputs, labels) with labels -1 where there is no target.
  """
  special = np.isin(ids_BxL, np.asarray(special_ids))
  target = (rng.random(ids_BxL.shape) < rate) & ~special
  labels = np.where(target, ids_BxL, -1).astype(np.int32)
  u = rng.random(ids_BxL.shape)
  inputs = ids_BxL.copy()
  inputs[target & (u < 0.8)] = mask_id
  rand = target & (u >= 0.8) & (u < 0.9)
  inputs[rand] = rng.integers(0, vocab_size, size=int(rand.sum()))
  return inputs.astype(np.int32), labels


def mlm_loss(logits_BxLxV, labels_BxL):
  valid = labels_BxL >= 0
  logp = jax.nn.log_softmax(logits_BxLxV, -1)
  nll = -jnp.take_along_axis(logp, jnp.maximum(labels_BxL, 0)[..., None], -1)[..., 0]
  n = jnp.maximum(valid.sum(), 1)
  acc = ((logits_BxLxV.argmax(-1) == labels_BxL) & valid).sum() / n
  return (nll * valid).sum() / n, acc


# ----------------------------------------------------------------------------------------
# Data.
# ----------------------------------------------------------------------------------------
def get_tokenizer(ws: store.Workspace, tcfg: Mapping[str, Any], texts: Sequence[str]):
  """The store tokenizer `tcfg["name"]`; trained on `texts` and stored first if missing."""
  name = tcfg["name"]
  try:
    return hf.load_tokenizer(ws, name, check_hashes=False)
  except store.EntryNotFoundError:
    pass
  log.info("training a %s tokenizer (%d tokens) on %d cells", tcfg["kind"], tcfg["vocab_size"],
           len(texts))
  tok = subword.train_tokenizer(iter(texts), tcfg["kind"], tcfg["vocab_size"],
                                min_frequency=tcfg.get("min_frequency", 2))
  with tempfile.TemporaryDirectory(dir=ws.root) as tmp:
    subword.save_tokenizer(tok, Path(tmp) / "tok")
    hf.import_tokenizer(ws, Path(tmp) / "tok", name)
  return hf.load_tokenizer(ws, name, check_hashes=False)


def tokenize_cells(tok, texts: Sequence[str], max_len: int) -> list[np.ndarray]:
  enc = tok(list(texts), truncation=True, max_length=max_len)["input_ids"]
  return [np.asarray(e, np.int32) for e in enc if len(e) > 2]


class LengthBatches:
  """Sequences sorted into length buckets; batch(step) is a pure function of (seed, step)."""

  def __init__(self, seqs: Sequence[np.ndarray], batch_size: int, pad_id: int, seed: int,
               widths: Sequence[int]):
    self.seqs, self.bs, self.pad, self.seed = seqs, batch_size, pad_id, seed
    self.widths = sorted(widths)
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(seqs):
      w = next((w for w in self.widths if len(s) <= w), self.widths[-1])
      groups.setdefault(w, []).append(i)
    self.groups = {w: np.array(ix) for w, ix in sorted(groups.items()) if len(ix) >= batch_size}
    if not self.groups:
      raise ValueError(f"fewer than batch_size={batch_size} sequences in every length bucket")
    self.per_epoch = sum(len(ix) // batch_size for ix in self.groups.values())

  def _plan(self, epoch):
    rng = np.random.default_rng([self.seed, epoch])
    plan = []
    for w, ix in self.groups.items():
      ix = rng.permutation(ix)
      plan += [(w, ix[s:s + self.bs]) for s in range(0, len(ix) - self.bs + 1, self.bs)]
    return [plan[i] for i in rng.permutation(len(plan))]

  def batch(self, step: int) -> np.ndarray:
    epoch, i = divmod(step, self.per_epoch)
    if getattr(self, "_epoch", None) != epoch:
      self._cached, self._epoch = self._plan(epoch), epoch
    w, ix = self._cached[i]
    out = np.full((self.bs, w), self.pad, np.int32)
    for r, j in enumerate(ix):
      s = self.seqs[j][:w]
      out[r, :len(s)] = s
    return out


def pretrain(config, ws: store.Workspace, notebooks, workdir: str | Path,
             should_stop=None) -> dict[str, Any]:
  """Pretrains (or resumes in `workdir`) and stores the encoder as `config.model.save_as`.

  Stopped early by `should_stop` (see `loop.run_steps`), it stores nothing and
  returns `steps < total`; running again resumes."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t0 = time.time()
  texts = list(subword.iter_cell_texts(notebooks, config.data.max_chars))
  tok = get_tokenizer(ws, config.tokenizer, texts)
  cfg = encoder_config(tok, config.model)
  seqs = tokenize_cells(tok, texts, config.model.max_len)
  widths = [w for w in (16, 32, 64, 128, 256, 512) if w < config.model.max_len] + [
      config.model.max_len]
  bs = config.train.batch_size
  if bs % jax.device_count():
    raise ValueError(f"train.batch_size={bs} is not a multiple of {jax.device_count()} devices")
  batches = LengthBatches(seqs, bs, cfg.pad_token_id, config.data.seed, widths)
  total = config.train.steps
  log.info("pretrain: %d cells -> %d sequences, vocab %d, %d steps (%d per epoch), %.1fs",
           len(texts), len(seqs), len(tok), total, batches.per_epoch, time.time() - t0)

  model = MaskedLM(cfg)
  tx, schedule = loop.make_optimizer(config.optim, total)
  mesh = loop.make_mesh()
  state, state_sh = loop.init_state(
      lambda rng: model.init({"params": rng}, jnp.zeros((1, 8), jnp.int32))["params"],
      model.apply, tx, config.train.seed, mesh)

  def loss(apply_fn, p, batch, rng):
    logits = apply_fn({"params": p}, batch["inputs"], deterministic=False,
                      rngs={"dropout": rng})
    l, acc = mlm_loss(logits, batch["labels"])
    return l, {"loss": l, "mlm_acc": acc}

  step_fn = loop.jit_step(loss, schedule, state_sh, mesh)
  rng = jax.random.key(config.train.seed, impl="unsafe_rbg")
  special = [i for i in (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id,
                         tok.bos_token_id, tok.eos_token_id) if i is not None]

  def make_batch(step):
    inputs, labels = mask_tokens(batches.batch(step),
                                 np.random.default_rng([config.data.seed, 7, step]),
                                 vocab_size=len(tok), mask_id=tok.mask_token_id,
                                 special_ids=special, rate=config.train.mask_rate)
    return {"inputs": inputs, "labels": labels}

  state, history, step = loop.run_steps(
      "pretrain", state, step_fn, make_batch, rng, mesh=mesh, total=total, workdir=workdir,
      batch_size=bs, log_every=config.train.log_every,
      checkpoint_every=config.train.checkpoint_every, should_stop=should_stop)
  enc_params = jax.device_get(state.params["encoder"])
  manifest = None
  if jax.process_index() == 0 and step >= total:
    manifest = hf.save_encoder(ws, config.model.save_as, enc_params, cfg, tok,
                               source_label=f"jaxrank.pretrain:{workdir}@{total}")
  return {"manifest": manifest, "history": history, "steps": step, "total": total}
