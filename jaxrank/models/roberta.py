"""A BERT/RoBERTa text encoder in pure Flax (linen), plus Hugging Face weight conversion.

One module, `Encoder`, covers both families; they differ only in config:

* BERT: positions are `0..L-1`; `type_vocab_size` is 2.
* RoBERTa (also XLM-R, CodeBERT): positions start at `pad_token_id + 1` and pad
  tokens sit at position `pad_token_id` (fairseq's `make_positions`), so
  `position_offset = pad_token_id + 1`; `type_vocab_size` is 1.

Post-LayerNorm transformer blocks as in the original papers. The Q, K and V
projections are fused into one `(H, 3H)` matmul (`jaxrank.hf.params_from_hf` concatenates
the three HF matrices). Attention goes through `jax.nn.dot_product_attention`
unless attention dropout is active in training (that op has no dropout), when an
explicit einsum path is used; both compute the softmax in float32. Measured on
the shared 2-core CPU (MiniLM-L6, float32, interleaved runs, CPU-seconds so that
other load cancels out): forward B=64 x L=64 at 32.8 (xla) vs 33.3 (einsum) vs
35.2 (transformers' FlaxBertModel) sequences per CPU-second, train step B=32
(AdamW) ~9 for all three: no win either way on CPU, so "xla" stays the default.

CPU training speed (benchmarks/bench_encoder.py, MiniLM-L6, batch 32 x 64):
Dense layers run as 2-D dots; in bfloat16 their backward is spelled as
row-major `[M, K] @ [K, N]` dots (`_affine`), the only form XLA:CPU hands to
its AMX/AVX-512-bf16 kernels; dropout draws 16 bits per element (`_Dropout`).
Together: bfloat16 step 0.82 s -> 0.60 s, float32 0.94 s -> 0.93 s.

Usage:

  cfg = EncoderConfig.from_hf(json.load(open("config.json")))
  params = hf.params_from_hf(safetensors.numpy.load_file("model.safetensors"), cfg)  # jaxrank.hf
  hidden_BxLxH = Encoder(cfg).apply({"params": params}, ids_BxL, mask_BxL)
  vecs_BxH = mean_pool(hidden_BxLxH, mask_BxL)

Loading by name from the offline store is `jaxrank.hf.load_encoder`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.layout import Layout, with_layout_constraint
import numpy as np

Params = dict[str, Any]

# HF `model_type`s with this exact layout. RoBERTa-style ones shift positions.
BERT_FAMILY = ("bert",)
ROBERTA_FAMILY = ("roberta", "xlm-roberta", "camembert")
SUPPORTED_MODEL_TYPES = BERT_FAMILY + ROBERTA_FAMILY

# HF `hidden_act` names -> functions, as in transformers' torch and Flax models.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # erf form
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_fast": functools.partial(jax.nn.gelu, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}

_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """Shape and numerics of an `Encoder`. Plain data: JSON round-trips via to/from_dict.

  Attributes:
    position_offset: 0 for BERT (positions `0..L-1`); `pad_token_id + 1` for
      RoBERTa, where real tokens count up from it and pad tokens get
      `pad_token_id`. The longest input is `max_position_embeddings -
      position_offset` tokens.
    dtype: compute dtype ("float32" or "bfloat16"); parameters stay float32.
    attention_impl: "xla" uses `jax.nn.dot_product_attention`; "einsum" the
      explicit path. Training with attention dropout always takes "einsum".
  """

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"
  pad_token_id: int = 0
  position_offset: int = 0
  dtype: str = "float32"
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  initializer_range: float = 0.02
  attention_impl: str = "xla"

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(
          f"EncoderConfig: hidden_size {self.hidden_size} is not a multiple of "
          f"num_heads {self.num_heads}")
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(f"EncoderConfig: unsupported hidden_act {self.hidden_act!r}; "
                       f"supported: {sorted(ACTIVATIONS)}")
    if self.dtype not in _DTYPES:
      raise ValueError(f"EncoderConfig: dtype must be one of {_DTYPES}, got {self.dtype!r}")
    if self.attention_impl not in ("xla", "einsum"):
      raise ValueError(f"EncoderConfig: attention_impl must be 'xla' or 'einsum', "
                       f"got {self.attention_impl!r}")
    if not 0 <= self.position_offset < self.max_position_embeddings:
      raise ValueError(f"EncoderConfig: position_offset {self.position_offset} out of range "
                       f"for max_position_embeddings {self.max_position_embeddings}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def max_length(self) -> int:
    """Longest input (tokens, specials included) the position table allows."""
    return self.max_position_embeddings - self.position_offset

  def replace(self, **changes) -> EncoderConfig:
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> EncoderConfig:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"EncoderConfig: unknown keys {unknown}")
    return cls(**d)

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], **overrides) -> EncoderConfig:
    """Builds the config from a Hugging Face `config.json` dict (BERT/RoBERTa family).

    Raises ValueError naming the offending key for anything this encoder does not
    implement (other architectures, relative positions, decoders).
    """
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
      raise ValueError(f"unsupported model_type {model_type!r}; supported: "
                       f"{', '.join(SUPPORTED_MODEL_TYPES)}")
    pos_type = hf.get("position_embedding_type", "absolute")
    if pos_type != "absolute":
      raise ValueError(f"unsupported position_embedding_type {pos_type!r} (only 'absolute')")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
      raise ValueError("decoder / cross-attention configs are not supported (encoder only)")
    try:
      pad = hf.get("pad_token_id")
      pad = int(pad) if pad is not None else (1 if model_type in ROBERTA_FAMILY else 0)
      kwargs = dict(
          vocab_size=int(hf["vocab_size"]),
          hidden_size=int(hf["hidden_size"]),
          num_layers=int(hf["num_hidden_layers"]),
          num_heads=int(hf["num_attention_heads"]),
          intermediate_size=int(hf["intermediate_size"]),
          max_position_embeddings=int(hf.get("max_position_embeddings", 512)),
          type_vocab_size=int(hf.get("type_vocab_size", 2)),
          layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
          hidden_act=str(hf.get("hidden_act", "gelu")),
          pad_token_id=pad,
          position_offset=pad + 1 if model_type in ROBERTA_FAMILY else 0,
          hidden_dropout=float(hf.get("hidden_dropout_prob", 0.1)),
          attention_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
          initializer_range=float(hf.get("initializer_range", 0.02)),
      )
    except KeyError as e:
      raise ValueError(f"config is missing required key {e.args[0]!r}") from None
    kwargs.update(overrides)
    return cls(**kwargs)


def position_ids(input_ids_BxL: jax.Array, cfg: EncoderConfig) -> jax.Array:
  """BERT: 0..L-1. RoBERTa: pad_token_id + running count of non-pad tokens (pads: pad_token_id)."""
  _, length = input_ids_BxL.shape
  if cfg.position_offset == 0:
    return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), input_ids_BxL.shape)
  # As transformers' create_position_ids_from_input_ids: keyed on pad *tokens*, not the mask.
  real_BxL = (input_ids_BxL != cfg.pad_token_id).astype(jnp.int32)
  return jnp.cumsum(real_BxL, axis=1) * real_BxL + (cfg.position_offset - 1)


def _row_major_transpose(a_MxN: jax.Array) -> jax.Array:
  """a.T materialised row-major. Without the layout constraint XLA folds the
  transpose into the consuming dot, whose operand is then column-major."""
  return with_layout_constraint(a_MxN.T, Layout(major_to_minor=(0, 1)))


@jax.custom_vjp
def _affine(x_MxK: jax.Array, w_KxN: jax.Array, b_N: jax.Array) -> jax.Array:
  """x @ w + b whose backward pass is written as canonical dots.

  XLA:CPU runs a dot on its fast library path (AMX/AVX-512 bf16 on this
  machine's Sapphire Rapids cores) only when the dot is `[M, K] @ [K, N]` with
  both operands row-major; any other form is upcast to float32 and run on the
  generic path. Autodiff's backward dots are `dy @ w.T` and `x.T @ dy` with the
  transposes folded into the dot, so they all take the slow path. Here they are
  spelled with materialised transposes (a copy of `w`, a copy of `x`: cheap next
  to the dot), and the bias gradient is summed in float32 (a bfloat16 sum is
  split into a slow tree of reduce-windows by XLA). Measured on [2048, 384] x
  [384, 1536] in bfloat16: dy @ w.T 13.8 -> 3.4 ms, x.T @ dy 11.6 -> 2.4 ms.
  """
  return x_MxK @ w_KxN + b_N


def _affine_fwd(x_MxK, w_KxN, b_N):
  return _affine(x_MxK, w_KxN, b_N), (x_MxK, w_KxN)


def _affine_bwd(res, dy_MxN):
  x_MxK, w_KxN = res
  dx_MxK = dy_MxN @ _row_major_transpose(w_KxN)
  dw_KxN = _row_major_transpose(x_MxK) @ dy_MxN
  db_N = jnp.sum(dy_MxN.astype(jnp.float32), axis=0)
  return dx_MxK, dw_KxN, db_N.astype(dy_MxN.dtype)


_affine.defvjp(_affine_fwd, _affine_bwd)


class _Dense2D(nn.Dense):
  """nn.Dense that flattens leading axes first, so the matmul and both its
  gradients are plain 2-D dots, and (on CPU) spells the backward dots in the
  form XLA:CPU runs fastest (`_affine`). On XLA:CPU a dot with two contracting
  axes (the weight gradient of a [B, L, H] input) is far slower: measured on
  MiniLM (batch 32 x 64 tokens, 2 cores), forward+backward 1.27 s -> 0.92 s."""

  @nn.compact
  def __call__(self, x):
    lead = x.shape[:-1]
    x_MxK = x.reshape(-1, x.shape[-1])
    if (jax.default_backend() != "cpu" or not self.use_bias
        or jnp.dtype(self.dtype) != jnp.bfloat16):
      return super().__call__(x_MxK).reshape(*lead, self.features)
    kernel = self.param("kernel", self.kernel_init, (x_MxK.shape[-1], self.features),
                        self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
    x_MxK, kernel, bias = nn.dtypes.promote_dtype(x_MxK, kernel, bias, dtype=self.dtype)
    return _affine(x_MxK, kernel, bias).reshape(*lead, self.features)


class _Dropout(nn.Module):
  """Inverted dropout drawing 16 random bits per element, two per uint32 word.

  Same contract as `nn.Dropout` (the "dropout" RNG stream, `deterministic`), but
  the keep test is `bits16 < round((1 - rate) * 2^16)` and kept values are scaled
  by the realised keep probability, so E[output] = input exactly and the drop
  rate is within 2^-17 of `rate`. `nn.Dropout` draws a full uint32 and a float
  per element; random-bit generation then dominates a CPU training step
  (MiniLM, batch 32 x 64, bfloat16: 155 ms of 634). Half the words and integer
  compares: a [32, 12, 64, 64] mask takes 4.5 ms instead of 21.5 ms.
  """

  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if deterministic or self.rate == 0.0:
      return x
    if self.rate >= 1.0:
      return jnp.zeros_like(x)
    threshold = int(round((1.0 - self.rate) * 65536))
    threshold = min(max(threshold, 1), 65535)
    *lead, last = x.shape
    # Words along the last axis only, so leading (batch-sharded) axes keep their layout.
    words = jax.random.bits(self.make_rng("dropout"), (*lead, (last + 1) // 2), jnp.uint32)
    bits = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(*lead, -1)[..., :last]
    scale = jnp.asarray(65536.0 / threshold, x.dtype)
    return jnp.where(bits < jnp.uint16(threshold), x * scale, jnp.zeros((), x.dtype))


def _dense(cfg: EncoderConfig, features: int, name: str) -> nn.Dense:
  return _Dense2D(features, dtype=cfg.dtype, param_dtype=jnp.float32, name=name,
                  kernel_init=nn.initializers.normal(cfg.initializer_range))


def _norm(cfg: EncoderConfig, name: str) -> nn.LayerNorm:
  # Two-pass variance (as torch) rather than E[x^2]-E[x]^2: exact for large activations.
  return nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, param_dtype=jnp.float32,
                      use_fast_variance=False, name=name)


class Embeddings(nn.Module):
  """word + position + token-type embeddings, LayerNorm, dropout."""

  cfg: EncoderConfig

  @nn.compact
  def __call__(self, input_ids_BxL, token_type_ids_BxL, deterministic: bool):
    cfg = self.cfg
    init = nn.initializers.normal(cfg.initializer_range)

    # Gathered in float32 (LayerNorm's statistics are float32 anyway; it returns
    # cfg.dtype): a bf16 `nn.Embed` converts the whole 30k-row table every step and
    # scatters its gradient into a bf16 zero table.
    def embed(n, name):
      return nn.Embed(n, cfg.hidden_size, dtype=jnp.float32, param_dtype=jnp.float32,
                      embedding_init=init, name=name)

    x_BxLxH = embed(cfg.vocab_size, "word")(input_ids_BxL)
    x_BxLxH += embed(cfg.max_position_embeddings, "position")(position_ids(input_ids_BxL, cfg))
    x_BxLxH += embed(cfg.type_vocab_size, "token_type")(token_type_ids_BxL)
    x_BxLxH = _norm(cfg, "norm")(x_BxLxH)
    return _Dropout(cfg.hidden_dropout)(x_BxLxH, deterministic=deterministic)


class SelfAttention(nn.Module):
  """Multi-head self-attention with a fused QKV projection."""

  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x_BxLxH, mask_BxL, deterministic: bool):
    cfg = self.cfg
    b, l, _ = x_BxLxH.shape
    qkv_BxLx3xNxD = _dense(cfg, 3 * cfg.hidden_size, "qkv")(x_BxLxH).reshape(
        b, l, 3, cfg.num_heads, cfg.head_dim)
    q, k, v = (qkv_BxLx3xNxD[:, :, i] for i in range(3))
    use_dropout = not deterministic and cfg.attention_dropout > 0
    if cfg.attention_impl == "xla" and not use_dropout:
      out_BxLxNxD = jax.nn.dot_product_attention(
          q, k, v, mask=mask_BxL[:, None, None, :].astype(bool), implementation="xla")
    else:
      logits_BxNxLxL = jnp.einsum("bqnd,bknd->bnqk", q, k,
                                  preferred_element_type=jnp.float32) / np.sqrt(cfg.head_dim)
      big_neg = jnp.finfo(jnp.float32).min
      logits_BxNxLxL = jnp.where(mask_BxL[:, None, None, :].astype(bool), logits_BxNxLxL,
                                 big_neg)
      probs_BxNxLxL = jax.nn.softmax(logits_BxNxLxL, axis=-1)
      probs_BxNxLxL = _Dropout(cfg.attention_dropout)(probs_BxNxLxL,
                                                        deterministic=deterministic)
      out_BxLxNxD = jnp.einsum("bnqk,bknd->bqnd", probs_BxNxLxL.astype(v.dtype), v)
    return _dense(cfg, cfg.hidden_size, "out")(out_BxLxNxD.reshape(b, l, cfg.hidden_size))


class Layer(nn.Module):
  """One post-LN transformer block: x = LN(x + attn(x)); x = LN(x + mlp(x))."""

  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x_BxLxH, mask_BxL, deterministic: bool):
    cfg = self.cfg
    drop = _Dropout(cfg.hidden_dropout)
    a_BxLxH = SelfAttention(cfg, name="attention")(x_BxLxH, mask_BxL, deterministic)
    x_BxLxH = _norm(cfg, "attention_norm")(x_BxLxH + drop(a_BxLxH, deterministic=deterministic))
    h_BxLxI = ACTIVATIONS[cfg.hidden_act](_dense(cfg, cfg.intermediate_size, "mlp_in")(x_BxLxH))
    h_BxLxH = _dense(cfg, cfg.hidden_size, "mlp_out")(h_BxLxI)
    return _norm(cfg, "mlp_norm")(x_BxLxH + drop(h_BxLxH, deterministic=deterministic))


class Encoder(nn.Module):
  """BERT/RoBERTa encoder: token ids -> contextual hidden states (no pooler, no head).

  `Encoder(cfg).apply({"params": p}, input_ids_BxL, attention_mask_BxL)` returns
  `hidden_BxLxH` in `cfg.dtype`. Pass `rngs={"dropout": key}` with
  `deterministic=False` to train.
  """

  cfg: EncoderConfig

  @nn.compact
  def __call__(self, input_ids_BxL, attention_mask_BxL, token_type_ids=None,
               deterministic: bool = True):
    cfg = self.cfg
    if input_ids_BxL.ndim != 2:
      raise ValueError(f"input_ids must be [batch, length], got shape {input_ids_BxL.shape}")
    if input_ids_BxL.shape[1] > cfg.max_length:
      raise ValueError(f"sequence length {input_ids_BxL.shape[1]} exceeds the encoder's "
                       f"maximum {cfg.max_length} (max_position_embeddings "
                       f"{cfg.max_position_embeddings}, offset {cfg.position_offset})")
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids_BxL)
    x_BxLxH = Embeddings(cfg, name="embeddings")(input_ids_BxL, token_type_ids, deterministic)
    for i in range(cfg.num_layers):
      x_BxLxH = Layer(cfg, name=f"layer_{i}")(x_BxLxH, attention_mask_BxL, deterministic)
    return x_BxLxH


def mean_pool(hidden_BxLxH: jax.Array, mask_BxL: jax.Array) -> jax.Array:
  """Masked mean over tokens, in float32 (sentence-transformers' pooling). Empty rows -> 0."""
  m_BxLx1 = mask_BxL.astype(jnp.float32)[..., None]
  total_BxH = jnp.sum(hidden_BxLxH.astype(jnp.float32) * m_BxLx1, axis=1)
  return total_BxH / jnp.maximum(jnp.sum(m_BxLx1, axis=1), 1e-9)


def init_params(cfg: EncoderConfig, rng: jax.Array) -> Params:
  """Random parameters (float32), e.g. for training from scratch."""
  ids = jnp.zeros((1, 1), jnp.int32)
  return Encoder(cfg).init(rng, ids, jnp.ones_like(ids))["params"]


def abstract_params(cfg: EncoderConfig) -> Params:
  """The parameter tree as `jax.ShapeDtypeStruct`s, without allocating anything."""
  return jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))


def count_params(params: Params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
