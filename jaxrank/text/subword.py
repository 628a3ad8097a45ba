"""Subword tokenizers trained on notebook text (byte-level BPE, WordPiece, Unigram).

We train with the `tokenizers` library on code and markdown cells and wrap the
result as a `transformers.PreTrainedTokenizerFast`, so a model loads ours exactly
as it loads an imported one (`save_pretrained` folder, then the offline store).

Conventions (one per family, chosen so each matches the encoder it feeds):

| kind      | model / pre-tokenizer                        | special tokens, ids 0..4       | one text        |
|-----------|----------------------------------------------|--------------------------------|-----------------|
| bpe       | byte-level BPE (RoBERTa / GPT-2)             | <s> <pad> </s> <unk> <mask>    | <s> x </s>      |
| unigram   | Unigram; Metaspace + code split              | <s> <pad> </s> <unk> <mask>    | <s> x </s>      |
| wordpiece | WordPiece, prefix ＃＃; Metaspace + code split | [PAD] [UNK] [CLS] [SEP] [MASK] | [CLS] x [SEP]   |

So the pad id is 1 for bpe/unigram and 0 for wordpiece: models must read it from
the tokenizer (`tok.pad_token_id`), never assume it. Pairs are RoBERTa-style
`<s> a </s></s> b </s>` (all type 0) and BERT-style `[CLS] a [SEP] b [SEP]`
(types 0/1).

Whitespace is kept. Code indentation and newlines carry meaning, and BERT's
pre-tokenizer drops them, so `x\\n    y` and `x y` would encode the same:
- bpe: GPT-2's byte-level regex; every byte is in the alphabet, so no `<unk>`
  ever, and decoding gives back the text.
- unigram/wordpiece: NFKC, then spaces become `▁` (SentencePiece's Metaspace),
  then the GPT-2 split rule over `▁`-text: `▁word`, `▁punct`, runs of
  whitespace kept whole except the last `▁` (which joins the next word), so a
  newline plus indentation (`\\n▁▁▁`) is one learnable piece. Characters not
  seen in training become the unk token (measurable, unlike byte-level).
Every kind prepends a space to a text that does not start with one
(`add_prefix_space`, Metaspace `first`) so `import` at the start of a cell and
after a space share one token; decoding drops one leading space again (so a
text that started with a space comes back without it).
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
import transformers

from jaxrank import io_utils
from jaxrank.data.types import Notebook

KINDS = ("bpe", "wordpiece", "unigram")

# In id order: the trainer assigns ids 0..4 to special tokens as listed.
ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# Keyword arguments for `PreTrainedTokenizerFast`, per convention.
_ROBERTA_ROLES = dict(bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
                      pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
_BERT_ROLES = dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                   unk_token="[UNK]", mask_token="[MASK]")

_META = "▁"  # U+2581, SentencePiece's visible space.
# GPT-2's split rule with `▁` as the space: an optional `▁` glued to a word or a
# punctuation run; whitespace runs stay whole but leave their last `▁` to the
# next word. Identifiers keep `_` and digits inside (`my_var2` is one word).
_CODE_SPLIT = (rf"{_META}?[\p{{L}}\p{{N}}_]+|{_META}?[^\s\p{{L}}\p{{N}}_{_META}]+"
               rf"|[\s{_META}]+(?![^\s{_META}])|[\s{_META}]+")
# BERT marks continuations with `##`, but `##` is a markdown heading: `###`
# would be both a heading and "continuation `#`", and decoding would eat
# headings. NFKC maps fullwidth `＃` (U+FF03) to `#`, so `＃＃` never survives the
# normalizer and no piece is ambiguous.
_WORDPIECE_PREFIX = "＃＃"
# WordPiece maps a whole word to [UNK] if it is longer than this (BERT's value).
_MAX_WORD_CHARS = 100
# Alphabet cap for wordpiece (BERT used 1000); the nbcorpus has ~900 NFKC chars.
_LIMIT_ALPHABET = 1000
# Private-use planes 15 and 16 spell words during wordpiece training: symbol
# for "character i at a word's start" and "character i inside a word".
_FIRST_BASE = 0xF0000
_REST_BASE = 0x100000
_MIN_VOCAB = 300
# Key in tokenizer_config.json (and `tok.init_kwargs`) for how a tokenizer was made.
METADATA_KEY = "jaxrank"


def iter_cell_texts(notebooks: Iterable[Notebook], max_chars: int = 4096) -> Iterator[str]:
  """Yields the source of every code and markdown cell, cut to `max_chars`.

  Cells come in file order, notebook by notebook. Some cells hold megabytes
  (embedded data, base64 images); cutting them keeps training time and the
  vocabulary about ordinary text. Empty cells are skipped.
  """
  if max_chars <= 0:
    raise ValueError(f"max_chars must be positive, got {max_chars}")
  for nb in notebooks:
    for cell_id, source in zip(nb.cell_ids, nb.sources):
      if not isinstance(source, str):
        raise TypeError(f"notebook {nb.id} cell {cell_id}: source is "
                        f"{type(source).__name__}, expected str")
      if source:
        yield source[:max_chars]


# Decoders end by joining the tokens and dropping one leading space: the one
# the pre-tokenizer added. (The Metaspace decoder would drop every `▁` of the
# first token, indentation included.)
_DROP_PREFIX_SPACE = (decoders.Fuse(), decoders.Strip(" ", 1, 0))


def _metaspace_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
  return pre_tokenizers.Sequence([
      pre_tokenizers.Metaspace(replacement=_META, prepend_scheme="first", split=False),
      pre_tokenizers.Split(tokenizers.Regex(_CODE_SPLIT), behavior="isolated"),
  ])


def _normalizer(kind: str, lowercase: bool) -> normalizers.Normalizer | None:
  # Byte-level BPE stays lossless; the others fold compatibility forms
  # (full-width letters, ligatures, NBSP) so fewer characters end up unknown.
  steps = [] if kind == "bpe" else [normalizers.NFKC()]
  if lowercase:
    steps.append(normalizers.Lowercase())
  return normalizers.Sequence(steps) if steps else None


def _build(kind: str, vocab_size: int, min_frequency: int, lowercase: bool
          ) -> tuple[tokenizers.Tokenizer, trainers.Trainer]:
  """An untrained bpe/unigram tokenizer and the trainer that fills its model."""
  if kind == "bpe":
    tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), *_DROP_PREFIX_SPACE])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
        special_tokens=list(ROBERTA_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # all 256 bytes: no unk
  elif kind == "unigram":
    tok = tokenizers.Tokenizer(models.Unigram())
    tok.pre_tokenizer = _metaspace_pre_tokenizer()
    tok.decoder = decoders.Sequence([decoders.Replace(_META, " "), *_DROP_PREFIX_SPACE])
    # Unigram prunes by likelihood, it has no min_frequency.
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, show_progress=False, special_tokens=list(ROBERTA_SPECIALS),
        unk_token="<unk>", max_piece_length=16)
  else:
    raise ValueError(f"not a trainer-built kind: {kind!r}")
  tok.normalizer = _normalizer(kind, lowercase)
  return tok, trainer


def _wordpiece_tokenizer(lowercase: bool, vocab: dict[str, int]) -> tokenizers.Tokenizer:
  tok = tokenizers.Tokenizer(models.WordPiece(
      vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=_MAX_WORD_CHARS,
      continuing_subword_prefix=_WORDPIECE_PREFIX))
  tok.normalizer = _normalizer("wordpiece", lowercase)
  tok.pre_tokenizer = _metaspace_pre_tokenizer()
  # The WordPiece decoder strips the prefix and puts " " before every word; our
  # words already carry their spaces as `▁`, so drop its " " (tokens hold no
  # real spaces) and turn `▁` back into spaces.
  tok.decoder = decoders.Sequence([
      decoders.WordPiece(prefix=_WORDPIECE_PREFIX, cleanup=False),
      decoders.Replace(" ", ""),
      decoders.Replace(_META, " "),
      *_DROP_PREFIX_SPACE,
  ])
  tok.add_special_tokens(list(BERT_SPECIALS))
  return tok


def _train_wordpiece(texts: Iterable[str], vocab_size: int, min_frequency: int,
                     lowercase: bool) -> tokenizers.Tokenizer:
  """WordPiece vocabulary by BPE merges, like `WordPieceTrainer`, but reproducible.

  `WordPieceTrainer` numbers the `##x` pieces in hash-map order and breaks ties
  between equal merge counts by those numbers, so two runs on the same text
  give different vocabularies (huggingface/tokenizers#1794). Its BPE core is
  deterministic when every symbol is in the (sorted) initial alphabet, so we
  spell each word with private-use symbols, one set for a word's first
  character and one for the rest (`abc` -> A' b'' c''), run plain BPE, and read
  the merged symbols back: a piece that starts with a first-character symbol is
  a word start (`ab`), any other is a continuation (`＃＃bc`).
  """
  template = _wordpiece_tokenizer(lowercase, {t: i for i, t in enumerate(BERT_SPECIALS)})
  words: collections.Counter[str] = collections.Counter()
  for text in texts:
    normalized = template.normalizer.normalize_str(text)
    words.update(w for w, _ in template.pre_tokenizer.pre_tokenize_str(normalized))
  # Longer words encode as [UNK] whole (as in BERT), so they teach nothing.
  words = collections.Counter({w: n for w, n in words.items() if len(w) <= _MAX_WORD_CHARS})
  char_counts: collections.Counter[str] = collections.Counter()
  for w, n in words.items():
    for c in w:
      char_counts[c] += n
  # Most frequent characters first, ties by code point; the rest become [UNK].
  kept = sorted(char_counts, key=lambda c: (-char_counts[c], c))[:_LIMIT_ALPHABET]
  alphabet = sorted(kept)
  index = {c: i for i, c in enumerate(alphabet)}

  def spell(w: str) -> str:
    return chr(_FIRST_BASE + index[w[0]]) + "".join(chr(_REST_BASE + index[c]) for c in w[1:])

  spelled = sorted((spell(w), n) for w, n in words.items() if all(c in index for c in w))

  def lines() -> Iterator[str]:
    for w, n in spelled:  # repeat each word `n` times, in chunks of bounded size
      while n > 0:
        k = min(n, 1024)
        yield " ".join([w] * k)
        n -= k

  bpe = tokenizers.Tokenizer(models.BPE())
  bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  bpe.train_from_iterator(lines(), trainer=trainers.BpeTrainer(
      vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
      special_tokens=list(BERT_SPECIALS)))

  def unspell(piece: str) -> str:
    if piece in BERT_SPECIALS:
      return piece
    text = "".join(alphabet[ord(s) - (_FIRST_BASE if ord(s) < _REST_BASE else _REST_BASE)]
                   for s in piece)
    return text if ord(piece[0]) < _REST_BASE else _WORDPIECE_PREFIX + text

  vocab = {unspell(p): i for p, i in bpe.get_vocab().items()}
  return _wordpiece_tokenizer(lowercase, vocab)


def _sort_unigram_pieces(tok: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
  """Numbers the pieces (after the specials) in string order, not score order.

  The Unigram trainer's scores wobble between runs (see `train_tokenizer`), so
  pieces with near-equal scores swap ids even when the vocabulary is the same;
  string order gives one numbering per vocabulary. Encoding uses only scores.
  """
  state = json.loads(tok.to_str())
  pieces = state["model"]["vocab"]
  n = len(ROBERTA_SPECIALS)
  if [p for p, _ in pieces[:n]] != list(ROBERTA_SPECIALS):
    raise RuntimeError(f"unigram trainer did not put {ROBERTA_SPECIALS} first: {pieces[:n]}")
  state["model"]["vocab"] = pieces[:n] + sorted(pieces[n:], key=lambda p: p[0])
  state["model"]["unk_id"] = ROBERTA_SPECIALS.index("<unk>")
  return tokenizers.Tokenizer.from_str(json.dumps(state))


def _post_processor(kind: str, tok: tokenizers.Tokenizer) -> processors.PostProcessor:
  """Adds `<s> x </s>` / `[CLS] x [SEP]`; a trained Tokenizer has none by default."""
  names = BERT_SPECIALS if kind == "wordpiece" else ROBERTA_SPECIALS
  ids = {t: tok.token_to_id(t) for t in names}
  if kind == "bpe":
    # Trims the byte-level leading space out of the offsets as well.
    return processors.RobertaProcessing(sep=("</s>", ids["</s>"]), cls=("<s>", ids["<s>"]),
                                        trim_offsets=True, add_prefix_space=True)
  if kind == "unigram":
    return processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", ids["<s>"]), ("</s>", ids["</s>"])])
  return processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])


def train_tokenizer(texts: Iterable[str], kind: str, vocab_size: int, *,
                    min_frequency: int = 2, lowercase: bool = False,
                    model_max_length: int = 512) -> transformers.PreTrainedTokenizerFast:
  """Trains a `kind` tokenizer ("bpe", "wordpiece", "unigram") on `texts`.

  bpe and wordpiece give the same tokenizer on the same texts in every run.
  unigram does not quite: tokenizers' Unigram trainer sums its EM statistics in
  hash-map order, so scores differ in about the 4th decimal between runs, a few
  cells in a hundred split differently, and pieces near the cut could differ
  (we number pieces in string order, so the same vocabulary gets the same ids).
  Train once and load it from the store.

  Args:
    texts: training strings, e.g. `iter_cell_texts(train_notebooks)`; consumed once.
    kind: see the module docstring for each kind's model and special tokens.
    vocab_size: final vocabulary size, special tokens included.
    min_frequency: a pair merges only if seen this often (bpe, wordpiece;
      Unigram has no such knob and ignores it).
    lowercase: lowercase before tokenizing (off: code is case-sensitive).
    model_max_length: the tokenizer's `model_max_length` (our encoders: 512).

  Returns:
    A fast tokenizer with pad/unk/mask/cls/sep set and a post-processor that
    adds the sequence markers.

  Raises:
    ValueError: unknown kind, bad sizes, no texts, or an alphabet that does not
      fit in `vocab_size`.
  """
  if kind not in KINDS:
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {KINDS}")
  # The floor leaves room for the specials, the 256-byte alphabet and merges.
  if vocab_size < _MIN_VOCAB:
    raise ValueError(f"vocab_size={vocab_size} is too small; use at least {_MIN_VOCAB}")
  if min_frequency < 0:
    raise ValueError(f"min_frequency must be >= 0, got {min_frequency}")

  n_texts = 0

  def checked(it: Iterable[str]) -> Iterator[str]:
    nonlocal n_texts
    for i, t in enumerate(it):
      if not isinstance(t, str):
        raise TypeError(f"training text #{i} is {type(t).__name__}, expected str")
      n_texts += 1
      yield t

  if kind == "wordpiece":
    tok = _train_wordpiece(checked(texts), vocab_size, min_frequency, lowercase)
  else:
    tok, trainer = _build(kind, vocab_size, min_frequency, lowercase)
    try:
      tok.train_from_iterator(checked(texts), trainer=trainer)
    except Exception as e:  # tokenizers raises a bare Exception for this
      if "not large enough to contain all chars" in str(e):
        raise ValueError(f"the {kind} alphabet of the training texts alone does not fit "
                         f"in vocab_size={vocab_size}; raise vocab_size") from e
      raise
  if n_texts == 0:
    raise ValueError("no training texts: the iterator was empty")
  if kind == "unigram":
    tok = _sort_unigram_pieces(tok)
  if tok.get_vocab_size() > vocab_size:
    # BPE keeps its whole alphabet even past vocab_size.
    raise ValueError(f"the {kind} alphabet of the training texts alone needs "
                     f"{tok.get_vocab_size()} tokens > vocab_size={vocab_size}; "
                     "raise vocab_size")
  tok.post_processor = _post_processor(kind, tok)
  roles = _BERT_ROLES if kind == "wordpiece" else _ROBERTA_ROLES
  names = BERT_SPECIALS if kind == "wordpiece" else ROBERTA_SPECIALS
  for i, name in enumerate(names):  # the trainers put them first; check, don't trust
    if tok.token_to_id(name) != i:
      raise RuntimeError(f"{kind} trainer put special token {name!r} at id "
                         f"{tok.token_to_id(name)}, expected {i}")
  # transformers resets a ByteLevel pre-tokenizer's add_prefix_space to its own
  # kwarg (default False), which would tokenize a cell's first word unlike training.
  extra = {"add_prefix_space": True} if kind == "bpe" else {}
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, model_max_length=model_max_length, padding_side="right",
      clean_up_tokenization_spaces=False, **roles, **extra)
  # Unknown init kwargs travel in tokenizer_config.json: how it was made.
  fast.init_kwargs[METADATA_KEY] = {
      "kind": kind, "vocab_size": vocab_size, "min_frequency": min_frequency,
      "lowercase": lowercase, "n_texts": n_texts, "tokenizers_version": tokenizers.__version__}
  return fast


def save_tokenizer(tok: transformers.PreTrainedTokenizerFast, folder: str | os.PathLike,
                   *, metadata: dict | None = None) -> Path:
  """Writes `tok` with `save_pretrained` into the new folder `folder`, atomically.

  The folder appears complete or not at all; raises FileExistsError if it
  exists. `metadata` (JSON-able, e.g. the training data) is merged into the
  `jaxrank` entry of tokenizer_config.json, which loads back as
  `tok.init_kwargs["jaxrank"]`.
  """
  folder = Path(folder)
  if folder.exists():
    raise FileExistsError(f"tokenizer folder {folder} already exists")
  before = dict(tok.init_kwargs)
  if metadata:
    tok.init_kwargs[METADATA_KEY] = {**before.get(METADATA_KEY, {}), **metadata}
  try:
    with io_utils.atomic_dir(folder) as tmp:
      tok.save_pretrained(str(tmp))
      if not (tmp / "tokenizer.json").is_file():
        raise RuntimeError(f"save_pretrained wrote no tokenizer.json into {folder}")
  finally:  # leave `tok` as it came
    tok.init_kwargs.clear()
    tok.init_kwargs.update(before)
  return folder
